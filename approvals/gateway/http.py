"""``/gateway/<credential>/<path>``: the HTTP gateway's front door, an ASGI app in front of Django.

It sits before Django (config/asgi.py) for three reasons: the path must be read exactly as the client sent it
(``raw_path``: Django decodes ``%2F`` and friends before routing, and a traversal check on the decoded path is a
check on the wrong string), the body limit and every refusal are the gateway's own (problem JSON, not a reviewer
page's HTML), and an auto-approved call is in the hot path of every call an agent makes, so it skips the page
middleware (sessions, CSRF, messages) it has no use for.

One call:

1. the request line and headers are checked without reading the body: a method, ``Countersign-Wait`` (seconds to
   hold a call that needs a human; default ``COUNTERSIGN_GATEWAY_DEFAULT_WAIT_SECONDS``, at most
   ``COUNTERSIGN_GATEWAY_MAX_WAIT_SECONDS``), ``Countersign-Action`` (a held call's id), a streaming body (411), a
   streamed answer asked for (406), a declared body over ``COUNTERSIGN_GATEWAY_MAX_BODY_BYTES`` (413);
2. the body is read, never past the limit;
3. one trip to a thread: the agent key (``Authorization: Bearer cs_...``, ``token cs_...`` or Basic with the key as
   the password), its rate (``requests`` and ``gateway``), then approvals.services.gateway.submit: the proposal,
   and for an auto-approved call its execution under its single-use grant;
4. a call still pending, or approved and run elsewhere, is held: the door listens on the action's channel-layer
   group (subscribed before it reads the action again, as the API's wait does) until it is settled or the wait is
   over; then ``202 Accepted`` with ``Location: /api/v1/actions/<id>``, ``Retry-After`` and ``Countersign-Action``.

The answer is the target's, as the one stored result holds it (scrubbed of every form of the secret, cut to the
credential's ``result_visibility``): its status, the allow-listed headers (``RESPONSE_HEADERS``) and its body,
plus ``Countersign-Action: <id>``. Refusals are RFC 9457 problems.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from agents.authentication import authenticate_agent_key
from agents.models import AgentKey
from agents.ratelimit import hit
from approvals.api.problems import PROBLEM_CONTENT_TYPE, problem
from approvals.errors import ServiceError
from approvals.live.waiting import until_settled
from approvals.models import ActionRequest, ActionStatus
from approvals.services import gateway
from config.request_id import HEADER as REQUEST_ID_HEADER
from config.request_id import bind_request_id, get_request_id, reset_request_id

PREFIX = "/gateway/"
log = logging.getLogger("countersign.request")
# What of the target's answer headers reaches the client (when the credential shows headers at all). Not Location:
# redirects are not followed, and a client that follows one itself would go to the target without Countersign.
# Not Set-Cookie: a session with the target is the credential's, not the agent's.
RESPONSE_HEADERS = frozenset(
    {
        "cache-control",
        "content-language",
        "etag",
        "expires",
        "last-modified",
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
)
NO_BODY_STATUSES = (204, 304)
HELD_RETRY_AFTER_SECONDS = 5


@dataclass
class Answer:
    status: int
    body: bytes = b""
    content_type: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)


def problem_answer(status: int, title: str, detail: str, *, slug: str = "", **extra: Any) -> Answer:
    body = {**extra, **problem(status, title, detail, slug=slug)}
    return Answer(status, json.dumps(body, separators=(",", ":")).encode(), PROBLEM_CONTENT_TYPE)


def service_error_answer(exc: ServiceError) -> Answer:
    answer = Answer(
        exc.status,
        json.dumps(
            {**exc.extra, **problem(exc.status, exc.title, exc.detail, slug=exc.slug, errors=exc.errors)},
            separators=(",", ":"),
        ).encode(),
        PROBLEM_CONTENT_TYPE,
    )
    if exc.status == 405:
        answer.headers.append(("allow", ", ".join(exc.extra.get("allow", []))))
    return answer


class GatewayApp:
    """Answers ``/gateway/...`` itself; hands everything else to ``app``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        token = bind_request_id(_first(headers, "x-request-id"))
        started = time.perf_counter()
        try:
            try:
                answer = await serve(scope, receive, headers)
            except (OperationalError, InterfaceError) as exc:
                # The database is unreachable: a 503 to retry, as the rest of the site answers
                # (DatabaseUnavailableMiddleware). A call that was already proposed keeps its action: at most once.
                log.warning("gateway call refused: database unavailable (%s)", type(exc).__name__)
                answer = problem_answer(
                    503, "Service unavailable", "The database is unreachable; try again.", slug="unavailable"
                )
                answer.headers.append(("retry-after", "5"))
            except Exception:
                log.exception("gateway call failed")
                answer = problem_answer(500, "Server error", "The gateway failed; nothing was sent.", slug="error")
            await _send(send, answer)
            log.info(
                "%s %s %s",
                scope.get("method"),
                scope.get("path"),
                answer.status,
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": answer.status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        finally:
            reset_request_id(token)


async def serve(scope, receive, headers: list[tuple[str, str]]) -> Answer:
    raw_path = (scope.get("raw_path") or quote(scope["path"]).encode()).decode("latin-1")
    if not raw_path.startswith(PREFIX):
        return problem_answer(404, "Not found", "No such address.", slug="not-found")
    credential, _, rest = raw_path[len(PREFIX) :].partition("/")
    method = str(scope.get("method", "")).upper()
    # 1. what the request line and headers say, before a byte of the body is read
    refusal, wait, replay = _read_controls(headers)
    if refusal is not None:
        return refusal
    limit = settings.COUNTERSIGN_GATEWAY_MAX_BODY_BYTES
    declared = _first(headers, "content-length")
    if declared is not None and (not declared.isdigit() or len(declared) > 18):
        return problem_answer(400, "Invalid input", "Content-Length is not a number.", slug="invalid-input")
    if declared is not None and int(declared) > limit:
        return _too_large(limit)
    # 2. the body, never past the limit
    body, refusal = await _read_body(receive, limit)
    if refusal is not None:
        return refusal
    call = gateway.GatewayCall(
        credential=credential,
        method=method,
        path="/" + rest,
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=tuple(headers),
        body=body,
        on_behalf_of=_first(headers, "countersign-on-behalf-of") or "",
    )
    # 3. one trip to a thread: who, how often, the proposal and (auto-approved) its execution. A pool thread, not
    # the process's one thread-sensitive thread (Django's sync views): a slow target must not stall the pages.
    answer, held = await sync_to_async(_submit, thread_sensitive=False)(call, headers, replay)
    if answer is not None:
        return answer
    # 4. held: until settled or the wait is over
    return await _hold(held, wait)


def _read_controls(headers: list[tuple[str, str]]) -> tuple[Answer | None, float, uuid.UUID | None]:
    wait_text = _first(headers, "countersign-wait")
    maximum = settings.COUNTERSIGN_GATEWAY_MAX_WAIT_SECONDS
    wait = float(min(settings.COUNTERSIGN_GATEWAY_DEFAULT_WAIT_SECONDS, maximum))
    if wait_text is not None:
        try:
            wait = float(wait_text)
        except ValueError:
            wait = -1.0
        if not 0 <= wait <= maximum:
            detail = f"Countersign-Wait is a number of seconds from 0 to {maximum}."
            return problem_answer(400, "Invalid input", detail, slug="invalid-input"), 0, None
    replay = None
    replay_text = _first(headers, "countersign-action")
    if replay_text is not None:
        try:
            replay = uuid.UUID(replay_text.strip())
        except ValueError:
            detail = "Countersign-Action is the id of a held call (the Countersign-Action header of its 202)."
            return problem_answer(400, "Invalid input", detail, slug="invalid-input"), 0, None
    if any(name == "transfer-encoding" for name, _ in headers):
        detail = "A streamed (chunked) request body does not pass the gateway: send it whole, with a Content-Length."
        return problem_answer(411, "Length required", detail, slug="length-required"), 0, None
    accept = _first(headers, "accept") or ""
    if "text/event-stream" in accept.lower():
        detail = "Streamed answers (text/event-stream) do not pass the gateway: each call is one request, one answer."
        return problem_answer(406, "Not acceptable", detail, slug="not-acceptable"), 0, None
    return None, wait, replay


async def _read_body(receive, limit: int) -> tuple[bytes, Answer | None]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", problem_answer(400, "Invalid input", "The client went away.", slug="invalid-input")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _too_large(limit: int) -> Answer:
    detail = f"The request body is larger than {limit // 1024} KiB."
    answer = problem_answer(413, "Request body too large", detail, slug="body-too-large")
    answer.headers.append(("connection", "close"))
    return answer


def _submit(
    call: gateway.GatewayCall, headers: list[tuple[str, str]], replay: uuid.UUID | None
) -> tuple[Answer | None, uuid.UUID | None]:
    """(the answer, None) or (None, the id of the action to hold for). Runs in a thread."""
    close_old_connections()
    try:
        key = _agent_key(_first(headers, "authorization") or "")
        if key is None:
            answer = problem_answer(
                401,
                "Not authenticated",
                "A valid agent key is required: Authorization: Bearer cs_..., or Basic with the key as the password.",
                slug="not-authenticated",
            )
            answer.headers.append(("www-authenticate", 'Bearer realm="countersign", Basic realm="countersign"'))
            return answer, None
        retry_after = hit(key.public_id, "requests", "gateway")
        if retry_after is not None:
            answer = problem_answer(429, "Too many requests", "This agent key is over its rate.", slug="rate-limited")
            answer.headers.append(("retry-after", str(int(retry_after))))
            return answer, None
        try:
            result = gateway.submit(key.agent, call, replay=replay)
        except ServiceError as exc:
            return service_error_answer(exc), None
        if gateway.is_settled(result.action):
            return render(result.action), None
        return None, result.action.id
    finally:
        close_old_connections()


def _agent_key(authorization: str) -> AgentKey | None:
    """The usable key in the one place a client already sends a token: ``Bearer``/``token`` (GitHub's clients),
    or ``Basic`` with the key as the password (or as the user name, with no password)."""
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() in ("bearer", "token"):
        raw = value
    elif scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        raw = password or user
    else:
        return None
    return authenticate_agent_key(raw) if raw else None


async def _hold(action_id: uuid.UUID, wait: float) -> Answer:
    answer, status = await until_settled(
        action_id,
        timeout=wait,
        read=sync_to_async(functools.partial(_settled_answer, action_id), thread_sensitive=False),
        settled=lambda found: found[0] is not None,
    )
    return answer if answer is not None else _held(action_id, status)


def _settled_answer(action_id: uuid.UUID) -> tuple[Answer | None, str]:
    close_old_connections()
    try:
        action = gateway.current(action_id)
        if action is None:
            return problem_answer(404, "Not found", "The action is gone.", slug="not-found"), ""
        return (render(action) if gateway.is_settled(action) else None), action.status
    finally:
        close_old_connections()


def _held(action_id: uuid.UUID, status: str) -> Answer:
    location = f"/api/v1/actions/{action_id}"
    waiting_for = "a reviewer's decision" if status == ActionStatus.PENDING else "its execution"
    body = {
        "id": str(action_id),
        "status": status,
        "detail": f"Held for {waiting_for}. Repeat this identical request with the header "
        f"Countersign-Action: {action_id} to get the target's answer once it is there (it runs once, whatever "
        f"you repeat), or follow {location}.",
    }
    return Answer(
        202,
        json.dumps(body, separators=(",", ":")).encode(),
        "application/json",
        [
            ("location", location),
            ("retry-after", str(HELD_RETRY_AFTER_SECONDS)),
            ("countersign-action", str(action_id)),
        ],
    )


def render(action: ActionRequest) -> Answer:
    """A settled action as the client's answer: the target's, or a problem saying why there is none."""
    answer = _render(action)
    answer.headers.append(("countersign-action", str(action.id)))
    return answer


def _render(action: ActionRequest) -> Answer:
    result: dict[str, Any] = action.result if isinstance(action.result, dict) else {}
    status = action.status
    answered = "status_code" in result or "body" in result
    if status == ActionStatus.SUCCEEDED or (status == ActionStatus.FAILED and answered):
        return target_answer(result)
    error = str(result.get("error") or "")
    if status == ActionStatus.FAILED and error.startswith("execution refused"):
        return problem_answer(403, "Execution refused", error, slug="execution-refused")
    if status == ActionStatus.FAILED:
        return problem_answer(502, "Bad gateway", error or "The call failed.", slug="bad-gateway")
    if status == ActionStatus.UNKNOWN:
        detail = f"{error or 'The call may have reached the target'}; {result.get('advice', 'check the target')}."
        return problem_answer(504, "Outcome unknown", detail, slug="outcome-unknown")
    reason = action.decision_reason or ""
    words = {
        ActionStatus.REJECTED: ("Rejected", "rejected", "Rejected"),
        ActionStatus.EXPIRED: ("Expired", "expired", "Nobody decided before it expired"),
        ActionStatus.CANCELLED: ("Cancelled", "cancelled", "Cancelled"),
    }
    title, slug, default = words.get(status, ("Not allowed", "not-allowed", f"The call is {status}"))
    detail = f"{default}: {reason}" if reason and status != ActionStatus.REJECTED else (reason or default)
    return problem_answer(403, title, detail, slug=slug, action=str(action.id))


def target_answer(result: dict[str, Any]) -> Answer:
    status = result.get("status_code")
    status = status if isinstance(status, int) and 100 <= status <= 599 else 200
    shown = result.get("headers") if isinstance(result.get("headers"), dict) else {}
    content_type = str(shown.get("content-type", ""))
    body = result.get("body")
    if status in NO_BODY_STATUSES or "body" not in result:
        data = b""
    elif isinstance(body, str):
        data = body.encode("utf-8")
        content_type = content_type or "text/plain; charset=utf-8"
    else:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if "json" not in content_type:
            content_type = "application/json"
    headers = [(name, str(value)) for name, value in shown.items() if name in RESPONSE_HEADERS]
    return Answer(status, data, content_type, headers)


async def _send(send, answer: Answer) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1", "replace")) for name, value in answer.headers]
    if answer.content_type:
        headers.append((b"content-type", answer.content_type.encode("latin-1", "replace")))
    headers.append((b"content-length", str(len(answer.body)).encode()))
    headers.append((REQUEST_ID_HEADER.lower().encode(), get_request_id().encode()))
    headers.append((b"x-content-type-options", b"nosniff"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None
