"""Time-boxed access as reviewers see it: who has what, granted by whom, until when; reverts that failed.

Scoped like every read (``selectors.actions_for``): a reviewer sees the grants routed to their groups, staff all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q
from django.utils import timezone

from approvals.models import AccessLease, ActionRequest, Review
from approvals.selectors import actions as selectors

State = AccessLease.State
HOLDING = (State.ACTIVE, State.REVERTING, State.RETRYING)


@dataclass(frozen=True)
class ActiveAccess:
    """One grant still held: the "Active access" view's row."""

    action: ActionRequest
    lease: AccessLease
    group: str
    users: list[str]  # whom the revert will take out: those the grant added
    on_behalf_of: str
    agent: str
    granted_by: list[str]  # the humans whose approvals counted
    granted_at: datetime
    expires_at: datetime
    seconds_left: int  # for the countdown; 0 once due
    state: str
    is_alert: bool
    last_error: str


def _leases_for(principal):
    return AccessLease.objects.filter(action__in=selectors.actions_for(principal).values("id"))


def lease_for(action: ActionRequest) -> AccessLease | None:
    return AccessLease.objects.filter(action_id=action.id).first()


def active_access(principal, *, now: datetime | None = None) -> list[ActiveAccess]:
    """Every grant whose access is still held (active, being reverted or waiting to retry), soonest end first."""
    now = now or timezone.now()
    leases = list(
        _leases_for(principal)
        .filter(state__in=HOLDING)
        .select_related("action", "action__agent")
        .order_by("expires_at", "id")
    )
    approvers: dict = {}
    reviews = Review.objects.filter(
        action_id__in=[lease.action_id for lease in leases],
        verdict=Review.Verdict.APPROVE,
        withdrawn_at__isnull=True,
        reviewer__isnull=False,
    ).select_related("reviewer")
    for review in reviews.order_by("created_at", "id"):
        approvers.setdefault(review.action_id, []).append(review.reviewer.get_username())
    rows = []
    for lease in leases:
        action, params = lease.action, lease.revert_params or {}
        rows.append(
            ActiveAccess(
                action=action,
                lease=lease,
                group=str((action.result or {}).get("group", {}).get("displayName") or params.get("group", "")),
                users=list(params.get("remove") or []),
                on_behalf_of=action.on_behalf_of,
                agent=action.agent.name,
                granted_by=approvers.get(action.id, []),
                granted_at=lease.granted_at,
                expires_at=lease.expires_at,
                seconds_left=max(0, int((lease.expires_at - now).total_seconds())),
                state=lease.state,
                is_alert=lease.is_alert,
                last_error=lease.last_error,
            )
        )
    return rows


def failing_reverts(principal) -> list[AccessLease]:
    """Reverts that failed and wait to be tried again: the alert every reviewer's desk shows until they succeed."""
    return list(
        _leases_for(principal).filter(state=State.RETRYING).select_related("action").order_by("next_attempt_at")
    )


def access_counts(principal) -> dict[str, int]:
    """For the dashboard: grants held now, grants taken back (by expiry, or ended early), reverts failing now."""
    counts = _leases_for(principal).aggregate(
        active=Count("id", filter=Q(state__in=HOLDING)),
        expired=Count("id", filter=Q(state=State.REVERTED, reason="expired")),
        ended_early=Count("id", filter=Q(state=State.REVERTED, reason="ended_early")),
        failed_reverts=Count("id", filter=Q(state=State.RETRYING)),
    )
    return {key: int(value or 0) for key, value in counts.items()}
