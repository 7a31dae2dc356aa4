"""Parameter validation against an action type's JSON Schema."""

from __future__ import annotations

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
