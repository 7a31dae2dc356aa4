"""Scrubbing secrets out of everything an executor or a preview hands back: the one redactor.

An executor puts a secret on the wire in some shape (``Bearer X``, ``Basic
base64(user:pass)``, a custom header's value, a query value) and a target may
echo any of it back in any encoding: a debug page showing the request headers,
an error that base64s or URL-encodes them, a JWT or a cookie that wraps them.
``Redactor`` is built from the values that were actually sent (each narrowed
client knows them and offers a ``redactor`` built from them, which scrubs
without handing the values out) plus the stored secret itself, and replaces
every form of each with ``[redacted]``:

- plain; JSON-escaped (``\\"``, ``\\u00e9``, and ``\\/`` as some encoders write);
- URL-encoded (``quote`` with and without ``/`` safe, ``quote_plus``; upper- and
  lower-case ``%xx``);
- hex (lower and upper case);
- base64, standard and URL-safe, with and without padding, and the secret
  *inside* a base64 string at any of the three byte alignments (base64 of
  ``"user:secret"`` or of a JSON document holding it: the characters that encode
  only the secret's bytes are the same whatever surrounds it).

It walks JSON recursively (keys and values), strings and crash traces.

Short values: a form shorter than ``MIN_FORM_CHARS`` (4) is never searched for
on its own, because it would turn ordinary text into ``[redacted]`` noise (a
2-character secret matches half the words of a page). Such a secret is still
scrubbed inside the longer values that carry it on the wire (``Bearer ab``,
``Basic …``, the ``user:ab`` pair); a secret that short is guessable anyway.
Base64 fragments at a shifted alignment are searched only from
``MIN_FRAGMENT_CHARS`` (8) characters up (a secret of about 7 bytes or more),
for the same reason.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
MIN_FORM_CHARS = 4
MIN_FRAGMENT_CHARS = 8


def _b64_forms(raw: bytes) -> set[str]:
    standard = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    return {standard, standard.rstrip("="), urlsafe, urlsafe.rstrip("=")}


def _b64_fragments(raw: bytes) -> set[str]:
    """The base64 characters that depend only on ``raw``, at each of the three alignments it can have.

    Character ``j`` of a base64 string covers bits ``6j..6j+5`` of the bytes; with
    ``k`` bytes before ``raw`` it is fixed by ``raw`` alone when those bits lie in
    bytes ``k..k+len(raw)-1``.
    """
    fragments: set[str] = set()
    n = len(raw)
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + raw + b"\0\0").decode()
        first = -(-8 * k // 6)  # ceil(8k / 6)
        last = (8 * (k + n) - 6) // 6
        if last - first + 1 >= MIN_FRAGMENT_CHARS:
            fragment = encoded[first : last + 1]
            fragments.add(fragment)
            fragments.add(fragment.translate(str.maketrans("+/", "-_")))
    return fragments


def _lower_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def forms_of(value: str) -> set[str]:
    """Every form of ``value`` a target could echo back (see the module docstring)."""
    raw = value.encode("utf-8", "surrogatepass")
    forms = {value, raw.hex(), raw.hex().upper()}
    for escaped in (json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
        forms |= {escaped, escaped.replace("/", "\\/")}
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value)):
        forms |= {encoded, _lower_escapes(encoded)}
    for encoded in _b64_forms(raw):
        forms |= {encoded, encoded.replace("/", "\\/")}
        if "+" in encoded or "/" in encoded or "=" in encoded:
            forms.add(quote(encoded, safe=""))
    for fragment in _b64_fragments(raw):
        forms |= {fragment, fragment.replace("/", "\\/")}
    return {f for f in forms if len(f) >= MIN_FORM_CHARS}


def wire_values(kind: str, secret: str | None) -> set[str]:
    """What a credential of ``kind`` holding ``secret`` puts on the wire, before any client says more.

    The secret itself, and for ``http_basic`` (``user:password``) the password alone:
    a target may echo either half, and only the password is secret.
    """
    if not secret:
        return set()
    values = {secret}
    if kind == "http_basic" and ":" in secret:
        values.add(secret.split(":", 1)[1])
    return values


class Redactor:
    """Replaces every form of the given secret values with ``[redacted]``, in text and JSON."""

    def __init__(self, values: Iterable[str | None] = (), *, also: Iterable[Redactor] = ()):
        forms: set[str] = set()
        for value in values:
            if value:
                forms |= forms_of(value)
        for other in also:
            forms |= other._forms
        self._forms: frozenset[str] = frozenset(forms)
        # Longest first: a longer form (``Bearer X``'s base64) wins over a shorter one inside it.
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._forms)} forms>"

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def json(self, value: Any) -> Any:
        """``value`` with every string (keys included) scrubbed; a number that spells a secret is replaced too."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)) if isinstance(k, str) else k: self.json(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.json(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return REDACTED if self.text(str(value)) != str(value) else value
        return value


def redactor_for(kind: str | None, secret: str | None, client: Any = None) -> Redactor:
    """The redactor for what ``client`` sent with a ``kind`` credential holding ``secret``.

    ``client`` may be None (it was never built) or any object; a narrowed client
    offers ``redactor``, built from the exact values it puts on the wire.
    """
    own = getattr(client, "redactor", None)
    return Redactor(wire_values(kind or "", secret), also=[own] if isinstance(own, Redactor) else [])


def apply_visibility(payload: dict[str, Any], visibility: Iterable[str], parts: dict[str, str]) -> dict[str, Any]:
    """``payload`` without the keys whose part (``parts``: key -> "status" | "headers" | "body") is not visible.

    Keys an action type does not map are its own summary of what it did and are always kept.
    """
    shown = set(visibility)
    return {k: v for k, v in payload.items() if parts.get(k) is None or parts[k] in shown}
