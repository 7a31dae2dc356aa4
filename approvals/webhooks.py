"""Signed webhooks to agents: ``Countersign-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
from django.conf import settings

from agents.models import Agent
from approvals.canonical import canonical_json
from approvals.models import ActionRequest, OutboxMessage


class WebhookError(Exception):
    pass


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def post_webhook(message: OutboxMessage) -> None:
    action = ActionRequest.objects.select_related("agent").get(id=message.action_id)
    body = canonical_json(message.payload["action"]).encode()
    agent: Agent = action.agent
    response = httpx.post(
        action.callback_url,
        content=body,
        headers={
            "Content-Type": "application/json",
            "Countersign-Signature": sign(agent.webhook_secret, body),
            "Countersign-Event": f"action.{message.payload['action']['status']}",
            "Countersign-Delivery": str(message.id),
        },
        timeout=settings.COUNTERSIGN_HTTP_TIMEOUT_SECONDS,
        follow_redirects=False,
        trust_env=False,
    )
    if response.status_code >= 300:
        raise WebhookError(f"callback answered {response.status_code}")
