"""An HTTP request or a websocket handshake sent straight to an ASGI application, as a server hands it one: no
network, no test client."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.testing import ApplicationCommunicator


def http_scope(
    method: str,
    path: str,
    *,
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    scheme: str = "http",
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers or []],
        "client": ("127.0.0.1", 5000),
        "server": ("localhost", 80),
    }


async def send_request(app: Any, scope: dict[str, Any], body: bytes = b"") -> dict[str, Any]:
    """``app``'s answer: ``status``, ``headers`` (lower-cased names, sorted pairs) and ``body``. The client sends
    ``body`` and then never hangs up."""
    answer: dict[str, Any] = {"body": b""}
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = sorted((k.decode().lower(), v.decode()) for k, v in message["headers"])
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer


async def first_socket_answer(app: Any, cookie: str, *, origin: str, host: str = "localhost") -> dict[str, Any]:
    """The first message ``app`` answers a reviewer's socket (``/ws/events/``) with: ``websocket.accept``, or
    ``websocket.close`` and its code. The client then hangs up."""
    scope = {
        "type": "websocket",
        "path": "/ws/events/",
        "raw_path": b"/ws/events/",
        "query_string": b"",
        "headers": [(b"origin", origin.encode()), (b"host", host.encode()), (b"cookie", cookie.encode())],
        "subprotocols": [],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "websocket.connect"})
    answer = await communicator.receive_output(timeout=5)
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait(timeout=5)
    return answer


class Reached:
    """An ASGI app in front of ``handler`` (the API's), counting the requests a shortcut in front of it passed on."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.count = 0

    async def __call__(self, scope, receive, send):
        self.count += 1
        await self.handler(scope, receive, send)

    def __getattr__(self, name):  # the shortcut uses its handler's parts (send_response, its threads)
        return getattr(self.handler, name)
