"""Slack mrkdwn rendered as HTML, roughly as Slack shows it, for reviewers.

Everything is escaped first; only the markup this module writes itself is
HTML. Links are made only for http(s) URLs (with the real address in a
``title`` so a label cannot hide it); every other ``<...>`` stays text.
Bidirectional-override characters (the "Trojan Source" kind), zero-width and
other invisible characters, and look-alike letters in mixed-script names are
shown as visible markers (approvals/presentation/display.py) instead of being allowed to
hide or reorder what a reviewer reads.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from approvals.presentation.display import is_invisible, marked_html_pieces

# Placeholders: \x00<n>\x00 (NUL is removed from the input first, so none can be forged).
_PH = "\x00{}\x00"
_PH_RE = re.compile("\x00(\\d+)\x00")

_PRE_RE = re.compile(r"```(.*?)```", re.DOTALL)
_CODE_RE = re.compile(r"`([^`\n]+)`")
# An angle-bracket token, as it looks after escaping: &lt;...&gt; with no nested &lt; or newline.
_ANGLE_RE = re.compile(r"&lt;((?:(?!&lt;|&gt;)[^\n])+)&gt;")
_USER_RE = re.compile(r"@([UW][A-Z0-9]+)(?:\|([^|]+))?")
_CHANNEL_RE = re.compile(r"#([CGD][A-Z0-9]+)(?:\|([^|]*))?")
_SPECIAL = {"here": "@here", "channel": "@channel", "everyone": "@everyone"}


def _emphasis(marker: str) -> re.Pattern[str]:
    m = re.escape(marker)
    # Opening marker at a word boundary, followed by non-space; closing marker after non-space, before a boundary.
    # Letters and digits count as "inside a word"; the other markers do not, so *_both_* nests.
    return re.compile(rf"(?<![^\W_])(?<!{m}){m}(?=\S)([^{m}\n]*?\S){m}(?![^\W_])(?!{m})")


_EMPHASIS = [(_emphasis("*"), "strong"), (_emphasis("_"), "em"), (_emphasis("~"), "del")]


class _Renderer:
    def __init__(self) -> None:
        self.stash: list[str] = []

    def keep(self, fragment: str) -> str:
        """Set an HTML fragment aside so later passes leave it alone; returns its placeholder."""
        self.stash.append(fragment)
        return _PH.format(len(self.stash) - 1)

    def restore(self, text: str) -> str:
        # Fragments hold placeholders of earlier fragments (a link inside bold), so repeat until none is left.
        for _ in range(len(self.stash) + 1):
            if "\x00" not in text:
                break
            text = _PH_RE.sub(lambda m: self.stash[int(m.group(1))], text)
        return text

    def emphasis(self, text: str, passes=tuple(_EMPHASIS)) -> str:
        """Bold, italic, strike; each match's inside gets the later passes, so nesting stays well-formed."""
        for i, (pattern, tag) in enumerate(passes):
            inner = passes[i + 1 :]
            text = pattern.sub(
                lambda m, tag=tag, inner=inner: self.keep(f"<{tag}>{self.emphasis(m.group(1), inner)}</{tag}>"),
                text,
            )
        return text

    def pre(self, match: re.Match[str]) -> str:
        body = match.group(1)
        body = body.removeprefix("\n").removesuffix("\n")
        return self.keep(f'<pre class="mrkdwn-pre">{body}</pre>')

    def code(self, match: re.Match[str]) -> str:
        return self.keep(f'<code class="mrkdwn-code">{match.group(1)}</code>')

    def angle(self, match: re.Match[str]) -> str:
        inner = match.group(1)  # still escaped
        if inner.startswith("@"):
            found = _USER_RE.fullmatch(inner)
            if found:
                label = found.group(2) or found.group(1)
                return self.keep(f'<span class="mrkdwn-mention" title="{found.group(1)}">@{label}</span>')
        elif inner.startswith("#"):
            found = _CHANNEL_RE.fullmatch(inner)
            if found:
                label = found.group(2) or found.group(1)
                return self.keep(f'<span class="mrkdwn-channel" title="{found.group(1)}">#{label}</span>')
        elif inner.startswith("!"):
            special = inner[1:].split("|", 1)
            if special[0] in _SPECIAL:
                return self.keep(f'<span class="mrkdwn-mention mrkdwn-broadcast">{_SPECIAL[special[0]]}</span>')
            if special[0].startswith(("subteam^", "date^")) and len(special) == 2 and special[1]:
                return self.keep(f'<span class="mrkdwn-mention">{special[1]}</span>')
        else:
            url, _, label = inner.partition("|")
            if _is_web_url(html.unescape(url)):
                shown = self.emphasis(label) if label else url
                return self.keep(
                    f'<a href="{url}" title="{url}" rel="noopener noreferrer nofollow" target="_blank">{shown}</a>'
                )
        return match.group(0)  # anything else stays text (it is escaped already)

    def marks(self, text: str) -> str:
        """Invisible characters and look-alike letters as visible markers, set aside like any other markup."""
        return "".join(self.keep(html) if marked else html for marked, html in marked_html_pieces(text))


def _is_web_url(url: str) -> bool:
    if not url or any(
        ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or is_invisible(url, i) for i, ch in enumerate(url)
    ):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (
        parts.scheme.lower() in ("http", "https") and bool(parts.netloc) and url.lower().startswith(("http:", "https:"))
    )


def _quotes(lines: list[str]) -> str:
    """Join lines with <br>, folding runs of '> ' lines (and everything after '>>>') into blockquotes."""
    blocks: list[tuple[bool, list[str]]] = []  # (is a quote, its lines)
    for i, line in enumerate(lines):
        if line.startswith("&gt;&gt;&gt;"):
            blocks.append((True, [line[len("&gt;&gt;&gt;") :].lstrip(" "), *lines[i + 1 :]]))
            break
        quoted = line.startswith("&gt;")
        if quoted:
            line = line[len("&gt;") :].removeprefix(" ")
        if blocks and blocks[-1][0] == quoted:
            blocks[-1][1].append(line)
        else:
            blocks.append((quoted, [line]))
    # A blockquote is a block of its own: no <br> next to it.
    return "".join(
        f'<blockquote class="mrkdwn-quote">{"<br>".join(body)}</blockquote>' if quoted else "<br>".join(body)
        for quoted, body in blocks
    )


def mrkdwn_to_html(text: str) -> SafeString:
    """Render Slack mrkdwn ``text`` as safe HTML."""
    text = str(text).replace("\x00", "\ufffd").replace("\r\n", "\n").replace("\r", "\n")
    r = _Renderer()
    out = escape(text)  # first, always: nothing below ever sees a raw '<', '>', '&' or quote
    out = r.marks(out)
    out = _PRE_RE.sub(r.pre, out)
    out = _CODE_RE.sub(r.code, out)
    out = _ANGLE_RE.sub(r.angle, out)
    out = r.emphasis(out)
    out = _quotes(out.split("\n"))
    out = r.restore(out)
    # Slack's own escapes (&amp; &lt; &gt; in the source) show as the characters; they stay escaped here.
    out = out.replace("&amp;lt;", "&lt;").replace("&amp;gt;", "&gt;").replace("&amp;amp;", "&amp;")
    return mark_safe(out)  # noqa: S308 - built only from escaped text and the fixed markup above
