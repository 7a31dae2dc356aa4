"""The embedded default: no DATABASE_URL, no REDIS_URL — a newcomer's first run.

Real processes, as ``make demo`` starts them, on SQLite, the file-system
Celery broker and the in-memory channel layer, all under a temporary var/:
migrate, seed_demo, web (uvicorn) and worker; then an agent proposes with the
printed key, a reviewer approves, the worker executes, the agent's long-poll
sees the result. Skip with ``-m "not embedded"``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ARTIFACTS
from tests.servers import ROOT, VENV_BIN, free_port, start_web, start_worker

pytestmark = pytest.mark.embedded

# Everything that would switch the app away from its embedded default.
NOT_EMBEDDED = {
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "SECRET_KEY",
    "COUNTERSIGN_CREDENTIAL_KEYS",
    "STATIC_ROOT",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
}


def embedded_env(var_dir: Path, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k not in NOT_EMBEDDED}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "COUNTERSIGN_VAR_DIR": str(var_dir),
            "COUNTERSIGN_BASE_URL": base_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


class Demo:
    url: str
    var_dir: Path
    password: str
    agent_key: str
    reviewer_token: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("embedded-var")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = embedded_env(var_dir, base_url)

    manage(env, "migrate", "--noinput")
    seeded = manage(env, "seed_demo", "--base-url", base_url)
    login = re.search(r"log in\s+reviewer / (\S+)", seeded)
    key = re.search(r"agent key\s+(cs_\S+)", seeded)
    assert login and key, seeded
    assert f"open       {base_url}/" in seeded

    d = Demo()
    d.url, d.var_dir = base_url, var_dir
    d.password, d.agent_key = login.group(1), key.group(1)
    d.reviewer_token = manage(env, "create_reviewer_token", "reviewer").strip()

    log_dir = ARTIFACTS / "logs"
    web = worker = None
    try:
        web, url = start_web(env, log_dir, name="embedded-web", port=port)
        assert url == base_url
        worker = start_worker(env, log_dir, name="embedded-worker", concurrency=1)
        yield d
    finally:
        if worker is not None:
            # The work is done and var/ is thrown away; a graceful stop idles ~6 s on the file-system broker.
            worker.kill(signal.SIGKILL)
            worker.stop()
        if web is not None:
            web.stop()


def test_runs_on_sqlite_and_the_file_system_broker(demo):
    # Everything lives under var/: the database, the broker's queues, the generated keys.
    assert (demo.var_dir / "countersign.sqlite3").is_file()
    assert (demo.var_dir / "broker").is_dir()
    assert (demo.var_dir / "secret_key").is_file()
    assert (demo.var_dir / "credential_key").is_file()

    ready = httpx.get(f"{demo.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "not configured (embedded mode)", "broker": "ok"},
    }
    assert httpx.get(f"{demo.url}/healthz", timeout=5).json() == {"status": "ok"}


def test_the_whole_loop_with_the_printed_key_and_a_reviewer_token(demo):
    agent = httpx.Client(base_url=demo.url, headers={"Authorization": f"Bearer {demo.agent_key}"}, timeout=30)
    reviewer = httpx.Client(base_url=demo.url, headers={"Authorization": f"Token {demo.reviewer_token}"}, timeout=30)
    with agent, reviewer:
        types = {t["name"] for t in agent.get("/api/v1/action-types").json()}
        assert types == {"decision.only", "http.request"}

        # The request seed_demo prints as its example: Countersign's own /healthz, behind the demo credential.
        created = agent.post(
            "/api/v1/actions",
            json={
                "action_type": "http.request",
                "summary": "Check that Countersign is healthy",
                "params": {"credential": "countersign-self", "method": "GET", "path": "/healthz"},
            },
        )
        assert created.status_code == 201, created.text
        action = created.json()
        assert action["status"] == "pending"
        assert action["required_approvals"] == 1

        # The agent long-polls while the reviewer decides (the worker's events reach the
        # web process through its embedded relay, not through Redis).
        waited: dict[str, object] = {}

        def agent_waits():
            t0 = time.monotonic()
            waited["response"] = agent.get(f"/api/v1/actions/{action['id']}/wait", params={"timeout": "25"})
            waited["elapsed"] = time.monotonic() - t0

        waiter = threading.Thread(target=agent_waits)
        waiter.start()
        queue = reviewer.get("/api/v1/actions", params={"status": "pending"}).json()["results"]
        assert [a["id"] for a in queue] == [action["id"]]
        approved = reviewer.post(f"/api/v1/actions/{action['id']}/approve", json={"comment": "looks harmless"})
        assert approved.status_code == 200, approved.text
        waiter.join(timeout=30)
        assert not waiter.is_alive()

        response = waited["response"]
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "succeeded", body
        assert body["result"] == {"status_code": 200, "body": {"status": "ok"}}
        assert body["decision"]["reviews"][0]["reviewer"] == "reviewer"
        assert waited["elapsed"] < 20, "the long-poll was not woken by the execution; it ran to its timeout"

        # The credential only allows GET: a POST is refused at proposal time.
        refused = agent.post(
            "/api/v1/actions",
            json={
                "action_type": "http.request",
                "summary": "Try to write",
                "params": {"credential": "countersign-self", "method": "POST", "path": "/healthz"},
            },
        )
        assert refused.status_code == 400
        assert "params.method" in refused.json()["errors"]


def test_reviewer_logs_in_with_the_printed_password_and_approves_a_decision(demo):
    agent = httpx.Client(base_url=demo.url, headers={"Authorization": f"Bearer {demo.agent_key}"}, timeout=30)
    browser = httpx.Client(base_url=demo.url, timeout=30)
    with agent, browser:
        created = agent.post(
            "/api/v1/actions",
            json={
                "action_type": "decision.only",
                "summary": "Restart the billing service",
                "params": {"command": "restart", "service": "billing"},
            },
        )
        assert created.status_code == 201, created.text
        action_id = created.json()["id"]

        login_page = browser.get("/accounts/login/")
        assert login_page.status_code == 200
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
        logged_in = browser.post(
            "/accounts/login/",
            data={"username": "reviewer", "password": demo.password, "csrfmiddlewaretoken": csrf},
        )
        assert logged_in.status_code == 302, logged_in.text
        assert "sessionid" in browser.cookies

        approved = browser.post(
            f"/api/v1/actions/{action_id}/approve",
            json={"comment": "go ahead"},
            headers={"X-CSRFToken": browser.cookies["csrftoken"]},
        )
        assert approved.status_code == 200, approved.text

        body = agent.get(f"/api/v1/actions/{action_id}/wait", params={"timeout": "10", "until": "decision"}).json()
        assert body["status"] == "approved"
        assert body["decision"]["outcome"] == "approved"
        assert body["decision"]["reviews"][0]["comment"] == "go ahead"
