"""The webhook delivery log: one ``WebhookDelivery`` row per attempt, whatever its outcome (read-only in the admin)."""

from __future__ import annotations

import time

from approvals.models import ActionRequest, OutboxMessage, WebhookDelivery

MAX_ERROR = 500


def record_attempt(
    message: OutboxMessage,
    action: ActionRequest,
    *,
    started: float,
    status_code: int | None = None,
    error: str = "",
) -> WebhookDelivery:
    """Log one attempt; ``started`` is the ``time.monotonic()`` before it."""
    return WebhookDelivery.objects.create(
        action=action,
        delivery=message.id,
        event=f"action.{message.payload['action']['status']}"[:64],
        url=action.callback_url,
        attempt=message.attempts + 1,
        status_code=status_code,
        error=error[:MAX_ERROR],
        duration_ms=max(0, round((time.monotonic() - started) * 1000)),
    )


def retry_after_seconds(headers) -> float | None:
    """A numeric Retry-After header, if the callback sent one (429/503)."""
    raw = headers.get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
