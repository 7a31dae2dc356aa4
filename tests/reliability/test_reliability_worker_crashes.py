"""Twenty SIGKILLs to a Celery worker in the middle of executions (a slow target), restarting it each round.

Two worker slots: each round kills the worker that is in the middle of the request to the target (one of its
pool processes holds the connection) and starts its replacement, which boots while the other worker takes
the next round (a worker needs ~2.5 s to start here).

What must hold afterwards: no non-idempotent request reached the target twice; idempotent ones were retried
only with the action's Idempotency-Key and within COUNTERSIGN_MAX_EXECUTION_ATTEMPTS; nothing is left
``approved`` or ``executing``; interrupted POSTs end ``unknown`` (they reached the target), never ``failed``; the
audit chain verifies. Redelivery is quick because the worker runs with a 1 s visibility timeout and restore
interval, and a fast "beat" (tests/support/reliability_ticker.py) runs the interrupted-execution sweep with a 1 s heartbeat
taken as stale after 2 missed beats, to fit twenty rounds in a test (tests/execution/test_heartbeats.py measures the default
timings). ``RELIABILITY_CRASH_ROUNDS`` changes the number of rounds.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from django.conf import settings

from approvals.models import ActionRequest
from audit.models import AuditEvent
from tests.support.reliability_support import (
    LOG_DIR,
    Api,
    RedisServer,
    audit_chain_intact,
    is_ready,
    make_cast,
    open_executions,
    parent_pid,
    pids_connected_to,
    spawn_worker,
    stack_env_on,
    start_ticker,
    start_uvicorn,
    stop_all,
)
from tests.support.servers import RecordingServer, start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = int(os.environ.get("RELIABILITY_CRASH_ROUNDS", "20"))
UNSETTLED = ("pending", "approved", "executing")


def running_it(workers: dict, port: int) -> str | None:
    """The slot whose worker is in the middle of a request to the target: one of its pool processes holds a
    connection to it (``ss``); without ``ss``, the one whose log shows an execution started and not finished."""
    holders = pids_connected_to(port)
    for slot, worker in workers.items():
        if holders is None:
            if is_ready(worker) and open_executions(worker) > 0:
                return slot
        elif any(parent_pid(pid) == worker.proc.pid for pid in holders):
            return slot
    return None


def test_twenty_sigkills_mid_execution_repeat_nothing_and_strand_nothing(stack_env):
    target = RecordingServer(delay=0.5).start()
    redis_server = RedisServer(name="crash-redis").start()
    env = stack_env_on(
        stack_env,
        redis_server,
        CELERY_VISIBILITY_TIMEOUT="1",
        CELERY_UNACKED_RESTORE_INTERVAL="1",
        CELERY_UNACKED_RESTORE_THROTTLE="1",
        COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS="1",
        COUNTERSIGN_EXECUTION_HEARTBEAT_MISSES="2",
    )
    web = ticker = None
    workers: dict[str, object] = {}  # two slots: one worker executing, the next one starting meanwhile
    try:
        web, url = start_uvicorn(env, "crash-web")
        ticker = start_ticker(env, "crash-ticker", interval=0.5)
        cast = make_cast(target.url, prefix="crash")
        key, token = cast.agent_keys[0], cast.reviewer_tokens[0]
        api = Api(url)
        actions: dict[str, str] = {}  # action id -> method
        interrupted_rounds = 0
        started = time.monotonic()
        workers["a"] = start_worker(env, LOG_DIR, name="crash-worker-a")
        workers["b"] = spawn_worker(env, "crash-worker-b")
        for round_no in range(ROUNDS):
            seen = len(target.requests)
            for method in ("POST", "PUT"):
                response = api.propose(key, f"/crash/{round_no}/{method.lower()}", method=method)
                assert response.status_code == 201, response.text
                actions[response.json()["id"]] = method
                assert api.approve(token, response.json()["id"]).status_code == 200
            wait_until(lambda seen=seen: len(target.requests) > seen, timeout=30, message="an execution in flight")
            slot = wait_until(lambda: running_it(workers, target.port), timeout=10, message="the worker running it")
            if ActionRequest.objects.filter(status="executing").exists():
                interrupted_rounds += 1
            workers[slot].kill()  # SIGKILL to the worker's process group: no cleanup, no ack
            workers[slot]._log.close()
            workers[slot] = spawn_worker(env, f"crash-worker-{slot}")  # starts while the other one works
        crash_seconds = time.monotonic() - started

        wait_until(
            lambda: not ActionRequest.objects.filter(status__in=UNSETTLED).exists(),
            timeout=90,
            interval=0.2,
            message="every action to settle after the last crash",
        )
        settle_seconds = time.monotonic() - started - crash_seconds
        api.close()
    finally:
        stop_all(*workers.values(), ticker, web)
        redis_server.close()
        target.stop()

    assert interrupted_rounds == ROUNDS  # every kill landed while an execution was running
    hits = Counter(r.path for r in target.requests)
    outcome = Counter()
    for action in ActionRequest.objects.filter(id__in=list(actions)):
        method = actions[str(action.id)]
        path = action.params["path"]
        started_runs = AuditEvent.objects.filter(action_id=action.id, verb="execution.started").count()
        assert action.status in ("succeeded", "unknown"), (action.id, action.status)
        assert hits[path] <= started_runs <= settings.COUNTERSIGN_MAX_EXECUTION_ATTEMPTS
        if method == "POST":
            # Never sent twice: a POST interrupted mid-request is settled unknown (it may have happened), not
            # retried, and never called failed.
            assert started_runs == 1 and hits[path] <= 1, (path, started_runs, hits[path])
            assert action.status in ("succeeded", "unknown"), (path, action.status, action.result)
            if action.status == "succeeded":
                assert hits[path] == 1
            else:
                assert "interrupted" in action.result["error"], action.result
                assert action.result["advice"] == "check the target before retrying"
        else:
            keys = {r.headers.get("Idempotency-Key") for r in target.requests if r.path == path}
            assert keys <= {str(action.id)}, keys
            assert action.execution_attempts == started_runs
        outcome[(method, action.status)] += 1
    assert len(ActionRequest.objects.filter(id__in=list(actions))) == 2 * ROUNDS
    events = audit_chain_intact()
    print(
        f"\nworker crashes: {ROUNDS} SIGKILLs in {crash_seconds:.1f}s, settled {settle_seconds:.1f}s later; "
        f"outcomes {dict(outcome)}; target requests {len(target.requests)}; audit events {events}"
    )
