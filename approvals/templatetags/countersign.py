"""Template helpers for Countersign's pages: ``{% load countersign %}``."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from approvals.slack_format import mrkdwn_to_html

register = template.Library()


@register.filter(name="mrkdwn")
def mrkdwn(value) -> SafeString:
    """Slack mrkdwn as safe HTML; the value is treated as raw text (escaped first), whatever its type."""
    return mrkdwn_to_html("" if value is None else str(value))
