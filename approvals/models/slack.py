from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

SLACK_USER_ID_RE = r"^[UW][A-Z0-9]{2,30}$"


class SlackIdentity(models.Model):
    """An explicit link from a Slack user to the Countersign reviewer who clicks as them.

    Checked before the automatic link by email (approvals.slack.users). Every
    change is audited (``slack.identity_linked`` / ``slack.identity_unlinked``).
    """

    slack_user_id = models.CharField(
        max_length=32,
        unique=True,
        validators=[RegexValidator(SLACK_USER_ID_RE, 'A Slack user ID looks like "U0123ABCD".')],
        help_text="The member ID from the user's Slack profile (⋮ → Copy member ID), e.g. U0123ABCD.",
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_identities")
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["slack_user_id"]
        verbose_name = "Slack identity"
        verbose_name_plural = "Slack identities"

    def __str__(self) -> str:
        return f"{self.slack_user_id} → {self.user}"
