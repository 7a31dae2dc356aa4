"""The reviewer's edit form: an action type's JSON Schema mapped to the widgets static/js/edit_form.js draws.

``form_spec`` reads only the schema; what depends on the value (a string that already spans lines, the fields of a
free-form object, a part the schema leaves open) is decided by the script from the value it edits, so switching from
raw JSON back to the form draws what the reviewer typed. Whatever the form builds is sent as the same ``params`` JSON
the approve form always took, and checked by the one edit check (approvals.policies.edits).

``edit_changes`` is the reviewer's edit against the agent's proposal, path by path, with a line diff for text that
spans lines (a config, an e-mail body) rather than two escaped strings. Pure functions: no database, no requests.
"""

from __future__ import annotations

import json
from typing import Any

from approvals.presentation.diffs import TextDiff, json_diff, text_diff

MAX_DEPTH = 8  # deeper than this, the form offers that part as raw JSON

# Strings under these keys are edited in a text area: they hold paragraphs or files.
MULTILINE_KEYS = frozenset(
    {"body", "content", "config", "configuration", "script", "code", "source", "template", "text", "message",
     "question", "description", "markdown", "html", "yaml", "sql", "patch", "diff"}
)  # fmt: skip
# ...and these in a monospaced one: what they hold is code or configuration, where spacing matters.
MONO_KEYS = frozenset({"content", "config", "configuration", "script", "code", "source", "template", "yaml", "sql",
                       "patch", "diff", "html"})  # fmt: skip
# Prose: proportional, whatever else the heuristics say.
PROSE_KEYS = frozenset({"body", "text", "message", "question", "description"})
CODE_FORMATS = frozenset({"json", "yaml", "toml", "ini", "nginx", "xml", "html", "css", "javascript", "python",
                          "shell", "sql", "code", "config", "markdown"})  # fmt: skip
LONG_STRING = 4096  # a string allowed longer than this is not a one-line field (a URL path may take 2,048)


def _type_of(schema: dict[str, Any]) -> str | None:
    """The schema's one type (``["string", "null"]`` reads as string); None when it names none or several."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if len(kinds) == 1 else None
    return kind if isinstance(kind, str) else None


def _string_spec(schema: dict[str, Any], key: str) -> dict[str, Any]:
    media = str(schema.get("contentMediaType") or "").lower()
    fmt = str(schema.get("format") or "").lower()
    name = key.lower()
    code_hint = (bool(media) and media not in ("text/plain", "text/markdown")) or fmt in CODE_FORMATS
    multiline = bool(media) or code_hint or name in MULTILINE_KEYS or int(schema.get("maxLength") or 0) > LONG_STRING
    mono: bool | None = None  # None: the script decides from the text (indentation, braces, `key = value` lines)
    if code_hint or name in MONO_KEYS:
        mono = True
    elif name in PROSE_KEYS or media in ("text/plain", "text/markdown"):
        mono = False
    spec: dict[str, Any] = {"kind": "string", "multiline": multiline, "mono": mono}
    for limit in ("minLength", "maxLength", "pattern"):
        if limit in schema:
            spec[limit] = schema[limit]
    return spec


def form_spec(schema: Any, key: str = "", depth: int = 0) -> dict[str, Any]:
    """The widget for a value of ``schema`` under ``key`` (the property's name, which hints at its content).

    Kinds: ``select`` (an enum), ``string`` (``multiline``, ``mono``: True, False or None = decide from the text),
    ``number`` (``integer``), ``boolean``, ``array`` (``item``), ``object`` (``fields``; ``extra``: the widget for
    keys the schema does not name, or None when it refuses them), ``free`` (the schema does not say: the script
    infers from the value) and ``json`` (raw JSON: a union, a reference, or too deep to draw).
    """
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return {"kind": "json"}
    spec: dict[str, Any]
    choices = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if isinstance(choices, list) and choices:
        spec = {"kind": "select", "options": choices}
    elif any(k in schema for k in ("oneOf", "anyOf", "allOf", "$ref", "not", "if")):
        spec = {"kind": "json"}
    else:
        kind = _type_of(schema)
        if kind is None and "type" in schema:
            spec = {"kind": "json"}  # several types: only raw JSON can say which
        elif kind == "string":
            spec = _string_spec(schema, key)
        elif kind in ("number", "integer"):
            spec = {"kind": "number", "integer": kind == "integer"}
            for limit in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
                if limit in schema:
                    spec[limit] = schema[limit]
        elif kind == "boolean":
            spec = {"kind": "boolean"}
        elif kind == "array":
            items = schema.get("items", {})
            spec = {"kind": "array", "item": form_spec(items, key, depth + 1) if items else {"kind": "free"}}
            for limit in ("minItems", "maxItems", "uniqueItems"):
                if limit in schema:
                    spec[limit] = schema[limit]
        elif kind == "object" or "properties" in schema:
            spec = _object_spec(schema, depth)
        elif kind == "null":
            spec = {"kind": "json"}
        else:
            spec = {"kind": "free"}
    if schema.get("description"):
        spec["help"] = str(schema["description"])
    if schema.get("title"):
        spec["title"] = str(schema["title"])
    return spec


def _object_spec(schema: dict[str, Any], depth: int) -> dict[str, Any]:
    required = set(schema.get("required") or [])
    properties = schema.get("properties") or {}
    fields = [
        {"key": name, "required": name in required, **form_spec(sub, name, depth + 1)}
        for name, sub in properties.items()
    ]
    extra_schema = schema.get("additionalProperties", True)
    extra: dict[str, Any] | None
    if extra_schema is False:
        extra = None
    elif isinstance(extra_schema, dict) and extra_schema:
        extra = form_spec(extra_schema, "", depth + 1)
    else:
        extra = {"kind": "free"}
    spec: dict[str, Any] = {"kind": "object", "fields": fields, "extra": extra}
    if "maxProperties" in schema:
        spec["maxProperties"] = schema["maxProperties"]
    return spec


# --- the edit against the proposal ---------------------------------------------------------------


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _spans_lines(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value


def edit_changes(proposed: dict[str, Any], edited: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """What the reviewer changed, path by path (``params.content``): ``before``/``after`` as JSON text, or ``diff``
    (a TextDiff) for a string that spans lines on either side; and a notice when the list was cut."""
    changes, notice = json_diff(proposed, edited)
    rows: list[dict[str, Any]] = []
    for change in changes:
        path = f"params{change.path}" if change.path.startswith("[") else f"params.{change.path}"
        row: dict[str, Any] = {"path": path, "kind": change.kind}
        if change.kind == "changed" and (_spans_lines(change.before) or _spans_lines(change.after)):
            diff: TextDiff = text_diff(str(change.before), str(change.after))
            row["diff"] = diff
        else:
            row["before"] = _pretty(change.before) if change.kind != "added" else ""
            row["after"] = _pretty(change.after) if change.kind != "removed" else ""
        rows.append(row)
    return rows, notice
