"""Requests to profile, in this process: ``python -m bench.profile MODE [N]``.

MODE is ``propose``, ``floor`` or ``queue``, or one of the endpoints of ``make bench-api`` (bench/api_cost.py),
on its database (``countersign_perf_api``) with the same fixtures: ``read``, ``list``, ``wait`` (an action
already decided), ``approve`` (a different pending action each time), ``propose-pending`` (bench-api's ``propose``),
``propose-auto``, ``propose-deny``.

Sends N requests one after another, on the benchmark database, and prints CPU and wall time per request. The
API's endpoints go to ``config.asgi.application`` itself, as uvicorn hands it a request (the gateway and guard in
front, the API's own handler and middleware chain, its kept threads, the psycopg pool of the server), without the
network; ``propose``, ``floor`` and ``queue`` go through Django's AsyncClient (the site's full middleware chain).
Run it under a profiler to see where a request's time goes (docs/BENCHMARKS.md):

    py-spy record --gil -r 300 -f speedscope -o propose.json -- .venv/bin/python -m bench.profile propose 400
    BENCH_PYINSTRUMENT=1 .venv/bin/python -m bench.profile queue 20      # text tree, main thread only

(py-spy and pyinstrument are not project dependencies: ``pip install py-spy pyinstrument`` where you profile.)
``queue`` is the reviewer's queue page on the 1M-action database of ``make bench-history`` (seeded first).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time

from bench import common

API_MODES = ("read", "list", "wait", "approve", "propose-pending", "propose-auto", "propose-deny")
WARMUP = 10

PROPOSAL = {
    "action_type": "decision.only",
    "summary": "Restart the billing service",
    "params": {"command": "restart", "service": "billing"},
    "context": {"reasoning": "It is stuck."},
}


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "propose"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    if what not in ("propose", "floor", "queue", *API_MODES):
        raise SystemExit(f"unknown mode {what!r}: one of propose, floor, queue, {', '.join(API_MODES)}")
    if what == "queue":
        from bench.history import database_url

        common.setup_django(database_url(1_000_000))
    elif what in API_MODES:
        setup_api()
    else:
        common.prepare_database()
        common.setup_django()
    from django.conf import settings
    from django.test import AsyncClient

    settings.ALLOWED_HOSTS.append("testserver")
    client = AsyncClient()
    if what == "queue":
        from django.contrib.auth.models import User

        user = User.objects.get(username="bench-history-reviewer")

        async def one():
            return await client.get("/")

        asyncio.run(_login(client, user))
    elif what in API_MODES:
        one = api_request(what, n + WARMUP)
    else:
        owner = common.user("bench-owner")
        common.reviewers_group()
        _, key = common.agent_with_key("bench-profile", owner=owner, allow=["decision.only"])
        path = "/bench/floor" if what == "floor" else "/api/v1/actions"
        headers = {"Authorization": f"Bearer {key}"}

        async def one():
            return await client.post(path, PROPOSAL, content_type="application/json", headers=headers)

    async def run(count: int) -> None:
        for _ in range(count):
            response = await one()
            if what not in API_MODES:
                assert response.status_code in (200, 201), response.status_code

    asyncio.run(run(WARMUP))
    if os.environ.get("BENCH_NO_GC"):
        # bench.instructions: a collection falls at different points in runs of different lengths, which made the
        # same build's count per request differ by 7.5%; without it, two builds' counts compare their code.
        gc.collect()
        gc.disable()
    profiler = None
    if os.environ.get("BENCH_PYINSTRUMENT"):
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(run(n))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False))
    print(f"{what}: {n} requests, {1000 * cpu / n:.2f} ms CPU and {1000 * wall / n:.2f} ms wall per request")


def setup_api() -> None:
    """Django on ``make bench-api``'s database, with the server's connection pool, for ``api_request``."""
    from bench import api_cost

    common.prepare_database(api_cost.DATABASE_URL)
    os.environ["DB_POOL"] = common.DB_POOL  # the server's pool: without it each request connects anew
    common._OVERRIDDEN.discard("DB_POOL")
    common.setup_django(api_cost.DATABASE_URL)


def api_request(what: str, count: int):
    """One request of ``make bench-api``'s endpoint ``what`` (its fixtures, made here), as a coroutine factory that
    hands it to the ASGI application the way uvicorn does."""
    import json

    from django.conf import settings

    from bench import api_cost
    from config.asgi import application
    from tests.support.asgi import http_scope, send_request

    fx = api_cost.make_fixtures()
    request = api_cost.requests_for(fx)["propose" if what == "propose-pending" else what]
    paths = iter(api_cost.approve_paths(api_cost.copy_pending(fx.template_id, count))) if what == "approve" else None
    body = json.dumps(request.body).encode() if request.body is not None else b""
    headers = [
        ("host", settings.ALLOWED_HOSTS[0]),
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        *request.headers.items(),
    ]

    async def one():
        path, _, query = (next(paths) if paths is not None else request.path).partition("?")
        answer = await send_request(application, http_scope(request.method, path, query=query, headers=headers), body)
        assert answer["status"] == request.expect, (answer["status"], answer["body"][:500])
        return answer

    return one


async def _login(client, user) -> None:
    await client.aforce_login(user)


if __name__ == "__main__":
    main()
