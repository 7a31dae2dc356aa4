"""Time-boxed access as the pages show it (issue 23): an action's access card, the desk's alert for failing
reverts, the dashboard's counts. Reads only: approvals.selectors.access and the one undo check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django import template
from django.utils import timezone

from approvals.action_types.durations import DurationError, describe_seconds, parse_duration
from approvals.models import ActionRequest, ActionStatus
from approvals.selectors import access as access_reads
from approvals.services.access import can_undo
from catalog import registry

register = template.Library()


def _seconds(params: Any) -> int | None:
    if not isinstance(params, dict) or "duration" not in params:
        return None
    try:
        return parse_duration(params["duration"])
    except DurationError:
        return None


@dataclass(frozen=True)
class AccessView:
    """What the detail page says about an action's time box, its reverts and what a reviewer may do about it."""

    time_boxed: bool  # the type can be time-boxed and this action asks for a duration
    seconds: int | None  # the duration that runs (a reviewer's shortening included)
    asked_seconds: int | None  # the duration the agent asked for
    lease: Any  # approvals.models.AccessLease | None
    seconds_left: int | None  # while the access is held
    reverts: ActionRequest | None  # on a revert or undo: the action it takes back
    reversals: list[ActionRequest] = field(default_factory=list)  # the reverts and undos of this action
    extends: ActionRequest | None = None
    can_end: bool = False  # staff, and the access is active
    can_undo: bool = False  # a succeeded reversible action, not time-boxed-and-active (that is End early)

    @property
    def words(self) -> str:
        return describe_seconds(self.seconds) if self.seconds else ""

    @property
    def asked_words(self) -> str:
        return describe_seconds(self.asked_seconds) if self.asked_seconds else ""

    @property
    def shortened(self) -> bool:
        return bool(self.seconds and self.asked_seconds and self.seconds < self.asked_seconds)

    @property
    def shown(self) -> bool:
        return bool(self.time_boxed or self.lease or self.reverts or self.reversals or self.can_undo)


@register.simple_tag
def access_of(action: ActionRequest, user) -> AccessView:
    """Read once per action and viewer for a page (the header, the decision form and the live panel all ask)."""
    memo = action.__dict__.setdefault("_access_views", {})
    key = getattr(user, "pk", None)
    if key not in memo:
        memo[key] = _access_view(action, user)
    return memo[key]


def _access_view(action: ActionRequest, user) -> AccessView:
    action_type = registry.get(action.action_type)
    seconds = _seconds(action.effective_params)
    time_boxed = bool(action_type and action_type.time_boxed and seconds)
    succeeded = action.status == ActionStatus.SUCCEEDED  # only a change that took effect has a lease or reverts
    lease = access_reads.lease_for(action) if succeeded else None
    left = None
    if lease is not None and lease.holds_access:
        left = max(0, int((lease.expires_at - timezone.now()).total_seconds()))
    active = lease is not None and lease.is_active
    undoable = not active and succeeded and can_undo(action)
    return AccessView(
        time_boxed=time_boxed,
        seconds=seconds,
        asked_seconds=_seconds(action.params),
        lease=lease,
        seconds_left=left,
        reverts=action.reverts if action.reverts_id else None,
        reversals=list(ActionRequest.objects.filter(reverts=action).order_by("created_at", "id")) if succeeded else [],
        extends=action.extends if action.extends_id else None,
        can_end=active and bool(getattr(user, "is_staff", False)),
        can_undo=undoable,
    )


@register.simple_tag
def failing_reverts_for(user) -> list:
    """The reverts that failed and wait for a retry, among the actions ``user`` may see: the desk's alert."""
    if user is None or not user.is_authenticated:
        return []
    return access_reads.failing_reverts(user)


@register.simple_tag
def access_counts_for(user) -> dict:
    return access_reads.access_counts(user)


@register.filter
def seconds_words(seconds) -> str:
    """ "1 h 30 min" for 5400."""
    try:
        return describe_seconds(int(seconds))
    except (TypeError, ValueError):
        return ""
