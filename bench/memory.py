"""Resident memory of the web and worker processes, idle and after load (``make bench-memory``).

The recommended layout (``WEB_CONCURRENCY`` uvicorn workers, a Celery worker with ``WORKER_CONCURRENCY``
children) starts on the benchmark database; VmRSS of every process is read from /proc/PID/status once they
are up, then after a load: ``BENCH_MEMORY_SECONDS`` of proposals from 32 clients, ``BENCH_SOCKETS``
reviewer websockets hearing ``BENCH_EVENTS`` proposals, and ``BENCH_APPROVALS`` approved executions.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bench import common, execute, loadgen, push
from bench.common import Verdict, log

SECONDS = float(os.environ.get("BENCH_MEMORY_SECONDS", "20"))


def snapshot(web: common.Proc, worker: common.Proc) -> dict:
    def named(proc: common.Proc, role: str) -> dict:
        rows = {f"{role} parent ({proc.pid})": round(common.rss_mib(proc.pid), 1)}
        for pid in proc.children():
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "resource_tracker" in cmd:
                continue  # multiprocessing's helper process, not a server
            rows[f"{role} child ({pid})"] = round(common.rss_mib(pid), 1)
        return rows

    rows = {**named(web, "web"), **named(worker, "worker")}
    rows["total"] = round(sum(rows.values()), 1)
    return rows


def main() -> None:
    common.wait_for_quiet()
    load_start = common.loadavg()
    common.prepare_database()
    common.flush_redis()
    common.setup_django()
    target = execute.Target()
    key, token, proposal = execute.fixtures(target.url)
    push_key, cookies = push.fixtures(push.SOCKETS)
    with common.Stack() as stack:
        env = common.server_env(COUNTERSIGN_UNDO_SECONDS="0")  # executions at once, as bench.execute runs them
        web, url = stack.web(env)
        worker = stack.worker(env)
        time.sleep(2)
        idle = snapshot(web, worker)
        log(f"idle: {idle}")
        result = loadgen.post_json(
            f"{url}/api/v1/actions",
            push.PROPOSAL,
            {"Authorization": f"Bearer {push_key}"},
            connections=32,
            seconds=SECONDS,
        )
        log(f"proposals: {result.requests} in {result.seconds:.0f}s")
        heard = asyncio.run(push.measure(url, push_key, cookies))
        log(f"websockets: {heard['deliveries']} events heard")
        executed = execute.approve_one_by_one(url, key, token, proposal, target, int(execute.APPROVALS))
        executed = [action_id for action_id in executed if action_id in target.arrivals]  # reached the target
        log(f"executions: {len(executed)}")
        time.sleep(2)
        loaded = snapshot(web, worker)
        log(f"after load: {loaded}")
    target.stop()
    web_children = [v for k, v in loaded.items() if k.startswith("web child")]
    worst = max(web_children) if web_children else 0.0
    figures = {
        "idle_rss_mib": idle,
        "after_load_rss_mib": loaded,
        "load": {
            "proposals": result.requests,
            "websockets": heard["sockets"],
            "events_heard": heard["deliveries"],
            "executions": len(executed),
        },
        "web_workers": common.WEB_WORKERS,
        "worker_concurrency": common.WORKER_CONCURRENCY,
        "load_start": load_start,
        "load_end": common.loadavg(),
    }
    common.report("memory", figures, [Verdict("largest web worker RSS MiB after load", worst, "(reported)", True)])


if __name__ == "__main__":
    main()
