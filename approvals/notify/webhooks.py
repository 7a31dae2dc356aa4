"""Signed webhooks to agents: ``Countersign-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx

from agents.models import Agent
from agents.services import webhook_signing_secrets
from approvals.action_types.transport import hardened_client
from approvals.models import ActionRequest, OutboxMessage
from approvals.notify.callbacks import callback_refusal
from approvals.notify.webhook_log import record_attempt, retry_after_seconds
from approvals.outbox.transport import RetryLater, TransportError
from audit.canonical import canonical_json


class WebhookError(TransportError):
    """The callback refused or could not be sent to; retried with backoff (DNS and the agent's server may recover)."""


def sign(secret: str | list[str], body: bytes, timestamp: int | None = None) -> str:
    """The signature header; with several secrets (during a rotation's overlap) one ``v1=`` per secret."""
    t = int(time.time()) if timestamp is None else timestamp
    keys = [secret] if isinstance(secret, str) else secret
    macs = (hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest() for key in keys)
    return ",".join([f"t={t}", *(f"v1={mac}" for mac in macs)])


def webhook_body(payload: dict) -> bytes:
    """The action's JSON as the API returns it, plus ``event`` (type, per-action sequence, time of the change).

    Built from the message's stored snapshot, so every retry sends the same bytes.
    """
    body = dict(payload["action"])
    if "event" in payload:  # messages written before events were numbered have none
        body["event"] = payload["event"]
    return canonical_json(body).encode()


def post_webhook(message: OutboxMessage) -> None:
    """The outbox's webhook sender: raises ``TransportError`` (approvals.outbox.transport) or httpx's errors to be
    retried."""
    action = ActionRequest.objects.select_related("agent").get(id=message.action_id)
    started = time.monotonic()
    refusal = callback_refusal(action.callback_url)
    if refusal:  # re-checked at delivery: DNS may have changed since the proposal
        record_attempt(message, action, started=started, error=f"callback refused: {refusal}")
        raise WebhookError(f"callback refused: {refusal}")
    body = webhook_body(message.payload)
    try:
        response = _post(action, body, message)
    except httpx.HTTPError as exc:
        record_attempt(message, action, started=started, error=f"{type(exc).__name__}: {exc}")
        raise
    record_attempt(message, action, started=started, status_code=response.status_code)
    if response.status_code >= 300:
        retry_after = retry_after_seconds(response.headers) if response.status_code in (429, 503) else None
        if retry_after is not None:
            raise RetryLater(f"callback answered {response.status_code}", retry_after=retry_after)
        raise WebhookError(f"callback answered {response.status_code}")


def _post(action: ActionRequest, body: bytes, message: OutboxMessage) -> httpx.Response:
    agent: Agent = action.agent
    headers = {
        "Content-Type": "application/json",
        "Countersign-Signature": sign(webhook_signing_secrets(agent), body),
        "Countersign-Event": f"action.{message.payload['action']['status']}",
        "Countersign-Delivery": str(message.id),
    }
    with hardened_client() as client:
        return client.post(action.callback_url, content=body, headers=headers)
