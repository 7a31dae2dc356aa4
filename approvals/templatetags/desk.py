"""Template helpers for the reviewer's desk: ``{% load desk %}``. They return plain text (auto-escaped)."""

from __future__ import annotations

from django import template

register = template.Library()


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
