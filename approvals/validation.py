"""Parameter validation against an action type's JSON Schema, and the one strict JSON reader.

Every place that parses JSON from outside (the API's and HumanLayer's parser, the reviewer's edited
parameters, the policy simulator's form) reads it through ``load_json``, so a body nested 2,000 deep,
a NUL or a lone surrogate is a clear "invalid input" everywhere, never a RecursionError or a database error.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from jsonschema import Draft202012Validator


def schema_errors(schema: dict[str, Any], value: Any, prefix: str = "params") -> dict[str, list[str]]:
    """Errors keyed by dotted path (``params.channel``), empty when valid."""
    errors: dict[str, list[str]] = {}
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        path = [prefix, *(str(p) for p in error.absolute_path)]
        message = error.message
        if error.validator == "required":
            # "'channel' is a required property": key it by the missing field.
            missing = message.split("'")[1] if message.count("'") >= 2 else ""
            if missing:
                path.append(missing)
                message = "This field is required."
        elif error.validator == "additionalProperties":
            message = "Unknown field(s): " + message.split("(")[-1].rstrip(")").replace(" were unexpected", "").replace(
                " was unexpected", ""
            )
        errors.setdefault(".".join(path), []).append(_shorten(message))
    return errors


def _shorten(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


MAX_JSON_DEPTH = 32
# PostgreSQL refuses NUL in text and jsonb; a lone surrogate cannot be encoded as UTF-8 at all.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class BadJSON(ValueError):
    """JSON that Countersign refuses to read; the message says why, without echoing the input."""


def unstorable_text(text: str) -> str:
    """Why ``text`` cannot be stored ("" when it can): a NUL or a lone surrogate."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return ""
    return "a NUL character" if found.group() == "\x00" else "a lone surrogate (not UTF-8)"


def check_json_value(value: Any, depth: int = 0) -> None:
    """Refuse values nested deeper than MAX_JSON_DEPTH, and NUL or lone surrogates in any string or key.

    ``null`` is a JSON value like any other and is accepted anywhere.
    """
    if depth > MAX_JSON_DEPTH:
        raise BadJSON(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
    if isinstance(value, str):
        problem = unstorable_text(value)
        if problem:
            raise BadJSON(f"JSON strings may not contain {problem}.")
    elif isinstance(value, float) and not math.isfinite(value):
        # 1e999 parses as infinity, which no JSON column (nor canonical JSON) can hold.
        raise BadJSON("JSON numbers must be finite (1e999 is too large).")
    elif isinstance(value, dict):
        for key, item in value.items():
            problem = unstorable_text(key)
            if problem:
                raise BadJSON(f"JSON keys may not contain {problem}.")
            check_json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json_value(item, depth + 1)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def load_json(text: str | bytes) -> Any:
    """Parse JSON strictly: UTF-8 only, no NaN/Infinity, depth, NUL and surrogates checked.

    Raises BadJSON (a ValueError) for anything refused, RecursionError included.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadJSON("The body is not valid UTF-8.") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadJSON(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.") from None
    except ValueError as exc:
        raise BadJSON(f"Not valid JSON: {exc}") from None
    check_json_value(value)
    return value
