"""Queue and dashboard reads with a million historic actions (issue 8: "stays fast").

    .venv/bin/python bench/queue_bench.py                 # 1,000,000 actions (made once, then reused)
    .venv/bin/python bench/queue_bench.py --rows 200000   # smaller
    .venv/bin/python bench/queue_bench.py --fresh         # throw the data away and make it again

Its own PostgreSQL database (``BENCH_DESK_DATABASE_URL``, default ``countersign_desk_bench``; created if
missing, never the test or the developer's database). Rows are written with one INSERT ... SELECT
generate_series per 100,000: 20 agents, six action types, two reviewer groups (80/20), 2,000 pending
actions and the rest decided over the last year (succeeded, rejected, expired, failed), half of them on
someone's behalf, summaries made of a few common words.

It times the reads the reviewer's pages make (approvals.selectors.desk.queue_page,
approvals.selectors.dashboard.dashboard_for)
as a reviewer of one group and as staff: the first page, a page deep in the history through a cursor, each
sort, search, filters, the capped counts, the dashboard over 7 and 30 days. It prints the median and the
worst of a few runs in milliseconds, and the plan of the main page queries (which index they use).
Figures are for reading, not asserted: the machine decides them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE_URL = os.environ.get("BENCH_DESK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/countersign_desk_bench")
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": DATABASE_URL,
        "SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789abcdef",
        "COUNTERSIGN_CREDENTIAL_KEYS": "ttwQKd3kXV664hCSoPLkX3mgHYmF2AH1yqw8-tU2s-c=",
        "COUNTERSIGN_AUDIT_CHECKPOINT_KEY": "bench-only-audit-checkpoint-key-0123456789",
        "LOG_LEVEL": "WARNING",
    }
)
os.environ.pop("REDIS_URL", None)

PENDING = 2_000
CHUNK = 100_000
WORDS = [
    "billing", "search", "payments", "invoices", "deploy", "restart", "rotate", "grant", "revoke", "access",
    "staging", "production", "database", "cache", "index", "queue", "worker", "backup", "restore", "report",
    "weekly", "digest", "channel", "message", "email", "customer", "refund", "ticket", "incident", "alert",
]  # fmt: skip
TYPES = ["decision.only", "http.request", "slack.post_message", "email.send", "scim.membership", "file.write"]


def ensure_database() -> None:
    import psycopg

    base, name = DATABASE_URL.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def make_data(rows: int, fresh: bool) -> None:
    from django.contrib.auth.models import Group, User
    from django.db import connection

    from agents.models import Agent

    reviewers, _ = Group.objects.get_or_create(name="reviewers")
    finance, _ = Group.objects.get_or_create(name="finance")
    owner, _ = User.objects.get_or_create(username="bench-owner")
    rita, _ = User.objects.get_or_create(username="bench-rita")
    rita.groups.add(reviewers)
    User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True})
    agents = [Agent.objects.get_or_create(name=f"agent-{i:02d}", defaults={"owner": owner})[0] for i in range(20)]

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM approvals_actionrequest")
        have = cursor.fetchone()[0]
        if have == rows and not fresh:
            print(f"reusing {have:,} actions")
            return
        print(f"writing {rows:,} actions ...", flush=True)
        cursor.execute("TRUNCATE approvals_actionrequest CASCADE")
        words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]"
        types = "ARRAY[" + ",".join(f"'{t}'" for t in TYPES) + "]"
        agent_ids = "ARRAY[" + ",".join(f"'{a.id}'::uuid" for a in agents) + "]"
        started = time.perf_counter()
        for first in range(1, rows + 1, CHUNK):
            last = min(rows, first + CHUNK - 1)
            cursor.execute(
                f"""
                INSERT INTO approvals_actionrequest (
                    id, agent_id, action_type, params, summary, context, on_behalf_of, request_digest, callback_url,
                    status, risk, required_approvals, reviewer_group_id, policy_rule, policy_effect,
                    policy_explanation, notify_channels, escalate_channels, decision_reason, created_at, expires_at,
                    decided_at, execution_started_at, execution_attempts, finished_at, updated_at,
                    modifies_access, web_decision_only, webhook_sequence
                )
                SELECT
                    gen_random_uuid(),
                    ({agent_ids})[1 + (i * 7) %% 20],
                    ({types})[1 + (i * 11) %% 6],
                    '{{}}'::jsonb,
                    initcap(({words})[1 + (i * 7) %% 30]) || ' the ' || ({words})[1 + (i * 13) %% 30] || ' '
                        || ({words})[1 + (i * 17) %% 30] || ' #' || i,
                    '{{}}'::jsonb,
                    CASE WHEN i %% 2 = 0 THEN 'user' || (i %% 5000) || '@example.com' ELSE '' END,
                    md5(i::text), '',
                    s.status,
                    CASE WHEN i %% 20 = 0 THEN 'critical' WHEN i %% 5 = 1 THEN 'high'
                         WHEN i %% 10 < 5 THEN 'medium' ELSE 'low' END,
                    1,
                    CASE WHEN i %% 5 = 4 THEN %s ELSE %s END,
                    'default', CASE WHEN i %% 25 = 3 THEN 'auto_approve' ELSE 'require' END, 'needs 1 approval',
                    '[]'::jsonb, '[]'::jsonb, '',
                    t.created,
                    CASE WHEN s.status = 'pending' THEN now() + interval '1 day' - (i * interval '20 seconds')
                         ELSE t.created + interval '1 day' END,
                    CASE WHEN s.status = 'pending' THEN NULL ELSE t.created + ((i %% 600) * interval '1 minute') END,
                    CASE WHEN s.status IN ('succeeded', 'failed') THEN t.created + ((i %% 600) * interval '1 minute')
                         END,
                    CASE WHEN s.status IN ('succeeded', 'failed') THEN 1 ELSE 0 END,
                    CASE WHEN s.status = 'pending' THEN NULL
                         ELSE t.created + ((i %% 600) * interval '1 minute') + interval '2 seconds' END,
                    t.created,
                    false, false, 0
                FROM generate_series(%s, %s) AS i,
                LATERAL (SELECT now() - (i * interval '30 seconds') AS created) AS t,
                LATERAL (SELECT CASE
                    WHEN i <= {PENDING} THEN 'pending'
                    WHEN i %% 20 IN (1, 2, 3) THEN 'rejected'
                    WHEN i %% 20 IN (4, 5) THEN 'expired'
                    WHEN i %% 20 = 6 THEN 'failed'
                    ELSE 'succeeded' END AS status) AS s
                """,
                [finance.id, reviewers.id, first, last],
            )
            print(f"  {last:,} ({time.perf_counter() - started:.0f} s)", flush=True)
        cursor.execute("VACUUM ANALYZE approvals_actionrequest")


def timed(fn, runs: int) -> tuple[float, float]:
    fn()  # warm: plans cached, pages in memory
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()

    ensure_database()
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    from approvals.models import ActionRequest
    from approvals.selectors import dashboard, desk, keyset

    call_command("migrate", verbosity=0)
    make_data(args.rows, args.fresh)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE indexname = 'action_desk_summary_trgm'")
        trigram = bool(cursor.fetchone())

    rita = User.objects.get(username="bench-rita")
    admin = User.objects.get(username="bench-admin")
    F = desk.QueueFilters

    def page(user, filters, **kw):
        return lambda: desk.queue_page(user, filters, **kw)

    # A cursor half way through the history (as if the reviewer had paged that far).
    middle = ActionRequest.objects.filter(status="succeeded").order_by("-created_at", "-id")[args.rows // 3]
    deep = desk.encode_cursor("newest", middle)
    twentieth = ""
    for _ in range(19):
        twentieth = desk.queue_page(rita, F(status="all"), after=twentieth, with_facets=False).next_cursor

    cases = [
        ("pending, newest, rows only (reviewer)", page(rita, F(), with_facets=False)),
        ("pending, newest, rows + all counts (reviewer)", page(rita, F())),
        ("pending, newest, rows + all counts (staff)", page(admin, F())),
        ("pending, highest risk first (reviewer)", page(rita, F(sort="risk"), with_facets=False)),
        ("pending, expiring soonest (reviewer)", page(rita, F(sort="expiry"), with_facets=False)),
        ("all statuses, newest, rows only (reviewer)", page(rita, F(status="all"), with_facets=False)),
        ("all statuses, page 20 by cursor (reviewer)", page(rita, F(status="all"), after=twentieth, with_facets=False)),
        ("succeeded, deep cursor, rows (reviewer)", page(rita, F(status="succeeded"), after=deep, with_facets=False)),
        ("succeeded, deep cursor, rows (staff)", page(admin, F(status="succeeded"), after=deep, with_facets=False)),
        ("all statuses, highest risk first (staff)", page(admin, F(status="all", sort="risk"), with_facets=False)),
        ("all statuses, rows + all counts (reviewer)", page(rita, F(status="all"))),
        ("search 'billing', pending (reviewer)", page(rita, F(q="billing"))),
        ("search 'refund incident', all statuses (reviewer)", page(rita, F(status="all", q="refund incident"))),
        ("agent filter, all statuses (reviewer)", page(rita, F(status="all", agent="agent-03"))),
        ("on behalf of, all statuses (reviewer)", page(rita, F(status="all", on_behalf_of="USER42@example.com"))),
        ("failed + critical, all counts (reviewer)", page(rita, F(status="failed", risks=("critical",)))),
        ("dashboard, 7 days (reviewer)", lambda: dashboard.dashboard_for(rita, days=7)),
        ("dashboard, 30 days (reviewer)", lambda: dashboard.dashboard_for(rita, days=30)),
        ("dashboard, 30 days (staff)", lambda: dashboard.dashboard_for(admin, days=30)),
    ]  # fmt: skip
    total = ActionRequest.objects.count()
    print(f"\n{total:,} actions; PostgreSQL {connection.pg_version}; trigram index: {'yes' if trigram else 'no'}")
    print(f"{'read':<54} {'median ms':>10} {'worst ms':>10}")
    for name, fn in cases:
        median, worst = timed(fn, args.runs)
        print(f"{name:<54} {median:>10.1f} {worst:>10.1f}")

    print("\nplans (the index each page query starts from):")
    plans = [
        ("pending, newest (reviewer)", F(), ""),
        ("pending, risk (reviewer)", F(sort="risk"), ""),
        ("pending, expiry (staff)", F(sort="expiry"), ""),
        ("succeeded, deep cursor (staff)", F(status="succeeded"), deep),
        ("on behalf of (reviewer)", F(status="all", on_behalf_of="user42@example.com"), ""),
        ("search, few matches (staff)", F(status="all", q="refund incident"), ""),
        ("search, pending (reviewer)", F(q="billing"), ""),
    ]
    for name, filters, after in plans:
        user = admin if "staff" in name else rita
        qs = filters.apply(desk._base(user), agent_id=None)
        keys = desk.SORTS[filters.sort][1]
        if (desk._count_all([qs]) or [desk.COUNT_CAP + 1])[0] <= desk.COUNT_CAP:  # as queue_page does
            qs = qs.filter(pk__in=qs.order_by().values("pk")[: desk.FILTER_FIRST_LIMIT])
        if after:
            qs = qs.filter(keyset.beyond(keys, desk.decode_cursor(filters.sort, after), forward=True))
        plan = qs.order_by(*keyset.ordering(keys, forward=True))[:51].explain()
        used = sorted({w.strip('"') for line in plan.splitlines() for w in line.split() if w.startswith("action_")})
        print(f"  {name:<36} {', '.join(used) or plan.splitlines()[0]}")


if __name__ == "__main__":
    main()
