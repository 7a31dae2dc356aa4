"""The one contract between the outbox's dispatcher and the senders it runs (webhooks, Slack, email).

A sender that could not deliver raises ``TransportError``: ``permanent`` when sending the same thing again cannot
help, ``retry_after`` when the target asked to be left alone for a while (HTTP 429/503 with ``Retry-After``).
Any other exception is a transient failure too. The dispatcher (approvals.outbox.dispatcher) retries a transient
failure with
backoff, never sooner than ``retry_after``, and stops at a permanent one.

This module imports nothing of Countersign's: the senders and the dispatcher both stand on it, so neither needs
the other. (approvals/action_types/transport.py is something else: the HTTP client the executors send with.)
"""

from __future__ import annotations

MAX_RETRY_AFTER_SECONDS = 3600.0  # a confused target cannot park a message forever


class TransportError(Exception):
    """A delivery failed. ``retry_after``: seconds the target asked to wait (capped at an hour), or None."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = None if retry_after is None else min(MAX_RETRY_AFTER_SECONDS, max(0.0, float(retry_after)))


class RetryLater(TransportError):
    """The target asked to be left alone (rate limited): retried like any failure, not before ``retry_after``."""

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message, retry_after=retry_after)
