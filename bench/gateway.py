"""The HTTP gateway's auto-approved path against the same call made straight to the target
(``make bench-gateway``).

In one run, on one machine: a loopback target (this module's ``target_app`` under uvicorn, one process, a
small JSON answer), Countersign under the production settings (uvicorn with the recommended workers and pool,
a Celery worker, its own database ``countersign_perf_gw`` and Redis database 5), a credential on the target and a
rule auto-approving GETs. ``BENCH_CLIENTS`` (16) closed-loop clients (wrk, or aiohttp without it) alternate, for
``BENCH_ROUNDS`` rounds of ``BENCH_SECONDS`` each:

- ``GET <target>/items/42`` straight to the target;
- ``GET /gateway/bench-target/items/42`` with the agent's key: authentication, rate, the proposal (capability,
  schema, policy, action row, audit chain, outbox, live push), the grant, the execution in the web process
  (a fresh connection to the target), the outcome, the answer.

Figures: added latency (gateway minus direct) at p50 and p99, and the gateway's throughput as a share of
direct. Targets (issue 22): added p50 <= 5 ms, added p99 <= 20 ms, throughput >= 50% of direct. Then, one call at a
time in this process, what each stage of the gateway's own path costs (wall ms and queries), so that whatever
stands in the way is named. Figures go to var/bench/gateway.json.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
WARMUP_SECONDS = 3
STAGE_CALLS = int(os.environ.get("BENCH_STAGE_CALLS", "200"))  # 0: skip the one-at-a-time stages
DATABASE = os.environ.get("BENCH_GATEWAY_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/countersign_perf_gw")
TARGET_BODY = json.dumps({"id": 42, "title": "Disk full on db-2", "tags": ["infra", "disk"]}).encode()


async def target_app(scope, receive, send):
    """The target: answers every GET with the same small JSON, as fast as uvicorn can."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(TARGET_BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": TARGET_BODY})


_WRK_GET = """
wrk.method = "GET"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON{{\\"requests\\":%d,\\"duration_us\\":%d,\\"errors\\":%d,\\"status_errors\\":%d," ..
    "\\"p50\\":%d,\\"p90\\":%d,\\"p99\\":%d,\\"max\\":%d}}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def get_load(url: str, headers: dict[str, str], *, connections: int, seconds: float):
    """Closed-loop GETs (wrk when installed, else aiohttp in this process)."""
    from bench.common import OUT, percentile
    from bench.loadgen import LoadResult, _lua_string, tool

    if tool() == "wrk" and shutil.which("wrk"):
        OUT.mkdir(parents=True, exist_ok=True)
        script = OUT / f"wrk-gateway-{os.getpid()}.lua"
        lines = "\n".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
        script.write_text(_WRK_GET.format(headers=lines))
        args = ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(script), url]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        data = json.loads(next(x for x in out.splitlines() if x.startswith("BENCHJSON"))[len("BENCHJSON") :])
        return LoadResult(
            tool="wrk",
            requests=data["requests"],
            seconds=data["duration_us"] / 1e6,
            errors=data["errors"] + data["status_errors"],
            p50_ms=data["p50"] / 1000,
            p90_ms=data["p90"] / 1000,
            p99_ms=data["p99"] / 1000,
            max_ms=data["max"] / 1000,
        )
    import asyncio

    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(session) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    errors += response.status >= 400
            except aiohttp.ClientError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    async def run() -> float:
        started = time.perf_counter()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
            await asyncio.gather(*(client(session) for _ in range(connections)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    ms = [x * 1000 for x in latencies]
    return LoadResult(
        "aiohttp", len(ms), elapsed, errors, percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), max(ms)
    )


def stages(agent, key: str) -> dict:
    """One call at a time, in this process: wall ms and queries of each stage of the gateway's own path."""
    from django.db import connection, reset_queries
    from django.test.utils import override_settings

    from agents.authentication import authenticate_agent_key
    from agents.ratelimit import hit
    from approvals.gateway.http import render
    from approvals.models import ActionRequest
    from approvals.services import gateway
    from approvals.services.execution import execute_action
    from approvals.services.proposals import propose_action

    call = gateway.GatewayCall(
        credential="bench-target",
        method="GET",
        path="/items/42",
        query_string="",
        headers=(("host", "127.0.0.1"), ("authorization", f"Bearer {key}"), ("accept", "*/*")),
    )
    names = ("authenticate", "rate limit", "read the call", "propose (auto-approved)", "execute", "re-read + answer")
    wall: dict[str, list[float]] = {name: [] for name in names}
    queries: dict[str, list[int]] = {name: [] for name in names}
    with override_settings(DEBUG=True):
        for i in range(STAGE_CALLS + 20):
            marks: list[tuple[str, float, int]] = []

            def mark(name, started, before, marks=marks):
                marks.append((name, time.perf_counter() - started, len(connection.queries) - before))

            reset_queries()
            t, q = time.perf_counter(), len(connection.queries)
            found = authenticate_agent_key(key)
            mark("authenticate", t, q)
            t, q = time.perf_counter(), len(connection.queries)
            hit(found.public_id, "requests", "gateway")
            mark("rate limit", t, q)
            t, q = time.perf_counter(), len(connection.queries)
            proposal = gateway.proposal_for(found.agent, call)
            mark("read the call", t, q)
            t, q = time.perf_counter(), len(connection.queries)
            action, _ = propose_action(agent=found.agent, proposal=proposal)
            mark("propose (auto-approved)", t, q)
            t, q = time.perf_counter(), len(connection.queries)
            execute_action(action.id)
            mark("execute", t, q)
            t, q = time.perf_counter(), len(connection.queries)
            render(ActionRequest.objects.get(id=action.id))
            mark("re-read + answer", t, q)
            if i >= 20:  # the first calls warm caches and connections
                for name, seconds, count in marks:
                    wall[name].append(seconds * 1000)
                    queries[name].append(count)
    return {
        name: {"median_ms": round(statistics.median(wall[name]), 2), "queries": round(statistics.median(queries[name]))}
        for name in names
    }


def main() -> None:
    os.environ.setdefault("BENCH_DATABASE_URL", DATABASE)
    from bench import common
    from bench.common import Verdict, log

    common.wait_for_quiet()
    common.prepare_database(DATABASE)
    common.flush_redis()
    common.setup_django(DATABASE)

    from agents.services import grant_capability
    from approvals.models import ActionRequest, Credential
    from approvals.policies import store as policy_store
    from approvals.services.credentials import create_credential, update_scope

    target_port = common.free_port()
    target_url = f"http://127.0.0.1:{target_port}"
    owner = common.user("bench-owner")
    common.reviewers_group()
    agent, key = common.agent_with_key("bench-gateway", owner=owner, allow=[])
    grant_capability(
        agent=agent, action_type="http.request", actor=common.actor(), constraints={"credential": ["bench-target"]}
    )
    existing = Credential.objects.filter(name="bench-target").first()
    if existing is not None:  # a database kept from an earlier run: the target listens on a new port now
        update_scope(credential=existing, scope={"base_url": target_url}, actor=common.actor())
    else:
        create_credential(
            name="bench-target",
            kind="http_bearer",
            secret="bench-target-token",
            scope={"base_url": target_url},
            actor=common.actor(),
        )
    policy_store.save_rule(
        {
            "name": "bench-gateway-reads",
            "action_type": "http.request",
            "effect": "auto_approve",
            "conditions": [{"path": "params.method", "op": "equals", "value": "GET"}],
        },
        actor=common.actor(),
    )
    before = ActionRequest.objects.count()
    headers = {"Authorization": f"Bearer {key}"}
    env = common.server_env(DATABASE, COUNTERSIGN_AGENT_GATEWAY_RATE="100000000/min")
    rounds: dict[str, list[dict]] = {"direct": [], "gateway": []}
    with common.Stack() as stack:
        target = common.Proc(
            "gateway-target",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.gateway:target_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(target_port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            {**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        stack.callback(target.stop)
        _, url = stack.web(env)
        if os.environ.get("BENCH_GATEWAY_WORKER", "1") != "0":  # 0: no worker to race the in-process execution
            stack.worker(env)
        common._wait_http(target, f"{target_url}/items/42", expected_children=0)
        endpoints = {"direct": f"{target_url}/items/42", "gateway": f"{url}/gateway/bench-target/items/42"}
        log(f"web: {common.WEB_WORKERS} uvicorn workers, DB_POOL={common.DB_POOL}; load {common.loadavg()}")
        for name, endpoint in endpoints.items():
            get_load(endpoint, headers, connections=CLIENTS, seconds=WARMUP_SECONDS)
            log(f"warmed up {name}")
        for i in range(ROUNDS):
            for name, endpoint in endpoints.items():
                load = common.loadavg()
                result = get_load(endpoint, headers, connections=CLIENTS, seconds=SECONDS)
                row = {**result.as_dict(), "load_before": load}
                rounds[name].append(row)
                log(
                    f"round {i + 1} {name}: {row['req_per_s']} req/s, p50 {row['p50_ms']} ms, "
                    f"p99 {row['p99_ms']} ms, errors {row['errors']} (load {load})"
                )
        per_stage = {}
        if STAGE_CALLS:
            log("stages, one call at a time in this process")
            per_stage = stages(agent, key)

    def median(name: str, field: str) -> float:
        return statistics.median(r[field] for r in rounds[name])

    added_p50 = round(median("gateway", "p50_ms") - median("direct", "p50_ms"), 2)
    added_p99 = round(median("gateway", "p99_ms") - median("direct", "p99_ms"), 2)
    ratio = round(median("gateway", "req_per_s") / median("direct", "req_per_s"), 3)
    figures = {
        "clients": CLIENTS,
        "seconds_per_round": SECONDS,
        "rounds": rounds,
        "added_latency_p50_ms": added_p50,
        "added_latency_p99_ms": added_p99,
        "throughput_share_of_direct": ratio,
        "gateway_stages_one_at_a_time": per_stage,
        "actions_written": ActionRequest.objects.count() - before,
    }
    verdicts = [
        Verdict("added latency p50 (ms)", added_p50, "<= 5", added_p50 <= 5),
        Verdict("added latency p99 (ms)", added_p99, "<= 20", added_p99 <= 20),
        Verdict("gateway throughput / direct", ratio, ">= 0.5", ratio >= 0.5),
    ]
    common.report("gateway", figures, verdicts)


if __name__ == "__main__":
    main()
