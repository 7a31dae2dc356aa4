"""Request rate, latency and errors by route group: an ASGI middleware in front of everything (config/asgi.py).

Labels stay few whatever the traffic: a route group (``route_group``), a method class (read, write, other) and
a status class (2xx ... 5xx, or ``closed`` when the client left before an answer, as a long-poll's client
may). Never the raw path: a path holds action ids, and one series per id would grow without end.

Several web processes, one answer. Production runs ``uvicorn --workers N``: N processes accept on one socket
and a scrape of /metrics reaches whichever accepts it, so each process must answer for all of them. Each
worker writes its counters to a memory-mapped file of its own (prometheus_client's multiprocess mode,
PROMETHEUS_MULTIPROC_DIR), and /metrics adds up every file in the directory. The cost per request stays a
few microseconds (a write into a mapped page; no database, no Redis, no system call), and the sum is right
whichever process answers. Rejected alternatives: counters in Redis (a network round trip per request, and
no counts while Redis is down, exactly when an operator needs them) and per-process metrics scraped one by
one (uvicorn's workers share one port; a scrape cannot choose its process).

The directory is per server: ``COUNTERSIGN_METRICS_DIR/web-<uvicorn's pid>-<its start time>``, made when the
first worker starts. A worker that uvicorn starts again after a crash writes beside its dead predecessor's
file, which is still added up, so the totals never go down while the server runs (Prometheus would read a
drop as a counter reset). A server that starts anew gets a new directory, and the directories of servers no
longer running are deleted then: "cleaned at start", without a wrapper around uvicorn's command, and safe
with several servers sharing the base directory (each keeps its own). A single-process server (no
``--workers``) needs none of this and keeps its counters in memory.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

# Latency buckets (seconds): milliseconds for the API's ordinary calls, up to the minute a long-poll may last.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# First path segment -> group. Everything not listed (the reviewers' pages, log-in) is "web".
GROUP_OF_PREFIX = {
    "api": "api",
    "humanlayer": "humanlayer",
    "slack": "slack",
    "admin": "admin",
    "static": "static",
    "healthz": "ops",
    "readyz": "ops",
    "metrics": "ops",
}
# prometheus_client's switch to multiprocess mode: set by prepare_process, not by the operator.
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Every value each request label can take (docs/deploy.md, "/metrics").
LABEL_VALUES = {
    "group": ("api", "api_wait", "humanlayer", "slack", "admin", "ops", "static", "web"),
    "method": ("read", "write", "other"),
    "status": ("1xx", "2xx", "3xx", "4xx", "5xx", "closed"),
    "outcome": ("accepted", "refused", "closed"),
}

_server_dir: Path | None = None
_instruments: _Instruments | None = None


def route_group(path: str) -> str:
    """The group a request path belongs to; the agent's long-poll (``.../wait``, up to 60 s by design) is a group
    of its own, so that it does not hide the API's real latency."""
    first = path[1:].split("/", 1)[0]
    group = GROUP_OF_PREFIX.get(first, "web")
    if group == "api" and path.endswith("/wait"):
        return "api_wait"
    return group


def method_class(method: str) -> str:
    if method in READ_METHODS:
        return "read"
    if method in WRITE_METHODS:
        return "write"
    return "other"


def status_class(status: int | None) -> str:
    return "closed" if status is None else f"{status // 100}xx"


# --- one directory per server ------------------------------------------------------------------------------


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22), to tell a running process
    from a later one that reuses its pid; "0" where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    return stat.rsplit(")", 1)[1].split()[19]


def _running(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: running
    return started == "0" or _start_time(pid) == started


def _remove_stale_servers(base: Path, keep: Path) -> None:
    for entry in base.glob("web-*-*"):
        if entry == keep:
            continue
        _, pid, started = entry.name.split("-", 2)
        if pid.isdigit() and not _running(int(pid), started):
            shutil.rmtree(entry, ignore_errors=True)


def prepare_process(base: Path) -> Path | None:
    """Called first in a web process (config/asgi.py), before anything imports prometheus_client: in a worker
    of a multi-process uvicorn, switch prometheus_client to multiprocess mode in this server's directory
    under ``base`` (created here, never at settings import) and return it; otherwise None."""
    global _server_dir
    parent = multiprocessing.parent_process()  # uvicorn --workers N spawns its workers with multiprocessing
    if parent is None or parent.pid is None:
        return None
    server_dir = base / f"web-{parent.pid}-{_start_time(parent.pid)}"
    server_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_servers(base, keep=server_dir)
    os.environ.update({MULTIPROC_DIR_VARIABLE: str(server_dir)})  # read by prometheus_client, set only here
    if "prometheus_client" in sys.modules:  # imported early after all: switch its value class too
        from prometheus_client import values

        values.ValueClass = values.MultiProcessValue()
    _server_dir = server_dir
    return server_dir


# --- the instruments ---------------------------------------------------------------------------------------


class _Instruments:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        # registry=None: exposed only through /metrics' own registry (register_request_metrics), never the
        # global one, so that importing this twice (tests) cannot fail with a duplicate.
        self.requests = Counter(
            "countersign_http_requests",
            "HTTP requests answered, by route group, method class (read/write/other) and status class.",
            ["group", "method", "status"],
            registry=None,
        )
        self.latency = Histogram(
            "countersign_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route group and method class.",
            ["group", "method"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.websockets = Counter(
            "countersign_websocket_connects",
            "Websocket handshakes, by outcome: accepted, refused (origin, log-in), closed (client left first).",
            ["outcome"],
            registry=None,
        )
        # Labelled children, kept: .labels() takes a lock and builds a key on every call.
        self._request_children: dict[tuple[str, str, str], object] = {}
        self._latency_children: dict[tuple[str, str], object] = {}

    def record(self, group: str, method: str, status: str, seconds: float) -> None:
        counter = self._request_children.get((group, method, status))
        if counter is None:
            counter = self._request_children[(group, method, status)] = self.requests.labels(group, method, status)
        histogram = self._latency_children.get((group, method))
        if histogram is None:
            histogram = self._latency_children[(group, method)] = self.latency.labels(group, method)
        counter.inc()
        histogram.observe(seconds)


def instruments() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


def register_request_metrics(registry) -> None:
    """Add the request metrics to /metrics' registry: every worker's files summed, or this process's own."""
    if _server_dir is not None:
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry, path=str(_server_dir))
        return
    registry.register(_OwnInstruments(instruments()))


class _OwnInstruments:
    def __init__(self, held: _Instruments) -> None:
        self.held = held

    def collect(self):
        yield from self.held.requests.collect()
        yield from self.held.latency.collect()
        yield from self.held.websockets.collect()


# --- the middleware ----------------------------------------------------------------------------------------


class RequestMetrics:
    """Pure ASGI: counts and times every HTTP request, and counts websocket handshakes, before any other layer
    (requests the size guard refuses are counted too)."""

    def __init__(self, app) -> None:
        self.app = app
        self.instruments = instruments()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            return await self._http(scope, receive, send)
        if scope["type"] == "websocket":
            return await self._websocket(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _http(self, scope, receive, send):
        status: int | None = None

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            if status is None:
                status = 500  # the server answers 500 for an application that raised before answering
            raise
        finally:
            self.instruments.record(
                route_group(scope["path"]),
                method_class(scope["method"]),
                status_class(status),
                time.perf_counter() - started,
            )

    async def _websocket(self, scope, receive, send):
        outcome: str | None = None

        async def send_and_note(message):
            nonlocal outcome
            if outcome is None:
                kind = message["type"]
                if kind == "websocket.accept":
                    outcome = "accepted"
                elif kind in ("websocket.close", "websocket.http.response.start"):
                    outcome = "refused"
                if outcome is not None:
                    self.instruments.websockets.labels(outcome).inc()
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if outcome is None:
                self.instruments.websockets.labels("closed").inc()
