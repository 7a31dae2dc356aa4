"""Real processes and loopback servers the tests start: a recording HTTP target,
a Celery worker and an ASGI server, each on the test database and Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")


@dataclass
class RecordingServer:
    """An HTTP target on loopback that records every request and answers JSON.

    ``resources`` maps a path to the JSON it answers (or a function of the
    RecordedRequest returning it); ``delay`` slows every
    answer down (to catch a worker mid-request); ``status`` forces a status;
    ``response_headers`` (a function of the RecordedRequest) adds headers to each answer.
    """

    requests: list[RecordedRequest] = field(default_factory=list)
    resources: dict[str, object] = field(default_factory=dict)
    delay: float = 0.0
    # Only these methods are slowed down (None: all): catch an execution's PUT mid-request without slowing down
    # the GET a decision's preview reads with.
    slow_methods: frozenset[str] | None = None
    status: int = 200
    port: int = 0
    response_headers: object = None

    def start(self) -> RecordingServer:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = RecordedRequest(self.command, self.path, dict(self.headers), body)
                recorder.requests.append(recorded)
                if recorder.delay and (recorder.slow_methods is None or self.command in recorder.slow_methods):
                    time.sleep(recorder.delay)
                payload = recorder.resources.get(self.path.split("?")[0], {"ok": True, "method": self.command})
                if callable(payload):
                    payload = payload(recorded)
                data = json.dumps(payload).encode()
                self.send_response(recorder.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (recorder.response_headers(recorded) if recorder.response_headers else {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def process_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PYTHONUNBUFFERED": "1",
            # As production marks delivered pushes (in batches, by a thread): these servers commit for real, so the
            # thread's connection sees their rows (config/settings/test.py says why the test process does not).
            "COUNTERSIGN_PUSH_MARK_MS": "200",
            **extra,
        }
    )
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


class ManagedProcess:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name, self.args, self.env = name, args, env
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ManagedProcess:
        # The log file is appended to across runs and restarts; log() reads only this start's part.
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def log(self) -> str:
        """What the process wrote since it was (re)started."""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._offset)
            return fh.read().decode(errors="replace")

    def full_log(self) -> str:
        """Everything in the log file, earlier runs included."""
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def start_mcp_http(name: str, args: list[str], port: int, log_dir: Path) -> tuple[ManagedProcess, str]:
    """Start an MCP server speaking streamable HTTP on ``port`` (``args``: its command line) and wait until it
    answers; it refuses a request without its bearer token (401), which is how it shows it listens."""
    server = ManagedProcess(name, args, process_env("", ""), log_dir).start()
    url = f"http://127.0.0.1:{port}/mcp"

    def up() -> bool:
        try:
            return httpx.post(url, json={}, timeout=1).status_code == 401
        except httpx.HTTPError:
            assert server.proc.poll() is None, server.log()
            return False

    wait_until(up, timeout=30, message=f"{name} to listen")
    return server, url


def start_worker(env: dict[str, str], log_dir: Path, name: str = "worker", concurrency: int = 2) -> ManagedProcess:
    worker = ManagedProcess(
        name,
        [
            str(VENV_BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--without-mingle",
            "--without-gossip",
            "-n",
            f"{name}-{os.getpid()}@%h",
        ],
        env,
        log_dir,
    ).start()
    wait_started(worker, lambda: "ready." in worker.log())
    return worker


def start_web(
    env: dict[str, str], log_dir: Path, name: str = "web", port: int | None = None
) -> tuple[ManagedProcess, str]:
    port = port or free_port()
    web = ManagedProcess(
        name,
        [
            str(VENV_BIN / "uvicorn"),
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        env,
        log_dir,
    ).start()
    url = f"http://127.0.0.1:{port}"
    wait_started(web, lambda: answers_healthz(url))
    return web, url


def answers_healthz(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_started(process: ManagedProcess, ready, timeout: float = 30.0) -> None:
    """Poll ``ready()`` until it holds; a process that exits first fails at once, with its log."""

    def started() -> bool:
        if ready():
            return True
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.log()}")
        return False

    try:
        wait_until(started, timeout=timeout, interval=0.1, message=f"{process.name} to start")
    except AssertionError:
        raise RuntimeError(f"{process.name} did not start:\n{process.log()}") from None


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
