"""Diffs reviewers read: text (unified and side by side, intra-line) and JSON (structured).

The output is plain data (rows of segments); templates render it with
auto-escaping, so nothing agent-supplied is ever marked safe here. Large
diffs are collapsed to hunks with context and capped with a notice.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

CONTEXT_LINES = 3
MAX_INPUT_CHARS = 512 * 1024
MAX_ROWS = 2000
# Intra-line highlighting is quadratic-ish; skip it for very long lines.
MAX_INTRALINE_CHARS = 2000


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


@dataclass
class TextDiff:
    rows: list[Row]
    added: int
    removed: int
    truncated: str = ""  # a notice when the diff was cut

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


def _intraline(old: str, new: str) -> tuple[list[Segment], list[Segment]]:
    if len(old) + len(new) > MAX_INTRALINE_CHARS:
        return [Segment(old, True)], [Segment(new, True)]
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    a: list[Segment] = []
    b: list[Segment] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            a.append(Segment(old[i1:i2]))
            b.append(Segment(new[j1:j2]))
        else:
            if i2 > i1:
                a.append(Segment(old[i1:i2], True))
            if j2 > j1:
                b.append(Segment(new[j1:j2], True))
    return a, b


def text_diff(before: str, after: str, *, context: int = CONTEXT_LINES) -> TextDiff:
    notice = ""
    if len(before) > MAX_INPUT_CHARS or len(after) > MAX_INPUT_CHARS:
        notice = f"Only the first {MAX_INPUT_CHARS // 1024} KiB of each side are compared."
        before, after = before[:MAX_INPUT_CHARS], after[:MAX_INPUT_CHARS]
    old_lines, new_lines = before.splitlines(), after.splitlines()
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    rows: list[Row] = []
    added = removed = 0
    for group in matcher.get_grouped_opcodes(context) if old_lines != new_lines else []:
        first = group[0]
        skipped_before = first[1] - (rows_end_old(rows) or 0)
        if skipped_before > 0:
            rows.append(Row("skip", skipped=skipped_before))
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
        tail = len(old_lines) - (rows_end_old(rows) or 0)
        if rows and tail > 0:
            rows.append(Row("skip", skipped=tail))
    return TextDiff(rows=rows, added=added, removed=removed, truncated=notice)


def rows_end_old(rows: list[Row]) -> int | None:
    """The last old-side line number the rows reached."""
    for row in reversed(rows):
        if row.old_no is not None:
            return row.old_no
    return None


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
