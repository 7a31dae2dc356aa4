"""The whole loop on real processes with a known secret: it reaches the target, and nothing else.

Every response body the agent and the reviewer receive, the web and worker
logs, and the audit export are searched for it.
"""

from __future__ import annotations

import io
import re

import httpx
import pytest
from django.core.management import call_command

from agents.services import create_agent
from approvals.services.credentials import create_credential
from tests.conftest import CLI
from tests.execution.test_secret_forms import echo_forms, forms_to_find, leaks

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "tok-9f3b1c7e-the-one-secret-that-must-never-leak"


class Recorder:
    """An HTTP client that keeps every response body it received."""

    def __init__(self, base_url: str, **kwargs):
        self.client = httpx.Client(base_url=base_url, timeout=30, **kwargs)
        self.bodies: list[str] = []

    def __getattr__(self, method):
        def call(*args, **kwargs):
            response = getattr(self.client, method)(*args, **kwargs)
            self.bodies.append(response.text)
            self.bodies.extend(f"{k}: {v}" for k, v in response.headers.items())
            return response

        return call


def log_in(web: Recorder, username: str, password: str) -> None:
    page = web.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = web.post(
        "/accounts/login/", data={"username": username, "password": password, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302, response.text


def csrf_from(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def test_a_known_secret_appears_nowhere_but_at_the_target(
    web_server, celery_worker, target, owner, reviewer, second_reviewer
):
    create_credential(name="ticket-api", kind="http_bearer", secret=SECRET, scope={"base_url": target.url}, actor=CLI)
    _, _, key = create_agent(name="leak-probe", owner=owner, actor=CLI, allow=["http.request"])
    target.resources["/echo"] = echo_forms  # a target that echoes everything, in every encoding
    target.resources["/broken"] = lambda request: {"error": "boom", "auth": request.headers.get("Authorization")}

    agent = Recorder(web_server.url, headers={"Authorization": f"Bearer {key}"})
    web = Recorder(web_server.url, follow_redirects=False)
    log_in(web, "rita", "pw-rita")

    ids = []
    for path in ("/echo", "/broken"):
        response = agent.post(
            "/api/v1/actions",
            json={
                "action_type": "http.request",
                "params": {"credential": "ticket-api", "method": "POST", "path": path, "json": {"x": 1}},
                "summary": f"POST {path}",
            },
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    agent.get("/api/v1/action-types")

    target.status = 200
    page = web.get(f"/actions/{ids[0]}")
    web.post(f"/actions/{ids[0]}/approve", data={"comment": "ok", "csrfmiddlewaretoken": csrf_from(page.text)})
    done = agent.get(f"/api/v1/actions/{ids[0]}/wait?timeout=30").json()
    assert done["status"] == "succeeded", done
    assert done["result"]["body"]["Authorization plain"] == "[redacted]"

    target.status = 500
    page = web.get(f"/actions/{ids[1]}")
    web.post(f"/actions/{ids[1]}/approve", data={"csrfmiddlewaretoken": csrf_from(page.text)})
    failed = agent.get(f"/api/v1/actions/{ids[1]}/wait?timeout=30").json()
    assert failed["status"] == "failed", failed

    # Everything a person could look at afterwards.
    for action_id in ids:
        agent.get(f"/api/v1/actions/{action_id}")
        web.get(f"/actions/{action_id}")
        web.get(f"/actions/{action_id}/live")
        web.get(f"/actions/{action_id}/row")
    agent.get("/api/v1/actions")
    web.get("/")
    web.get("/history")
    export = io.StringIO()
    call_command("export_audit", stdout=export)

    # The secret did reach the target, twice: the search below can find a leak.
    assert [r.headers["Authorization"] for r in target.requests] == [f"Bearer {SECRET}"] * 2
    places = {
        **{f"response {i}": body for i, body in enumerate(agent.bodies + web.bodies)},
        "web log": web_server.full_log(),
        "worker log": celery_worker.full_log(),
        "audit export": export.getvalue(),
    }
    assert len(agent.bodies) > 10 and len(web.bodies) > 10 and export.getvalue().count("\n") > 10
    leaked = [where for where, text in places.items() if SECRET in text]
    assert leaked == []
    # Nor any other form of it: base64, URL-encoded, hex, JSON-escaped, inside a JWT (tests/execution/test_secret_forms.py).
    assert leaks(places, forms_to_find([SECRET, f"Bearer {SECRET}"])) == []
