"""Links in what an agent supplied (its context, source, links, trace URL) made clickable, safely.

Only ``http`` and ``https`` URLs with a host become links; each opens in a new tab with
``rel="noopener noreferrer"`` (the opened page gets no handle on the reviewer's tab and no referrer),
and its host is shown next to it, so ``https://github.com.evil.example/…`` reads as what it is. A URL
holding a character the reviewer could not see or could misread stays text, marked like all text by
approvals/presentation/display.py. Everything else is escaped and marked exactly as ``visible`` does.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from approvals.presentation.display import mark_html, pieces

# A URL as written in prose: up to white space or a quote/angle bracket; trailing punctuation is trimmed below.
_URL = re.compile(r"""https?://[^\s<>"'`]+""", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""
MAX_LINK_CHARS = 2000


def link_host(url: str) -> str | None:
    """The host a URL leads to, or None when it must not be a link (not http/https, no host, hidden characters)."""
    if len(url) > MAX_LINK_CHARS or any(p.kind != "text" for p in pieces(url)):
        return None
    if any(ch.isspace() or ord(ch) < 32 or ch == "\\" for ch in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return host


def _anchor(url: str, host: str) -> str:
    return (
        f'<a class="ext-link" href="{escape(url)}" target="_blank" rel="noopener noreferrer">{escape(url)}</a>'
        f' <span class="link-host">({escape(host)})</span>'
    )


def linkify(text: Any) -> SafeString:
    """``text`` as safe HTML: http(s) URLs as links with their host, everything else escaped and marked."""
    text = "" if text is None else str(text)
    out: list[str] = []
    at = 0
    for match in _URL.finditer(text):
        url = match.group().rstrip(_TRAILING)
        # Keep a closing bracket that belongs to the URL (…/Foo_(bar)).
        if url.count("(") > url.count(")") and match.group()[len(url) : len(url) + 1] == ")":
            url += ")"
        host = link_host(url)
        if host is None:
            continue
        start = match.start()
        out.append(str(mark_html(text[at:start])))
        out.append(_anchor(url, host))
        at = start + len(url)
    out.append(str(mark_html(text[at:])))
    return mark_safe("".join(out))  # noqa: S308 - text through mark_html (escaped), URLs escaped in _anchor
