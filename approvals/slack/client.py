"""Countersign's own Slack bot: its token, its signing secret, and how Slack's answers are read.

This is the bot that posts approval requests and receives button clicks
(docs/slack.md), not the narrowed client ``slack.post_message`` executes with.
The token comes from ``SLACK_BOT_TOKEN`` (or ``_FILE``) or, failing that, from
the admin-managed Credential named ``COUNTERSIGN_SLACK_CREDENTIAL``.

Errors come in three kinds, each a ``TransportError`` (approvals.outbox.transport): rate
limited (``RetryLater`` with Slack's ``Retry-After``), unavailable
(``SlackUnavailable``: worth retrying with backoff) and refused (``SlackRefused``,
permanent: retrying the same call cannot help).
"""

from __future__ import annotations

import http.client
from typing import Any
from urllib.error import URLError

from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from approvals.action_types.slack_post import TRANSIENT_ERRORS, api_url
from approvals.credentials.crypto import decrypt_secret
from approvals.models import Credential
from approvals.outbox.transport import RetryLater, TransportError

DEFAULT_RETRY_AFTER = 30


class SlackNotConfigured(Exception):
    pass


class SlackUnavailable(TransportError):
    """Slack could not be reached or failed on its side; the same call may work later."""


class SlackRefused(TransportError):
    """Slack answered ``ok: false`` with an error retrying won't fix (channel_not_found, invalid_auth, …)."""

    def __init__(self, method: str, error: str):
        super().__init__(f"Slack {method} refused: {error}", permanent=True)
        self.method = method
        self.error = error


def bot_token() -> str:
    """The bot token, or "" when Slack is not configured."""
    if settings.SLACK_BOT_TOKEN:
        return settings.SLACK_BOT_TOKEN
    name = settings.COUNTERSIGN_SLACK_CREDENTIAL
    if not name:
        return ""

    credential = Credential.objects.filter(name=name, kind=Credential.Kind.SLACK_BOT).first()
    return decrypt_secret(credential.secret_encrypted) if credential else ""


def signing_secret() -> str:
    return settings.SLACK_SIGNING_SECRET


def web_client() -> WebClient:
    token = bot_token()
    if not token:
        raise SlackNotConfigured(
            "Slack is not configured: set SLACK_BOT_TOKEN or store the bot token as the Credential "
            f"{settings.COUNTERSIGN_SLACK_CREDENTIAL!r} (kind slack_bot)"
        )
    # No retry handlers: a reply lost after Slack accepted a post would post it twice. The outbox retries.
    return WebClient(
        token=token, base_url=api_url(), timeout=settings.COUNTERSIGN_SLACK_TIMEOUT_SECONDS, retry_handlers=[]
    )


def call(client: WebClient, method: str, **kwargs: Any) -> dict[str, Any]:
    """``client.<method>(**kwargs)`` with Slack's failures sorted into the three kinds above."""
    dotted = method.replace("_", ".", 1)
    try:
        return dict(getattr(client, method)(**kwargs).data)
    except SlackApiError as exc:
        raise _classify(dotted, exc) from None
    except (URLError, TimeoutError, ConnectionError, http.client.HTTPException, SlackClientError) as exc:
        raise SlackUnavailable(f"Slack {dotted}: could not reach Slack ({type(exc).__name__})") from None


def _classify(method: str, exc: SlackApiError) -> Exception:
    response = exc.response
    status = getattr(response, "status_code", None) or 0
    data = response.data if isinstance(getattr(response, "data", None), dict) else {}
    error = str(data.get("error") or ("ratelimited" if status == 429 else f"http_{status}"))[:200]
    if status == 429 or error == "ratelimited":
        return RetryLater(f"Slack {method}: rate limited", retry_after=_retry_after(response))
    if status >= 500 or error in TRANSIENT_ERRORS:
        return SlackUnavailable(f"Slack {method}: {error}")
    return SlackRefused(method, error)


def _retry_after(response: Any) -> float:
    headers = {str(k).lower(): v for k, v in (getattr(response, "headers", None) or {}).items()}
    raw = headers.get("retry-after")
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    try:
        return float(raw) if raw is not None else DEFAULT_RETRY_AFTER
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
