"""Time-boxed access: the lease a grant holds until Countersign takes it back (issue 23).

The revert is scheduled here, in the database, not only in a broker: the sweep (approvals.services.access.revert_due,
run by beat) finds every lease whose ``next_attempt_at`` has passed, whatever happened to the processes meanwhile.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AccessLease(models.Model):
    """A succeeded time-boxed action, what reverting it will do, and how far the revert got."""

    class State(models.TextChoices):
        ACTIVE = "active"  # the access is held until expires_at
        REVERTING = "reverting"  # a revert action is in flight (revert_action)
        RETRYING = "retrying"  # the last revert attempt failed; the next starts at next_attempt_at (an alert)
        REVERTED = "reverted"
        NOTHING_TO_REVERT = "nothing_to_revert"  # the grant added nothing (everyone already had it)

    class Reason(models.TextChoices):
        NONE = "", "-"
        EXPIRED = "expired"
        ENDED_EARLY = "ended_early"

    action = models.OneToOneField("approvals.ActionRequest", on_delete=models.CASCADE, related_name="access_lease")
    state = models.CharField(max_length=20, choices=State.choices, default=State.ACTIVE)
    granted_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    # The params of the revert: only what the grant added, never what the person had before (the type's
    # reverse of the recorded result).
    revert_params = models.JSONField(default=dict)
    reason = models.CharField(max_length=20, choices=Reason.choices, blank=True, default=Reason.NONE)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # When the sweep starts (or retries) the revert: expires_at while active, the backoff's next try while retrying.
    next_attempt_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    revert_action = models.ForeignKey(
        "approvals.ActionRequest", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reverted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The sweep: leases whose revert is due (active past expiry, or a failed revert due for retry).
            models.Index(
                fields=["next_attempt_at"],
                name="access_lease_due",
                condition=models.Q(state__in=["active", "retrying"]),
            ),
            models.Index(fields=["state", "expires_at"], name="access_lease_state"),
        ]

    def __str__(self) -> str:
        return f"access of {self.action_id} until {self.expires_at:%Y-%m-%d %H:%M} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state == self.State.ACTIVE

    @property
    def is_alert(self) -> bool:
        """A revert that failed and waits to be tried again: shown on every reviewer's desk until it succeeds."""
        return self.state == self.State.RETRYING

    @property
    def holds_access(self) -> bool:
        """The person still has what the grant gave: not yet reverted."""
        return self.state in (self.State.ACTIVE, self.State.REVERTING, self.State.RETRYING)
