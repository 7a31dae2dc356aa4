"""``linkify``: agent-supplied text with its http(s) URLs as safe links (approvals/presentation/links.py)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from approvals.presentation.links import linkify as _linkify

register = template.Library()


@register.filter(name="linkify")
def linkify(value) -> SafeString:
    return _linkify(value)
