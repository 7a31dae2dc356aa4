"""Approve -> execute (``make bench-execute``): from the approval to the executor starting, with the Redis broker.

An agent proposes ``http.request`` (GET on a loopback target that records when each request arrives); a
reviewer approves it through the API; the approval commits the grant and an ``execute`` outbox row, which
is handed to the Celery worker after commit. ``BENCH_APPROVALS`` samples, one at a time. Per action, from
the database and the target:

- ``decided_at -> execution_started_at``: approval (stamped inside the approving transaction, before its
  commit) to the worker moving the action to ``executing`` (also before that commit);
- ``decided_at -> target reached``: to the executor's HTTP request arriving at the target.

Both clocks are this machine's. Targets: p50 <= 30 ms, p99 <= 100 ms.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench import common
from bench.common import Verdict, log

APPROVALS = int(os.environ.get("BENCH_APPROVALS", "60"))
GAP = float(os.environ.get("BENCH_APPROVAL_GAP", "0.2"))
WARMUP = 3


class Target:
    """A loopback HTTP target that notes when each request arrived (wall clock), by its Idempotency-Key."""

    def __init__(self):
        self.arrivals: dict[str, float] = {}
        target = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                arrived = time.time()
                key = self.headers.get("Idempotency-Key", "")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                target.arrivals[key] = arrived
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fixtures(target_url: str) -> tuple[str, str, dict]:
    """(agent key, reviewer token, the proposal) for http.request on ``target_url``."""
    from approvals.services.credentials import create_credential

    credential = f"bench-target-{common.RUN_ID}"
    create_credential(
        name=credential, kind="http_bearer", secret="bench-secret", scope={"base_url": target_url}, actor=common.actor()
    )
    group = common.reviewers_group()
    owner = common.user("bench-owner")
    reviewer = common.user("bench-approver", group=group)
    _, key = common.agent_with_key("bench-execute", owner=owner, allow=["http.request"])
    proposal = {
        "action_type": "http.request",
        "summary": "Read the service status",
        "params": {"credential": credential, "method": "GET", "path": "/v1/status"},
    }
    return key, common.reviewer_token(reviewer), proposal


def approve_one_by_one(url: str, key: str, token: str, proposal: dict, target: Target, count: int) -> list[str]:
    """Propose and approve ``count`` actions, each after the last one reached the target; their ids."""
    import httpx

    ids: list[str] = []
    agent = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    human = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=30)
    with agent, human:
        for _ in range(count):
            response = agent.post("/api/v1/actions", json=proposal)
            response.raise_for_status()
            action_id = response.json()["id"]
            human.post(f"/api/v1/actions/{action_id}/approve", json={"comment": "ok"}).raise_for_status()
            deadline = time.monotonic() + 10
            while action_id not in target.arrivals and time.monotonic() < deadline:
                time.sleep(0.002)
            ids.append(action_id)
            time.sleep(GAP)
    return ids


def main() -> None:
    common.wait_for_quiet()
    load_start = common.loadavg()
    common.prepare_database()
    common.flush_redis()
    common.setup_django()
    from approvals.models import ActionRequest, OutboxMessage

    target = Target()
    key, token, proposal = fixtures(target.url)
    with common.Stack() as stack:
        env = common.server_env(COUNTERSIGN_UNDO_SECONDS="0")  # approve -> execute without the undo window
        _, url = stack.web(env)
        stack.worker(env)
        log(f"web + worker (concurrency {common.WORKER_CONCURRENCY}) up; load {common.loadavg()}")
        ids = approve_one_by_one(url, key, token, proposal, target, WARMUP + APPROVALS)[WARMUP:]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ActionRequest.objects.filter(id__in=ids, finished_at=None).exists():
            time.sleep(0.1)
    target.stop()

    handed = {}
    for action_id, delivered in OutboxMessage.objects.filter(
        action_id__in=ids, kind=OutboxMessage.Kind.EXECUTE
    ).values_list("action_id", "delivered_at"):
        handed[str(action_id)] = delivered
    rows = ActionRequest.objects.filter(id__in=ids).values_list("id", "status", "decided_at", "execution_started_at")
    started, reached, to_broker, from_broker, statuses = [], [], [], [], {}
    for action_id, status, decided, began in rows:
        statuses[status] = statuses.get(status, 0) + 1
        if decided and began:
            started.append((began - decided).total_seconds())
        given = handed.get(str(action_id))
        if decided and began and given:
            to_broker.append((given - decided).total_seconds())
            from_broker.append((began - given).total_seconds())
        arrival = target.arrivals.get(str(action_id))
        if decided and arrival:
            reached.append((datetime.fromtimestamp(arrival, UTC) - decided).total_seconds())
    figures = {
        "approvals": len(ids),
        "statuses": statuses,
        "worker_concurrency": common.WORKER_CONCURRENCY,
        "decided_to_execution_started_ms": common.summary_ms(started),
        "decided_to_target_reached_ms": common.summary_ms(reached),
        # Where the time goes: the approving request commits and delivers its outbox rows (the live push
        # first, then the execute message to the broker); then Redis -> worker -> redeem the grant.
        "decided_to_handed_to_broker_ms": common.summary_ms(to_broker),
        "handed_to_broker_to_execution_started_ms": common.summary_ms(from_broker),
        "load_start": load_start,
        "load_end": common.loadavg(),
    }
    s = figures["decided_to_execution_started_ms"]
    common.report(
        "execute",
        figures,
        [
            Verdict("approved -> executing p50 ms", s["p50_ms"], "<= 30", s["p50_ms"] <= 30),
            Verdict("approved -> executing p99 ms", s["p99_ms"], "<= 100", s["p99_ms"] <= 100),
            Verdict("not executed", len(ids) - len(started), "0", len(started) == len(ids)),
        ],
    )


if __name__ == "__main__":
    main()
