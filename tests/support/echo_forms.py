"""The forms a target can echo a secret back in, computed here independently of approvals.credentials.redaction
(the redactor is tested against them: tests/unit/test_redaction.py, tests/execution/test_secret_forms.py)."""

from __future__ import annotations

import base64
import html
import json
import re
from urllib.parse import quote, quote_plus


def b64_variants(raw: bytes) -> list[str]:
    std, url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    return [std, std.rstrip("="), url, url.rstrip("=")]


def encodings(value: str) -> dict[str, str]:
    """Each way a target could write ``value`` back, by name."""
    raw = value.encode()
    std, url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    return {
        "plain": value,
        "base64": std,
        "base64 unpadded": std.rstrip("="),
        "base64url": url,
        "base64url unpadded": url.rstrip("="),
        "url-encoded": quote(value, safe=""),
        "url-encoded plus": quote_plus(value),
        "url-encoded lower": re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(value, safe="")),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "json-escaped": json.dumps(value)[1:-1],
        "json-escaped slashes": json.dumps(value)[1:-1].replace("/", "\\/"),
    }


def embedded_base64_cores(value: str) -> list[str]:
    """What base64 of a longer string holding ``value`` (a JWT, a cookie) surely contains, at each alignment."""
    cores = []
    for prefix in (b"", b"x", b"xy"):
        encoded = base64.b64encode(prefix + value.encode() + b"zz").decode()
        core = encoded[4:-8]
        cores += [core, core.replace("+", "-").replace("/", "_")]
    return [c for c in cores if len(c) >= 8]


def forms_to_find(values: list[str]) -> dict[str, str]:
    found = {}
    for value in values:
        for name, form in encodings(value).items():
            found[f"{name} of {value[:12]}…"] = form
        for i, core in enumerate(embedded_base64_cores(value)):
            found[f"embedded base64 #{i} of {value[:12]}…"] = core
    return found


def leaks(places: dict[str, str], forms: dict[str, str]) -> list[str]:
    out = []
    for where, text in places.items():
        for variant in {text, html.unescape(text)}:
            out += [f"{name} in {where}" for name, form in forms.items() if form in variant]
    return sorted(set(out))
