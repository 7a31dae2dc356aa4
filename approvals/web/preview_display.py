"""Turn a Preview into what the templates draw: a text diff, a JSON change list, or a message."""

from __future__ import annotations

import json
from typing import Any

from approvals.presentation.diffs import json_diff, text_diff
from approvals.presentation.previews import fingerprint
from catalog.base import Preview


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else pretty(value)


def preview_display(preview: Preview) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "kind": preview.kind,
        "title": preview.title,
        "notes": preview.notes,
        "error": preview.error,
        "reads_off": preview.reads_off,
        "fingerprint": fingerprint(preview),
        "semantic": preview.semantic,
    }
    if preview.kind == "text":
        shown["diff"] = text_diff(_as_text(preview.before or ""), _as_text(preview.after or ""))
    elif preview.kind == "json":
        changes, notice = json_diff(preview.before, preview.after)
        shown["changes"] = [
            {
                "path": c.path,
                "kind": c.kind,
                "before": pretty(c.before) if c.kind != "added" else "",
                "after": pretty(c.after) if c.kind != "removed" else "",
            }
            for c in changes
        ]
        shown["notice"] = notice
        # Whole documents too, as text, so a reviewer can read context around the changes.
        shown["diff"] = text_diff(pretty(preview.before), pretty(preview.after))
    elif preview.kind == "message":
        shown["message"] = preview.after if isinstance(preview.after, dict) else {"text": _as_text(preview.after)}
    return shown


def edits_display(proposed: dict[str, Any], edited: dict[str, Any] | None) -> dict[str, Any] | None:
    """The reviewer's edits as a diff against the agent's proposal."""
    if edited is None:
        return None
    changes, notice = json_diff(proposed, edited)
    return {
        "changes": [
            {
                "path": f"params.{c.path}" if not c.path.startswith("[") else f"params{c.path}",
                "kind": c.kind,
                "before": pretty(c.before) if c.kind != "added" else "",
                "after": pretty(c.after) if c.kind != "removed" else "",
            }
            for c in changes
        ],
        "notice": notice,
    }
