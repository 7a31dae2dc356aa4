"""Diffs reviewers read: text (unified and side by side, word-level) and JSON (structured).

The output is plain data (rows of segments); templates render it with
auto-escaping, so nothing agent-supplied is ever marked safe here. Large
diffs are collapsed to hunks with context and capped with a notice; the
collapsed lines travel with the hunk marker so a reviewer can expand them in
place. Changed lines are compared word by word (a word, a run of spaces, or one
punctuation character), so a reviewer sees ``bob`` → ``dana`` rather than a
scatter of changed letters.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

CONTEXT_LINES = 3
MAX_INPUT_CHARS = 512 * 1024
MAX_ROWS = 2000
# Intra-line highlighting is quadratic-ish; skip it for very long lines.
MAX_INTRALINE_CHARS = 2000
# A collapsed run longer than this is not carried for expansion (the page would weigh too much).
MAX_EXPANDABLE = 400
# The tokens a changed line is compared by: a word, a run of white space, or one other character.
_WORD = re.compile(r"\w+|\s+|[^\w\s]", re.UNICODE)


@dataclass
class Segment:
    text: str
    changed: bool = False


@dataclass
class Row:
    """One row of a side-by-side diff; a unified diff is derived from the same rows."""

    kind: str  # "equal" | "delete" | "insert" | "replace" | "skip"
    old_no: int | None = None
    new_no: int | None = None
    old: list[Segment] = field(default_factory=list)
    new: list[Segment] = field(default_factory=list)
    skipped: int = 0  # for "skip": how many unchanged lines are collapsed here
    hidden: list[Row] = field(default_factory=list)  # for "skip": those lines, to expand (empty when too many)


@dataclass
class UnifiedLine:
    """One line of the unified view: both line numbers, so old and new numbering never mix."""

    sign: str  # "-" old, "+" new, " " context, "…" collapsed
    old_no: int | None
    new_no: int | None
    segments: list[Segment]
    skipped: int = 0
    hidden: list[UnifiedLine] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return {"-": "del", "+": "ins", " ": "ctx"}.get(self.sign, "gap")

    @property
    def whole(self) -> bool:
        """Every segment changed: the row colour says it all, no word marks needed."""
        return bool(self.segments) and all(s.changed for s in self.segments)


@dataclass
class TextDiff:
    rows: list[Row]
    added: int
    removed: int
    truncated: str = ""  # a notice when the diff was cut
    language: str = ""  # what the text reads as, for syntax highlighting (guess_language)

    @property
    def unchanged(self) -> bool:
        return self.added == 0 and self.removed == 0

    def unified(self) -> list[tuple[str, int | None, list[Segment]]]:
        """(sign, line number, segments) rows: '-' old, '+' new, ' ' context, '…' skipped."""
        out: list[tuple[str, int | None, list[Segment]]] = []
        for row in self.rows:
            if row.kind == "skip":
                out.append(("…", None, [Segment(f"{row.skipped} unchanged line(s)")]))
            elif row.kind == "equal":
                out.append((" ", row.new_no, row.new))
            else:
                if row.old_no is not None:
                    out.append(("-", row.old_no, row.old))
                if row.new_no is not None:
                    out.append(("+", row.new_no, row.new))
        return out

    def unified_lines(self) -> list[UnifiedLine]:
        """The unified view with an old and a new line-number column; collapsed runs carry their lines."""
        out: list[UnifiedLine] = []
        for row in self.rows:
            if row.kind == "skip":
                hidden = [UnifiedLine(" ", r.old_no, r.new_no, r.new) for r in row.hidden]
                out.append(UnifiedLine("…", None, None, [], skipped=row.skipped, hidden=hidden))
            elif row.kind == "equal":
                out.append(UnifiedLine(" ", row.old_no, row.new_no, row.new))
            else:
                if row.old_no is not None:
                    out.append(UnifiedLine("-", row.old_no, None, row.old))
                if row.new_no is not None:
                    out.append(UnifiedLine("+", None, row.new_no, row.new))
        return out


def _merge(segments: list[Segment]) -> list[Segment]:
    """Adjacent segments of the same kind as one (fewer ``<mark>`` elements, same text)."""
    out: list[Segment] = []
    for segment in segments:
        if not segment.text:
            continue
        if out and out[-1].changed == segment.changed:
            out[-1] = Segment(out[-1].text + segment.text, segment.changed)
        else:
            out.append(segment)
    return out


def _intraline(old: str, new: str) -> tuple[list[Segment], list[Segment]]:
    """Word-level changes between two lines; white space between two changed words is marked with them."""
    if len(old) + len(new) > MAX_INTRALINE_CHARS:
        return [Segment(old, True)], [Segment(new, True)]
    old_words, new_words = _WORD.findall(old), _WORD.findall(new)
    matcher = difflib.SequenceMatcher(None, old_words, new_words, autojunk=False)
    a: list[Segment] = []
    b: list[Segment] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        changed = tag != "equal"
        # A lone space kept between two changes reads as part of one edit ("red car" → "blue bike").
        if not changed and i2 - i1 == 1 and old_words[i1].isspace() and a and a[-1].changed and i2 < len(old_words):
            changed = True
        a.extend(Segment(w, changed) for w in old_words[i1:i2])
        b.extend(Segment(w, changed) for w in new_words[j1:j2])
    return _merge(a), _merge(b)


def text_diff(before: str, after: str, *, context: int = CONTEXT_LINES, language: str | None = None) -> TextDiff:
    notice = ""
    if len(before) > MAX_INPUT_CHARS or len(after) > MAX_INPUT_CHARS:
        notice = f"Only the first {MAX_INPUT_CHARS // 1024} KiB of each side are compared."
        before, after = before[:MAX_INPUT_CHARS], after[:MAX_INPUT_CHARS]
    old_lines, new_lines = before.splitlines(), after.splitlines()
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    rows: list[Row] = []
    added = removed = 0
    old_at = new_at = 0  # where the previous hunk ended, on each side

    def collapsed(i1: int, i2: int, j1: int) -> Row:
        """Unchanged old lines i1..i2 (new lines from j1) as one "skip" row that can be expanded."""
        count = i2 - i1
        hidden = []
        if count <= MAX_EXPANDABLE:
            hidden = [
                Row("equal", i1 + k + 1, j1 + k + 1, [Segment(old_lines[i1 + k])], [Segment(old_lines[i1 + k])])
                for k in range(count)
            ]
        return Row("skip", skipped=count, hidden=hidden)

    for group in matcher.get_grouped_opcodes(context) if old_lines != new_lines else []:
        first = group[0]
        if first[1] > old_at:
            rows.append(collapsed(old_at, first[1], new_at))
        old_at, new_at = group[-1][2], group[-1][4]
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for k in range(i2 - i1):
                    line = [Segment(old_lines[i1 + k])]
                    rows.append(Row("equal", i1 + k + 1, j1 + k + 1, line, line))
            elif tag == "replace":
                pairs = max(i2 - i1, j2 - j1)
                for k in range(pairs):
                    old = old_lines[i1 + k] if i1 + k < i2 else None
                    new = new_lines[j1 + k] if j1 + k < j2 else None
                    if old is not None and new is not None:
                        a, b = _intraline(old, new)
                        rows.append(Row("replace", i1 + k + 1, j1 + k + 1, a, b))
                    elif old is not None:
                        rows.append(Row("delete", i1 + k + 1, None, [Segment(old, True)], []))
                    else:
                        rows.append(Row("insert", None, j1 + k + 1, [], [Segment(new, True)]))
                removed += i2 - i1
                added += j2 - j1
            elif tag == "delete":
                rows.extend(Row("delete", i + 1, None, [Segment(old_lines[i], True)], []) for i in range(i1, i2))
                removed += i2 - i1
            elif tag == "insert":
                rows.extend(Row("insert", None, j + 1, [], [Segment(new_lines[j], True)]) for j in range(j1, j2))
                added += j2 - j1
        if len(rows) > MAX_ROWS:
            rows = rows[:MAX_ROWS]
            notice = f"The diff is longer than {MAX_ROWS} lines; only the first {MAX_ROWS} are shown."
            break
    else:
        if rows and len(old_lines) > old_at:
            rows.append(collapsed(old_at, len(old_lines), new_at))
    if language is None:
        language = guess_language(after or before)
    return TextDiff(rows=rows, added=added, removed=removed, truncated=notice, language=language)


_NGINX = re.compile(
    r"^\s*(server|location|upstream|http|events)\b[^\n]*\{|^\s*(listen|proxy_pass|server_name|root)\s", re.M
)
_INI = re.compile(r"^\s*\[[^\]\n]+\]\s*$", re.M)
_YAML = re.compile(r"^(---\s*$|\s*[\w.-]+:(\s|$)|\s*- )", re.M)
_MARKDOWN = re.compile(r"^(#{1,6} |```|\* |- \[|> )", re.M)
_CODE = {
    "python": re.compile(r"^\s*(def |class |import |from \S+ import )", re.M),
    "javascript": re.compile(r"^\s*(function |const |let |export |import .* from )", re.M),
    "bash": re.compile(r"^(#!/bin/(ba)?sh|\s*(set -e|echo |export [A-Z_]+=))", re.M),
    "xml": re.compile(r"^\s*<(\?xml|!DOCTYPE|html|[a-zA-Z][\w:-]*[ >])", re.M),
}


def guess_language(text: str) -> str:
    """The highlight.js language a document reads as ("" when unsure: it is then shown plain).

    Content decides, not a file name the agent chose: JSON that parses, nginx blocks, INI sections,
    Markdown headings and fences, YAML keys, then a few programming languages by their first words.
    """
    sample = text[:20000]
    stripped = sample.strip()
    if stripped[:1] in "{[" and stripped:
        try:
            json.loads(text)
            return "json"
        except ValueError:
            pass
    if _NGINX.search(sample):
        return "nginx"
    if _INI.search(sample) and re.search(r"^\s*[\w.-]+\s*=", sample, re.M):
        return "ini"
    for name, pattern in _CODE.items():
        if pattern.search(sample):
            return name
    if _MARKDOWN.search(sample):
        return "markdown"
    if len(_YAML.findall(sample)) >= 2:
        return "yaml"
    return ""


# --- JSON ---------------------------------------------------------------------------------


@dataclass
class JsonChange:
    path: str  # e.g. "members[2].name"
    kind: str  # "added" | "removed" | "changed"
    before: Any = None
    after: Any = None


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    plain = text.isidentifier()
    return (f"{path}.{text}" if path else text) if plain else f"{path}[{text!r}]"


def json_diff(before: Any, after: Any, *, limit: int = MAX_ROWS) -> tuple[list[JsonChange], str]:
    """Changes from ``before`` to ``after`` by path; (changes, notice when capped)."""
    changes: list[JsonChange] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if len(changes) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                sub = _join(path, key)
                if key not in b:
                    changes.append(JsonChange(sub, "removed", before=a[key]))
                elif key not in a:
                    changes.append(JsonChange(sub, "added", after=b[key]))
                else:
                    walk(a[key], b[key], sub)
        elif isinstance(a, list) and isinstance(b, list):
            for i in range(max(len(a), len(b))):
                sub = _join(path, i)
                if i >= len(b):
                    changes.append(JsonChange(sub, "removed", before=a[i]))
                elif i >= len(a):
                    changes.append(JsonChange(sub, "added", after=b[i]))
                else:
                    walk(a[i], b[i], sub)
        elif a != b or type(a) is not type(b):
            changes.append(JsonChange(path or "(whole value)", "changed", before=a, after=b))

    walk(before, after, "")
    notice = f"More than {limit} changes; only the first {limit} are listed." if len(changes) >= limit else ""
    return changes, notice
