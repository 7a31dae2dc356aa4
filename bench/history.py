"""Flat with history (``make bench-history``): the queue page and the API list at 10k and at 1M actions.

Each size gets its own database (``countersign_perf_h<size>``), seeded by ``python -m bench.seed_history``
(``--pending 100``: the queue holds the same 100 pending actions at every size; the rest is history).
``BENCH_HISTORY_REUSE=1`` keeps an already seeded database (migrations are still applied), so an index
change can be measured without seeding a million rows again.

One uvicorn (production settings) per size, both up at once; ``BENCH_HISTORY_REQUESTS`` sequential
requests per page after a warm-up, alternating between the sizes so that both see the same machine (it is
shared, and its load moves), as a reviewer of the default group (pages filter by group), as staff (no
filter) and as an agent (its own actions). Then each page's SQL is captured and EXPLAIN ANALYZEd in each
database; plans land in var/bench/history-plans-<size>.txt and any sequential scan of the actions, reviews
or audit table (of at least ``SCANNED_AT_LEAST`` rows) is reported. Targets: p50 <= 50 ms at both sizes; 1M
p50 <= 1.2 x the 10k p50.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench import common
from bench.common import OUT, ROOT, Verdict, log

SIZES = [int(s) for s in os.environ.get("BENCH_HISTORY_SIZES", "10000,1000000").split(",")]
REQUESTS = int(os.environ.get("BENCH_HISTORY_REQUESTS", "40"))
REUSE = os.environ.get("BENCH_HISTORY_REUSE", "") == "1"
PENDING = 100
WARMUP = 5

# (name, who, path)
PAGES = [
    ("queue page", "reviewer", "/"),
    ("queue page (staff)", "staff", "/"),
    ("queue page, any status", "reviewer", "/?status=all"),
    ("history page", "reviewer", "/history"),
    ("API list", "reviewer", "/api/v1/actions"),
    ("API list (staff)", "staff", "/api/v1/actions"),
    ("API list, succeeded", "reviewer", "/api/v1/actions?status=succeeded"),
    ("API list (agent)", "agent", "/api/v1/actions"),
]
HEADLINE = ("queue page", "API list")
SCANNED_TABLES = ("approvals_actionrequest", "approvals_review", "approvals_auditevent")
# A table of a few pages is read whole by PostgreSQL's choice, rightly: the seeded history has no audit events (the
# fixtures' few), so its history page's scan of them is not one of a large table.
SCANNED_AT_LEAST = 10_000


def database_url(size: int) -> str:
    return common.DATABASE_URL.rsplit("/", 1)[0] + f"/countersign_perf_h{size}"


def seeded_count(url: str) -> int:
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            return conn.execute("SELECT count(*) FROM approvals_actionrequest").fetchone()[0]
    except psycopg.Error:
        return -1


def seed(size: int) -> float:
    url = database_url(size)
    if REUSE and seeded_count(url) >= size:
        log(f"reusing {url.rsplit('/', 1)[1]} ({seeded_count(url)} actions)")
        common.prepare_database(url)
        return 0.0
    common.prepare_database(url, fresh=True)
    log(f"seeding {size} actions ...")
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "bench.seed_history", str(size), "--pending", str(PENDING)],
        cwd=ROOT,
        env=common.server_env(url, LOG_LEVEL="WARNING", DB_POOL="0"),
        check=True,
    )
    return time.monotonic() - started


def make_fixtures(size: int) -> dict:
    """In a child process (its database): a reviewer, staff, their sessions and tokens, an agent key."""
    common.setup_django(database_url(size))
    from django.conf import settings
    from django.contrib.auth.models import Group

    from agents.models import Agent
    from agents.services import rotate_key

    group = Group.objects.get(name=settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP)
    reviewer = common.user("bench-history-reviewer", group=group)
    staff = common.user("bench-history-staff", staff=True)
    agent = Agent.objects.filter(name__startswith="history-agent-").order_by("name").first()
    _, agent_key = rotate_key(agent=agent, actor=common.actor())
    return {
        "html": {"reviewer": common.session_cookie(reviewer), "staff": common.session_cookie(staff)},
        "api": {
            "reviewer": f"Token {common.reviewer_token(reviewer)}",
            "staff": f"Token {common.reviewer_token(staff)}",
            "agent": f"Bearer {agent_key}",
        },
    }


def headers_for(fixtures: dict, who: str, path: str) -> dict:
    if path.startswith("/api/"):
        return {"Authorization": fixtures["api"][who]}
    return {"Cookie": fixtures["html"][who]}


def time_pages(bases: dict[int, str], fixtures: dict[int, dict]) -> dict[int, dict]:
    """Every page at every size, requests alternating between the sizes, so both see the same machine."""
    import httpx

    timings: dict[int, dict] = {size: {} for size in bases}
    clients = {size: httpx.Client(base_url=base, timeout=60) for size, base in bases.items()}
    try:
        for name, who, path in PAGES:
            samples: dict[int, list[float]] = {size: [] for size in bases}
            order = list(bases)
            for n in range(WARMUP + REQUESTS):
                order.reverse()
                for size in order:
                    started = time.perf_counter()
                    response = clients[size].get(path, headers=headers_for(fixtures[size], who, path))
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200:
                        raise RuntimeError(f"{name} at {size}: {response.status_code} {response.text[:300]}")
                    if n >= WARMUP:
                        samples[size].append(elapsed)
            for size in bases:
                timings[size][name] = common.summary_ms(samples[size])
            log(
                f"{name}: "
                + ", ".join(f"p50 {timings[size][name]['p50_ms']} ms at {size}" for size in bases)
                + f" (load {common.loadavg()})"
            )
    finally:
        for client in clients.values():
            client.close()
    return timings


def explain_pages(size: int) -> dict:
    """In a child process: capture each page's SQL through the test client and EXPLAIN ANALYZE it there."""
    common.setup_django(database_url(size))
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    settings.ALLOWED_HOSTS.append("testserver")
    users = {"reviewer": User.objects.get(username="bench-history-reviewer")}
    users["staff"] = User.objects.get(username="bench-history-staff")
    agent_key = json.loads((OUT / f"history-fixtures-{size}.json").read_text())["api"]["agent"]
    rows: dict[str, int] = {}
    with connection.cursor() as cursor:
        for table in SCANNED_TABLES:
            cursor.execute(f"SELECT count(*) FROM {table}")  # the names are ours
            rows[table] = cursor.fetchone()[0]
    out: list[str] = [f"rows: {rows}\n"]
    scans: list[str] = []
    counts = {}
    for name, who, path in PAGES:
        client = Client()
        headers = {}
        if who == "agent":
            headers = {"Authorization": agent_key}
        else:
            client.force_login(users[who])
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path, headers=headers)
        assert response.status_code == 200, (name, response.status_code)
        counts[name] = len(captured.captured_queries)
        out.append(f"### {name} ({who}) GET {path}: {len(captured.captured_queries)} queries\n")
        for query in captured.captured_queries:
            sql = query["sql"]
            if not any(t in sql for t in SCANNED_TABLES) or not sql.lstrip().upper().startswith("SELECT"):
                continue
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                plan = "\n".join(row[0] for row in cursor.fetchall())
            out.append(f"{sql}\n\n{plan}\n\n")
            for table in SCANNED_TABLES:
                if f"Seq Scan on {table}" in plan and rows[table] >= SCANNED_AT_LEAST:
                    scans.append(f"{name}: Seq Scan on {table}")
    path = OUT / f"history-plans-{size}.txt"
    path.write_text("\n".join(out))
    return {"plans_file": str(path.relative_to(ROOT)), "seq_scans": sorted(set(scans)), "queries": counts}


def child(size: int, what: str) -> dict:
    subprocess.run([sys.executable, "-m", "bench.history", f"--{what}", str(size)], cwd=ROOT, check=True)
    return json.loads((OUT / f"history-{what}-{size}.json").read_text())


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] in ("--fixtures", "--explain"):
        size, what = int(sys.argv[2]), sys.argv[1][2:]
        result = make_fixtures(size) if what == "fixtures" else explain_pages(size)
        (OUT / f"history-{what}-{size}.json").write_text(json.dumps(result))
        return
    common.wait_for_quiet()
    load_start = common.loadavg()
    common.flush_redis()
    seeded = {size: round(seed(size), 1) for size in SIZES}
    fixtures = {size: child(size, "fixtures") for size in SIZES}
    with common.Stack() as stack:
        bases = {size: stack.web(common.server_env(database_url(size)), name=f"web-h{size}")[1] for size in SIZES}
        load = common.loadavg()
        log(f"timing {len(PAGES)} pages x {REQUESTS} requests at {SIZES} (load {load})")
        timings = time_pages(bases, fixtures)
    explained = {size: child(size, "explain") for size in SIZES}
    results = {size: {"timings": timings[size], "seed_seconds": seeded[size], **explained[size]} for size in SIZES}
    small, large = min(SIZES), max(SIZES)
    figures = {
        "sizes": SIZES,
        "requests_per_page": REQUESTS,
        "results": results,
        "load_start": load_start,
        "load_timing": load,
    }
    verdicts = []
    for page in HEADLINE:
        for size in SIZES:
            p50 = results[size]["timings"][page]["p50_ms"]
            verdicts.append(Verdict(f"{page} p50 ms at {size}", p50, "<= 50", p50 <= 50))
        if large != small:
            ratio = round(results[large]["timings"][page]["p50_ms"] / results[small]["timings"][page]["p50_ms"], 2)
            figures[f"{page} p50 {large}/{small}"] = ratio
            verdicts.append(Verdict(f"{page} p50 at {large} / at {small}", ratio, "<= 1.2", ratio <= 1.2))
    scans = results[large]["seq_scans"]
    verdicts.append(Verdict(f"sequential scans at {large}", len(scans), "0", not scans))
    figures["load_end"] = common.loadavg()
    common.report("history", figures, verdicts)


if __name__ == "__main__":
    main()
