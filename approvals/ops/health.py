"""Is each dependency up, answered within a deadline whatever is down.

The probes (``/readyz``, ``/healthz/dependencies``: approvals/web/ops.py) and the metrics ask here. Each check
runs on a thread of its own, one run per dependency at a time: a caller waits for the run in progress (or starts
one) until its deadline, and a check that hangs (a database or Redis that swallows packets; libpq cannot be
told to give up connecting in under 2 s) holds that one thread, never one per probe, while every caller gets
"no answer within N ms" on time. ``COUNTERSIGN_HEALTH_TIMEOUT_MS`` is the deadline (150 ms by default, so a
probe answers within 250 ms whatever is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from config.heartbeat import HEARTBEAT_SECONDS, heartbeat_age

DATABASE, REDIS, BROKER, BEAT = "database", "redis", "broker", "beat"
# As the beat container's own healthcheck (`check_beat_heartbeat --max-age 120`): four missed heartbeats.
BEAT_HEARTBEAT_MAX_AGE_SECONDS = 4 * HEARTBEAT_SECONDS


@dataclass(frozen=True)
class DependencyStatus:
    """One dependency as this process sees it now.

    ``up`` is None when this process cannot know (beat's heartbeat file is not on its disk). ``detail`` is what
    the probes show: ``ok``, ``error: <exception class>``, ``error: no answer within N ms``, or for beat
    ``unknown: ...``. ``seconds`` is how long the check took (the deadline when it did not answer in time).
    """

    name: str
    up: bool | None
    detail: str
    seconds: float
    age_seconds: float | None = None  # beat: seconds since its last heartbeat, when known


def default_timeout() -> float:
    from django.conf import settings

    return settings.COUNTERSIGN_HEALTH_TIMEOUT_MS / 1000


# --- what each check does, on its own thread --------------------------------------------------------------------


def _ping_database(timeout: float) -> None:
    """Bounded by the caller's deadline, not here: libpq's connect_timeout cannot go below 2 s."""
    from django.db import connections

    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        # Back to the pool (DB_POOL), or closed: the checks' thread keeps no connection between probes.
        # The check already failed or succeeded; a broken close changes nothing.
        with contextlib.suppress(Exception):
            connection.close()


def _ping_redis(timeout: float) -> None:
    import redis
    from django.conf import settings
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # The Redis of the channel layer, the cache and (usually) the broker: REDIS_URL, or the embedded socket.
    client = redis.Redis.from_url(
        settings.COUNTERSIGN_CHANNEL_REDIS_URL,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    finally:
        client.close()


def _ping_broker(timeout: float) -> None:
    from config.celery_app import app

    # The broker as Celery sees it (CELERY_BROKER_URL may name another server), one attempt, no retry.
    options = {**app.conf.broker_transport_options, "socket_connect_timeout": timeout, "socket_timeout": timeout}
    with app.connection_for_write(transport_options=options, connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=0, timeout=timeout)


class _Check:
    """One dependency's check, one run at a time, each on a daemon thread (a hung check must not keep the
    process from exiting); concurrent callers share the run in progress."""

    def __init__(self, name: str, ping: Callable[[float], None]):
        self.name, self.ping = name, ping
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._running: Future | None = None

    def start(self, timeout: float) -> Future:
        with self._lock:
            # A forked child (a Celery pool process) inherits the parent's future, not the thread behind it.
            if self._pid != os.getpid() or self._running is None or self._running.done():
                self._pid, self._running = os.getpid(), Future()
                running = self._running
                running.set_running_or_notify_cancel()  # a waiter giving up (asyncio cancel) cannot cancel it
                threading.Thread(
                    target=lambda: running.set_result(self._run(timeout)), name=f"health-{self.name}", daemon=True
                ).start()
            return self._running

    def _run(self, timeout: float) -> DependencyStatus:
        started = time.perf_counter()
        try:
            self.ping(timeout)
        except Exception as exc:
            return DependencyStatus(self.name, False, f"error: {type(exc).__name__}", time.perf_counter() - started)
        return DependencyStatus(self.name, True, "ok", time.perf_counter() - started)

    def late(self, timeout: float) -> DependencyStatus:
        return DependencyStatus(self.name, False, f"error: no answer within {timeout * 1000:.0f} ms", timeout)


_CHECKS = {
    DATABASE: _Check(DATABASE, _ping_database),
    REDIS: _Check(REDIS, _ping_redis),
    BROKER: _Check(BROKER, _ping_broker),
}


def _bounded(name: str, timeout: float | None) -> DependencyStatus:
    timeout = default_timeout() if timeout is None else timeout
    check = _CHECKS[name]
    try:
        return check.start(timeout).result(timeout)
    except FutureTimeout:
        return check.late(timeout)


def check_database(timeout: float | None = None) -> DependencyStatus:
    """The default database answers ``SELECT 1`` (through the pool when DB_POOL is set)."""
    return _bounded(DATABASE, timeout)


def check_redis(timeout: float | None = None) -> DependencyStatus:
    """Redis (channel layer, cache) answers PING."""
    return _bounded(REDIS, timeout)


def check_broker(timeout: float | None = None) -> DependencyStatus:
    """The Celery broker accepts a connection."""
    return _bounded(BROKER, timeout)


def check_beat(max_age: float = BEAT_HEARTBEAT_MAX_AGE_SECONDS) -> DependencyStatus:
    """Beat's heartbeat (config/heartbeat.py) is recent. Known only where beat's COUNTERSIGN_VAR_DIR is visible
    (beat's own machine or volume); elsewhere ``up`` is None."""
    started = time.perf_counter()
    age = heartbeat_age()
    took = time.perf_counter() - started
    if age is None:
        return DependencyStatus(BEAT, None, "unknown: no beat heartbeat in this process's COUNTERSIGN_VAR_DIR", took)
    if age > max_age:
        return DependencyStatus(BEAT, False, f"error: last heartbeat {age:.0f} s ago", took, age)
    return DependencyStatus(BEAT, True, "ok", took, age)


ALL = (DATABASE, REDIS, BROKER, BEAT)


def check(names: Iterable[str] = ALL, timeout: float | None = None) -> dict[str, DependencyStatus]:
    """The named dependencies, checked at the same time, all answered by one deadline."""
    timeout = default_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    names = list(names)
    running = {name: _CHECKS[name].start(timeout) for name in names if name in _CHECKS}
    results: dict[str, DependencyStatus] = {}
    for name in names:
        if name == BEAT:
            results[name] = check_beat()
            continue
        try:
            results[name] = running[name].result(max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            results[name] = _CHECKS[name].late(timeout)
    return results


async def acheck(names: Iterable[str] = ALL, timeout: float | None = None) -> dict[str, DependencyStatus]:
    """``check`` for async code: the event loop waits for the checks' threads without blocking."""
    timeout = default_timeout() if timeout is None else timeout
    names = list(names)
    running = {name: asyncio.wrap_future(_CHECKS[name].start(timeout)) for name in names if name in _CHECKS}
    if running:
        await asyncio.wait(running.values(), timeout=timeout)  # never cancels: other callers may share a run
    results: dict[str, DependencyStatus] = {}
    for name in names:
        if name == BEAT:
            results[name] = check_beat()
        elif running[name].done():
            results[name] = running[name].result()
        else:
            results[name] = _CHECKS[name].late(timeout)
    return results
