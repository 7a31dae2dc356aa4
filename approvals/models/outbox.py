from __future__ import annotations

from django.db import models
from django.utils import timezone


class OutboxMessage(models.Model):
    """A side effect recorded in the transaction that caused it.

    Delivered after commit by approvals.outbox.dispatcher; a row that is still
    undelivered (Redis down, worker gone) is retried by the periodic sweep.
    Push messages double as the live event stream: their id is the cursor a
    reconnecting browser catches up from.
    """

    class Kind(models.TextChoices):
        PUSH = "push"
        EXECUTE = "execute"
        WEBHOOK = "webhook"
        NOTIFY = "notify"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    action_id = models.UUIDField(null=True, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="outbox_undelivered", condition=models.Q(delivered_at__isnull=True)
            ),
            models.Index(fields=["kind", "id"], name="outbox_kind_id"),
            # A webhook is not claimed while an earlier one of its action is undelivered (approvals.outbox.dispatcher):
            # this answers that question from the few undelivered webhooks only.
            models.Index(
                fields=["action_id", "id"],
                name="outbox_webhook_undelivered",
                condition=models.Q(delivered_at__isnull=True, kind="webhook"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.id}"
