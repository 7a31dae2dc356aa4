"""The audit chain's costs (``make bench-audit``).

1. Verification speed: ``bench.seed_history --audit`` writes ``BENCH_AUDIT_ACTIONS`` (100k) actions' events (about
   3.1 per action) into their own database (``countersign_perf_audit``), then ``manage.py verify_audit``
   checks the whole log; events/s from the time the command reports. Target >= 200k events/s. Also, once,
   each of its two checks alone (the chain over the stored bodies; the columns against them, in SQL), to
   show which one bounds it.
2. What the chain adds to a submit, in this process, on the benchmark database:
   - ``record_event`` alone (lock and read the head in one call, body + hash, insert), inside a transaction,
     against a plain INSERT of a row of the same size; and its parts (the chain's share: lock + head + hash);
   - ``propose_action`` with the chain and with ``record_event`` replaced by a no-op (rounds alternate; the
     delivery after commit is left out of both, its variance is larger than the chain's cost).
   Target: the chain adds <= 1 ms to a proposal.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time

from bench import common
from bench.common import FLOOR_TABLE, ROOT, Verdict, log

ACTIONS = int(os.environ.get("BENCH_AUDIT_ACTIONS", "100000"))
CALLS = int(os.environ.get("BENCH_AUDIT_CALLS", "1000"))
PROPOSALS = int(os.environ.get("BENCH_AUDIT_PROPOSALS", "400"))
REUSE = os.environ.get("BENCH_AUDIT_REUSE", "") == "1"


def audit_database_url() -> str:
    return common.DATABASE_URL.rsplit("/", 1)[0] + "/countersign_perf_audit"


def verify_speed() -> dict:
    import psycopg

    url = audit_database_url()
    env = common.server_env(url, LOG_LEVEL="WARNING", DB_POOL="0")
    have = -1
    if REUSE:
        try:
            with psycopg.connect(url) as conn:
                have = conn.execute("SELECT count(*) FROM approvals_actionrequest").fetchone()[0]
        except psycopg.Error:
            have = -1
    if have >= ACTIONS:
        log(f"reusing countersign_perf_audit ({have} actions)")
        common.prepare_database(url)
    else:
        common.prepare_database(url, fresh=True)
        log(f"seeding {ACTIONS} actions with their audit events ...")
        subprocess.run(
            [sys.executable, "-m", "bench.seed_history", str(ACTIONS), "--pending", "0", "--audit"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    runs = []
    for _ in range(int(os.environ.get("BENCH_AUDIT_VERIFY_RUNS", "3"))):
        load = common.loadavg()
        out = subprocess.run(
            [sys.executable, "manage.py", "verify_audit"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout
        match = re.search(r"(\d+) events verified in ([\d.]+)s", out)
        events, seconds = int(match.group(1)), float(match.group(2))
        runs.append({"events": events, "seconds": seconds, "events_per_s": round(events / seconds), "load": load})
        log(f"verify_audit: {events} events in {seconds:.2f}s = {events / seconds:,.0f}/s (load {load})")
    best = max(runs, key=lambda r: r["events_per_s"])
    parts = verify_parts(env)
    log(f"alone: the chain {parts['chain_s']}s, the columns {parts['columns_s']}s (load {parts['load']})")
    return {"runs": runs, "events": best["events"], "events_per_s": best["events_per_s"], "parts": parts}


_PARTS = """
import json, time
import django
django.setup()
from audit import chain as audit
from audit.models import AuditEvent
head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
started = time.perf_counter()
links = audit._verify_links(head, (), 20_000)
chain_s = time.perf_counter() - started
started = time.perf_counter()
edited = audit._first_edited_row(head)
columns_s = time.perf_counter() - started
assert links.broken is None and edited is None
print(json.dumps({"events": head, "chain_s": round(chain_s, 2), "columns_s": round(columns_s, 2)}))
"""


def verify_parts(env: dict[str, str]) -> dict:
    """Each of verify_audit's two checks alone, one after the other, in a fresh process."""
    load = common.loadavg()
    out = subprocess.run([sys.executable, "-c", _PARTS], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load": load}


def _timed(fn, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def record_event_cost() -> dict:
    """record_event inside a transaction (commit excluded) against a plain INSERT; and its parts."""
    from django.db import connection, transaction

    from audit import chain as audit
    from audit.canonical import canonical_json
    from audit.chain import Actor, record_event

    actor = Actor("agent", "bench-agent", "api")
    data = {
        "action_type": "decision.only",
        "summary": "Restart the billing service",
        "risk": "medium",
        "on_behalf_of": "",
        "params_digest": "0" * 64,
        "policy": {"rule": "default", "effect": "require", "required_approvals": 1, "version": 1, "floors": []},
    }

    def in_transaction(body):
        def run():
            with transaction.atomic():
                started = time.perf_counter()
                body()
                inner.append(time.perf_counter() - started)

        return run

    def chained():
        record_event(actor=actor, verb="bench.event", object_type="bench", object_id="1", data=data)

    def plain():
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {FLOOR_TABLE} (agent_id, body) VALUES (%s, %s)",
                ["00000000-0000-0000-0000-000000000000", canonical_json(data)],
            )

    def lock_only():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [audit._CHAIN_LOCK_ID])

    def lock_and_head():
        audit._lock_and_read_head()  # one call: countersign_audit_lock_head (migration 0010)

    results = {}
    for name, body in (("plain_insert", plain), ("record_event", chained), ("lock", lock_only)):
        inner: list[float] = []
        _timed(in_transaction(body), 50)  # warm up
        inner.clear()
        _timed(in_transaction(body), CALLS)
        results[name] = common.summary_ms(inner)
    inner = []
    _timed(in_transaction(lock_and_head), CALLS)
    results["lock_and_read_head"] = common.summary_ms(inner)
    event = audit.AuditEvent.objects.order_by("-seq").first()
    hashing = _timed(lambda: audit.link_hash(event.prev_hash, canonical_json(audit.event_body(event))), CALLS)
    results["hash_one_event"] = common.summary_ms(hashing)
    # What only the chain needs: the lock, reading the head, hashing. The insert is the audit log itself.
    results["chain_adds_ms"] = round(results["lock_and_read_head"]["mean_ms"] + results["hash_one_event"]["mean_ms"], 3)
    results["record_event_over_plain_insert_ms"] = round(
        results["record_event"]["mean_ms"] - results["plain_insert"]["mean_ms"], 3
    )
    return results


def propose_with_and_without_chain() -> dict:
    """propose_action in this process, with the chain and with record_event a no-op. Delivery after commit
    (the live push) is left out of both: its time varies more than the chain costs."""
    from django.db import transaction

    from approvals import services
    from approvals.outbox import dispatcher as outbox
    from approvals.services import transitions

    owner = common.user("bench-owner")
    common.reviewers_group()
    agent, _ = common.agent_with_key("bench-audit", owner=owner, allow=["decision.only"])
    proposal = services.Proposal(
        action_type="decision.only",
        params={"command": "restart", "service": "billing"},
        summary="Restart the billing service",
        context={"reasoning": "It is stuck."},
    )
    real = transitions.record_event

    def no_chain(**kwargs):
        if not transaction.get_connection().in_atomic_block:
            raise RuntimeError("outside a transaction")

    def propose():
        services.propose_action(agent=agent, proposal=proposal)

    samples: dict[str, list[float]] = {"with_chain": [], "without_chain": []}
    deliver_ids = outbox.deliver_ids
    outbox.deliver_ids = lambda ids, **kwargs: None
    try:
        _timed(propose, 20)
        rounds = 8
        for _ in range(rounds):
            for name in samples:
                transitions.record_event = real if name == "with_chain" else no_chain
                try:
                    samples[name] += _timed(propose, max(1, PROPOSALS // rounds))
                finally:
                    transitions.record_event = real
    finally:
        outbox.deliver_ids = deliver_ids
    result = {name: common.summary_ms(values) for name, values in samples.items()}
    result["chain_adds_ms_p50"] = round(
        statistics.median(samples["with_chain"]) * 1000 - statistics.median(samples["without_chain"]) * 1000, 3
    )
    return result


def main() -> None:
    common.wait_for_quiet()
    load_start = common.loadavg()
    verify = verify_speed()
    common.prepare_database()
    common.flush_redis()
    common.setup_django()
    load = common.loadavg()
    cost = record_event_cost()
    log(f"record_event: {cost['record_event']['mean_ms']} ms, plain insert {cost['plain_insert']['mean_ms']} ms")
    propose = propose_with_and_without_chain()
    log(f"propose: {propose['with_chain']['p50_ms']} ms with the chain, {propose['without_chain']['p50_ms']} without")
    figures = {
        "verify": verify,
        "record_event": cost,
        "propose_action": propose,
        "load_start": load_start,
        "load_in_process_part": load,
        "load_end": common.loadavg(),
    }
    common.report(
        "audit",
        figures,
        [
            Verdict("verify_audit events/s", verify["events_per_s"], ">= 200000", verify["events_per_s"] >= 200_000),
            Verdict("chain's share of record_event, ms", cost["chain_adds_ms"], "<= 1", cost["chain_adds_ms"] <= 1),
            Verdict(
                "propose with - without the chain, p50 ms",
                propose["chain_adds_ms_p50"],
                "<= 1",
                propose["chain_adds_ms_p50"] <= 1,
            ),
        ],
    )


if __name__ == "__main__":
    main()
