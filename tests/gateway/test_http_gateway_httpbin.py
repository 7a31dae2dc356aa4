"""The HTTP gateway against ``httpbin`` run locally (its own venv, ``.venv-httpbin``: requirements-httpbin.txt),
an echo server that shows exactly what reached the target: the credential's secret and nothing of the agent's."""

from __future__ import annotations

import os
import subprocess
import threading

import httpx
import pytest
import requests

from approvals import services
from approvals.models import ActionRequest
from approvals.services.credentials import create_credential
from tests.factories import CLI
from tests.support.servers import ROOT, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

HTTPBIN_PYTHON = os.environ.get("COUNTERSIGN_TEST_HTTPBIN_PYTHON", str(ROOT / ".venv-httpbin" / "bin" / "python"))
SECRET = "httpbin-target-token-never-shown"


@pytest.fixture(scope="session")
def httpbin_url():
    if not os.path.exists(HTTPBIN_PYTHON):
        pytest.skip(f"no httpbin venv at {HTTPBIN_PYTHON} (make install creates .venv-httpbin)")
    port = free_port()
    server = subprocess.Popen(
        [HTTPBIN_PYTHON, "-m", "httpbin.core", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/get", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=30, message="httpbin to start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def httpbin_credential(db, httpbin_url):
    return create_credential(
        name="internal-api", kind="http_bearer", secret=SECRET, scope={"base_url": httpbin_url}, actor=CLI
    )


def test_httpbin_sees_the_credentials_secret_and_nothing_of_the_agents(
    gateway_url, gw_key, httpbin_credential, reads_auto_approved
):
    with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {gw_key}"}, timeout=30) as client:
        response = client.get("/anything/tickets", params={"state": "open"}, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["method"] == "GET" and echoed["args"] == {"state": "open"}
    sent = echoed["headers"]
    assert sent["Authorization"] == "[redacted]"  # what httpbin saw was the secret; the answer is scrubbed
    assert SECRET not in response.text and gw_key not in response.text
    assert sent["Accept"] == "application/json"
    assert sent["Idempotency-Key"] == response.headers["Countersign-Action"]
    assert not any(name.lower().startswith(("x-forwarded", "cookie", "forwarded")) for name in sent)
    assert sent["Host"] == httpbin_credential.scope["base_url"].removeprefix("http://")


def test_a_held_form_post_reaches_httpbin_once_approved(
    gateway_url, gw_key, httpbin_credential, reviewer, celery_worker
):
    def approve():
        action = wait_until(lambda: ActionRequest.objects.filter(params__method="POST").first(), timeout=20)
        services.approve_action(action_id=action.id, reviewer=reviewer, via="api")

    threading.Thread(target=approve, daemon=True).start()
    response = requests.post(
        f"{gateway_url}/post",
        data={"title": "Disk full", "priority": "high"},
        headers={"Authorization": f"Bearer {gw_key}", "Countersign-Wait": "30"},
        timeout=40,
    )
    assert response.status_code == 200, response.text
    assert response.json()["form"] == {"title": "Disk full", "priority": "high"}


def test_httpbin_statuses_and_redirects_come_back_as_sent(gateway_url, gw_key, httpbin_credential, reads_auto_approved):
    auth = {"Authorization": f"Bearer {gw_key}"}
    teapot = httpx.get(f"{gateway_url}/status/418", headers=auth, timeout=30)
    assert teapot.status_code == 418
    moved = requests.get(f"{gateway_url}/redirect-to", params={"url": "http://127.0.0.1:9/"}, headers=auth, timeout=30)
    assert moved.status_code == 302 and "Location" not in moved.headers and moved.history == []


def test_a_basic_auth_credential_is_sent_and_scrubbed(gateway_url, gw_key, httpbin_url, reads_auto_approved, db):
    create_credential(
        name="internal-api",
        kind="http_basic",
        secret="svc-user:svc-password-9",
        scope={"base_url": httpbin_url},
        actor=CLI,
    )
    response = requests.get(f"{gateway_url}/headers", auth=("agent", gw_key), timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["headers"]["Authorization"] == "[redacted]"
    assert "svc-password-9" not in response.text and gw_key not in response.text
