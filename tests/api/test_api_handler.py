"""config.api_handler: the API's requests cross to their thread once, and Django's request signals still come in order.

Django crosses from the event loop to the request's thread three times (``request_started``, the view, the response's
``close`` with ``request_finished``); the API's handler crosses once and runs the same receivers, in the same order,
on the same thread. These tests drive ``APIHandler`` as a server would, with views of their own (this module is
their URLconf).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from asgiref import sync as asgiref_sync
from django.core.signals import request_finished, request_started
from django.http import HttpResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path

from config.api_handler import APIHandler
from tests.support.asgi import http_scope

events: list[tuple[str, int]] = []


def _note(what: str) -> None:
    events.append((what, threading.get_ident()))


def plain(request):
    _note("view")
    return HttpResponse("plain")


def streamed(request):
    _note("view")

    async def chunks():
        for n in range(3):
            _note(f"chunk {n}")
            yield f"{n}".encode()

    return StreamingHttpResponse(chunks())


def slow(request):
    _note("view")
    time.sleep(0.5)
    _note("view done")
    return HttpResponse("too late")


urlpatterns = [
    path("api/v1/test/plain", plain),
    path("api/v1/test/streamed", streamed),
    path("api/v1/test/slow", slow),
]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("_signals_noted"),
]


@pytest.fixture
def _signals_noted():
    events.clear()

    def started(**kwargs):
        _note("request_started")

    def finished(**kwargs):
        _note("request_finished")

    request_started.connect(started)
    request_finished.connect(finished)
    yield
    request_started.disconnect(started)
    request_finished.disconnect(finished)


@pytest.fixture
def crossings(monkeypatch):
    """How many times code was handed from the event loop to a thread (asgiref's sync_to_async)."""
    counted = []
    original = asgiref_sync.SyncToAsync.__call__

    async def counting(self, *args, **kwargs):
        counted.append(getattr(self.func, "__name__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(asgiref_sync.SyncToAsync, "__call__", counting)
    return counted


def _serve(path_: str, *, leave_after: float | None = None) -> dict:
    """Send one request to a fresh APIHandler; the client hangs up after ``leave_after`` seconds, if given."""
    answer: dict = {"body": b"", "sent": []}

    async def main():
        handler = APIHandler()
        delivered = False

        async def receive():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if leave_after is None:
                await asyncio.sleep(3600)
            await asyncio.sleep(leave_after)
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")
                answer["sent"].append(len(events))  # how much had happened when these bytes went out

        await handler(http_scope("GET", path_, headers=[("host", "localhost")]), receive, send)
        await asyncio.sleep(0.7 if leave_after is not None else 0)  # the abandoned view's thread finishes

    asyncio.run(main())
    return answer


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["localhost"])
def test_one_crossing_runs_the_signals_and_the_view_in_order_on_one_thread(crossings):
    answer = _serve("/api/v1/test/plain")
    assert answer["status"] == 200 and answer["body"] == b"plain"
    assert [what for what, _ in events] == ["request_started", "view", "request_finished"]
    threads = {thread for _, thread in events}
    assert len(threads) == 1 and threads != {threading.get_ident()}  # the request's thread, not the event loop's
    assert crossings == ["_respond_on_thread"]
    # The database connection is handed back (request_finished) before the response's bytes go out.
    assert answer["sent"][0] == 3


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["localhost"])
def test_a_streamed_response_is_closed_after_it_is_sent():
    answer = _serve("/api/v1/test/streamed")
    assert answer["status"] == 200 and answer["body"] == b"012"
    names = [what for what, _ in events]
    assert names[:2] == ["request_started", "view"]
    assert names.index("request_finished") > names.index("chunk 2")
    assert names.count("request_finished") == 1


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["localhost"])
def test_a_client_that_leaves_mid_view_gets_nothing_and_the_request_still_finishes():
    answer = _serve("/api/v1/test/slow", leave_after=0.1)
    assert "status" not in answer and answer["body"] == b""
    names = [what for what, _ in events]
    assert names[:2] == ["request_started", "view"] and "view done" in names
    assert "request_finished" in names
