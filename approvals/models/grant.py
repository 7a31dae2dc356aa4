from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class ExecutionGrant(models.Model):
    """Single-use permission to execute exactly the approved parameters once.

    Minted in the approval transaction, redeemed atomically by the worker.
    ``params_digest`` is SHA-256 of the canonical JSON of the approved
    parameters: a change to the parameters after approval fails redemption.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Normally one per action; an idempotent action retried after a crash gets a fresh one per attempt.
    action = models.ForeignKey("approvals.ActionRequest", on_delete=models.CASCADE, related_name="grants")
    credential = models.ForeignKey("approvals.Credential", on_delete=models.PROTECT, null=True, blank=True)
    params_digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    redeemed_at = models.DateTimeField(null=True, blank=True)
    # The recorded dispatch attempts of this grant's execute task: when the newest was handed to the broker and
    # how many there were. A redispatch is decided under a lock on this row (approvals.services.execution).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatches = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"grant {self.id} for {self.action_id}"
