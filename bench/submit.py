"""Submit throughput against its floor (``make bench-submit``).

In one run, on one server (uvicorn, production settings, the recommended workers and pool) and one
database, with ``BENCH_CLIENTS`` (32) closed-loop clients:

- ``POST /bench/floor``: DRF + agent-key authentication + one INSERT of the JSON body;
- ``POST /api/v1/actions``: the real proposal (throttle, capability, schema, policy, action row, audit
  chain, outbox, live push after commit, the presented action);
- pgbench inserting the same row with as many clients: the database's own floor.

The two HTTP endpoints alternate (``BENCH_ROUNDS`` rounds of ``BENCH_SECONDS`` each), so a change in the
machine's load hits both. Targets: propose >= 60% of the floor's req/s, propose p99 <= 50 ms.

At full speed a closed loop of 32 clients queues: each request waits for the ~31 ahead of it, so its
latency is 32 / throughput whatever the code does (Little's law; the floor's own p99 shows it). So the p99
is also measured paced: the same 32 clients offering ``BENCH_PACED_FRACTION`` (0.5) of the propose rate
just measured, which is the latency an agent sees when the service is busy but not overrun.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import uuid

from bench import common, loadgen
from bench.common import FLOOR_TABLE, OUT, Verdict, log

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "32"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "15"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
WARMUP_SECONDS = 3
PACED_FRACTION = float(os.environ.get("BENCH_PACED_FRACTION", "0.5"))

PROPOSAL = {
    "action_type": "decision.only",
    "summary": "Restart the billing service",
    "params": {"command": "restart", "service": "billing"},
    "context": {"reasoning": "It is stuck."},
}


def pgbench(database_url: str, *, clients: int, seconds: float) -> dict:
    """pgbench, one INSERT of the same row per transaction, prepared statements; per-transaction latencies."""
    OUT.mkdir(parents=True, exist_ok=True)
    script = OUT / "pgbench-insert.sql"
    body = json.dumps(PROPOSAL).replace("'", "''")
    script.write_text(f"INSERT INTO {FLOOR_TABLE} (agent_id, body) VALUES ('{uuid.uuid4()}', '{body}'::jsonb);\n")
    for old in OUT.glob("pgbench_log*"):
        old.unlink()
    args = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(int(seconds))]
    args += ["-f", str(script), "-l", "--log-prefix", str(OUT / "pgbench_log"), database_url]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
    latencies_us: list[float] = []
    for path in OUT.glob("pgbench_log*"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                latencies_us.append(float(parts[2]))
        path.unlink()
    ms = [x / 1000 for x in latencies_us]
    return {
        "tool": "pgbench",
        "transactions_per_s": round(tps, 1),
        "p50_ms": round(common.percentile(ms, 50), 2),
        "p99_ms": round(common.percentile(ms, 99), 2),
    }


class LockSampler:
    """Samples pg_stat_activity every 50 ms while a round runs: how many of the benchmark database's
    connections are waiting for the audit chain's advisory lock, and how many are busy at all."""

    def __init__(self, database_url: str):
        import threading

        self.url, self.samples, self._stop = database_url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        name = self.url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.05):
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE wait_event = 'advisory'), count(*) FILTER (WHERE state = 'active') "
                    "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    [name],
                ).fetchone()
                self.samples.append(row)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        return {
            "mean_waiting_for_chain_lock": round(statistics.fmean(s[0] for s in self.samples), 2),
            "mean_active_queries": round(statistics.fmean(s[1] for s in self.samples), 2),
        }


def ledger(key: str, n: int = int(os.environ.get("BENCH_LEDGER_REQUESTS", "200"))) -> dict:
    """CPU and queries per request for both endpoints, in this process, one request at a time, through
    Django's ASGI handler (AsyncClient): what each request costs regardless of how busy the machine is."""
    import asyncio
    import time

    from django.conf import settings
    from django.db import connection
    from django.test import AsyncClient
    from django.test.utils import CaptureQueriesContext

    settings.ALLOWED_HOSTS.append("testserver")
    headers = {"Authorization": f"Bearer {key}"}
    paths = {"floor": "/bench/floor", "propose": "/api/v1/actions"}

    async def run() -> dict:
        client = AsyncClient()
        out = {}
        for name, path in paths.items():
            for _ in range(20):
                await client.post(path, PROPOSAL, content_type="application/json", headers=headers)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                response = await client.post(path, PROPOSAL, content_type="application/json", headers=headers)
                assert response.status_code == 201, response.content
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            out[name] = {
                "cpu_ms_per_request": round(1000 * cpu / n, 2),
                "wall_ms_per_request": round(1000 * wall / n, 2),
            }
        return out

    result = asyncio.run(run())
    from rest_framework.test import APIClient

    client = APIClient(SERVER_NAME="localhost")
    client.credentials(HTTP_AUTHORIZATION=headers["Authorization"])
    for name, path in paths.items():
        with CaptureQueriesContext(connection) as captured:
            assert client.post(path, PROPOSAL, format="json").status_code == 201
        result[name]["queries_per_request"] = len(captured.captured_queries)
    return result


def main() -> None:
    common.wait_for_quiet()
    load_start = common.loadavg()
    common.prepare_database()
    common.flush_redis()
    common.setup_django()
    from approvals.models import ActionRequest

    owner = common.user("bench-owner")
    common.reviewers_group()
    _, key = common.agent_with_key("bench-submit", owner=owner, allow=["decision.only"])
    headers = {"Authorization": f"Bearer {key}"}
    before = ActionRequest.objects.count()

    env = common.server_env()
    rounds: dict[str, list[dict]] = {"floor": [], "propose": []}
    with common.Stack() as stack:
        web, url = stack.web(env)
        workers = web.children()
        endpoints = {"floor": f"{url}/bench/floor", "propose": f"{url}/api/v1/actions"}
        log(f"web: {common.WEB_WORKERS} uvicorn workers, DB_POOL={common.DB_POOL}; load {common.loadavg()}")
        for name, endpoint in endpoints.items():
            loadgen.post_json(endpoint, PROPOSAL, headers, connections=CLIENTS, seconds=WARMUP_SECONDS)
            log(f"warmed up {name}")
        for i in range(ROUNDS):
            for name, endpoint in endpoints.items():
                load = common.loadavg()
                cpu_before = common.cpu_seconds(workers)
                with LockSampler(common.DATABASE_URL) as sampler:
                    result = loadgen.post_json(endpoint, PROPOSAL, headers, connections=CLIENTS, seconds=SECONDS)
                cpu_ms = 1000 * (common.cpu_seconds(workers) - cpu_before) / max(1, result.requests)
                row = {**result.as_dict(), "web_cpu_ms_per_request": round(cpu_ms, 2), **sampler.summary()}
                row["load_before"] = load
                rounds[name].append(row)
                log(
                    f"round {i + 1} {name}: {row['req_per_s']} req/s, p50 {row['p50_ms']} ms, "
                    f"p99 {row['p99_ms']} ms, web CPU {row['web_cpu_ms_per_request']} ms/req, errors {row['errors']} "
                    f"(load {load})"
                )
        propose_rate = statistics.median(r["req_per_s"] for r in rounds["propose"])
        paced_rate = round(PACED_FRACTION * propose_rate, 1)
        load = common.loadavg()
        cpu_before = common.cpu_seconds(workers)
        result = loadgen.post_json(
            endpoints["propose"], PROPOSAL, headers, connections=CLIENTS, seconds=SECONDS, rate=paced_rate
        )
        cpu_ms = 1000 * (common.cpu_seconds(workers) - cpu_before) / max(1, result.requests)
        paced = {**result.as_dict(), "offered_req_per_s": paced_rate, "web_cpu_ms_per_request": round(cpu_ms, 2)}
        paced["load_before"] = load
        log(
            f"paced propose, {CLIENTS} clients offering {paced_rate} req/s: {paced['req_per_s']} req/s, "
            f"p50 {paced['p50_ms']} ms, p99 {paced['p99_ms']} ms, errors {paced['errors']} (load {load})"
        )
    created = ActionRequest.objects.count() - before
    load_ledger = common.loadavg()
    costs = {**ledger(key), "load_before": load_ledger}
    log(f"per request, in process: {costs}")
    load_pg = common.loadavg()
    floor_db = pgbench(common.DATABASE_URL, clients=CLIENTS, seconds=SECONDS)
    log(f"pgbench: {floor_db} (load {load_pg})")

    def med(name: str, key: str) -> float:
        return round(statistics.median(r[key] for r in rounds[name]), 2)

    ratio = round(med("propose", "req_per_s") / med("floor", "req_per_s"), 3)
    figures = {
        "clients": CLIENTS,
        "seconds_per_round": SECONDS,
        "web_workers": common.WEB_WORKERS,
        "db_pool": common.DB_POOL,
        "load_generator": loadgen.tool(),
        "floor_rounds": rounds["floor"],
        "propose_rounds": rounds["propose"],
        "floor_req_per_s": med("floor", "req_per_s"),
        "propose_req_per_s": med("propose", "req_per_s"),
        "propose_over_floor": ratio,
        "floor_p99_ms": med("floor", "p99_ms"),
        "propose_p50_ms": med("propose", "p50_ms"),
        "propose_p99_ms": med("propose", "p99_ms"),
        "floor_web_cpu_ms_per_request": med("floor", "web_cpu_ms_per_request"),
        "propose_web_cpu_ms_per_request": med("propose", "web_cpu_ms_per_request"),
        "propose_paced": paced,
        "actions_created": created,
        "in_process_cost": costs,
        "pgbench_insert": {**floor_db, "load_before": load_pg},
        "load_start": load_start,
        "load_end": common.loadavg(),
    }
    errors = sum(r["errors"] for rs in rounds.values() for r in rs) + paced["errors"]
    common.report(
        "submit",
        figures,
        [
            Verdict("propose req/s / floor req/s", ratio, ">= 0.6", ratio >= 0.6),
            Verdict(
                "propose p99 ms at full speed", figures["propose_p99_ms"], "<= 50", figures["propose_p99_ms"] <= 50
            ),
            Verdict(f"propose p99 ms paced at {paced_rate} req/s", paced["p99_ms"], "<= 50", paced["p99_ms"] <= 50),
            Verdict("failed requests", errors, "0", errors == 0),
        ],
    )


if __name__ == "__main__":
    main()
