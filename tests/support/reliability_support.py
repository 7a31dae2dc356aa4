"""Real processes for the reliability scenarios (docs/RELIABILITY.md): a private Redis the test may stop and
restart, uvicorn with several workers, Celery beat, a fast "beat" for sweeps, a reviewer's websocket, and the
people and credentials a scenario needs.

Every scenario runs on its own redis-server (a free port), so its queues and channel groups are its own: the
session's shared worker (tests/conftest.py) never takes one of its tasks, and stopping that Redis disturbs
nobody else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from tests.support.servers import ROOT, VENV_BIN, ManagedProcess, answers_healthz, free_port, wait_started

LOG_DIR = ROOT / "test-artifacts" / "logs"


# --- a private redis-server ----------------------------------------------------------------


class RedisServer:
    """``redis-server --port N --save "" --appendonly no``: nothing survives a restart, like a cache node that
    was replaced. ``stop`` and ``start`` keep the port, so clients reconnect to the same address."""

    def __init__(self, log_dir: Path = LOG_DIR, name: str = "redis"):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cs-redis-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM: redis-server closes every connection and exits (no snapshot: --save "")."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def stack_env_on(stack_env: dict[str, str], redis_server: RedisServer, **extra: str) -> dict[str, str]:
    """The session's subprocess environment (test database), on a private Redis."""
    return {**stack_env, "REDIS_URL": redis_server.url(0), **extra}


# --- processes -------------------------------------------------------------------------------


def start_uvicorn(
    env: dict[str, str], name: str, *, workers: int = 1, port: int | None = None, log_dir: Path = LOG_DIR
) -> tuple[ManagedProcess, str]:
    """uvicorn (``--workers N`` when N > 1: a supervisor and N processes on one socket)."""
    port = port or free_port()
    args = [str(VENV_BIN / "uvicorn"), "config.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--no-access-log"]
    if workers > 1:
        args += ["--workers", str(workers)]
    web = ManagedProcess(name, args, env, log_dir).start()
    return _healthy(web, f"http://127.0.0.1:{port}")


def start_procfile_web(
    env: dict[str, str], name: str, *, port: int | None = None, log_dir: Path = LOG_DIR
) -> tuple[ManagedProcess, str]:
    """The Procfile's ``web`` command as config/supervise.py runs it (its keep-alive and graceful-shutdown flags
    included), on ``port`` (a free one by default). ``proc`` is uvicorn itself (the shell ``exec``s it)."""
    from config.supervise import read_procfile

    command = dict(read_procfile(ROOT / "Procfile"))["web"]
    port = port or free_port()
    env = {**env, "HOST": "127.0.0.1", "PORT": str(port)}
    web = ManagedProcess(name, ["/bin/sh", "-c", f"exec {command}"], env, log_dir).start()
    return _healthy(web, f"http://127.0.0.1:{port}")


def _healthy(web: ManagedProcess, url: str) -> tuple[ManagedProcess, str]:
    """Wait until ``web`` answers /healthz at ``url`` (a minute at most)."""
    wait_started(web, lambda: answers_healthz(url), timeout=60)
    web.url = url
    return web, url


def spawn_worker(env: dict[str, str], name: str, concurrency: int = 2, log_dir: Path = LOG_DIR) -> ManagedProcess:
    """A Celery worker started in the background (tests.support.servers.start_worker waits for it); see ``is_ready``."""
    args = [str(VENV_BIN / "celery"), "-A", "config", "worker", "--loglevel=INFO", f"--concurrency={concurrency}"]
    args += ["--without-mingle", "--without-gossip", "-n", f"{name}-{os.getpid()}@%h"]
    return ManagedProcess(name, args, env, log_dir).start()


def is_ready(worker: ManagedProcess) -> bool:
    return worker.proc.poll() is None and "ready." in worker.log()


def open_executions(worker: ManagedProcess) -> int:
    """execute_action tasks this worker started and has not finished (its countersign.task log lines)."""
    log = worker.log()
    return log.count("task approvals.execute_action started") - log.count("task approvals.execute_action finished")


def pids_connected_to(port: int) -> set[int] | None:
    """Processes holding an established TCP connection to ``port`` on loopback (``ss``); None without ``ss``."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    args = [ss, "-Htnp", "state", "established", "dport", "=", f":{port}"]
    out = subprocess.run(args, capture_output=True, text=True, check=False).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def start_beat(env: dict[str, str], name: str = "beat", log_dir: Path = LOG_DIR) -> ManagedProcess:
    """Celery beat with its schedule file in a temporary directory (never the shared var/)."""
    schedule = Path(tempfile.mkdtemp(prefix="cs-beat-")) / "schedule"
    args = [str(VENV_BIN / "celery"), "-A", "config", "beat", "--loglevel=INFO", "-s", str(schedule)]
    beat = ManagedProcess(name, args, env, log_dir).start()
    wait_started(beat, lambda: "beat: Starting" in beat.log() or "Scheduler: Sending" in beat.log())
    return beat


def start_ticker(env: dict[str, str], name: str = "ticker", interval: float = 0.5, log_dir: Path = LOG_DIR):
    """A fast beat (tests/support/reliability_ticker.py): the outbox sweep and the stuck-execution sweep, every
    ``interval`` seconds, in a process on the scenario's database and Redis."""
    args = [str(VENV_BIN / "python"), "-m", "tests.support.reliability_ticker", str(interval)]
    ticker = ManagedProcess(name, args, env, log_dir).start()
    wait_started(ticker, lambda: "ticker ready" in ticker.log())
    return ticker


def stop_all(*processes) -> None:
    for process in processes:
        if process is not None:
            with contextlib.suppress(Exception):  # teardown goes on for the others
                process.stop()


# --- people, keys and a credential -------------------------------------------------------------


@dataclass
class Cast:
    """Who takes part in a scenario: reviewers with API tokens, agents with keys, the target's credential."""

    reviewer_tokens: list[str] = field(default_factory=list)
    reviewer_names: list[str] = field(default_factory=list)
    agent_keys: list[str] = field(default_factory=list)
    credential: str = "internal-api"


def make_cast(target_url: str, *, agents: int = 1, reviewers: int = 1, prefix: str = "rel") -> Cast:
    """Create (in the database the processes share) a reviewer group, reviewers, agents and a credential."""
    from django.conf import settings
    from django.contrib.auth.models import Group, User

    from agents.services import create_agent
    from approvals.models import ReviewerToken
    from approvals.services.credentials import create_credential
    from audit.chain import Actor

    cli = Actor("user", "reliability", "cli")
    group, _ = Group.objects.get_or_create(name=settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP)
    owner = User.objects.create_user(username=f"{prefix}-owner", password=f"pw-{prefix}-owner")
    cast = Cast()
    for i in range(reviewers):
        name = f"{prefix}-reviewer-{i}"
        user = User.objects.create_user(username=name, email=f"{name}@example.com", password=f"pw-{name}")
        user.groups.add(group)
        cast.reviewer_names.append(name)
        cast.reviewer_tokens.append(ReviewerToken.issue(user)[1])
    for i in range(agents):
        _, _, raw = create_agent(name=f"{prefix}-agent-{i}", owner=owner, actor=cli, allow=["http.request"])
        cast.agent_keys.append(raw)
    create_credential(
        name=cast.credential, kind="http_bearer", secret="reliability-secret", scope={"base_url": target_url}, actor=cli
    )
    return cast


def session_cookie(username: str) -> str:
    """A signed-in session (database sessions: every web process reads it) as a Cookie header value."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    assert client.login(username=username, password=f"pw-{username}")
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def audit_chain_intact() -> int:
    """Verify the whole audit chain; return how many events it holds (fails the test on a break)."""
    from audit.chain import iter_events, verify_chain

    checked, broken = verify_chain(iter_events())
    assert broken is None, f"audit chain broken at #{broken.seq}: {broken.reason}"
    return checked


# --- the API, as agents and reviewers call it --------------------------------------------------


class Api:
    """A small client for one web process: agents propose, reviewers decide."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=timeout, trust_env=False)

    def propose(self, key: str, path: str, *, method: str = "POST", callback_url: str = "", credential="internal-api"):
        body = {
            "action_type": "http.request",
            "params": {"credential": credential, "method": method, "path": path},
            "summary": f"{method} {path}",
            "context": {"reasoning": "reliability scenario"},
        }
        if callback_url:
            body["callback_url"] = callback_url
        return self.http.post("/api/v1/actions", json=body, headers={"Authorization": f"Bearer {key}"})

    def approve(self, token: str, action_id: str):
        return self.http.post(
            f"/api/v1/actions/{action_id}/approve", json={"comment": "ok"}, headers={"Authorization": f"Token {token}"}
        )

    def reject(self, token: str, action_id: str, reason: str = "not now"):
        return self.http.post(
            f"/api/v1/actions/{action_id}/reject", json={"reason": reason}, headers={"Authorization": f"Token {token}"}
        )

    def cancel(self, key: str, action_id: str):
        return self.http.post(f"/api/v1/actions/{action_id}/cancel", headers={"Authorization": f"Bearer {key}"})

    def get(self, key: str, action_id: str):
        return self.http.get(f"/api/v1/actions/{action_id}", headers={"Authorization": f"Bearer {key}"})

    def close(self) -> None:
        self.http.close()


# --- a reviewer's live websocket -----------------------------------------------------------------


class LiveSocket:
    """A reviewer page's websocket (``ws/events/``) opened with a session cookie, read by a thread.

    ``events`` collects every JSON message; ``closed`` is set when the server closes the socket.
    """

    def __init__(self, base_url: str, cookie: str):
        from websockets.sync.client import connect

        ws_url = base_url.replace("http://", "ws://") + "/ws/events/"
        self.events: list[dict] = []
        self.closed = threading.Event()
        self.close_reason = ""
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(
            connect(ws_url, origin=base_url, additional_headers={"Cookie": cookie}, open_timeout=10, proxy=None)
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self._ws:
                self.events.append(json.loads(message))
        except ConnectionClosed as exc:
            self.close_reason = str(exc)
        finally:
            self.closed.set()

    def statuses(self, action_id: str) -> list[str]:
        return [e["status"] for e in list(self.events) if e.get("action_id") == action_id]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()
        self._thread.join(timeout=5)


def percentiles(values: list[float], points=(50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (and max), in the values' unit."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{p}": ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] for p in points}
    out["max"] = ordered[-1]
    return out
