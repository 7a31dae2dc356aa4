from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Slack channels: "#name" (letters, digits, '-', '_'; compared case-insensitively) or a channel ID.
SLACK_CHANNEL_ID_RE = re.compile(r"[CGD][A-Z0-9]{6,20}")
SLACK_CHANNEL_RE = re.compile(r"#[\w-]{1,80}|" + SLACK_CHANNEL_ID_RE.pattern)


class Credential(models.Model):
    """A target-system secret, encrypted at rest; only executors see it, narrowed.

    ``secret_encrypted`` is a Fernet token (approvals.crypto). ``scope`` says
    where the secret may be used (for example ``{"base_url": ...}``) and is
    enforced by the narrowed client handed to the executor.
    """

    class Kind(models.TextChoices):
        HTTP_BEARER = "http_bearer", "HTTP bearer token"
        HTTP_BASIC = "http_basic", "HTTP basic (user:password)"
        HTTP_HEADER = "http_header", "HTTP custom header"
        SLACK_BOT = "slack_bot", "Slack bot token"
        SCIM_BEARER = "scim_bearer", "SCIM bearer token"
        NONE = "none", "No secret"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    secret_encrypted = models.BinaryField(editable=False)
    scope = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def __repr__(self) -> str:
        # Never let the ciphertext (or anything derived) reach a log or trace.
        return f"<Credential {self.name} kind={self.kind}>"

    def clean(self) -> None:
        scope = self.scope if isinstance(self.scope, dict) else None
        if scope is None:
            raise ValidationError({"scope": "The scope is a JSON object."})
        if self.kind.startswith("http_"):
            base_url = str(scope.get("base_url", ""))
            if not base_url.lower().startswith(("http://", "https://")) or "?" in base_url or "#" in base_url:
                raise ValidationError({"scope": 'HTTP credentials need {"base_url": "https://host/path"}.'})
            methods = scope.get("methods")
            if methods is not None and (
                not isinstance(methods, list) or not methods or not all(m in HTTP_METHODS for m in methods)
            ):
                raise ValidationError({"scope": f"methods is a list of {', '.join(HTTP_METHODS)}."})
        if self.kind == self.Kind.SCIM_BEARER:
            base_url = str(scope.get("base_url", ""))
            if not base_url.lower().startswith(("http://", "https://")) or "?" in base_url or "#" in base_url:
                raise ValidationError({"scope": 'SCIM credentials need {"base_url": "https://host/scim/v2"}.'})
        if self.kind == self.Kind.SLACK_BOT and "channels" in scope:
            channels = scope["channels"]
            if not (
                isinstance(channels, list)
                and channels
                and all(isinstance(c, str) and SLACK_CHANNEL_RE.fullmatch(c) for c in channels)
            ):
                raise ValidationError({"scope": 'channels is a list of "#channel-name" or channel IDs ("C0123ABCD").'})
