from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class OidcIdentity(models.Model):
    """Who a reviewer is at the OpenID Connect provider: the provider's subject, under its issuer.

    A log-in through the provider finds its reviewer by (issuer, subject), never by an email or a name: those
    change hands, a subject does not (approvals.sso.identities). ``email`` is kept only as the provider gave it,
    with ``email_verified``; Slack links a Slack user to the reviewer whose identity has that email verified
    (approvals.slack.users).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    email = models.CharField(max_length=254, blank=True)
    email_verified = models.BooleanField(default=False)
    # The provider groups the last log-in carried (before mapping), for staff to see what the directory said.
    groups = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_login_at = models.DateTimeField(null=True, blank=True)
    # When the person last authenticated at the provider (the ID token's auth_time), as of the last log-in.
    auth_time = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_issuer_subject")]
        indexes = [models.Index(fields=["email"], name="oidc_identity_email")]
        ordering = ["issuer", "subject"]
        verbose_name = "OpenID Connect identity"
        verbose_name_plural = "OpenID Connect identities"

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer} → {self.user}"
