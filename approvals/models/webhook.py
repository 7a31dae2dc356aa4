from __future__ import annotations

from django.db import models
from django.utils import timezone


class WebhookDelivery(models.Model):
    """One attempt to POST a signed webhook to an agent's callback URL, whatever its outcome."""

    action = models.ForeignKey("approvals.ActionRequest", on_delete=models.CASCADE, related_name="webhook_deliveries")
    # The outbox message, sent as the Countersign-Delivery header: the same on every attempt.
    delivery = models.BigIntegerField()
    event = models.CharField(max_length=64)  # "action.approved"
    url = models.CharField(max_length=2048)  # as the agent gave it; a log, not validated input
    attempt = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField()
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["action", "-at"], name="webhook_delivery_action_at")]

    def __str__(self) -> str:
        outcome = self.status_code or self.error or "?"
        return f"{self.event} #{self.delivery} attempt {self.attempt}: {outcome}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
