"""Template helpers for the reviewer's desk: ``{% load desk %}``. They return plain text (auto-escaped)."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

from approvals.models import OutboxMessage

register = template.Library()

SOON = 2 * 3600
URGENT = 15 * 60


@register.simple_tag
def live_seq() -> int:
    """The newest push when the page was drawn: the page's socket catches up from here (approvals.events)."""
    return (
        OutboxMessage.objects.filter(kind=OutboxMessage.Kind.PUSH).order_by("-id").values_list("id", flat=True).first()
        or 0
    )


@register.filter
def duration(seconds) -> str:
    """12 s, 4 min, 1 h 5 min, 2 d 3 h; an em dash for nothing."""
    if seconds is None:
        return "—"
    seconds = max(0, round(float(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@register.filter
def percent(fraction) -> str:
    return "—" if fraction is None else f"{round(100 * float(fraction))}%"


@register.filter
def expiry_state(expires_at: datetime | None) -> str:
    """A CSS class for how close the deadline is: expired, urgent (< 15 min), soon (< 2 h), or nothing."""
    if expires_at is None:
        return ""
    left = (expires_at - timezone.now()).total_seconds()
    if left <= 0:
        return "expired"
    if left < URGENT:
        return "urgent"
    return "soon" if left < SOON else ""


@register.filter
def time_left_percent(action) -> int:
    """How much of its time to live a pending action has left, 0-100 (the bar under "Expires")."""
    total = (action.expires_at - action.created_at).total_seconds()
    if total <= 0:
        return 0
    left = (action.expires_at - timezone.now()).total_seconds()
    return max(0, min(100, round(100 * left / total)))
