"""A fake Slack Web API on loopback, for tests that must talk to "Slack" for real (HTTP, tokens, errors).

    with FakeSlack(token="xoxb-...") as slack:
        slack.add_channel("C0INFRA01", "infra-help")
        slack.add_thread("C0INFRA01", "1700000000.000100", user="U0ALICE", text="Disk full on db-2?")
        with override_settings(COUNTERSIGN_SLACK_API_URL=slack.url):
            ...
        [call] = slack.calls_to("chat.postMessage")

Every call is recorded (Slack method, HTTP method, merged query/form/JSON params,
Authorization header). Requests without the bot token get ``not_authed`` /
``invalid_auth`` as Slack answers them. ``fail(method, error)`` makes a method
answer ``{"ok": false, "error": ...}``; ``rate_limit(method, retry_after)``
makes it answer HTTP 429 with ``Retry-After``; ``drop_connection(method)``
makes it hang up after recording the call; ``answer_late(method, seconds)``
makes it do what was asked (post the message) and answer only after
``seconds``, when a client with a shorter timeout has given up: the outcome
is unknown to the caller, but the message is in the channel.
``wait_for(...)`` blocks until a matching call arrived (for tests where
another process calls Slack).

Messages keep their ``metadata`` (``{"event_type", "event_payload"}``) as Slack
does; ``conversations.history`` lists a channel's messages newest first (top-level
ones and thread replies also sent to the channel), with ``oldest``, ``limit`` and
``cursor``, and their metadata only with ``include_all_metadata`` (``conversations.replies``
too). ``conversations.list`` lists the channels. ``channel_messages``
reads the same list for assertions.

For Countersign's own bot (notifications and interactivity) it also answers
``users.info`` (``add_user``), ``views.open``, ``chat.postEphemeral`` (kept in
``ephemerals``), and keeps the blocks of posted and updated messages
(``message(channel, ts)``).

Like Slack, it refuses Block Kit over Slack's documented limits (``block_errors``): a message or
view with a field too long, too many fields or blocks, a mrkdwn-only place given plain text or the
reverse answers ``{"ok": false, "error": "invalid_blocks", "errors": [...]}`` (``invalid_arguments``
for a view) and changes nothing; a text over 40,000 characters answers ``msg_too_long``.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BOT_USER_ID = "U0COUNTER"
BOT_ID = "B0COUNTER"
TEAM_ID = "T0FAKE001"


# --- Slack's limits, as its Block Kit reference documents them --------------------------------------

MAX_MESSAGE_TEXT = 40_000


def slack_len(text: str) -> int:
    """Characters as Slack's limits count them (UTF-16 code units: an emoji outside the BMP counts two)."""
    return len(text.encode("utf-16-le")) // 2


def _text_object(obj: Any, where: str, limit: int, errors: list[str], *, plain_only: bool = False) -> None:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        errors.append(f"{where}: must be a text object")
        return
    if plain_only and obj["type"] != "plain_text":
        errors.append(f"{where}: must be plain_text")
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        errors.append(f"{where}.text: must be more than 0 characters")
    elif slack_len(text) > limit:
        errors.append(f"{where}.text: must be less than {limit + 1} characters ({slack_len(text)})")
    if "emoji" in obj and (obj["type"] != "plain_text" or not isinstance(obj["emoji"], bool)):
        errors.append(f"{where}.emoji: only a boolean on plain_text")


def _string(value: Any, where: str, limit: int, errors: list[str]) -> None:
    if not isinstance(value, str) or slack_len(value) > limit:
        errors.append(f"{where}: must be a string of at most {limit} characters")


def _element(element: Any, where: str, errors: list[str]) -> None:
    if not isinstance(element, dict) or element.get("type") != "button":
        errors.append(f"{where}: unsupported element")
        return
    _text_object(element.get("text"), f"{where}.text", 75, errors, plain_only=True)
    if "action_id" in element:
        _string(element["action_id"], f"{where}.action_id", 255, errors)
    if "value" in element:
        _string(element["value"], f"{where}.value", 2000, errors)
    if "url" in element:
        _string(element["url"], f"{where}.url", 3000, errors)
    if element.get("style") not in (None, "primary", "danger"):
        errors.append(f"{where}.style: must be primary or danger")
    confirm = element.get("confirm")
    if confirm is not None:
        _text_object(confirm.get("title"), f"{where}.confirm.title", 100, errors, plain_only=True)
        _text_object(confirm.get("text"), f"{where}.confirm.text", 300, errors)
        _text_object(confirm.get("confirm"), f"{where}.confirm.confirm", 30, errors, plain_only=True)
        _text_object(confirm.get("deny"), f"{where}.confirm.deny", 30, errors, plain_only=True)


def block_errors(blocks: Any, *, max_blocks: int = 50) -> list[str]:
    """What Slack would refuse in ``blocks`` (empty: nothing); the limits of Slack's Block Kit reference."""
    errors: list[str] = []
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return ["blocks: not JSON"]
    if not isinstance(blocks, list):
        return ["blocks: must be an array"]
    if len(blocks) > max_blocks:
        errors.append(f"blocks: at most {max_blocks} ({len(blocks)})")
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict):
            errors.append(f"{where}: must be an object")
            continue
        if "block_id" in block:
            _string(block["block_id"], f"{where}.block_id", 255, errors)
        kind = block.get("type")
        if kind == "header":
            _text_object(block.get("text"), f"{where}.text", 150, errors, plain_only=True)
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                errors.append(f"{where}: needs text or fields")
            if "text" in block:
                _text_object(block["text"], f"{where}.text", 3000, errors)
            fields = block.get("fields")
            if fields is not None:
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    errors.append(f"{where}.fields: 1 to 10 items")
                else:
                    for j, field_ in enumerate(fields):
                        _text_object(field_, f"{where}.fields[{j}]", 2000, errors)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                errors.append(f"{where}.elements: 1 to 10 items")
            else:
                for j, element in enumerate(elements):
                    _text_object(element, f"{where}.elements[{j}]", 2000, errors)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                errors.append(f"{where}.elements: 1 to 25 items")
            else:
                for j, element in enumerate(elements):
                    _element(element, f"{where}.elements[{j}]", errors)
        elif kind == "input":
            _text_object(block.get("label"), f"{where}.label", 2000, errors, plain_only=True)
            element = block.get("element") or {}
            if element.get("type") != "plain_text_input":
                errors.append(f"{where}.element: unsupported element")
            elif not 0 <= int(element.get("max_length", 3000)) <= 3000:
                errors.append(f"{where}.element.max_length: at most 3000")
        elif kind != "divider":
            errors.append(f"{where}: unsupported block type {kind!r}")
    return errors


def view_errors(view: dict[str, Any]) -> list[str]:
    """What Slack would refuse in a modal view."""
    errors: list[str] = []
    _text_object(view.get("title"), "view.title", 24, errors, plain_only=True)
    for button in ("submit", "close"):
        if button in view:
            _text_object(view[button], f"view.{button}", 24, errors, plain_only=True)
    if "private_metadata" in view:
        _string(view["private_metadata"], "view.private_metadata", 3000, errors)
    if "callback_id" in view:
        _string(view["callback_id"], "view.callback_id", 255, errors)
    return errors + block_errors(view.get("blocks"), max_blocks=100)


def _message_errors(params: dict[str, Any]) -> dict[str, Any] | None:
    """Slack's answer to a message whose text or blocks it would refuse, or None."""
    text = params.get("text")
    if isinstance(text, str) and slack_len(text) > MAX_MESSAGE_TEXT:
        return {"ok": False, "error": "msg_too_long"}
    if params.get("blocks"):
        errors = block_errors(params["blocks"])
        if errors:
            return {"ok": False, "error": "invalid_blocks", "errors": errors}
    return None


@dataclass
class SlackCall:
    method: str  # the Slack API method, e.g. "chat.postMessage"
    http_method: str
    params: dict[str, Any]
    authorization: str | None
    content_type: str
    headers: dict[str, str]


@dataclass
class _Failure:
    error: str
    status: int = 200
    retry_after: int | None = None
    times: int | None = None  # None: until cleared
    drop: bool = False  # close the connection without answering


@dataclass
class FakeSlack:
    token: str = "xoxb-fake-bot-token"
    calls: list[SlackCall] = field(default_factory=list)
    # channel id -> {"id", "name", "is_archived", ...}
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (channel id, thread ts) -> messages, the parent first
    threads: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    # user id -> users.info's "user" object
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    # what chat.postEphemeral showed: {"channel", "user", "text"}
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    # what views.open opened: {"trigger_id", "view"}
    views: list[dict[str, Any]] = field(default_factory=list)
    # what was refused as Slack would refuse it: {"method", "error", "errors"} (over a limit, malformed)
    refused: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def __post_init__(self):
        self._failures: dict[str, _Failure] = {}
        self._delays: dict[str, float] = {}
        self._late: dict[str, list] = {}  # method -> [seconds, times left or None]
        self._cond = threading.Condition()
        self._ts = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    # --- set-up ---------------------------------------------------------------------

    def add_channel(self, channel_id: str, name: str, **extra) -> dict[str, Any]:
        self.channels[channel_id] = {"id": channel_id, "name": name, "is_channel": True, "is_archived": False, **extra}
        return self.channels[channel_id]

    def add_thread(self, channel_id: str, ts: str, *, user: str, text: str, replies: list[dict] | None = None) -> None:
        parent = {"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": ts}
        self.threads[(channel_id, ts)] = [parent, *(replies or [])]

    def add_user(self, user_id: str, *, email: str = "", name: str = "", **extra) -> dict[str, Any]:
        """A workspace member ``users.info`` knows (``email`` empty: none visible to the bot)."""
        self.users[user_id] = {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": name or user_id.lower(),
            "deleted": False,
            "is_bot": False,
            "profile": {"email": email} if email else {},
            **extra,
        }
        return self.users[user_id]

    def message(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        """A copy of the message at (channel, ts) as it is now (text, blocks, edited), top-level or in a thread."""
        with self._cond:
            for (cid, _), messages in self.threads.items():
                for message in messages:
                    if cid == channel_id and message["ts"] == ts:
                        return copy.deepcopy(message)
        return None

    def replies(self, channel_id: str, ts: str) -> list[dict[str, Any]]:
        """The replies in the thread started by (channel, ts), oldest first."""
        with self._cond:
            return list(self.threads.get((channel_id, ts), [])[1:])

    def channel_messages(self, channel_id: str) -> list[dict[str, Any]]:
        """What a person scrolling the channel sees, oldest first: top-level messages and replies also sent
        to the channel (``reply_broadcast``), as they are now."""
        with self._cond:
            return copy.deepcopy(self._in_channel(channel_id))

    def _in_channel(self, channel_id: str) -> list[dict[str, Any]]:
        found = []
        for (cid, _), messages in self.threads.items():
            if cid != channel_id:
                continue
            found.append(messages[0])
            found.extend(m for m in messages[1:] if m.get("subtype") == "thread_broadcast")
        return sorted(found, key=lambda m: float(m["ts"]))

    def fail(self, method: str, error: str, *, status: int = 200, times: int | None = None) -> None:
        """Make ``method`` answer ``{"ok": false, "error": error}`` (``times`` times, or until ``clear_failures``)."""
        self._failures[method] = _Failure(error=error, status=status, times=times)

    def rate_limit(self, method: str, retry_after: int = 30, *, times: int | None = None) -> None:
        """Make ``method`` answer HTTP 429 with ``Retry-After`` like Slack's rate limiter."""
        self._failures[method] = _Failure(error="ratelimited", status=429, retry_after=retry_after, times=times)

    def drop_connection(self, method: str, *, times: int | None = None) -> None:
        """Make ``method`` record the call, then hang up without answering (a reply lost on the way back)."""
        self._failures[method] = _Failure(error="", drop=True, times=times)

    def slow_down(self, method: str, seconds: float) -> None:
        """Make ``method`` take ``seconds`` before it answers (to hold a caller mid-call)."""
        self._delays[method] = seconds

    def answer_late(self, method: str, seconds: float, *, times: int | None = None) -> None:
        """Make ``method`` do its work, then answer only after ``seconds`` (a reply that outlives the caller's
        timeout: Slack accepted the post, the client never learns it)."""
        self._late[method] = [seconds, times]

    def clear_failures(self) -> None:
        self._failures.clear()
        self._late.clear()

    # --- reading what happened -------------------------------------------------------

    def calls_to(self, method: str) -> list[SlackCall]:
        with self._cond:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[SlackCall]:
        """Block until ``method`` was called ``count`` times; raise AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c for c in self.calls if c.method == method]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{method} called {len(found)} time(s) within {timeout}s, wanted {count}")
                self._cond.wait(remaining)

    # --- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base URL, as ``WebClient(base_url=...)`` wants it (trailing slash)."""
        return f"http://127.0.0.1:{self.port}/api/"

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                answer = fake._answer(self)
                if answer is None:
                    self.close_connection = True
                    return
                status, payload, headers = answer
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # a late answer: the caller has given up and hung up

            do_GET = do_POST = _handle

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- answering --------------------------------------------------------------------

    def _answer(self, request: BaseHTTPRequestHandler) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        url = urlsplit(request.path)
        method = url.path.rsplit("/", 1)[-1]
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        content_type = request.headers.get("Content-Type", "")
        params: dict[str, Any] = dict(parse_qsl(url.query, keep_blank_values=True))
        if body and content_type.startswith("application/json"):
            try:
                decoded = json.loads(body)
            except ValueError:
                return 200, {"ok": False, "error": "invalid_json"}, {}
            if isinstance(decoded, dict):
                params.update(decoded)
        elif body:
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        call = SlackCall(
            method=method,
            http_method=request.command,
            params=params,
            authorization=request.headers.get("Authorization"),
            content_type=content_type,
            headers=dict(request.headers),
        )
        with self._cond:
            self.calls.append(call)
            self._cond.notify_all()
            failure = self._failures.get(method)
            if failure is not None and failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.pop(method, None)

        if self._delays.get(method):
            time.sleep(self._delays[method])
        if failure is not None and failure.drop:
            return None
        if failure is not None:
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            return failure.status, {"ok": False, "error": failure.error}, headers
        auth_error = self._auth_error(call)
        if auth_error:
            return 200, {"ok": False, "error": auth_error}, {}
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method", "req_method": method}, {}
        with self._cond:
            answer = handler(params)
            late = self._late.get(method)
            if late is not None and late[1] is not None:
                late[1] -= 1
                if late[1] <= 0:
                    self._late.pop(method, None)
        if late is not None:
            time.sleep(late[0])  # done, but the caller has stopped listening
        return 200, answer, {}

    def _auth_error(self, call: SlackCall) -> str | None:
        presented = None
        if call.authorization and call.authorization.startswith("Bearer "):
            presented = call.authorization[len("Bearer ") :]
        elif "token" in call.params:
            presented = str(call.params["token"])
        if not presented:
            return "not_authed"
        return None if presented == self.token else "invalid_auth"

    def _channel(self, ref: Any) -> dict[str, Any] | None:
        ref = str(ref or "")
        if ref.startswith("#"):
            return next((c for c in self.channels.values() if c["name"] == ref[1:]), None)
        return self.channels.get(ref)

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _m_auth_test(self, params):
        return {
            "ok": True,
            "url": "https://fake-workspace.slack.com/",
            "team": "Fake Workspace",
            "user": "countersign",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
        }

    def _m_chat_postMessage(self, params):
        channel = self._channel(params.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        refused = _message_errors(params)
        if refused:
            self.refused.append({"method": "chat.postMessage", **refused})
            return refused
        if channel.get("is_archived"):
            return {"ok": False, "error": "is_archived"}
        text = params.get("text")
        if not text and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        metadata = params.get("metadata")
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except ValueError:
                return {"ok": False, "error": "invalid_metadata_format"}
        if metadata is not None and (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("event_type"), str)
            or not isinstance(metadata.get("event_payload"), dict)
        ):
            return {"ok": False, "error": "invalid_metadata_format"}
        ts = self._next_ts()
        message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": text or "", "ts": ts}
        if params.get("blocks"):
            message["blocks"] = params["blocks"]
        if metadata is not None:
            message["metadata"] = metadata
        thread_ts = params.get("thread_ts")
        if thread_ts:
            thread = self.threads.get((channel["id"], thread_ts))
            if thread is None:
                return {"ok": False, "error": "thread_not_found"}
            message["thread_ts"] = thread_ts
            if params.get("reply_broadcast") in (True, "true", "1", 1):
                message["subtype"] = "thread_broadcast"
            thread.append(message)
        else:
            self.threads[(channel["id"], ts)] = [{**message, "thread_ts": ts}]
        return {"ok": True, "channel": channel["id"], "ts": ts, "message": message}

    def _m_chat_update(self, params):
        channel = self._channel(params.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        refused = _message_errors(params)
        if refused:
            self.refused.append({"method": "chat.update", **refused})
            return refused
        ts = params.get("ts")
        for (channel_id, _), messages in self.threads.items():
            for message in messages:
                if channel_id == channel["id"] and message["ts"] == ts:
                    if "text" in params:
                        message["text"] = params["text"]
                    if "blocks" in params:
                        message["blocks"] = params["blocks"]
                    message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
                    return {"ok": True, "channel": channel["id"], "ts": ts, "text": message["text"], "message": message}
        return {"ok": False, "error": "message_not_found"}

    def _m_chat_delete(self, params):
        channel = self._channel(params.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = params.get("ts")
        for (channel_id, thread_ts), messages in list(self.threads.items()):
            if channel_id != channel["id"]:
                continue
            for message in messages:
                if message["ts"] == ts:
                    if thread_ts == ts:
                        del self.threads[(channel_id, thread_ts)]
                    else:
                        messages.remove(message)
                    return {"ok": True, "channel": channel["id"], "ts": ts}
        return {"ok": False, "error": "message_not_found"}

    def _m_chat_postEphemeral(self, params):
        channel = self._channel(params.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        refused = _message_errors(params)
        if refused:
            self.refused.append({"method": "chat.postEphemeral", **refused})
            return refused
        self.ephemerals.append({"channel": channel["id"], "user": params["user"], "text": params.get("text", "")})
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_views_open(self, params):
        if not params.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not isinstance(view, dict) or view.get("type") != "modal":
            return {"ok": False, "error": "invalid_arguments"}
        errors = view_errors(view)
        if errors:
            self.refused.append({"method": "views.open", "error": "invalid_arguments", "errors": errors})
            return {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": errors}}
        self.views.append({"trigger_id": params["trigger_id"], "view": view})
        return {"ok": True, "view": {"id": f"V{len(self.views):08d}", **view}}

    def _m_users_info(self, params):
        user = self.users.get(str(params.get("user") or ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user}

    def _m_conversations_info(self, params):
        channel = self.channels.get(str(params.get("channel") or ""))  # IDs only, like Slack
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": channel}

    def _m_conversations_replies(self, params):
        channel = self.channels.get(str(params.get("channel") or ""))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = str(params.get("ts") or "")
        thread = self.threads.get((channel["id"], ts))
        if thread is None:  # ts may name a reply: Slack answers with its whole thread
            thread = next(
                (m for (cid, _), m in self.threads.items() if cid == channel["id"] and any(x["ts"] == ts for x in m)),
                None,
            )
        if thread is None:
            return {"ok": False, "error": "thread_not_found"}
        limit = int(params.get("limit") or 1000)
        messages = copy.deepcopy(thread[:limit])
        if str(params.get("include_all_metadata", "")).lower() not in ("1", "true"):
            for message in messages:
                message.pop("metadata", None)
        return {"ok": True, "messages": messages, "has_more": len(thread) > limit}

    def _m_conversations_list(self, params):
        live_only = str(params.get("exclude_archived", "")).lower() in ("1", "true")
        listed = [c for c in self.channels.values() if not (live_only and c.get("is_archived"))]
        limit = max(1, min(int(params.get("limit") or 100), 1000))
        start = int(params.get("cursor") or 0)
        more = start + limit < len(listed)
        return {
            "ok": True,
            "channels": copy.deepcopy(listed[start : start + limit]),
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _m_conversations_history(self, params):
        channel = self.channels.get(str(params.get("channel") or ""))  # IDs only, like Slack
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        oldest = float(params.get("oldest") or 0)
        limit = max(1, min(int(params.get("limit") or 100), 999))
        start = int(params.get("cursor") or 0)
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        messages = [m for m in reversed(self._in_channel(channel["id"])) if float(m["ts"]) > oldest]
        page = []
        for message in messages[start : start + limit]:
            message = copy.deepcopy(message)
            if not with_metadata:
                message.pop("metadata", None)
            page.append(message)
        more = start + limit < len(messages)
        return {
            "ok": True,
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }
