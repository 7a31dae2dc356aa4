from __future__ import annotations

from django.db import models
from django.utils import timezone


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
