"""A real SCIM 2.0 server (scim2-server, in memory) on loopback, for every test that changes group membership.

Users and groups are seeded through the server's own SCIM API and every outcome is read back through it. It can be
taken down (every request answered 503, as a SCIM service in an outage does) and brought back with its data.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
from scim2_server.memory import InMemoryStorage
from scim2_server.testserver.application import BearerTokenApplication
from scim2_server.testserver.cli import ThreadingWSGIServer
from scim2_server.utils import load_default_provider

SCIM_TOKEN = "scim-t0ken-that-must-never-show"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def idp_credential(server: ScimServer, *, token: str = SCIM_TOKEN, allow_preview_reads: bool = True, **scope):
    """The SCIM credential "idp" on ``server`` (previews read from it unless told otherwise; ``scope``: more of its
    scope, e.g. ``max_duration_seconds``)."""
    from approvals.services.credentials import create_credential
    from tests.factories import CLI

    return create_credential(
        name="idp",
        kind="scim_bearer",
        secret=token,
        scope={"base_url": server.base_url, **scope},
        actor=CLI,
        allow_preview_reads=allow_preview_reads,
    )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ScimServer:
    """scim2-server's WSGI application with a bearer token, served by wsgiref in a thread, behind a switch: while
    ``down`` it answers 503; ``down_after_patch`` makes the next change and then goes down before anyone can read
    it back."""

    def __init__(self):
        self.down = False
        self.down_after_patch = False
        app = BearerTokenApplication(InMemoryStorage(), load_default_provider(), bearer_tokens=[SCIM_TOKEN])

        def switched(environ, start_response):
            if self.down:
                start_response("503 Service Unavailable", [("Content-Type", "application/scim+json")])
                return [b'{"detail": "maintenance"}']
            if environ["REQUEST_METHOD"] == "PATCH" and self.down_after_patch:
                self.down = True
            return app(environ, start_response)

        self._server = make_server(
            "127.0.0.1", 0, switched, server_class=ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v2"
        self._thread: threading.Thread | None = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        self.api = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {SCIM_TOKEN}"})
        self.ids: dict[str, str] = {}

    def stop(self) -> None:
        if self._thread is None:
            return
        self.api.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._thread = None

    def add_user(self, user_name: str) -> str:
        response = self.api.post("/Users", json={"schemas": [USER], "userName": user_name})
        assert response.status_code == 201, response.text
        self.ids[user_name] = response.json()["id"]
        return self.ids[user_name]

    def add_group(self, name: str, members: list[str]) -> str:
        body = {"schemas": [GROUP], "displayName": name, "members": [{"value": self.ids[m]} for m in members]}
        response = self.api.post("/Groups", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def group(self, group_id: str) -> dict:
        response = self.api.get(f"/Groups/{group_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def members(self, group_id: str) -> set[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id.get(m["value"], m["value"]) for m in self.group(group_id).get("members", [])}
