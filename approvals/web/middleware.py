"""Request guards: what is refused before any view runs, and how Django-level errors are told.

``RequestGuard`` is a pure ASGI middleware in front of Django (config/asgi.py). Django's ASGI handler reads the
whole body (spilling it to a temporary file past 2.5 MB) before any Django middleware or view runs, so a size limit
there comes too late: anyone who reaches the port could stream gigabytes to disk without authenticating. The guard
refuses a declared ``Content-Length`` over the limit at once, stops reading a chunked body as soon as it passes the
limit, and hands Django the body (at most the limit, in memory) with its true ``Content-Length``: DRF takes a
missing length for an empty body, which made every chunked request read as ``{}``.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_to_bytes

from django import db
from django.conf import settings

from approvals.api.parsers import MAX_BODY_BYTES
from approvals.web.http_errors import BARE_PAGE_CSP, dialect, error_body, error_response

log = logging.getLogger(__name__)


def body_limit(path: str) -> int:
    """The API and HumanLayer take JSON bodies up to 256 KiB; pages (forms, Slack's interactivity posts) 1 MiB."""
    if dialect(path) == "page":
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return MAX_BODY_BYTES


def unreadable_text(raw: bytes) -> str:
    """Why percent-encoded ``raw`` (a path, a query string, a form body) is refused ("" when it is fine): a NUL
    (PostgreSQL cannot store it) or bytes that are not UTF-8, lone surrogates (%ED%A0%80) included."""
    decoded = unquote_to_bytes(raw)
    if b"\x00" in decoded:
        return "contains a NUL character"
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return "is not valid UTF-8"
    return ""


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


class RequestGuard:
    """Refuse unreadable addresses and oversized bodies before Django reads anything (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and self._address_refusal(scope):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        refusal = self._address_refusal(scope)
        if refusal:
            await _refuse(scope, send, 400, "Invalid input", refusal, "invalid-input")
            return
        limit = body_limit(path)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not (declared.isdigit() and len(declared) <= 18):
                await _refuse(scope, send, 400, "Invalid input", "Content-Length is not a number.", "invalid-input")
                return
            if int(declared) > limit:
                await _refuse_too_large(scope, send, limit)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                # Stop reading here: the rest is never received, the connection is closed after the answer.
                await _refuse_too_large(scope, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type == b"application/x-www-form-urlencoded":
            problem = unreadable_text(body.replace(b"+", b" "))
            if problem:
                await _refuse(scope, send, 400, "Invalid input", f"The form {problem}.", "invalid-input")
                return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-length", b"transfer-encoding")]
        headers.append((b"content-length", str(len(body)).encode()))
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect a long-poll listens for

        await self.app({**scope, "headers": headers}, replay, send)

    @staticmethod
    def _address_refusal(scope) -> str:
        raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogatepass")
        problem = unreadable_text(raw_path)
        if problem:
            return f"The address {problem}."
        problem = unreadable_text(scope.get("query_string", b""))
        if problem:
            return f"The query string {problem}."
        return ""


async def _refuse(scope, send, status: int, title: str, detail: str, slug: str) -> None:
    body, content_type = error_body(scope.get("path", ""), status, title, detail, slug=slug)
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        # Whatever the client still sends is not read: the connection ends with this answer.
        (b"connection", b"close"),
    ]
    if dialect(scope.get("path", "")) == "page":
        headers.append((b"content-security-policy", BARE_PAGE_CSP.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _refuse_too_large(scope, send, limit: int) -> None:
    await _refuse(
        scope,
        send,
        413,
        "Request body too large",
        f"The request body is larger than {limit // 1024} KiB.",
        "body-too-large",
    )


class DatabaseUnavailableMiddleware:
    """A view that lost the database (PostgreSQL restarting or failing over) answers 503 with ``Retry-After``, in
    the path's dialect, instead of a 500: nothing is wrong with the request or the code, and it is worth
    repeating in a moment. Repeating is safe: a proposal carries its Idempotency-Key, and a decision that was
    recorded after all answers 409. Logged as a warning, without a traceback."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (db.OperationalError, db.InterfaceError)):
            return None
        log.warning("%s %s: the database could not be reached (%s)", request.method, request.path, exception)
        return error_response(
            request.path,
            503,
            "Unavailable",
            "The database could not be reached. Try again in a moment.",
            slug="unavailable",
            Retry_After="1",
        )


class MethodNotAllowedMiddleware:
    """Django's method decorators answer 405 with an empty ``text/html`` body: say it in the path's dialect,
    keeping ``Allow``."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code == 405 and not getattr(response, "streaming", False) and not response.content:
            allowed = response.get("Allow", "")
            return error_response(
                request.path,
                405,
                "Method not allowed",
                f"{request.method} is not allowed here; use {allowed or 'another method'}.",
                slug="method-not-allowed",
                Allow=allowed,
            )
        return response


class ContentSecurityPolicyMiddleware:
    """Send COUNTERSIGN_CSP on every HTML page: scripts only from our own static files."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "text/html" in response.get("Content-Type", "") and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = settings.COUNTERSIGN_CSP
        return response
