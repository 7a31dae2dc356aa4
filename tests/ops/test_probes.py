"""The probes a platform uses: /healthz (alive), /readyz (can serve: the database), /healthz/dependencies (every
dependency, for monitoring). Each answers within 250 ms whatever is down, for any Host header, without a redirect,
without a session.

"Within 250 ms" is judged the way it can fail: a probe that waited on a hung dependency would be late every time
(libpq's connect timeout alone is 2 s), so the median of each probe's answers is held to 250 ms and every single
answer to the second a platform's probe allows (Kubernetes' default timeoutSeconds). One answer late by a scheduling
hiccup on a busy 2-core machine is not the probe waiting.

In-process for what the middleware decides (host, redirects, cookies, beat's heartbeat); real uvicorn processes
for what is down: a private Redis stopped under a running web, and a database and a Redis that accept connections
and never answer (the case a connect timeout alone cannot bound: libpq's is 2 s at least).
"""

from __future__ import annotations

import socket
import statistics
import time
from pathlib import Path

import httpx
import pytest
from django.test import Client, override_settings

from config.settings.production import SECURE_REDIRECT_EXEMPT
from tests.support.reliability_support import LOG_DIR, RedisServer, stack_env_on, start_uvicorn, stop_all

PROBES = ("/healthz", "/readyz", "/healthz/dependencies")
DEADLINE = 0.25  # issue 18: each probe answers within 250 ms whatever is down
PLATFORM_TIMEOUT = 1.0  # Kubernetes' default probe timeoutSeconds: past it the probe counts as failed


def production_like(var_dir: Path):
    """What a production instance validates: its public host only, plain HTTP redirected to HTTPS. (Its own var
    directory: no beat heartbeat left there by another run.)"""
    return override_settings(
        VAR_DIR=var_dir,
        ALLOWED_HOSTS=["countersign.example.com"],
        SECURE_SSL_REDIRECT=True,
        SECURE_REDIRECT_EXEMPT=SECURE_REDIRECT_EXEMPT,
        APPEND_SLASH=True,
    )


# --- in process -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_probes_answer_any_host_over_plain_http_without_redirect_or_cookie(tmp_path: Path):
    client = Client()
    with production_like(tmp_path):
        # The same request elsewhere is refused: what the probes skip is really there.
        assert client.get("/accounts/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400
        assert client.get("/accounts/login/", HTTP_HOST="countersign.example.com").status_code == 301
        for path in PROBES:
            for host in ("10.1.2.3:8000", "[fd00::7]:8000", "countersign.example.com", "localhost"):
                response = client.get(path, HTTP_HOST=host)
                assert response.status_code == 200, (path, host, response.status_code)
                assert response["Content-Type"] == "application/json"
                assert "Set-Cookie" not in response and "Cookie" not in response.get("Vary", ""), (path, host)
                assert response["X-Request-ID"]  # still carries the request id


@pytest.mark.django_db
def test_readyz_reports_each_dependency_and_is_ready_with_everything_up():
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "broker": "ok"}}
    assert Client().get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_dependencies_fail_on_a_stale_beat_heartbeat_and_leave_an_unseen_one_unknown(tmp_path: Path):
    from config.heartbeat import record_heartbeat

    with override_settings(VAR_DIR=tmp_path):
        unseen = Client().get("/healthz/dependencies")
        assert unseen.status_code == 200, unseen.content
        body = unseen.json()
        assert body["status"] == "ok" and body["failing"] == [] and body["beat_heartbeat_age_seconds"] is None
        assert body["checks"]["beat"].startswith("unknown")
        assert {k: body["checks"][k] for k in ("database", "redis", "broker")} == dict.fromkeys(
            ("database", "redis", "broker"), "ok"
        )

        record_heartbeat(now=time.time() - 600)
        stale = Client().get("/healthz/dependencies")
        assert stale.status_code == 503, stale.content
        assert stale.json()["failing"] == ["beat"] and stale.json()["beat_heartbeat_age_seconds"] >= 600
        assert stale.json()["checks"]["beat"].startswith("error: last heartbeat")
        # Readiness does not depend on beat.
        assert Client().get("/readyz").status_code == 200

        record_heartbeat()
        fresh = Client().get("/healthz/dependencies")
        assert fresh.status_code == 200 and fresh.json()["checks"]["beat"] == "ok", fresh.content


# --- real processes, dependencies down ----------------------------------------------------------------------------


class SilentServer:
    """Accepts TCP connections and never answers: a database or Redis that hangs (the kernel completes the
    handshake from the listen backlog; nothing is ever read or written)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def timed_get(url: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = httpx.get(url, timeout=5, headers={"Host": "10.9.8.7:8000"})
    return response, time.perf_counter() - started


def assert_answered_in_time(took: dict[str, list[float]]) -> None:
    for path, durations in took.items():
        assert statistics.median(durations) < DEADLINE, (path, durations)
        assert max(durations) < PLATFORM_TIMEOUT, (path, durations)


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for {pid}")


@pytest.fixture
def hanging_dependencies(stack_env):
    database, cache = SilentServer(), SilentServer()
    env = {
        **stack_env,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{database.port}/countersign",
        "REDIS_URL": f"redis://127.0.0.1:{cache.port}/0",
        "ALLOWED_HOSTS": "countersign.example.com",
    }
    web, url = start_uvicorn(env, "probes-hanging-web")
    try:
        yield web, url
    finally:
        stop_all(web)
        database.close()
        cache.close()


@pytest.mark.django_db
def test_probes_answer_in_time_when_the_database_and_redis_hang(hanging_dependencies):
    web, url = hanging_dependencies
    timed_get(f"{url}/readyz")  # the first probe starts the checks' threads
    threads_before = thread_count(web.proc.pid)
    took: dict[str, list[float]] = {path: [] for path in PROBES}
    for _ in range(10):
        alive, alive_took = timed_get(f"{url}/healthz")
        assert alive.status_code == 200, alive.text
        took["/healthz"].append(alive_took)

        ready, ready_took = timed_get(f"{url}/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["database"] == "error: no answer within 150 ms", ready.text
        assert ready.json()["checks"]["redis"].startswith("error"), ready.text
        took["/readyz"].append(ready_took)

        deps, deps_took = timed_get(f"{url}/healthz/dependencies")
        assert deps.status_code == 503 and {"database", "redis", "broker"} <= set(deps.json()["failing"]), deps.text
        took["/healthz/dependencies"].append(deps_took)
    assert_answered_in_time(took)
    # A hung check holds its one thread; probes wait for it instead of starting more.
    assert thread_count(web.proc.pid) <= threads_before + 1


@pytest.mark.django_db(transaction=True)
def test_readyz_stays_ready_while_redis_is_down_and_dependencies_says_so(stack_env, tmp_path: Path):
    redis_server = RedisServer(name="probes-redis").start()
    web = None
    try:
        env = stack_env_on(stack_env, redis_server, COUNTERSIGN_VAR_DIR=str(tmp_path))  # no beat heartbeat there
        web, url = start_uvicorn(env, "probes-web", log_dir=LOG_DIR)
        ready, _ = timed_get(f"{url}/readyz")
        assert ready.status_code == 200 and set(ready.json()["checks"].values()) == {"ok"}, ready.text

        redis_server.stop()
        took: dict[str, list[float]] = {"/readyz": [], "/healthz/dependencies": []}
        for _ in range(5):
            ready, ready_took = timed_get(f"{url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "ready" and ready.json()["checks"]["database"] == "ok", ready.text
            assert ready.json()["checks"]["redis"].startswith("error"), ready.text
            assert ready.json()["checks"]["broker"].startswith("error"), ready.text
            took["/readyz"].append(ready_took)

            deps, deps_took = timed_get(f"{url}/healthz/dependencies")
            assert deps.status_code == 503 and deps.json()["failing"] == ["redis", "broker"], deps.text
            took["/healthz/dependencies"].append(deps_took)
        assert_answered_in_time(took)

        redis_server.start()
        ready, _ = timed_get(f"{url}/readyz")
        assert ready.status_code == 200 and set(ready.json()["checks"].values()) == {"ok"}, ready.text
    finally:
        stop_all(web)
        redis_server.close()
