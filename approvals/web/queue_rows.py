"""The queue's rows as templates/approvals/_queue_rows.html draws them: for the queue page and for one row
fetched alone (``views.queue_row``), so both draw the same HTML.

Everything a row shows is worked out here, in one pass with one clock: the template only prints strings
(a dict per row, the cheapest lookup a template has), with no filter, tag or query per row. The texts are
Django's own (``timesince``, ``timeuntil``, a datetime printed by a template), so they read as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.urls import reverse
from django.utils import formats, timezone
from django.utils.timesince import timesince, timeuntil

from approvals.models import ActionRequest, ActionStatus
from approvals.presentation.display import mark_html
from approvals.selectors import desk

SOON = 2 * 3600
URGENT = 15 * 60

# Reversed once per call and filled in per row: the same text as reverse() for each row.
_PLACEHOLDER = uuid.UUID(int=0)


def expiry_state(expires_at: datetime | None, now: datetime) -> str:
    """A CSS class for how close the deadline is: expired, urgent (< 15 min), soon (< 2 h), or nothing."""
    if expires_at is None:
        return ""
    left = (expires_at - now).total_seconds()
    if left <= 0:
        return "expired"
    if left < URGENT:
        return "urgent"
    return "soon" if left < SOON else ""


def time_left_percent(action: ActionRequest, now: datetime) -> int:
    """How much of its time to live a pending action has left, 0-100 (the bar under "Expires")."""
    total = (action.expires_at - action.created_at).total_seconds()
    if total <= 0:
        return 0
    left = (action.expires_at - now).total_seconds()
    return max(0, min(100, round(100 * left / total)))


def _shown(value: datetime) -> str:
    """A datetime as ``{{ value }}`` prints it (local time, the locale's DATETIME_FORMAT)."""
    return formats.localize(timezone.template_localtime(value))


def queue_rows(actions: Sequence[ActionRequest], *, now: datetime | None = None) -> list[dict[str, Any]]:
    """What each row shows, in order; one query (the approvals of these actions)."""
    now = now or timezone.now()
    approvals = desk.approval_counts([a.pk for a in actions])
    detail = reverse("approvals:detail", args=[_PLACEHOLDER])
    placeholder = str(_PLACEHOLDER)
    rows = []
    for action in actions:
        action_id = str(action.pk)
        pending = action.status == ActionStatus.PENDING
        row = {
            "id": action_id,
            "href": detail.replace(placeholder, action_id),
            "risk": action.risk,
            "status": action.status,
            # Agent text, with invisible characters and look-alike letters marked (approvals/presentation/display.py).
            "summary": mark_html(action.summary),
            "action_type": action.action_type,
            "on_behalf_of": mark_html(action.on_behalf_of) if action.on_behalf_of else "",
            "on_behalf_of_resolved": action.on_behalf_of_user_id is not None,
            "agent": action.agent.name,
            "approvals": str(approvals.get(action.pk, 0)),
            "required": str(action.required_approvals),
            "created_iso": action.created_at.isoformat(),
            "created_title": _shown(action.created_at),
            "age": timesince(action.created_at, now),
            "pending": pending,
            # The soft lock (approvals.services.claims): who is working on it, for everyone to see.
            "claimed_by": action.claimed_by.get_username() if action.claimed_by_id else "",
        }
        if pending:
            row.update(
                expiry_state=expiry_state(action.expires_at, now),
                expires_iso=action.expires_at.isoformat(),
                expires_title=_shown(action.expires_at),
                expires_in=timeuntil(action.expires_at, now),
                time_left=str(time_left_percent(action, now)),
            )
        rows.append(row)
    return rows
