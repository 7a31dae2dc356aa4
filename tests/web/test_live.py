"""Live pushes to the reviewer's websocket, through the real channels-redis layer.

An agent's proposal, a reviewer's decision and the worker's execution each
commit an outbox PUSH; after commit it is sent to channel-layer groups in
Redis, and every socket whose reviewer may see the action hears it.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client

from config.asgi import application
from tests.conftest import TARGET_SECRET, token_client
from tests.factories import api_propose

pytestmark = pytest.mark.django_db(transaction=True)

# Sockets open only from the site's exact origin: scheme, host and port (approvals.live.routing).
SAME_ORIGIN = [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")]
WAIT = 10  # seconds for one push to arrive; a timeout fails the test


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test drives the app from its own event loop; channels-redis keeps
    per-loop receive state on the process-wide layer, so every test gets a new one."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def session_headers(username: str, origin: bytes = b"http://127.0.0.1") -> list[tuple[bytes, bytes]]:
    """Sign in through Django's login like a browser would; return the socket's headers."""
    client = Client()
    assert client.login(username=username, password=f"pw-{username}")
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    return [
        (b"host", b"127.0.0.1"),
        (b"origin", origin),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()),
    ]


class Socket:
    """One reviewer page's live connection, spoken in ASGI messages.

    (``channels.testing.WebsocketCommunicator`` would do, but importing it
    needs daphne, which this project does not install.)
    """

    def __init__(self, headers):
        scope = {
            "type": "websocket",
            "path": "/ws/events/",
            "query_string": b"",
            "headers": headers,
            "subprotocols": [],
        }
        self.comm = ApplicationCommunicator(application, scope)

    async def open(self) -> tuple[bool, int | None]:
        """(True, None) when accepted, (False, close code) when refused."""
        await self.comm.send_input({"type": "websocket.connect"})
        reply = await self.comm.receive_output(timeout=WAIT)
        if reply["type"] == "websocket.close":
            return False, reply.get("code", 1000)
        assert reply["type"] == "websocket.accept", reply
        return True, None

    async def send(self, data: dict) -> None:
        await self.comm.send_input({"type": "websocket.receive", "text": json.dumps(data)})

    async def receive(self) -> dict:
        message = await self.comm.receive_output(timeout=WAIT)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def statuses_until(self, action_id: str, final: str) -> list[dict]:
        """This action's events, in arrival order, up to and including ``final``.

        Events about other actions (earlier tests' groups) are skipped.
        """
        seen = []
        while True:
            try:
                message = await self.receive()
            except TimeoutError:
                raise AssertionError(f"no {final!r} event for {action_id} within {WAIT}s; heard {seen}") from None
            if message.get("type") == "action" and message["action_id"] == action_id:
                seen.append(message)
                if message["status"] == final:
                    return seen

    async def assert_hears_nothing(self) -> None:
        assert await self.comm.receive_nothing(timeout=0.5), "this socket heard an event it must not"
        # The socket is alive and answering: the next thing it says is the pong.
        await self.send({"type": "ping"})
        assert await self.receive() == {"type": "pong"}

    async def close(self) -> None:
        await self.comm.send_input({"type": "websocket.disconnect", "code": 1000})
        # The consumer has left its groups by now; channels-redis's shared
        # receive can linger a while (wait cancels it) - not what is under test.
        with contextlib.suppress(TimeoutError):
            await self.comm.wait(timeout=1)


def call(fn, *args, **kwargs):
    """Run a blocking request (API call, ORM) from the test's event loop."""
    return sync_to_async(fn)(*args, **kwargs)


@pytest.mark.parametrize(
    ("verb", "body", "outcome"),
    [("approve", {"comment": "ok"}, "approved"), ("reject", {"reason": "Not during business hours."}, "rejected")],
)
def test_proposal_and_decision_are_pushed_to_the_reviewers_socket(reviewer, agent_api, verb, body, outcome):
    headers = session_headers("rita")
    api = token_client(reviewer)

    async def scenario():
        socket = Socket(headers)
        assert await socket.open() == (True, None)
        try:
            action = await call(api_propose, agent_api)
            [event] = await socket.statuses_until(action["id"], "pending")
            assert event["approvals"] == 0
            assert event["required_approvals"] == 1

            response = await call(api.post, f"/api/v1/actions/{action['id']}/{verb}", body, format="json")
            assert response.status_code == 200, response.content
            [event] = await socket.statuses_until(action["id"], outcome)
            assert event["approvals"] == (1 if outcome == "approved" else 0)
            assert set(event) == {
                "type",
                "action_id",
                "status",
                "approvals",
                "required_approvals",
                "reviewer_group_id",
                "seq",
            }, "a push carries ids and status only, never params or summary"
        finally:
            await socket.close()

    async_to_sync(scenario)()


def test_anonymous_socket_is_closed_with_4401(db):
    async def scenario():
        socket = Socket(SAME_ORIGIN)
        assert await socket.open() == (False, 4401)

    async_to_sync(scenario)()


def test_reviewer_deactivated_after_signing_in_cannot_open_a_socket(reviewer):
    headers = session_headers("rita")
    User.objects.filter(pk=reviewer.pk).update(is_active=False)

    async def scenario():
        assert await Socket(headers).open() == (False, 4401)

    async_to_sync(scenario)()


def test_socket_from_a_foreign_origin_is_refused(reviewer):
    headers = session_headers("rita", origin=b"https://evil.example")

    async def scenario():
        connected, _ = await Socket(headers).open()
        assert not connected

    async_to_sync(scenario)()


def test_only_reviewers_who_may_see_the_action_hear_it(reviewer, outsider, agent_api):
    """Pushes go to the action's reviewer group (and staff); members of other groups hear nothing."""
    outsider.groups.add(Group.objects.create(name="finance-reviewers"))
    User.objects.create_user("stella", password="pw-stella", is_staff=True)
    sockets = {name: Socket(session_headers(name)) for name in ("rita", "oscar", "stella")}
    api = token_client(reviewer)

    async def scenario():
        for socket in sockets.values():
            assert await socket.open() == (True, None)
        try:
            action = await call(api_propose, agent_api)
            await sockets["rita"].statuses_until(action["id"], "pending")
            await sockets["stella"].statuses_until(action["id"], "pending")
            await sockets["oscar"].assert_hears_nothing()

            response = await call(api.post, f"/api/v1/actions/{action['id']}/approve", {}, format="json")
            assert response.status_code == 200, response.content
            await sockets["rita"].statuses_until(action["id"], "approved")
            await sockets["stella"].statuses_until(action["id"], "approved")
            await sockets["oscar"].assert_hears_nothing()
        finally:
            for socket in sockets.values():
                await socket.close()

    async_to_sync(scenario)()


def test_execution_by_the_worker_process_is_pushed_to_the_socket(
    reviewer, agent_api, credential, target, celery_worker
):
    """The worker is another process: its pushes reach this socket only through Redis."""
    headers = session_headers("rita")
    api = token_client(reviewer)
    params = {"credential": "internal-api", "method": "POST", "path": "/v1/restarts", "json": {"service": "billing"}}

    async def scenario():
        socket = Socket(headers)
        assert await socket.open() == (True, None)
        try:
            action = await call(api_propose, agent_api, action_type="http.request", params=params)
            await socket.statuses_until(action["id"], "pending")
            response = await call(api.post, f"/api/v1/actions/{action['id']}/approve", {}, format="json")
            assert response.status_code == 200, response.content
            events = await socket.statuses_until(action["id"], "succeeded")
            assert [e["status"] for e in events] == ["approved", "executing", "succeeded"]
        finally:
            await socket.close()

    async_to_sync(scenario)()
    [request] = target.requests
    assert (request.method, request.path) == ("POST", "/v1/restarts")
    assert request.headers["Authorization"] == f"Bearer {TARGET_SECRET}"
