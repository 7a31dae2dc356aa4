"""``slack.post_message``: one message to one Slack channel (or thread) with a stored bot token."""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Any
from urllib.error import URLError

from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from approvals.credentials.redaction import Redactor
from approvals.models.credential import SLACK_CHANNEL_ID_RE, SLACK_CHANNEL_RE
from catalog.base import ActionType, ExecutionError, ParamsRejected, Preview, Reverse, shorten
from catalog.risk import Risk

MAX_TEXT = 40_000  # Slack truncates longer messages
THREAD_TS_PATTERN = r"^[0-9]{1,12}\.[0-9]{1,9}$"
# Slack errors after which trying again later could succeed.
TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
PARENT_TEXT_CHARS = 4000
# Why urllib could not open the connection: the request never left, so nothing was posted.
NOT_SENT_REASONS = (ConnectionRefusedError, socket.gaierror, ssl.SSLError)


def channel_key(channel: str) -> str:
    """How channels compare: names case-insensitively (Slack lowercases them), IDs exactly."""
    return channel.casefold() if channel.startswith("#") else channel


def api_url() -> str:
    return str(settings.COUNTERSIGN_SLACK_API_URL).rstrip("/") + "/"


class SlackChannelClient:
    """Posts to exactly one approved channel (and thread), and reads that channel for previews.

    Holds the bot token inside a private ``WebClient``; offers no way to call
    any other Slack method or to reach the token.
    """

    __slots__ = ("_channel", "_redactor", "_thread_ts", "_web", "reads")

    def __init__(self, *, token: str, channel: str, thread_ts: str | None, base_url: str, timeout: int):
        # No retry handlers: a "connection reset" after Slack accepted the post would post it twice.
        self._web = WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[])
        # The secret-bearing values the WebClient puts on the wire: the token, as "Bearer <token>".
        self._redactor = Redactor(frozenset({token, f"Bearer {token}"} if token else ()))
        self._channel = channel
        self._thread_ts = thread_ts
        self.reads: list[str] = []  # Slack methods read for a preview, for the action's timeline

    def __repr__(self) -> str:
        return f"<SlackChannelClient channel={self._channel}>"

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def thread_ts(self) -> str | None:
        return self._thread_ts

    @property
    def redactor(self) -> Redactor:
        """Scrubs every form of the secret-bearing values this client sends (approvals.credentials.redaction)."""
        return self._redactor

    def redact(self, text: str) -> str:
        return self._redactor.text(text)

    def post_message(self, *, text: str, unfurl_links: bool | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"channel": self._channel, "text": text}
        if self._thread_ts:
            kwargs["thread_ts"] = self._thread_ts
        if unfurl_links is not None:
            kwargs["unfurl_links"] = unfurl_links
        return self._call("chat_postMessage", writes=True, **kwargs)

    def channel_info(self) -> dict[str, Any]:
        self.reads.append(f"conversations.info {self._channel}")
        return self._call("conversations_info", channel=self._channel).get("channel") or {}

    def thread_parent(self) -> dict[str, Any] | None:
        """The message that starts the approved thread, or None if Slack returns none."""
        if not self._thread_ts:
            return None
        self.reads.append(f"conversations.replies {self._channel} {self._thread_ts}")
        data = self._call("conversations_replies", channel=self._channel, ts=self._thread_ts, limit=1)
        messages = data.get("messages") or []
        return messages[0] if messages else None

    def _call(self, method: str, *, writes: bool = False, **kwargs) -> dict[str, Any]:
        try:
            return dict(getattr(self._web, method)(**kwargs).data)
        except SlackApiError as exc:
            raise _api_error(method, exc, self) from None
        except (URLError, TimeoutError, ConnectionError, http.client.HTTPException, SlackClientError) as exc:
            if writes and _may_have_reached_slack(exc):
                # Slack may have posted it and the answer was lost: a retry could post it twice.
                raise ExecutionError(
                    f"Slack {_dotted(method)}: sent, but no answer came back ({type(exc).__name__}): "
                    "the message may have been posted",
                    permanent=False,
                    outcome_unknown=True,
                    details={"transport_error": type(exc).__name__},
                ) from None
            raise ExecutionError(
                f"Slack {_dotted(method)} failed: could not reach Slack ({type(exc).__name__})", permanent=False
            ) from None


def _may_have_reached_slack(exc: Exception) -> bool:
    """urllib wraps what goes wrong while connecting and sending in URLError; a refused connection, a name that
    does not resolve or a failed TLS handshake sent nothing, and slack_sdk's own errors (SlackClientError) are
    raised before a request is made. Anything else (a read timeout, a dropped connection, a garbled answer)
    came after the request may have been received."""
    if isinstance(exc, SlackClientError):
        return False
    return not (isinstance(exc, URLError) and isinstance(exc.reason, (*NOT_SENT_REASONS, str)))


def _dotted(method: str) -> str:
    return method.replace("_", ".", 1)


def _api_error(method: str, exc: SlackApiError, client: SlackChannelClient) -> ExecutionError:
    response = exc.response
    status = getattr(response, "status_code", None)
    data = response.data if isinstance(getattr(response, "data", None), dict) else {}
    error = str(data.get("error") or ("ratelimited" if status == 429 else f"http_{status}"))[:200]
    details: dict[str, Any] = {"slack_error": client.redact(error)}
    if status is not None:
        details["status_code"] = status
    headers = {str(k).lower(): v for k, v in (getattr(response, "headers", None) or {}).items()}
    if status == 429 and headers.get("retry-after"):
        retry_after = headers["retry-after"]
        details["retry_after"] = client.redact(str(retry_after[0] if isinstance(retry_after, list) else retry_after))
    transient = error in TRANSIENT_ERRORS or status == 429 or (status or 0) >= 500
    return ExecutionError(
        f"Slack {_dotted(method)} failed: {details['slack_error']}", permanent=not transient, details=details
    )


class SlackPostMessage(ActionType):
    client_class: type[SlackChannelClient] = SlackChannelClient  # what make_client hands execute()
    name = "slack.post_message"
    title = "Post a Slack message"
    description = (
        "Posts one message to one Slack channel, or as a reply in a thread, as the bot whose token is stored in "
        'Countersign. A credential\'s scope may restrict the channels: {"channels": ["#infra-help", "C0123ABCD"]}.'
    )
    risk = Risk.MEDIUM
    credential_kinds = ("slack_bot",)
    result_parts = {"status_code": "status"}
    preview_reads = True
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["credential", "channel", "text"],
        "properties": {
            "credential": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "Name of the stored Slack bot credential.",
            },
            "channel": {
                "type": "string",
                "minLength": 2,
                "maxLength": 81,
                "description": 'A channel name ("#infra-help") or a channel ID ("C0123ABCD").',
            },
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TEXT,
                "description": "The message, in Slack mrkdwn.",
            },
            "thread_ts": {
                "type": "string",
                "pattern": THREAD_TS_PATTERN,
                "description": "Reply in the thread started by this message timestamp.",
            },
            "unfurl_links": {"type": "boolean", "description": "Whether Slack unfurls links in the text."},
        },
    }

    def describe(self, params: dict[str, Any]) -> str:
        where = shorten(params.get("channel") or "", 81)
        return f"Post to {where}" + (" as a reply in a thread" if params.get("thread_ts") else "")

    def check_params(self, params: dict[str, Any], credential) -> None:
        errors: dict[str, list[str]] = {}
        channel = params["channel"]
        if not SLACK_CHANNEL_RE.fullmatch(channel):
            errors["channel"] = ['A channel is "#name" (letters, digits, "-", "_") or a channel ID like "C0123ABCD".']
        elif credential is not None:
            allowed = (credential.scope or {}).get("channels")
            if allowed and channel_key(channel) not in {channel_key(c) for c in allowed}:
                errors["channel"] = [f"The credential may post only to {', '.join(allowed)}."]
        if errors:
            raise ParamsRejected(errors)

    def make_client(self, credential, params: dict[str, Any], *, idempotency_key: str) -> SlackChannelClient:
        if credential is None or not credential.reveal():
            raise ExecutionError("no Slack bot token")
        # Checked again here: the scope may have narrowed since the proposal.
        try:
            self.check_params(params, credential)
        except ParamsRejected as exc:
            raise ExecutionError(f"refused: {exc}") from None
        return self.client_class(
            token=credential.reveal(),
            channel=params["channel"],
            thread_ts=params.get("thread_ts"),
            base_url=api_url(),
            timeout=settings.COUNTERSIGN_HTTP_TIMEOUT_SECONDS,
        )

    def reverse(
        self, params: dict[str, Any], result: dict[str, Any], before: dict[str, Any] | None, credential
    ) -> Reverse | None:
        """Undo: delete the message it posted (``slack.delete_message``, chat.delete), by the channel and ts
        Slack answered."""
        channel, ts = result.get("channel"), result.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str) or not channel or not ts:
            return None
        undo = {"credential": params["credential"], "channel": channel, "ts": ts}
        return Reverse("slack.delete_message", undo, f"Delete the message posted to {shorten(params['channel'], 81)}")

    def execute(self, params: dict[str, Any], client: SlackChannelClient) -> dict[str, Any]:
        data = client.post_message(text=params["text"], unfurl_links=params.get("unfurl_links"))
        message = data.get("message") or {}
        result = {"channel": data.get("channel"), "ts": data.get("ts")}
        thread_ts = message.get("thread_ts") or client.thread_ts
        if thread_ts:
            result["thread_ts"] = thread_ts
        return result

    def preview_without_reads(self, params: dict[str, Any], credential_name: str) -> Preview:
        # The message itself needs no read: show it, and say what was not looked up.
        preview = self.preview(params, None)
        preview.reads_off = True
        preview.notes.insert(
            0,
            f"Slack was not read (preview reads are off for the credential {credential_name}): "
            "the channel's name and the thread's first message are not shown.",
        )
        return preview

    def preview(self, params: dict[str, Any], client: SlackChannelClient | None) -> Preview:
        notes: list[str] = []
        failure = ""
        title = f"Message to {params['channel']}"
        if client is not None and SLACK_CHANNEL_ID_RE.fullmatch(params["channel"]):
            try:
                info = client.channel_info()
            except ExecutionError as exc:
                notes.append(f"Channel could not be read: {exc.message}")
            else:
                if info.get("name"):
                    title = f"Message to #{info['name']} ({params['channel']})"
                if info.get("is_archived"):
                    notes.append("The channel is archived.")
                    failure = "Execution will fail: the channel is archived, and Slack refuses posts to it."
        parent = None
        if params.get("thread_ts"):
            title += " (thread reply)"
            if client is None:
                pass
            elif not SLACK_CHANNEL_ID_RE.fullmatch(params["channel"]):
                notes.append("The thread's first message is not shown: Slack finds threads by channel ID only.")
            else:
                try:
                    message = client.thread_parent()
                except ExecutionError as exc:
                    notes.append(f"The thread's first message could not be read: {exc.message}")
                else:
                    if message is None:
                        notes.append("Slack returned no message for this thread.")
                    else:
                        parent = {
                            "user": message.get("user") or message.get("bot_id") or message.get("username") or "",
                            "text": str(message.get("text") or "")[:PARENT_TEXT_CHARS],
                        }
        after = {
            "channel": params["channel"],
            "text": params["text"],
            "thread_ts": params.get("thread_ts"),
            "thread_parent": parent,
        }
        if params.get("unfurl_links") is not None:
            notes.append("Links unfurl." if params["unfurl_links"] else "Links do not unfurl.")
        return Preview(
            kind="message", title=title, before=None, after=after, notes=notes, will_fail=bool(failure), failure=failure
        )
