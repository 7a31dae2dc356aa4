from __future__ import annotations

from django.db import models
from django.utils import timezone


class Notification(models.Model):
    """Where an action was announced (a Slack message, an email), so later changes can update it."""

    action = models.ForeignKey("approvals.ActionRequest", on_delete=models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=200)  # "slack:#sre", "email:ops@example.com"
    # For Slack: the channel id and message ts chat.update needs; empty for email.
    external_channel = models.CharField(max_length=64, blank=True)
    external_id = models.CharField(max_length=64, blank=True)
    rendered_status = models.CharField(max_length=16, blank=True)
    rendered_approvals = models.PositiveSmallIntegerField(default=0)
    result_posted = models.BooleanField(default=False)
    reminders_sent = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["action", "channel"], name="notification_per_channel")]

    def __str__(self) -> str:
        return f"{self.channel} for {self.action_id}"
