"""What the reviewer reads is what will run: invisible characters and mixed-script names, made visible.

One place decides which characters a reviewer could not see or could misread, and how they are shown:

- **Invisible or reordering characters** (bidi controls such as U+202E, zero-width characters, the
  byte-order mark, soft hyphen, C0/C1 controls other than newline and tab, line/paragraph
  separators, variation selectors, tag characters, Hangul fillers, lone surrogates …) are replaced by
  a visible marker such as ``⟨U+202E⟩``. Emoji keep their joiners and presentation selectors (a
  zero-width joiner between two pictographs, U+FE0F after one): those cannot hide a letter.
- **Homoglyph-mixed names**: in a token (letters, digits, ``_ . @ -``) that mixes Latin with Cyrillic
  or Greek letters, the letters of the minority script are marked, e.g. ``prod-⟨Cyrillic … U+0430⟩dmins``
  for a Cyrillic U+0430 in place of the ``a``.

Only the display changes: stored parameters are never touched (what runs is what the agent sent, or
the reviewer's edit). Every screen that shows agent-supplied text goes through here: the pages (the
``visible`` filters in approvals/templatetags/countersign.py), Slack (approvals/slack/blocks.py) and
email (approvals/notify/email.py). ``findings`` lists what was found, for the warnings shown above a
proposal that contains any of it.

Imports nothing from Countersign: pure functions of text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

MARK_OPEN, MARK_CLOSE = "⟨", "⟩"

# Short names for the characters a reviewer is most likely to meet (unicodedata has none for controls).
_NAMES = {
    "\t": "CHARACTER TABULATION",
    "\n": "LINE FEED",
    "\r": "CARRIAGE RETURN",
    "\x00": "NULL",
    "\x1b": "ESCAPE",
    "\x7f": "DELETE",
    "\x85": "NEXT LINE",
}

# Default-ignorable characters that are not format characters (category Cf): they render as nothing.
_IGNORABLE = frozenset(
    [
        *(0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x2800, 0x3164, 0xFFA0),
        *range(0xFE00, 0xFE10),  # variation selectors
        *range(0xE0100, 0xE01F0),  # variation selectors supplement
    ]
)
_ALWAYS_CATEGORIES = frozenset({"Cf", "Cs", "Zl", "Zp"})
_ZWJ, _VS15, _VS16, _KEYCAP = "\u200d", "\ufe0e", "\ufe0f", "\u20e3"
_SKIN_TONES = range(0x1F3FB, 0x1F400)

# A token whose letters could be read as another name: identifiers, channels, paths segments, addresses.
_TOKEN = re.compile(r"[\w.@-]+")
_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")


def char_name(ch: str) -> str:
    """The Unicode name of ``ch`` (or a description when it has none)."""
    if ch in _NAMES:
        return _NAMES[ch]
    try:
        return unicodedata.name(ch)
    except ValueError:
        category = unicodedata.category(ch)
        if category == "Cs":
            return "LONE SURROGATE"
        return "CONTROL CHARACTER" if category == "Cc" else "UNNAMED CHARACTER"


def code(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def _pictographic(ch: str) -> bool:
    return unicodedata.category(ch) == "So" or ord(ch) in _SKIN_TONES


def is_invisible(text: str, i: int) -> bool:
    """Whether the character at ``text[i]`` is one a reader could not see (or that reorders what they see)."""
    ch = text[i]
    o = ord(ch)
    if ch in "\n\t":
        return False
    if ch == "\r":
        return not text.startswith("\n", i + 1)  # a CR of a CRLF line end is a line end
    category = unicodedata.category(ch)
    if category == "Cc":
        return True
    prev = text[i - 1] if i > 0 else ""
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if ch == _ZWJ:
        # Inside an emoji sequence (👩‍❤️‍👨): between two pictographs, possibly after a presentation selector
        # that itself follows one (a stray selector is marked, and so is a joiner leaning on it).
        after_emoji = _pictographic(prev) if prev else False
        if prev == _VS16 and i > 1:
            after_emoji = _pictographic(text[i - 2])
        return not (after_emoji and nxt and _pictographic(nxt))
    if ch in (_VS15, _VS16):
        return not (prev and (_pictographic(prev) or (prev in "0123456789#*" and nxt == _KEYCAP)))
    return category in _ALWAYS_CATEGORIES or o in _IGNORABLE or 0xE0000 <= o <= 0xE007F


def _script(ch: str) -> str:
    """LATIN, CYRILLIC, GREEK or "" for a letter of none of them (or not a letter)."""
    if not ch.isalpha():
        return ""
    name = char_name(ch)
    for script in _SCRIPTS:
        if name.startswith(script):
            return script
    return ""


def _homoglyph_positions(text: str) -> dict[int, str]:
    """{index: script} for each letter that makes its token mix Latin with Cyrillic or Greek."""
    found: dict[int, str] = {}
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token.isascii():
            continue
        counts: dict[str, int] = {}
        for ch in token:
            script = _script(ch)
            if script:
                counts[script] = counts.get(script, 0) + 1
        if "LATIN" not in counts or len(counts) < 2:
            continue
        # Mark the minority: a Cyrillic U+0430 in a Latin name, or a Latin "e" in a Russian word.
        majority = max(counts, key=lambda s: (counts[s], s == "LATIN"))
        for offset, ch in enumerate(token):
            script = _script(ch)
            if script and script != majority:
                found[match.start() + offset] = script
    return found


@dataclass(frozen=True)
class Piece:
    """A run of ``text`` shown as it is (``kind`` "text"), or one character shown as a ``marker``."""

    text: str
    kind: str = "text"  # "text" | "invisible" | "homoglyph"
    marker: str = ""
    title: str = ""


def _candidates() -> re.Pattern[str]:
    """A character class of every character ``is_invisible`` may flag (in some context), to find them fast."""
    points = [
        c
        for plane in (range(0x0000, 0x20000), range(0xE0000, 0xE1000))  # no format characters elsewhere
        for c in plane
        if c not in (0x09, 0x0A)
        and (unicodedata.category(chr(c)) in ("Cc", *_ALWAYS_CATEGORIES) or c in _IGNORABLE or 0xE0000 <= c <= 0xE007F)
    ]
    ranges: list[tuple[int, int]] = []
    for c in points:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1] = (ranges[-1][0], c)
        else:
            ranges.append((c, c))
    return re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges) + "]")


_CANDIDATE = _candidates()
# Any Cyrillic or Greek letter at all: only then can a name mix them with Latin.
_MIXABLE = re.compile("[\u0370-\u03ff\u0400-\u052f\u1c80-\u1c8f\u1d00-\u1dbf\u1f00-\u1fff\u2de0-\u2dff\ua640-\ua69f]")


def pieces(text: str) -> list[Piece]:
    """``text`` cut into plain runs and marked characters, in order."""
    text = str(text)
    marks: dict[int, Piece] = {}
    if _MIXABLE.search(text):
        for i, script in _homoglyph_positions(text).items():
            ch, script = text[i], script.capitalize()
            marker = f"{MARK_OPEN}{script} {ch} {code(ch)}{MARK_CLOSE}"
            title = f"{code(ch)} {char_name(ch)}: a {script} letter in a name that mixes scripts (a look-alike?)"
            marks[i] = Piece(ch, "homoglyph", marker, title)
    for found in _CANDIDATE.finditer(text):
        i = found.start()
        if i not in marks and is_invisible(text, i):
            ch = text[i]
            marks[i] = Piece(ch, "invisible", f"{MARK_OPEN}{code(ch)}{MARK_CLOSE}", f"{code(ch)} {char_name(ch)}")
    if not marks:
        return [Piece(text)] if text else []
    out: list[Piece] = []
    run_start = 0
    for i in sorted(marks):
        if run_start < i:
            out.append(Piece(text[run_start:i]))
        out.append(marks[i])
        run_start = i + 1
    if run_start < len(text):
        out.append(Piece(text[run_start:]))
    return out


def mark_invisible(text: Any) -> str:
    """``text`` as plain text with every invisible character and mixed-script letter visibly marked."""
    return "".join(p.marker or p.text for p in pieces("" if text is None else str(text)))


def _piece_html(piece: Piece) -> str:
    if piece.kind == "text":
        return escape(piece.text)
    css = "invisible-char" if piece.kind == "invisible" else "homoglyph"
    return f'<span class="{css}" title="{escape(piece.title)}">{escape(piece.marker)}</span>'


def mark_html(text: Any) -> SafeString:
    """``text`` as safe HTML: escaped, with each marker in a highlighted ``<span>`` naming the character."""
    html = "".join(_piece_html(p) for p in pieces("" if text is None else str(text)))
    return mark_safe(html)  # noqa: S308 - every piece is escaped above; only our own span is markup


def marked_html_pieces(text: str) -> list[tuple[bool, str]]:
    """(is a marker, fragment) for ``text``: plain runs as they are (unescaped), markers as their HTML span.

    For renderers that escape on their own (approvals/slack/mrkdwn.py escapes before it parses mrkdwn).
    """
    return [(p.kind != "text", p.text if p.kind == "text" else _piece_html(p)) for p in pieces(text)]


def segments_html(segments: Any) -> SafeString:
    """Diff segments (``.text``, ``.changed``) as safe HTML, changed ones in ``<mark>``.

    Mixed-script names are found on the whole line, so a changed segment holding only the Cyrillic
    U+0430 that stands for the ``a`` of ``prod-admins`` is still flagged.
    """
    segments = list(segments or [])
    line = "".join(s.text for s in segments)
    marked = pieces(line)
    out: list[str] = []
    # Walk the line's pieces and the segments together; a marker is one character, so never straddles two.
    position = 0
    bounds = []
    for segment in segments:
        bounds.append((position, position + len(segment.text), segment.changed))
        position += len(segment.text)
    offset = 0
    flat: list[tuple[int, Piece]] = []
    for piece in marked:
        flat.append((offset, piece))
        offset += len(piece.text)
    for start, end, changed in bounds:
        parts: list[str] = []
        for at, piece in flat:
            lo, hi = max(at, start), min(at + len(piece.text), end)
            if lo >= hi:
                continue
            if piece.kind == "text":
                parts.append(escape(piece.text[lo - at : hi - at]))
            else:
                parts.append(_piece_html(piece))
        inner = "".join(parts)
        out.append(f"<mark>{inner}</mark>" if changed else inner)
    return mark_safe("".join(out))  # noqa: S308 - built from escaped text and our own markup


# --- JSON -------------------------------------------------------------------------------------


def pretty_json(value: Any) -> str:
    """Parameters as reviewers read them: indented, keys sorted, unicode as is (mark the result for display)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def json_for_editing(value: Any) -> str:
    """Pretty JSON whose invisible and mixed-script characters are ``\\uXXXX`` escapes.

    For the "approve with edits" box: the reviewer sees every such character, and the JSON still
    parses back to exactly the same value (a marker would change it).
    """
    return escape_json_text(pretty_json(value))


def escape_json_text(text: str) -> str:
    """Serialised JSON with each invisible or mixed-script character rewritten as its ``\\uXXXX`` escape."""
    out: list[str] = []
    for piece in pieces(text):
        if piece.kind == "text":
            out.append(piece.text)
        else:  # only inside JSON strings: outside them, json.dumps writes ASCII punctuation only
            out.append(json.dumps(piece.text, ensure_ascii=True)[1:-1])
    return "".join(out)


# --- findings ---------------------------------------------------------------------------------

MAX_FINDINGS = 20
_MAX_DEPTH = 64


def _describe(where: str, text: str) -> list[str]:
    found = pieces(text)
    invisible = sorted({p.text for p in found if p.kind == "invisible"})
    mixed = [p for p in found if p.kind == "homoglyph"]
    out = []
    if invisible:
        names = ", ".join(f"{code(ch)} {char_name(ch)}" for ch in invisible[:5])
        more = f" and {len(invisible) - 5} more" if len(invisible) > 5 else ""
        out.append(f"{where}: invisible or control characters ({names}{more})")
    if mixed:
        scripts = sorted({p.marker.split()[0].lstrip(MARK_OPEN) for p in mixed})
        out.append(f"{where}: a name mixes Latin with {' and '.join(scripts)} letters that look alike")
    return out


def findings(obj: Any, where: str = "") -> list[str]:
    """What a reviewer should be warned about in ``obj`` (text, or JSON: keys and values), one line each."""
    out: list[str] = []

    def walk(value: Any, path: str, depth: int) -> None:
        if len(out) >= MAX_FINDINGS or depth > _MAX_DEPTH:
            return
        if isinstance(value, str):
            out.extend(_describe(path or "text", value))
        elif isinstance(value, dict):
            for key, item in value.items():
                key = str(key)
                sub = f"{path}.{mark_invisible(key)}" if path else mark_invisible(key)
                out.extend(_describe(f"{sub} (the key)", key))
                walk(item, sub, depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]", depth + 1)

    walk(obj, where, 0)
    return out[:MAX_FINDINGS]


def action_findings(action: Any) -> list[str]:
    """``findings`` over everything an agent supplied for ``action``, labelled by field."""
    fields: dict[str, Any] = {
        "summary": action.summary,
        "on behalf of": action.on_behalf_of,
        "context": action.context,
        "params": action.params,
    }
    if getattr(action, "edited_params", None) is not None:
        fields["params as edited"] = action.edited_params
    out: list[str] = []
    for label, value in fields.items():
        out.extend(findings(value, label))
    return out[:MAX_FINDINGS]
