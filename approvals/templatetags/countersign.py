"""Template helpers for Countersign's pages: ``{% load countersign %}``.

Agent-supplied text is shown through ``visible`` (HTML: escaped, invisible characters and mixed-script
letters marked in a highlighted span) or ``visible_text`` (plain text, for attributes and ``<title>``),
both from approvals/presentation/display.py, so what a reviewer reads is what will run.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString

from approvals.presentation import display, events, progress
from approvals.slack.mrkdwn import mrkdwn_to_html

register = template.Library()


@register.filter(name="mrkdwn")
def mrkdwn(value) -> SafeString:
    """Slack mrkdwn as safe HTML; the value is treated as raw text (escaped first), whatever its type."""
    return mrkdwn_to_html("" if value is None else str(value))


@register.filter(name="visible")
def visible(value) -> SafeString:
    """Text as safe HTML with every invisible or reordering character, and look-alike letter, marked."""
    return display.mark_html("" if value is None else value)


@register.filter(name="visible_text")
def visible_text(value) -> str:
    """The same marking as plain text (auto-escaped by the template): for attributes and titles."""
    return display.mark_invisible("" if value is None else value)


@register.filter(name="visible_segments")
def visible_segments(segments) -> SafeString:
    """A diff line's segments, changed ones in ``<mark>``, marked as ``visible`` marks text."""
    return display.segments_html(segments)


@register.filter(name="json_for_editing")
def json_for_editing(value: Any) -> str:
    """JSON text (already serialised) with invisible characters written as ``\\uXXXX``: same value, visible."""
    return display.escape_json_text("" if value is None else str(value))


@register.filter(name="status_label")
def status_label(status: str) -> str:
    """A status as the pages show it (approvals.presentation.progress.status_label)."""

    return progress.status_label(status)


@register.filter(name="event_words")
def event_words(event) -> events.EventWords:
    """An audit event in plain words (``.text``) and who did it (``.by``): approvals.presentation.events."""
    return events.describe(event.verb, event.actor_type, event.actor, event.data)


@register.simple_tag
def display_findings(action) -> list[str]:
    """What the detail page warns about: invisible characters and mixed-script names in what the agent sent."""
    return display.action_findings(action)
