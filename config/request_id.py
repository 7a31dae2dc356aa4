"""One id per request, followed from the web process into every Celery task it causes.

The middleware accepts a well-formed ``X-Request-ID`` from the caller (or makes
one), returns it in the response and keeps it in a contextvar for the request.
The JSON log formatter (``config.logging``) and ``audit.chain.record_event``
read it from there. Celery carries it in a message header: ``before_task_publish``
adds it to each task the current request or task sends, ``task_prerun`` restores
it in the worker (a task sent without one, e.g. by beat, gets a fresh id).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

HEADER = "X-Request-ID"
CELERY_HEADER = "countersign_request_id"
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_QUIET_PATHS = ("/healthz", "/readyz", "/metrics", "/static/")

request_id_var: ContextVar[str] = ContextVar("countersign_request_id", default="")
log = logging.getLogger("countersign.request")
task_log = logging.getLogger("countersign.task")


def new_request_id() -> str:
    return uuid.uuid4().hex


def clean_request_id(value: str | None) -> str | None:
    """The caller's id if it is safe to log and echo (1-64 of ``A-Za-z0-9._:-``), else None."""
    if value and _VALID.fullmatch(value):
        return value
    return None


def get_request_id() -> str:
    return request_id_var.get()


def bind_request_id(value: str | None = None) -> Token:
    return request_id_var.set(clean_request_id(value) or new_request_id())


def reset_request_id(token: Token) -> None:
    request_id_var.reset(token)


class RequestIdMiddleware:
    """Assign or accept the request id, answer it in ``X-Request-ID`` and log one line per request."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._acall(request)
        token, started = bind_request_id(request.headers.get(HEADER)), time.perf_counter()
        try:
            response = self.get_response(request)
            return self._finish(request, response, started)
        finally:
            reset_request_id(token)

    async def _acall(self, request):
        token, started = bind_request_id(request.headers.get(HEADER)), time.perf_counter()
        try:
            response = await self.get_response(request)
            return self._finish(request, response, started)
        finally:
            reset_request_id(token)

    @staticmethod
    def _finish(request, response, started: float):
        response[HEADER] = get_request_id()
        log_request(request.method, request.path, response.status_code, started)
        return response


def log_request(method: str, path: str, status: int, started: float) -> None:
    """The one line logged per request (the middleware's, and approvals.api.agent_reads' for what it answers)."""
    if not path.startswith(_QUIET_PATHS):
        # The path only: query strings may carry tokens.
        log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )


# --- Celery -------------------------------------------------------------------------

_task_tokens: dict[str, Token] = {}


def _on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = get_request_id()
    if request_id and headers is not None and not headers.get(CELERY_HEADER):
        headers[CELERY_HEADER] = request_id


def _on_prerun(task_id: str | None = None, task=None, **_: Any) -> None:
    incoming = getattr(task.request, CELERY_HEADER, None) if task is not None else None
    _task_tokens[task_id or ""] = bind_request_id(incoming)
    task_log.info(
        "task %s started", getattr(task, "name", "?"), extra={"task": getattr(task, "name", ""), "task_id": task_id}
    )


def _on_postrun(task_id: str | None = None, task=None, state: str | None = None, **_: Any) -> None:
    task_log.info(
        "task %s finished: %s",
        getattr(task, "name", "?"),
        state,
        extra={"task": getattr(task, "name", ""), "task_id": task_id, "state": state},
    )
    token = _task_tokens.pop(task_id or "", None)
    if token is not None:
        try:
            reset_request_id(token)
        except ValueError:  # set in another context (a different thread ran prerun): just clear it
            request_id_var.set("")


def connect_celery_signals() -> None:
    from celery import signals

    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid="countersign-request-id-publish")
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="countersign-request-id-prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="countersign-request-id-postrun")
