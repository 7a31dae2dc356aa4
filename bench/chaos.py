"""Chaos run: the production shape on this machine, under load, through the faults of issue 18 (`make chaos`).

    make chaos                                              # about 3 minutes (longer when something does not recover)
    CHAOS_WORKER_KILLS=3 CHAOS_REDIS_OUTAGE_SECONDS=10 make chaos   # shorter

What it starts, all of its own: a PostgreSQL cluster (initdb/pg_ctl in a temporary directory, on a free port, so
it can be restarted without touching the machine's server), a redis-server, two web processes (the Procfile's
uvicorn command: its keep-alive and graceful-shutdown flags), two Celery workers (concurrency 2, kept database
connections), Celery beat, all on the production settings (bench.settings: production, static files from the
checkout), and a recording HTTP target that answers after ``CHAOS_TARGET_DELAY`` seconds, so executions are in
flight when the faults land.

Load: ``CHAOS_AGENTS`` agents each propose an ``http.request`` (alternately a non-idempotent POST and an
idempotent PUT to a path of their own) with an ``Idempotency-Key``, long-poll ``wait`` until it has run, and
propose the next; reviewers approve what is pending through the API. Agents and reviewers are spread over both
web processes and, like clients behind a load balancer, retry a request on the other web when the connection fails
(the same ``Idempotency-Key``: a retried proposal is never a second one).

Faults, one after the other while the load runs:

1. ``CHAOS_WORKER_KILLS`` worker SIGKILLs, each the whole process group of a worker whose pool process is in the
   middle of a request to the target (``ss``); the requests it had in flight are the interrupted executions. The
   killed worker is started again at once, as an orchestrator would.
2. A web SIGKILL (web A; started again 2 s later).
3. Redis stopped for ``CHAOS_REDIS_OUTAGE_SECONDS`` (its data saved and reloaded, as with the compose file's AOF;
   ``CHAOS_REDIS_PERSIST=0`` loses it instead); both webs' ``/readyz`` probed twice a second meanwhile.
4. PostgreSQL restarted (``pg_ctl restart -m fast``).

Then the load stops, everything is given ``CHAOS_SETTLE_TIMEOUT`` seconds to settle, and it prints each invariant
(PASS/FAIL) and each recovery time; exit status 1 if an invariant failed. Logs: var/chaos/<run>/. docs/RELIABILITY.md
("Chaos run") lists the knobs and the last figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.common import server_env  # noqa: E402
from tests.support.reliability_support import (  # noqa: E402
    RedisServer,
    audit_chain_intact,
    is_ready,
    make_cast,
    parent_pid,
    spawn_worker,
    start_beat,
    start_procfile_web,
    stop_all,
)
from tests.support.servers import VENV_BIN, free_port  # noqa: E402

PG_BIN = Path(os.environ.get("CHAOS_PG_BIN", "/usr/lib/postgresql/15/bin"))
SETTLED = {"succeeded", "failed", "unknown", "rejected", "expired", "cancelled"}
IN_FLIGHT = ("approved", "executing")


def knob(name: str, default: float) -> float:
    return float(os.environ.get(f"CHAOS_{name}", default))


@dataclass
class Config:
    agents: int = int(knob("AGENTS", 12))
    reviewers: int = int(knob("REVIEWERS", 2))
    warmup_seconds: float = knob("WARMUP_SECONDS", 15)
    worker_kills: int = int(knob("WORKER_KILLS", 6))
    kill_interval: float = knob("KILL_INTERVAL", 4)
    redis_outage_seconds: float = knob("REDIS_OUTAGE_SECONDS", 30)
    redis_persist: bool = os.environ.get("CHAOS_REDIS_PERSIST", "1") != "0"
    target_delay: float = knob("TARGET_DELAY", 1.5)
    # While Redis is out and until it has caught up: the figure is then Countersign's recovery, not the target's
    # throughput (with 1.5 s answers, 20 approved actions on 4 execution slots take 7.5 s whatever happens).
    redis_target_delay: float = knob("REDIS_TARGET_DELAY", 0.1)
    settle_timeout: float = knob("SETTLE_TIMEOUT", 90)
    worker_concurrency: int = int(knob("WORKER_CONCURRENCY", 2))


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# --- a private PostgreSQL cluster ------------------------------------------------------------------------------


class PostgresCluster:
    """initdb + pg_ctl in a temporary directory, on a free port, trust authentication on loopback only. Run as the
    ``postgres`` user when this process is root (PostgreSQL refuses to run as root)."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cs-chaos-pg-"))
        self.data = self.dir / "data"
        self.log_path = log_dir / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
            log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path.touch()
            shutil.chown(self.log_path, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, cwd=self.dir)

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> PostgresCluster:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._ctl("start", "-o", options)
        return self

    def _ctl(self, command: str, *args: str) -> None:
        self._run(str(PG_BIN / "pg_ctl"), command, "-D", str(self.data), "-l", str(self.log_path), "-w", *args)

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the target: records every request, and which connection carried it ----------------------------------------


@dataclass
class Hit:
    method: str
    path: str
    idempotency_key: str
    client_port: int
    arrived: float
    answered: float | None = None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A killed worker's connection resets under its handler: expected here, not worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Target:
    """An HTTP target on loopback that answers every request after ``delay`` seconds. It keeps the client port of
    each request, so a request in flight can be tied to the worker process holding its connection."""

    def __init__(self, delay: float):
        self.delay = delay
        self.hits: list[Hit] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                hit = Hit(
                    self.command,
                    self.path,
                    self.headers.get("Idempotency-Key", ""),
                    self.client_address[1],
                    time.monotonic(),
                )
                target.hits.append(hit)
                time.sleep(target.delay)
                body = json.dumps({"ok": True}).encode()
                with contextlib.suppress(OSError):  # the worker that sent it may have been killed meanwhile
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                hit.answered = time.monotonic()

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args):
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def in_flight(self) -> dict[int, Hit]:
        return {h.client_port: h for h in list(self.hits) if h.answered is None}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def connections_to(port: int) -> dict[int, int]:
    """{local port: pid} of the established loopback connections to ``port`` (``ss``)."""
    args = ["ss", "-Htnp", "state", "established", "dport", "=", f":{port}"]
    out = subprocess.run(args, capture_output=True, text=True, check=False).stdout
    found = {}
    for line in out.splitlines():
        local = re.search(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:\d+", line)
        pid = re.search(r"pid=(\d+)", line)
        if local and pid:
            found[int(local.group(1))] = int(pid.group(1))
    return found


# --- load: agents and reviewers, behind a "load balancer" of two webs -------------------------------------------


@dataclass
class Traffic:
    """Every API answer (time, what, status) and every connection failure, for the per-phase counts."""

    # (answered at, request name, status, sent at)
    answers: list[tuple[float, str, int, float]] = field(default_factory=list)
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    proposed: dict[str, str] = field(default_factory=dict)  # action id -> target path
    unanswered: list[str] = field(default_factory=list)  # idempotency keys of proposals still unanswered at the end


async def _balanced(clients: list[httpx.AsyncClient], first: int, traffic: Traffic, name: str, method, url, **kw):
    """One request, tried on web ``first`` and on the other one if the connection fails (a load balancer's retry)."""
    for attempt in range(4):
        client = clients[(first + attempt) % len(clients)]
        sent = time.monotonic()
        try:
            response = await client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            traffic.failures.append((time.monotonic(), name, type(exc).__name__))
            await asyncio.sleep(0.2)
            continue
        traffic.answers.append((time.monotonic(), name, response.status_code, sent))
        return response
    return None


async def _propose(index: int, key: str, clients, traffic: Traffic, stop: threading.Event, method: str, path: str):
    """Propose until the API answers 201, with one Idempotency-Key: a retry after a lost answer is the same proposal."""
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex}
    body = {
        "action_type": "http.request",
        "params": {"credential": "internal-api", "method": method, "path": path},
        "summary": f"Chaos {method} {path}",
        "context": {"reasoning": "chaos run"},
    }
    while not stop.is_set():
        response = await _balanced(
            clients, index, traffic, "propose", "POST", "/api/v1/actions", json=body, headers=headers
        )
        # 201, or 200 when an earlier try had created it and only its answer was lost.
        if response is not None and response.status_code in (200, 201):
            return response.json()["id"]
        await asyncio.sleep(0.5)
    traffic.unanswered.append(headers["Idempotency-Key"])
    return None


async def _agent(index: int, key: str, clients, traffic: Traffic, stop: threading.Event):
    """Proposes a POST (not idempotent) and a PUT (idempotent) in turn, each waited for until it has run."""
    auth = {"Authorization": f"Bearer {key}"}
    n = 0
    while not stop.is_set():
        method, path = ("POST" if n % 2 == 0 else "PUT"), f"/chaos/{index}/{n}"
        n += 1
        action_id = await _propose(index, key, clients, traffic, stop, method, path)
        if action_id is None:
            return
        traffic.proposed[action_id] = path
        params = {"timeout": 20, "until": "completion"}
        while not stop.is_set():
            waited = await _balanced(
                clients, index, traffic, "wait", "GET", f"/api/v1/actions/{action_id}/wait", params=params, headers=auth
            )
            if waited is not None and waited.status_code == 200 and waited.json()["status"] in SETTLED:
                break
            await asyncio.sleep(0.2)


async def _reviewer(index: int, token: str, count: int, clients, traffic: Traffic, done: asyncio.Event):
    """Lists what is pending and approves its share (by action id), until told the agents are done and none is left."""
    auth = {"Authorization": f"Token {token}"}
    while True:
        listed = await _balanced(
            clients,
            index,
            traffic,
            "list",
            "GET",
            "/api/v1/actions",
            params={"status": "pending", "limit": 200},
            headers=auth,
        )
        mine = []
        if listed is not None and listed.status_code == 200:
            mine = [a["id"] for a in listed.json()["results"] if uuid.UUID(a["id"]).int % count == index]
        for action_id in mine:
            await _balanced(
                clients,
                index,
                traffic,
                "approve",
                "POST",
                f"/api/v1/actions/{action_id}/approve",
                json={},
                headers=auth,
            )
        if not mine:
            if done.is_set():
                return
            await asyncio.sleep(0.2)


async def _drive(urls: list[str], cast, traffic: Traffic, stop: threading.Event) -> None:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    clients = [httpx.AsyncClient(base_url=u, limits=limits, timeout=40, trust_env=False) for u in urls]
    try:
        done = asyncio.Event()
        agents = [asyncio.create_task(_agent(i, k, clients, traffic, stop)) for i, k in enumerate(cast.agent_keys)]
        count = len(cast.reviewer_tokens)
        reviewers = [
            asyncio.create_task(_reviewer(i, t, count, clients, traffic, done))
            for i, t in enumerate(cast.reviewer_tokens)
        ]
        while not stop.is_set():
            await asyncio.sleep(0.2)
        await asyncio.gather(*agents)
        done.set()  # reviewers approve what is still pending, then stop
        await asyncio.gather(*reviewers)
    finally:
        for client in clients:
            await client.aclose()


# --- watching the database ------------------------------------------------------------------------------------


def _query(fn, default=None):
    """A query that survives the PostgreSQL restart (the connection is dropped and opened again next time)."""
    from django.db import connection
    from django.db.utils import DatabaseError, InterfaceError

    try:
        return fn()
    except (DatabaseError, InterfaceError):
        with contextlib.suppress(Exception):
            connection.close()
        return default


def statuses_of(action_ids: list[str]) -> dict[str, str]:
    from approvals.models import ActionRequest

    rows = _query(lambda: list(ActionRequest.objects.filter(id__in=action_ids).values_list("id", "status")), [])
    return {str(i): status for i, status in rows or []}


def wait_for(predicate, timeout: float, interval: float = 0.25) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    return None


# --- the run ----------------------------------------------------------------------------------------------------


@dataclass
class Interruption:
    at: float
    worker: str
    paths: list[tuple[str, str]]  # (method, path) the killed worker had in flight at the target
    action_ids: dict[str, str]  # path -> action id
    hits_at_kill: dict[str, int]  # path -> requests the target had seen for it when the worker was killed
    settled: dict[str, float] = field(default_factory=dict)  # path -> seconds from the SIGKILL until settled

    @property
    def settled_after(self) -> float | None:
        """Seconds until every interrupted execution was settled: a final status, or sent again (retried)."""
        if not self.action_ids or len(self.settled) < len(self.action_ids):
            return None
        return max(self.settled.values())


def watch_interruptions(run: Run, target: Target, stop: threading.Event) -> None:
    """Notes when each interrupted execution is settled, polling 4 times a second: its action reached a final
    status, or (an idempotent one) the target saw it again, the retry with the same key."""
    while not stop.is_set():
        for interruption in list(run.interruptions):
            waiting = {p: a for p, a in interruption.action_ids.items() if p not in interruption.settled}
            if not waiting:
                continue
            statuses = statuses_of(list(waiting.values()))
            seen = Counter(h.path for h in list(target.hits) if h.path in waiting)
            for path, action_id in waiting.items():
                if statuses.get(action_id) in SETTLED or seen[path] > interruption.hits_at_kill[path]:
                    interruption.settled[path] = time.monotonic() - interruption.at
        stop.wait(0.25)


@dataclass
class Run:
    config: Config
    log_dir: Path
    figures: dict[str, object] = field(default_factory=dict)
    checks: list[tuple[bool, str]] = field(default_factory=list)
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    interruptions: list[Interruption] = field(default_factory=list)
    pg_restart_paths: set[str] = field(default_factory=set)

    def check(self, ok: bool, text: str) -> None:
        self.checks.append((bool(ok), text))


class Stack:
    def __init__(self, env: dict[str, str], config: Config, log_dir: Path):
        self.env, self.config, self.log_dir = env, config, log_dir
        self.web_env = {**env, "DB_POOL": "8"}
        self.worker_env = {**env, "DB_POOL": "0", "DB_CONN_MAX_AGE": "60"}
        self.webs: list = [None, None]
        self.ports = [free_port(), free_port()]
        self.workers: list = [None, None]
        self.generation = Counter()
        self.beat = None
        self.retired: list = []

    def start(self) -> None:
        for slot in (0, 1):
            self.start_worker(slot, wait=True)
        self.beat = start_beat(self.env, name="chaos-beat", log_dir=self.log_dir)
        for slot in (0, 1):
            self.start_web(slot)

    def start_web(self, slot: int) -> None:
        name = f"chaos-web-{'ab'[slot]}"
        self.webs[slot], _ = start_procfile_web(self.web_env, name, port=self.ports[slot], log_dir=self.log_dir)

    def start_worker(self, slot: int, wait: bool = False) -> None:
        self.generation[slot] += 1
        name = f"chaos-worker-{slot}-{self.generation[slot]}"
        worker = spawn_worker(self.worker_env, name, self.config.worker_concurrency, log_dir=self.log_dir)
        self.workers[slot] = worker
        if wait and wait_for(lambda: is_ready(worker), 60) is None:
            raise RuntimeError(f"{name} did not start:\n{worker.log()[-3000:]}")

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def stop(self) -> None:
        stop_all(*self.webs, *self.workers, self.beat, *self.retired)


def kill_workers_mid_execution(stack: Stack, target: Target, run: Run, traffic: Traffic) -> None:
    config, began = stack.config, time.monotonic()
    for n in range(config.worker_kills):
        chosen = None

        def in_flight_on_a_worker():
            nonlocal chosen
            flying = target.in_flight()
            by_slot: dict[int, list[Hit]] = defaultdict(list)
            for local_port, pid in connections_to(target.port).items():
                hit = flying.get(local_port)
                for slot, worker in enumerate(stack.workers):
                    if hit and worker.proc.poll() is None and parent_pid(pid) == worker.proc.pid:
                        by_slot[slot].append(hit)
            if by_slot:
                chosen = max(by_slot.items(), key=lambda item: len(item[1]))
            return chosen is not None

        if wait_for(in_flight_on_a_worker, 30, interval=0.05) is None:
            run.check(False, f"worker kill {n + 1}: no execution in flight on a worker within 30 s")
            continue
        slot, hits = chosen
        worker = stack.workers[slot]
        worker.kill(signal.SIGKILL)  # the whole process group: the main process and its pool
        killed_at = time.monotonic()
        by_path = {path: action_id for action_id, path in list(traffic.proposed.items())}
        seen = Counter(h.path for h in list(target.hits))
        run.interruptions.append(
            Interruption(
                killed_at,
                worker.name,
                [(h.method, h.path) for h in hits],
                {h.path: by_path[h.path] for h in hits if h.path in by_path},
                {h.path: seen[h.path] for h in hits},
            )
        )
        say(f"SIGKILL {worker.name}, in flight: {', '.join(h.method + ' ' + h.path for h in hits)}")
        stack.retired.append(worker)
        stack.start_worker(slot)  # the orchestrator restarts it
        time.sleep(config.kill_interval)
    run.windows["worker kills"] = (began, time.monotonic())


def probe_readiness(urls: list[str], stop: threading.Event, probes: list[tuple[float, int, float]]) -> None:
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while not stop.is_set():
            for url in urls:
                started = time.monotonic()
                try:
                    code = client.get(f"{url}/readyz").status_code
                except httpx.HTTPError:
                    code = 0
                probes.append((started, code, time.monotonic() - started))
            stop.wait(0.5)


def kill_a_web(stack: Stack, run: Run) -> None:
    """SIGKILL web A (clients fail over to B); the orchestrator starts it again 2 s later."""
    began = time.monotonic()
    stack.webs[0].kill(signal.SIGKILL)
    say("SIGKILL web A")
    time.sleep(2)
    stack.retired.append(stack.webs[0])
    stack.start_web(0)
    run.figures["web A: SIGKILL -> answering again, restart included (s)"] = round(time.monotonic() - began, 1)
    run.windows["web kill"] = (began, time.monotonic())


def stop_redis(stack: Stack, redis_server: RedisServer, run: Run) -> None:
    """Redis down for the outage; readiness probed meanwhile; then the time until everything caught up."""
    import redis

    config = run.config
    probes: list[tuple[float, int, float]] = []
    stop_probes = threading.Event()
    prober = threading.Thread(target=probe_readiness, args=(stack.urls, stop_probes, probes))
    # Measured alone: an action an earlier fault left stuck is that fault's finding (its own invariant), not this one's.
    stuck = stuck_approved_actions()
    if stuck:
        run.figures["approved actions already stuck before the Redis outage"] = len(stuck)
    began = time.monotonic()
    prober.start()
    if config.redis_persist:
        with contextlib.suppress(redis.RedisError, OSError):
            redis.Redis(port=redis_server.port).shutdown(save=True)  # saved and reloaded, as AOF would keep it
    redis_server.stop()
    say(f"Redis stopped for {config.redis_outage_seconds:.0f} s")
    time.sleep(config.redis_outage_seconds)
    stop_probes.set()
    prober.join()
    redis_server.start()
    back_at, back_wall = time.monotonic(), datetime.now(UTC)
    run.windows["Redis outage"] = (began, back_at)
    say("Redis back")
    run.figures["approved actions waiting to run when Redis came back"] = _query(
        lambda: len(stuck_approved_actions(0) - stuck), "?"
    )
    caught_up = wait_for(lambda: outbox_and_executions_caught_up(back_wall, stuck), 60, interval=0.2)
    run.figures["Redis back -> outbox empty and every approved action executed (s)"] = (
        round(caught_up, 1) if caught_up is not None else "not within 60 s"
    )
    codes = [code for _, code, _ in probes]
    slowest = max((seconds for _, _, seconds in probes), default=0.0)
    others = dict(Counter(c for c in codes if c != 200))
    run.figures["/readyz while Redis was down"] = (
        f"{codes.count(200)}/{len(codes)} answered 200{f', others {others}' if others else ''}; "
        f"slowest {slowest * 1000:.0f} ms"
    )
    run.check(bool(codes) and not others, "both webs stayed ready (/readyz 200) while Redis was down")
    run.check(slowest < 0.25, "every /readyz answered within 250 ms while Redis was down")
    run.check(
        caught_up is not None and caught_up <= 5,
        "outbox empty and approved actions executed within 5 s of Redis's return",
    )


def restart_postgres(pg: PostgresCluster, target: Target, run: Run) -> None:
    """``pg_ctl restart -m fast``: every connection is cut; notes the executions that were in flight meanwhile."""
    began = time.monotonic()
    say("restarting PostgreSQL")
    pg.restart()
    back = time.monotonic()
    run.windows["PostgreSQL restart"] = (began, back)
    run.figures["PostgreSQL restart, down for (s)"] = round(back - began, 1)
    time.sleep(2)
    # Requests at the target while the restart cut the workers' connections: their results may not be recorded.
    run.pg_restart_paths = {
        h.path for h in list(target.hits) if h.arrived <= back + 2 and (h.answered is None or h.answered >= began)
    }


def stuck_approved_actions(seconds: float = 30) -> set[str]:
    """Actions approved more than ``seconds`` ago that have not finished executing."""
    from django.utils import timezone

    from approvals.models import ActionRequest

    cutoff = timezone.now() - timedelta(seconds=seconds)
    rows = ActionRequest.objects.filter(status__in=IN_FLIGHT, decided_at__lt=cutoff).values_list("id", flat=True)
    return {str(i) for i in rows}


def outbox_and_executions_caught_up(before: datetime, excluded: set[str]) -> bool:
    """Every outbox message written before ``before`` delivered, and every action approved before it executed
    (but the ``excluded`` ones)."""
    from approvals.models import ActionRequest, OutboxMessage

    def check():
        undelivered = OutboxMessage.objects.filter(delivered_at__isnull=True, created_at__lte=before)
        waiting = ActionRequest.objects.filter(status__in=IN_FLIGHT, decided_at__lte=before)
        undelivered = undelivered.exclude(action_id__in=list(excluded))
        return not undelivered.exists() and not waiting.exclude(id__in=list(excluded)).exists()

    return bool(_query(check, False))


def main() -> int:
    import django

    config = Config()
    started = time.monotonic()
    run_name = datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = ROOT / "var" / "chaos" / run_name
    log_dir.mkdir(parents=True, exist_ok=True)
    run = Run(config, log_dir)
    say(f"chaos run {run_name}: logs in {log_dir.relative_to(ROOT)}")

    pg = PostgresCluster(log_dir).init()
    pg.create_database("countersign")
    redis_server = RedisServer(log_dir, name="chaos-redis").start()
    env = server_env(
        pg.url("countersign"),
        REDIS_URL=redis_server.url(0),
        COUNTERSIGN_BENCH_ENDPOINTS="0",  # exactly the production URLs
        LOG_LEVEL=os.environ.get("CHAOS_LOG_LEVEL", "INFO"),
        COUNTERSIGN_VAR_DIR=str(log_dir / "var"),
    )
    say(f"PostgreSQL on port {pg.port}, Redis on port {redis_server.port}; migrating")
    subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update({**env, "LOG_LEVEL": "WARNING", "DB_POOL": "0"})
    django.setup()

    target = Target(config.target_delay)
    stack = Stack(env, config, log_dir)
    stop_load, stop_watch = threading.Event(), threading.Event()
    traffic = Traffic()
    loader = None
    watcher = threading.Thread(target=watch_interruptions, args=(run, target, stop_watch), daemon=True)
    try:
        cast = make_cast(target.url, agents=config.agents, reviewers=config.reviewers, prefix=f"chaos-{run_name}")
        stack.start()
        say(f"stack up: webs {stack.urls}, 2 workers x {config.worker_concurrency}, beat; load starts")
        loader = threading.Thread(target=asyncio.run, args=(_drive(stack.urls, cast, traffic, stop_load),))
        loader.start()
        watcher.start()
        time.sleep(config.warmup_seconds)

        kill_workers_mid_execution(stack, target, run, traffic)
        # Each fault measured alone: the next one starts when the kills' executions have settled (or 40 s passed).
        wait_for(lambda: all(i.settled_after is not None for i in run.interruptions), 40, interval=0.5)
        kill_a_web(stack, run)
        time.sleep(3)
        target.delay = config.redis_target_delay
        stop_redis(stack, redis_server, run)
        target.delay = config.target_delay
        restart_postgres(pg, target, run)
        time.sleep(5)

        stop_load.set()
        say("load stopped; waiting for everything to settle")
        loader.join(timeout=120)
        loader = None
        settle(run, traffic, target)
    finally:
        stop_load.set()
        stop_watch.set()
        if loader is not None:
            loader.join(timeout=60)
        stack.stop()
        target.stop()
        redis_server.close()
        pg.close()
    run.figures["total run time (s)"] = round(time.monotonic() - started, 1)
    hits = [h.__dict__ for h in target.hits]
    (log_dir / "target-requests.json").write_text(json.dumps(hits, indent=1))
    print(report(run))
    (log_dir / "chaos-summary.json").write_text(
        json.dumps({"figures": run.figures, "checks": run.checks}, indent=2, default=str)
    )
    return 0 if all(ok for ok, _ in run.checks) else 1


def settle(run: Run, traffic: Traffic, target: Target) -> None:
    """Wait for every proposal to settle and the outbox to drain, then check the invariants."""
    from approvals.models import ActionRequest, OutboxMessage

    created = list(traffic.proposed)

    def everything_settled() -> bool:
        def check() -> bool:
            still_open = ActionRequest.objects.filter(id__in=created).exclude(status__in=SETTLED).exists()
            return not still_open and not OutboxMessage.objects.filter(delivered_at__isnull=True).exists()

        return bool(_query(check, False))

    timeout = run.config.settle_timeout
    drained = wait_for(everything_settled, timeout, interval=0.5)
    time.sleep(0.5)  # the interruption watcher's last look
    run.figures["load stopped -> everything settled (s)"] = round(drained, 1) if drained is not None else "no"
    run.check(drained is not None, f"every proposal settled and the outbox drained within {timeout:.0f} s")

    actions = {str(a.id): a for a in ActionRequest.objects.filter(id__in=created)}
    run.figures["proposals"] = f"{len(created)}: {dict(Counter(a.status for a in actions.values()))}"
    missing = [a for a in created if a not in actions]
    run.check(not missing, f"0 lost proposals (every proposal answered 201 is in the database; {len(missing)} missing)")
    if traffic.unanswered:
        run.figures["proposals still unanswered when the load stopped"] = len(traffic.unanswered)

    check_executions(run, traffic, target, actions)
    undelivered = OutboxMessage.objects.filter(delivered_at__isnull=True).count()
    run.check(undelivered == 0, f"outbox drained ({undelivered} undelivered)")
    try:
        run.figures["audit events verified"] = audit_chain_intact()
        run.check(True, "audit chain intact")
    except AssertionError as exc:
        run.check(False, f"audit chain intact: {exc}")
    check_answers(run, traffic)


def check_executions(run: Run, traffic: Traffic, target: Target, actions: dict) -> None:
    """At most once for POSTs, the action id as the key of every PUT, an honest status for every interruption."""
    action_of = {path: action_id for action_id, path in traffic.proposed.items()}
    hits: dict[str, list[Hit]] = defaultdict(list)
    for hit in target.hits:
        hits[hit.path].append(hit)

    twice = [path for path, seen in hits.items() if seen[0].method == "POST" and len(seen) > 1]
    run.check(not twice, f"0 duplicate side effects: every POST reached the target at most once {twice[:5]}")
    unkeyed = [h.path for h in target.hits if h.method == "PUT" and h.idempotency_key != action_of.get(h.path)]
    run.check(not unkeyed, f"every PUT, retries included, carried its action id as Idempotency-Key {unkeyed[:5]}")

    settle_times = [i.settled_after for i in run.interruptions if i.settled_after is not None]
    unsettled = len(run.interruptions) - len(settle_times)
    run.figures["worker SIGKILL -> its interrupted executions settled, per kill (s)"] = ", ".join(
        f"{t:.1f}" for t in settle_times
    ) + (f"; {unsettled} kill(s) never settled" if unsettled else "")
    by_method: dict[str, list[float]] = defaultdict(list)
    for interruption in run.interruptions:
        for method, path in interruption.paths:
            if path in interruption.settled:
                by_method[method].append(interruption.settled[path])
    for method, what in (("POST", "unknown"), ("PUT", "sent again")):
        if by_method[method]:
            times = by_method[method]
            run.figures[f"interrupted {method} -> {what} (s)"] = f"{min(times):.1f}-{max(times):.1f} ({len(times)})"
    run.check(
        bool(run.interruptions) and not unsettled and max(settle_times) <= 30,
        f"every interrupted execution settled (a final status, or sent again) within 30 s of its worker's SIGKILL "
        f"({len(run.interruptions)} kills)",
    )

    interrupted = Counter(path for i in run.interruptions for _, path in i.paths)
    honest, dishonest = Counter(), []
    for path, times in interrupted.items():
        action = actions.get(action_of.get(path, ""))
        if action is None:
            continue
        method, reached = action.params["method"], len(hits[path])
        if method == "POST":  # it may have taken effect: unknown, and never sent again
            ok = action.status == "unknown" and reached == 1
        else:  # idempotent: sent again with the same key once per interruption, then finished
            ok = action.status == "succeeded" and reached == times + 1
        if ok:
            honest[f"{method} {action.status}"] += 1
        else:
            dishonest.append(f"{method} {path} {action.status}, at the target {reached}x, interrupted {times}x")
    run.figures["interrupted executions"] = f"{sum(interrupted.values())}: {dict(honest)}"
    run.check(
        bool(interrupted) and not dishonest,
        "every interrupted execution settled honestly (POST: unknown, sent once; PUT: sent again once, succeeded)"
        + (f"; not: {dishonest[:6]}" if dishonest else ""),
    )
    # Executions the PostgreSQL restart cut off from the database: honest too (a POST that may have taken effect is
    # unknown, never sent twice); how many ended unknown although the target had answered is a figure to watch.
    outcomes, wrong = Counter(), []
    for path in sorted(run.pg_restart_paths - set(interrupted)):
        action = actions.get(action_of.get(path, ""))
        if action is None:
            continue
        method, reached = action.params["method"], len(hits[path])
        limit = 1 if method == "POST" else settings_max_attempts()
        if action.status in ("succeeded", "unknown") and reached <= limit:
            outcomes[f"{method} {action.status}"] += 1
        else:
            wrong.append(f"{method} {path} {action.status}, at the target {reached}x")
    run.figures["executions in flight during the PostgreSQL restart"] = dict(outcomes) or 0
    run.check(not wrong, f"every execution the PostgreSQL restart cut off settled honestly {wrong[:6]}")

    untouched = [a for path, a in action_of.items() if path not in interrupted and path not in run.pg_restart_paths]
    odd = [
        f"{actions[a].params['path']}: {actions[a].status}"
        for a in untouched
        if a in actions and actions[a].status != "succeeded"
    ]
    run.check(not odd, f"every execution no fault touched succeeded {odd[:6]}")


def settings_max_attempts() -> int:
    from django.conf import settings

    return settings.COUNTERSIGN_MAX_EXECUTION_ATTEMPTS


def check_answers(run: Run, traffic: Traffic) -> None:
    """5xx by phase: none at all, except for requests in flight while PostgreSQL restarts (its outage stops the
    service by design; they answer 503 with Retry-After)."""
    pg_began, pg_back = run.windows.get("PostgreSQL restart", (0.0, 0.0))
    five_xx: Counter = Counter()
    last_after_pg = None
    for at, name, code, sent in traffic.answers:
        if code < 500:
            continue
        if sent <= pg_back and at >= pg_began:  # in flight at some moment of the restart
            phase = "while PostgreSQL restarted"
        elif pg_back < at <= pg_back + 10:
            phase, last_after_pg = "after PostgreSQL was back", max(last_after_pg or 0.0, at - pg_back)
        else:
            phase = next((p for p, (a, b) in run.windows.items() if a <= at <= b + 3), "no fault")
        five_xx[f"{phase}: {name}"] += 1
    run.figures["answers"] = f"{len(traffic.answers)}: {dict(Counter(code for _, _, code, _ in traffic.answers))}"
    run.figures["5xx"] = dict(five_xx) or 0
    if last_after_pg is not None:
        run.figures["PostgreSQL back -> last 5xx (s)"] = round(last_after_pg, 2)
    proposed = [at for at, name, code, _ in traffic.answers if name == "propose" and code == 201]
    first_201 = min((at for at in proposed if at > pg_back), default=None)
    if pg_back and first_201 is not None:
        run.figures["PostgreSQL back -> first proposal answered 201 (s)"] = round(first_201 - pg_back, 2)
    outside = {k: v for k, v in five_xx.items() if not k.startswith("while")}
    run.check(not outside, f"0 5xx outside the PostgreSQL restart itself {outside or ''}")
    internal = sum(1 for _, _, code, _ in traffic.answers if code == 500)
    run.check(not internal, f"0 answers 500 at all (a lost database answers 503 with Retry-After) {internal or ''}")
    by_phase: Counter = Counter()
    for at, name, error in traffic.failures:
        phase = next((p for p, (a, b) in run.windows.items() if a <= at <= b + 3), "no fault")
        by_phase[f"{phase}: {name} {error}"] += 1
    run.figures["connection failures (each retried on the other web)"] = dict(by_phase) or 0


def report(run: Run) -> str:
    config = run.config
    redis = "saved and reloaded" if config.redis_persist else "its data lost"
    lines = [
        "",
        f"== chaos run, {datetime.now().strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores ==",
        f"{config.agents} agents, {config.reviewers} reviewers; 2 webs (the Procfile's uvicorn), 2 workers x "
        f"{config.worker_concurrency}, beat; target answers after {config.target_delay} s",
        f"faults: {config.worker_kills} worker SIGKILLs, a web SIGKILL, Redis down {config.redis_outage_seconds:.0f} s "
        f"({redis}), a PostgreSQL restart",
        "",
        "figures:",
    ]
    lines += [f"  {name}: {value}" for name, value in run.figures.items()]
    lines += ["", "worker kills:"]
    for i in run.interruptions:
        after = f"settled after {i.settled_after:.1f} s" if i.settled_after is not None else "never settled"
        lines.append(f"  {i.worker}: {', '.join(m + ' ' + p for m, p in i.paths)}; {after}")
    lines += ["", "invariants:"]
    lines += [f"  {'PASS' if ok else 'FAIL'}  {text}" for ok, text in run.checks]
    failed = sum(1 for ok, _ in run.checks if not ok)
    verdict = "every invariant held" if not failed else f"{failed} invariant(s) failed"
    lines.append(f"\n{verdict}; logs in {run.log_dir.relative_to(ROOT)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
