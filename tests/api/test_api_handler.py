"""config.api_handler: the API's requests cross to their thread once, and Django's request signals still come in order.

Django crosses from the event loop to the request's thread three times (``request_started``, the view, the response's
``close`` with ``request_finished``); the API's handler crosses once and runs the same receivers, in the same order,
on the same thread. These tests drive ``APIHandler`` as a server would, with views of their own (this module is
their URLconf).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid

import pytest
from asgiref import sync as asgiref_sync
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.http import HttpResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path, reverse

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


running = {"now": 0, "most": 0}
running_lock = threading.Lock()


def busy(request, n):
    """A view that works for 20 ms (well within a turn), noting how many views run at that moment."""
    with running_lock:
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
    time.sleep(0.02)
    with running_lock:
        running["now"] -= 1
    return HttpResponse("done")


def named(request, name):
    _note(name)
    return HttpResponse(name)


def held(request, name):
    _note(f"{name} started")
    time.sleep(0.5)
    _note(f"{name} done")
    return HttpResponse(name)


urlpatterns = [
    path("api/v1/test/plain", plain),
    path("api/v1/test/streamed", streamed),
    path("api/v1/test/slow", slow),
    path("api/v1/test/busy/<int:n>", busy),
    path("api/v1/test/named/<str:name>", named),
    path("api/v1/test/held/<str:name>", held),
    path("api/v1/test/poll/<str:name>", held),
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


def _client(leave_after: float | None):
    """An ASGI ``receive`` of a client that sends an empty body, then hangs up after ``leave_after`` seconds (or
    never)."""
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600 if leave_after is None else leave_after)
        return {"type": "http.disconnect"}

    return receive


def _serve(path_: str, *, leave_after: float | None = None) -> dict:
    """Send one request to a fresh APIHandler; the client hangs up after ``leave_after`` seconds, if given."""
    return _serve_together(APIHandler(), [(path_, 0, leave_after)])[path_]


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


def _serve_together(handler: APIHandler, requests: list[tuple[str, float, float | None]]) -> dict[str, dict]:
    """Send ``requests`` (path, seconds after the first to send it, seconds after sending to hang up or None) to one
    handler at once; each path's answer: ``status``, ``body``, ``sent`` (how many ``events`` had happened when each
    part of the body went out) and ``events_then`` (the events' names when the last part did)."""
    answers: dict[str, dict] = {}

    async def one(path_: str, after: float, leave_after: float | None) -> None:
        await asyncio.sleep(after)
        answer = answers[path_] = {"body": b"", "sent": []}
        receive = _client(leave_after)

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")
                answer["sent"].append(len(events))
                answer["events_then"] = [what for what, _ in events]

        await handler(http_scope("GET", path_, headers=[("host", "localhost")]), receive, send)

    async def main():
        await asyncio.gather(*(one(*request) for request in requests))
        await asyncio.sleep(0.7)  # an abandoned view's thread finishes

    asyncio.run(main())
    return answers


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["localhost"])
def test_no_more_requests_than_its_threads_run_at_once_and_the_others_wait_their_turn():
    running.update(now=0, most=0)
    answers = _serve_together(APIHandler(threads=2), [(f"/api/v1/test/busy/{n}", 0, None) for n in range(8)])
    assert running["most"] == 2
    assert [answer["status"] for answer in answers.values()] == [200] * 8

    running.update(now=0, most=0)
    _serve_together(APIHandler(threads=0), [(f"/api/v1/test/busy/{n}", 0, None) for n in range(8)])
    assert running["most"] > 2  # 0: no limit


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["localhost"])
def test_a_request_longer_than_its_turn_goes_on_without_it_and_the_next_one_is_answered_first():
    handler = APIHandler(threads=1)  # one turn, held at most HOLD_SECONDS (50 ms) by the slow target's request
    answers = _serve_together(handler, [("/api/v1/test/held/slow", 0, None), ("/api/v1/test/named/next", 0.01, None)])
    assert answers["/api/v1/test/named/next"]["status"] == 200
    assert answers["/api/v1/test/named/next"]["events_then"] == [
        "request_started",
        "slow started",
        "request_started",
        "next",
        "request_finished",
    ]
    assert answers["/api/v1/test/held/slow"]["body"] == b"slow"


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["localhost"])
def test_a_long_poll_takes_no_turn():
    handler = APIHandler(threads=1, long_polls=re.compile(r"/api/v1/test/poll/[^/]+"))
    handler.HOLD_SECONDS = 10  # a turn is given back only when its request ends
    answers = _serve_together(
        handler,
        [
            ("/api/v1/test/poll/waiting", 0, None),
            ("/api/v1/test/held/first", 0.01, None),
            ("/api/v1/test/named/next", 0.02, None),
        ],
    )
    # The poll ran beside the request holding the one turn; the next request waited for that one, not for the poll.
    names = [what for what, _ in events]
    assert names.index("first started") < names.index("waiting done")
    assert names.index("first done") < names.index("next")
    assert answers["/api/v1/test/poll/waiting"]["body"] == b"waiting"


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["localhost"])
def test_a_client_that_leaves_while_waiting_for_its_turn_runs_nothing_and_takes_no_turn_with_it():
    handler = APIHandler(threads=1)
    handler.HOLD_SECONDS = 10
    answers = _serve_together(
        handler,
        [
            ("/api/v1/test/held/first", 0, None),
            ("/api/v1/test/named/gone", 0.01, 0.1),  # hangs up while the first holds the turn
            ("/api/v1/test/named/after", 0.2, None),
        ],
    )
    assert "status" not in answers["/api/v1/test/named/gone"]
    assert answers["/api/v1/test/named/after"]["status"] == 200  # the turn the leaver waited for was not lost
    names = [what for what, _ in events]
    assert "gone" not in names
    assert names.index("first done") < names.index("after")


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["localhost"])
def test_a_client_that_leaves_during_its_turn_gives_the_turn_back_at_once():
    handler = APIHandler(threads=1)
    handler.HOLD_SECONDS = 10
    answers = _serve_together(handler, [("/api/v1/test/held/left", 0, 0.1), ("/api/v1/test/named/after", 0.2, None)])
    assert "status" not in answers["/api/v1/test/held/left"]
    assert answers["/api/v1/test/named/after"]["status"] == 200
    # Answered while the abandoned view still ran: nobody waits for a response no one will read.
    assert "left done" not in answers["/api/v1/test/named/after"]["events_then"]


def test_the_wait_is_the_long_poll_the_api_handler_gives_no_turn():
    from approvals.api.wait import LONG_POLL_PATH
    from config.asgi import api_handler

    action_id = uuid.uuid4()
    assert LONG_POLL_PATH.fullmatch(reverse("api-action-wait", args=[action_id]))
    assert not LONG_POLL_PATH.fullmatch(reverse("api-action", args=[action_id]))
    assert not LONG_POLL_PATH.fullmatch(reverse("api-action-approve", args=[action_id]))
    assert api_handler.long_polls is LONG_POLL_PATH and api_handler.threads == settings.API_THREADS > 0
