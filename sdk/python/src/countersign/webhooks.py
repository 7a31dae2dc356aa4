"""Verifying Countersign's webhooks: ``verify_webhook(body, header, secret)``.

Countersign POSTs the action's JSON, plus an ``event`` object (``type``, ``sequence``, ``at``), to the action's
``callback_url`` with ``Countersign-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, keyed
with the agent's webhook secret. While a rotated secret overlaps the new one the header carries two ``v1=``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from countersign.errors import CountersignError
from countersign.models import STATUSES

DEFAULT_TOLERANCE = 300
# ``event.type`` (and the ``Countersign-Event`` header): one per status the action moved to. ``action.unknown``:
# the execution was interrupted and may have taken effect (check the target before retrying); a reviewer's
# resolution later sends ``action.succeeded`` or ``action.failed`` with ``result.resolution``.
EVENT_TYPES = tuple(f"action.{status}" for status in STATUSES)


class InvalidWebhook(CountersignError):
    """A webhook whose signature, timestamp or body does not check out: answer 400 and ignore it."""


def verify_webhook(
    body: bytes | str, header: str | None, secret: str, *, tolerance: float | None = DEFAULT_TOLERANCE
) -> dict[str, Any]:
    """Check a webhook and return its parsed body (the action, with ``event``); raise ``InvalidWebhook`` otherwise.

    ``body`` is the request body exactly as received (bytes; re-serialised JSON will not match), ``header`` the
    ``Countersign-Signature`` header, ``secret`` the agent's webhook secret. The signature's timestamp must be
    within ``tolerance`` seconds of now (``None``: not checked), so a captured delivery cannot be replayed later.
    """
    if isinstance(body, str):
        body = body.encode()
    if not secret:
        raise InvalidWebhook("no webhook secret given")
    timestamp, signatures = _parse(header or "")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    # Every v1 is compared (in constant time), so which one matched tells nothing through timing.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(candidate.encode(), expected.encode())
    if not matched:
        raise InvalidWebhook("webhook signature does not match")
    if tolerance is not None and abs(time.time() - timestamp) > tolerance:
        raise InvalidWebhook(f"webhook timestamp is more than {tolerance:g} seconds away from now")
    try:
        event = json.loads(body)
    except ValueError:
        raise InvalidWebhook("webhook body is not JSON") from None
    if not isinstance(event, dict):
        raise InvalidWebhook("webhook body is not a JSON object")
    return event


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidWebhook("webhook signature header has a malformed timestamp") from None
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidWebhook("webhook signature header is missing or malformed (expected t=…,v1=…)")
    return timestamp, signatures
