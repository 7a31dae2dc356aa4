from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Slack channels: "#name" (letters, digits, '-', '_'; compared case-insensitively) or a channel ID.
SLACK_CHANNEL_ID_RE = re.compile(r"[CGD][A-Z0-9]{6,20}")
SLACK_CHANNEL_RE = re.compile(r"#[\w-]{1,80}|" + SLACK_CHANNEL_ID_RE.pattern)

# What an executor's result may show the agent (and reviewers): never the request headers Countersign sent.
RESULT_PARTS = ("status", "headers", "body")
RISKS = ("low", "medium", "high", "critical")


def default_result_visibility() -> list[str]:
    return ["status", "body"]


class Credential(models.Model):
    """A target-system secret, encrypted at rest; only executors see it, narrowed.

    ``secret_encrypted`` is a Fernet token (approvals.credentials.crypto). ``scope`` says
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
    # Risk follows the credential, not only the action type: an identity provider or an admin API changes
    # access whatever the action type says (approvals.policies.rules applies the access floor).
    access_control = models.BooleanField(
        default=False,
        help_text="Using this credential changes who has access: every action that uses it gets the access floor "
        "(two different humans, never auto-approved, never the agent's owner or the person it acts for).",
    )
    min_risk = models.CharField(
        max_length=16,
        blank=True,
        choices=[(r, r) for r in RISKS],
        help_text="Every action that uses this credential is at least this risk.",
    )
    allow_preview_reads = models.BooleanField(
        default=False,
        help_text="Countersign may read the live target with this credential to compute a diff before anyone "
        "decides (within the same capability and path constraints).",
    )
    result_visibility = models.JSONField(
        default=default_result_visibility,
        blank=True,
        help_text='What results may show the agent and reviewers: any of "status", "headers", "body".',
    )
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
        visibility = self.result_visibility
        if not isinstance(visibility, list) or not all(part in RESULT_PARTS for part in visibility):
            raise ValidationError({"result_visibility": f"A list of {', '.join(RESULT_PARTS)}."})
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
