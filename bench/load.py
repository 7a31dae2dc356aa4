"""Load bench: concurrent agents against a real Countersign stack; reviewers approve what arrives.

    make bench-load                                   # 50 agents for 60 s (docs/RELIABILITY.md)
    BENCH_AGENTS=10 BENCH_SECONDS=10 make bench-load  # the short mode CI can afford

It starts everything itself: a fresh PostgreSQL database (``BENCH_DATABASE``, default ``countersign_bench``,
dropped and re-created on ``BENCH_PG``, default ``postgres://postgres@127.0.0.1:5432``), its own redis-server
on a free port, uvicorn with ``BENCH_WEB_WORKERS`` processes (default 2, ``DB_POOL=8`` each), a Celery worker
(``BENCH_WORKER_CONCURRENCY``, default 4, ``DB_CONN_MAX_AGE=60``), Celery beat, and a recording HTTP target on
loopback: the layout of docs/deploy.md on this 2-core machine.

Each agent (its own identity and key) proposes an ``http.request`` POST to a path of its own, reads it back and
long-polls ``wait`` until it has run, then proposes the next. ``BENCH_REVIEWERS`` reviewers (API tokens) list
what is pending and approve it. When the time is up the bench lets everything drain, then checks: no 5xx and no
transport error, every 201 is in the database, every action executed exactly once (the target saw each path
once, and as many requests as there are succeeded actions), the outbox is empty, the audit chain verifies.
It prints requests per second and latency percentiles, and exits 1 if any check failed.

Agents' budgets are raised for the bench (``COUNTERSIGN_AGENT_*_RATE``): it measures the service, not the
rate limiter. tests/reliability/test_reliability_load.py runs the same code for 10 agents x 10 s in the normal suite.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FINISHED = {"succeeded", "failed", "rejected", "expired", "cancelled"}
RATES = {"COUNTERSIGN_AGENT_REQUEST_RATE": "1000000/min", "COUNTERSIGN_AGENT_PROPOSAL_RATE": "1000000/min"}


@dataclass
class Config:
    agents: int = 50
    seconds: float = 60.0
    reviewers: int = 4
    web_workers: int = 2
    worker_concurrency: int = 4
    wait_timeout: int = 20
    drain_timeout: float = 120.0

    @classmethod
    def from_env(cls, **defaults) -> Config:
        base = cls(**defaults)
        return cls(
            agents=int(os.environ.get("BENCH_AGENTS", base.agents)),
            seconds=float(os.environ.get("BENCH_SECONDS", base.seconds)),
            reviewers=int(os.environ.get("BENCH_REVIEWERS", base.reviewers)),
            web_workers=int(os.environ.get("BENCH_WEB_WORKERS", base.web_workers)),
            worker_concurrency=int(os.environ.get("BENCH_WORKER_CONCURRENCY", base.worker_concurrency)),
            wait_timeout=base.wait_timeout,
            drain_timeout=base.drain_timeout,
        )


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    transport_errors: Counter = field(default_factory=Counter)
    created: dict[str, str] = field(default_factory=dict)  # action id -> target path
    proposed_at: dict[str, float] = field(default_factory=dict)
    completion: list[float] = field(default_factory=list)

    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    def server_errors(self) -> int:
        return sum(n for c in self.statuses.values() for code, n in c.items() if code >= 500)


@dataclass
class Result:
    config: Config
    stats: Stats
    elapsed: float
    problems: list[str]
    figures: dict[str, object]

    @property
    def ok(self) -> bool:
        return not self.problems


async def _call(client: httpx.AsyncClient, stats: Stats, name: str, method: str, url: str, **kwargs):
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        stats.transport_errors[f"{name}: {type(exc).__name__}"] += 1
        return None
    stats.latencies[name].append(time.perf_counter() - started)
    stats.statuses[name][response.status_code] += 1
    return response


async def _agent(index: int, key: str, client: httpx.AsyncClient, stats: Stats, config: Config, deadline: float):
    auth = {"Authorization": f"Bearer {key}"}
    n = 0
    while time.monotonic() < deadline:
        path = f"/load/{index}/{n}"
        n += 1
        body = {
            "action_type": "http.request",
            "params": {"credential": "internal-api", "method": "POST", "path": path},
            "summary": f"Load {index}/{n}",
            "context": {"reasoning": "load bench"},
        }
        proposed = time.perf_counter()
        response = await _call(client, stats, "propose", "POST", "/api/v1/actions", json=body, headers=auth)
        if response is None or response.status_code != 201:
            await asyncio.sleep(0.5)
            continue
        action_id = response.json()["id"]
        stats.created[action_id] = path
        stats.proposed_at[action_id] = proposed
        await _call(client, stats, "get", "GET", f"/api/v1/actions/{action_id}", headers=auth)
        params = {"timeout": config.wait_timeout, "until": "completion"}
        waited = await _call(
            client, stats, "wait", "GET", f"/api/v1/actions/{action_id}/wait", params=params, headers=auth
        )
        if waited is not None and waited.status_code == 200 and waited.json()["status"] in FINISHED:
            stats.completion.append(time.perf_counter() - proposed)


async def _reviewer(index: int, token: str, count: int, client: httpx.AsyncClient, stats: Stats, done: asyncio.Event):
    auth = {"Authorization": f"Token {token}"}
    while True:
        listed = await _call(
            client, stats, "list", "GET", "/api/v1/actions", params={"status": "pending", "limit": 200}, headers=auth
        )
        mine = []
        if listed is not None and listed.status_code == 200:
            mine = [a["id"] for a in listed.json()["results"] if int(a["id"].replace("-", ""), 16) % count == index]
        for action_id in mine:
            await _call(client, stats, "approve", "POST", f"/api/v1/actions/{action_id}/approve", json={}, headers=auth)
        if not mine:
            if done.is_set():
                return
            await asyncio.sleep(0.2)


async def _drive(url: str, agent_keys: list[str], reviewer_tokens: list[str], config: Config, stats: Stats) -> float:
    limits = httpx.Limits(max_connections=len(agent_keys) + len(reviewer_tokens) + 10, max_keepalive_connections=100)
    timeout = httpx.Timeout(config.wait_timeout + 30)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout, trust_env=False) as client:
        started = time.monotonic()
        deadline = started + config.seconds
        agents_done = asyncio.Event()
        agents = [asyncio.create_task(_agent(i, k, client, stats, config, deadline)) for i, k in enumerate(agent_keys)]
        reviewers = [
            asyncio.create_task(_reviewer(i, t, len(reviewer_tokens), client, stats, agents_done))
            for i, t in enumerate(reviewer_tokens)
        ]
        await asyncio.gather(*agents)
        elapsed = time.monotonic() - started
        agents_done.set()
        await asyncio.gather(*reviewers)
        return elapsed


def _stages(actions) -> dict[str, float]:
    """Median seconds of each stage, from the actions' own timestamps."""
    rows = list(actions.values_list("created_at", "decided_at", "execution_started_at", "finished_at"))
    if not rows:
        return {}

    def median(pairs) -> float:
        values = sorted((b - a).total_seconds() for a, b in pairs if a and b)
        return round(values[len(values) // 2], 3) if values else float("nan")

    return {
        "proposed -> approved": median((r[0], r[1]) for r in rows),
        "approved -> execution started": median((r[1], r[2]) for r in rows),
        "execution": median((r[2], r[3]) for r in rows),
    }


def _percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] * 1000

    return f"p50 {at(50):.0f} ms, p90 {at(90):.0f} ms, p99 {at(99):.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def run(config: Config, env: dict[str, str], log_dir: Path, name: str = "load") -> Result:
    """Drive the stack on ``env``'s database (Django in this process must use the same one) and check it."""
    from approvals.models import ActionRequest, OutboxMessage
    from tests.support.reliability_support import (
        audit_chain_intact,
        make_cast,
        start_beat,
        start_uvicorn,
        stop_all,
    )
    from tests.support.servers import RecordingServer, start_worker, wait_until

    env = {**RATES, **env}
    # The layout docs/deploy.md recommends: a connection pool per web process, kept connections in the worker.
    web_env = {"DB_POOL": "8", **env}
    worker_env = {"DB_CONN_MAX_AGE": "60", **env}
    target = RecordingServer().start()
    processes = []
    problems: list[str] = []
    figures: dict[str, object] = {}
    stats = Stats()
    try:
        cast = make_cast(target.url, agents=config.agents, reviewers=config.reviewers, prefix=name)
        processes.append(
            start_worker(worker_env, log_dir, name=f"{name}-worker", concurrency=config.worker_concurrency)
        )
        processes.append(start_beat(env, name=f"{name}-beat"))
        web, url = start_uvicorn(web_env, f"{name}-web", workers=config.web_workers)
        processes.append(web)
        elapsed = asyncio.run(_drive(url, cast.agent_keys, cast.reviewer_tokens, config, stats))

        created = list(stats.created)
        unsettled = ("pending", "approved", "executing")

        def settled():
            return not ActionRequest.objects.filter(id__in=created, status__in=unsettled).exists()

        drain_started = time.monotonic()
        try:
            wait_until(settled, timeout=config.drain_timeout, interval=0.5, message="every action to finish")
            wait_until(
                lambda: not OutboxMessage.objects.filter(delivered_at__isnull=True).exists(),
                timeout=config.drain_timeout,
                interval=0.5,
                message="the outbox to drain",
            )
        except AssertionError as exc:
            problems.append(str(exc))
        figures["drain after the run (s)"] = round(time.monotonic() - drain_started, 1)

        in_db = ActionRequest.objects.filter(id__in=created)
        if in_db.count() != len(created):
            problems.append(f"{len(created) - in_db.count()} of {len(created)} created actions are not in the database")
        by_status = Counter(in_db.values_list("status", flat=True))
        hits = Counter(r.path for r in target.requests if r.path.startswith("/load/"))
        repeated = {path: n for path, n in hits.items() if n > 1}
        if repeated:
            problems.append(f"executed more than once: {sorted(repeated.items())[:10]}")
        if sum(hits.values()) != by_status["succeeded"]:
            problems.append(f"target saw {sum(hits.values())} requests for {by_status['succeeded']} succeeded actions")
        missing = [p for a, p in stats.created.items() if p not in hits]
        if by_status.get("succeeded", 0) != len(created):
            problems.append(f"not every action succeeded: {dict(by_status)} ({len(missing)} never reached the target)")
        if stats.server_errors():
            problems.append(f"{stats.server_errors()} server errors (5xx)")
        if stats.transport_errors:
            problems.append(f"transport errors: {dict(stats.transport_errors)}")
        try:
            figures["audit events verified"] = audit_chain_intact()
        except AssertionError as exc:
            problems.append(str(exc))
        figures["statuses"] = dict(by_status)
        figures["where the time went, median (s)"] = _stages(in_db.filter(status="succeeded"))
    finally:
        stop_all(*reversed(processes))
        target.stop()
    return Result(config, stats, elapsed, problems, figures)


def report(result: Result) -> str:
    stats, config = result.stats, result.config
    lines = [
        f"load: {config.agents} agents, {config.reviewers} reviewers, {config.seconds:.0f} s; "
        f"uvicorn x{config.web_workers}, celery concurrency {config.worker_concurrency}",
        f"requests: {stats.requests()} in {result.elapsed:.1f} s = {stats.requests() / result.elapsed:.1f} req/s "
        f"(long-polls included); actions created {len(stats.created)} = {len(stats.created) / result.elapsed:.1f}/s",
    ]
    short = [v for name, values in stats.latencies.items() if name != "wait" for v in values]
    lines.append(f"latency, all but wait: {_percentiles(short)}")
    for name in ("propose", "get", "list", "approve", "wait"):
        if stats.latencies.get(name):
            codes = ", ".join(f"{code}: {n}" for code, n in sorted(stats.statuses[name].items()))
            lines.append(f"  {name:8} {len(stats.latencies[name]):6}  {_percentiles(stats.latencies[name])}  [{codes}]")
    lines.append(f"proposal -> finished, as the agent saw it: {_percentiles(stats.completion)}")
    for key, value in result.figures.items():
        lines.append(f"{key}: {value}")
    lines.append("OK: no 5xx, every 201 stored, every action executed once, audit chain intact" if result.ok else "")
    lines.extend(f"PROBLEM: {p}" for p in result.problems)
    return "\n".join(line for line in lines if line)


def main() -> int:
    import secrets
    import subprocess

    import psycopg
    from cryptography.fernet import Fernet

    from tests.support.reliability_support import RedisServer
    from tests.support.servers import VENV_BIN

    config = Config.from_env()
    pg = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
    database = os.environ.get("BENCH_DATABASE", "countersign_bench")
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    redis_server = RedisServer(name="bench-redis").start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BENCH_")},
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"{pg}/{database}",
        "REDIS_URL": redis_server.url(0),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "COUNTERSIGN_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
        "COUNTERSIGN_AUDIT_CHECKPOINT_KEY": secrets.token_urlsafe(32),
        "PYTHONUNBUFFERED": "1",
        **RATES,
    }
    try:
        subprocess.run(
            [str(VENV_BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        os.environ.update(env)
        import django

        django.setup()
        result = run(config, env, ROOT / "test-artifacts" / "logs", name="bench")
    finally:
        redis_server.close()
    print(time.strftime("%Y-%m-%d %H:%M"), f"on {os.cpu_count()} cores")
    print(report(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
