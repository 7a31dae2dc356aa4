"""Executions keep a heartbeat; the sweep settles the ones whose heartbeat went stale, and only those; a lost
execute task is redispatched once (approvals/services/execution.py).

The crash tests run real Celery workers and Celery beat with the DEFAULT timings (a beat every 5 s, 3 missed
beats, the sweep every 5 s) on a private redis-server, and SIGKILL the worker whose pool process holds the
connection to a slow target. This process proposes and approves, and its Celery app publishes to that same
private Redis (``private_broker``), so the session's shared worker never sees these tasks.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import psycopg
import pytest
import redis
from django.db import connection
from django.utils import timezone
from kombu import pools as kombu_pools

from approvals import services
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, OutboxMessage, Review
from approvals.services.credentials import create_credential
from approvals.services.execution import execute_task_id
from audit.models import AuditEvent
from tests import factories
from tests.conftest import CLI, TARGET_SECRET
from tests.support.reliability_support import (
    LOG_DIR,
    RedisServer,
    audit_chain_intact,
    parent_pid,
    pids_connected_to,
    stack_env_on,
    start_beat,
    stop_all,
)
from tests.support.servers import RecordingServer, start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SETTLED_WITHIN = 30.0  # seconds from the SIGKILL, with the default heartbeat settings (issue 18)


@pytest.fixture
def private_broker():
    """A redis-server of its own, and this process's Celery app publishing to it."""
    from config.celery_app import app

    server = RedisServer(name="heartbeat-redis").start()

    def publish_to(url: str) -> None:
        # kombu keeps its connection and producer pools in registries of its own, by broker address: closing
        # one there would leave it closed for whoever publishes to that address next. Empty them instead.
        kombu_pools.reset()
        app.conf.broker_url = url
        app._pool = None
        app.amqp._producer_pool = None

    saved = app.conf.broker_url
    publish_to(server.url(0))
    try:
        yield server
    finally:
        publish_to(saved)
        server.close()


def http_credential(target: RecordingServer):
    return create_credential(
        name="internal-api", kind="http_bearer", secret=TARGET_SECRET, scope={"base_url": target.url}, actor=CLI
    )


def propose_and_approve(agent, reviewer, method: str, path: str) -> str:
    action = factories.propose(
        agent,
        "http.request",
        {"credential": "internal-api", "method": method, "path": path},
        summary=f"{method} {path}",
    )
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    return str(action.id)


def status_of(action_id) -> str:
    return ActionRequest.objects.values_list("status", flat=True).get(id=action_id)


def verbs(action_id) -> list[str]:
    return list(AuditEvent.objects.filter(action_id=action_id).order_by("seq").values_list("verb", flat=True))


def the_worker_calling(workers: list, port: int):
    """The worker one of whose pool processes holds a connection to the target (``ss``)."""
    holders = pids_connected_to(port)
    if holders is None:
        pytest.skip("needs `ss` to find the worker in the middle of the request")
    return next((w for w in workers if any(parent_pid(pid) == w.proc.pid for pid in holders)), None)


@pytest.fixture
def crash_stack(stack_env, private_broker):
    """Two workers (one to be killed mid-execution, one to run the sweeps and any retry) and beat, all with the
    default timings."""
    env = stack_env_on(stack_env, private_broker)
    started = []
    try:
        for name in ("hb-worker-a", "hb-worker-b"):
            started.append(start_worker(env, LOG_DIR, name=name, concurrency=1))
        started.append(start_beat(env, name="hb-beat"))
        yield started[:2]
    finally:
        stop_all(*started)


def kill_mid_request(agent, reviewer, target, workers, method: str, path: str) -> tuple[str, float]:
    """Approve a request to the slow target, SIGKILL the worker in the middle of it; (action id, kill time)."""
    action_id = propose_and_approve(agent, reviewer, method, path)
    wait_until(lambda: target.requests, timeout=30, message="the request to reach the target")
    victim = wait_until(lambda: the_worker_calling(workers, target.port), timeout=10, message="the worker calling")
    assert status_of(action_id) == ActionStatus.EXECUTING
    victim.kill()  # SIGKILL to its process group: no cleanup, no ack, no last beat
    return action_id, time.monotonic()


def test_a_worker_killed_mid_request_is_settled_unknown_within_30_s_by_default(agent, reviewer, crash_stack, capsys):
    target = RecordingServer(delay=120).start()  # far longer than the test: only the kill ends the call
    try:
        http_credential(target)
        action_id, killed_at = kill_mid_request(agent, reviewer, target, crash_stack, "POST", "/v1/payments")
        wait_until(
            lambda: status_of(action_id) != ActionStatus.EXECUTING,
            timeout=SETTLED_WITHIN + 15,
            interval=0.1,
            message="the interrupted execution to be settled",
        )
        settled_after = time.monotonic() - killed_at
    finally:
        target.stop()
    action = ActionRequest.objects.get(id=action_id)
    assert action.status == ActionStatus.UNKNOWN, action.result
    assert settled_after <= SETTLED_WITHIN, f"settled {settled_after:.1f} s after the kill"
    assert "interrupted" in action.result["error"] and "not idempotent" in action.result["error"]
    assert action.result["advice"] == "check the target before retrying"
    assert verbs(action_id)[-2:] == ["execution.started", "execution.outcome_unknown"]
    assert len(target.requests) == 1  # never sent again
    audit_chain_intact()
    with capsys.disabled():
        print(f"\nSIGKILL mid-request -> unknown in {settled_after:.1f} s (default heartbeat settings)")


def test_an_idempotent_request_killed_mid_call_is_retried_once_with_the_same_key(agent, reviewer, crash_stack, capsys):
    target = RecordingServer(delay=120).start()
    try:
        http_credential(target)
        action_id, killed_at = kill_mid_request(agent, reviewer, target, crash_stack, "PUT", "/v1/config")
        target.delay = 0  # the retry is answered at once
        wait_until(
            lambda: status_of(action_id) == ActionStatus.SUCCEEDED,
            timeout=SETTLED_WITHIN + 15,
            interval=0.1,
            message="the retry to succeed",
        )
        retried_after = time.monotonic() - killed_at
    finally:
        target.stop()
    assert retried_after <= SETTLED_WITHIN, f"retried {retried_after:.1f} s after the kill"
    assert [r.headers["Idempotency-Key"] for r in target.requests] == [action_id, action_id]
    action = ActionRequest.objects.get(id=action_id)
    assert action.execution_attempts == 2
    assert verbs(action_id).count("execution.retrying") == 1
    assert action.grants.count() == 2 and all(g.redeemed_at for g in action.grants.all())
    with capsys.disabled():
        print(f"\nSIGKILL mid-request (PUT) -> retried and succeeded in {retried_after:.1f} s")


def test_a_slow_execution_whose_worker_beats_is_never_declared_dead(agent, reviewer, stack_env, private_broker, capsys):
    """Beats every second, stale after 2 missed ones, the sweep every second; the target takes 10 s."""
    env = stack_env_on(
        stack_env,
        private_broker,
        COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS="1",
        COUNTERSIGN_EXECUTION_HEARTBEAT_MISSES="2",
    )
    target = RecordingServer(delay=10).start()
    worker = beat = None
    try:
        http_credential(target)
        worker = start_worker(env, LOG_DIR, name="hb-slow-worker", concurrency=2)  # one slot left for the sweeps
        beat = start_beat(env, name="hb-slow-beat")
        action_id = propose_and_approve(agent, reviewer, "POST", "/v1/reports")
        wait_until(lambda: status_of(action_id) == ActionStatus.EXECUTING, timeout=30, message="the execution")
        sweeps_before = worker.log().count("task approvals.settle_interrupted_executions finished")
        wait_until(lambda: status_of(action_id) != ActionStatus.EXECUTING, timeout=40, interval=0.2, message="the end")
        sweeps_during = worker.log().count("task approvals.settle_interrupted_executions finished") - sweeps_before
    finally:
        stop_all(beat, worker)
        target.stop()
    action = ActionRequest.objects.get(id=action_id)
    assert action.status == ActionStatus.SUCCEEDED, action.result
    assert "execution.outcome_unknown" not in verbs(action_id) and "execution.retrying" not in verbs(action_id)
    assert len(target.requests) == 1
    assert sweeps_during >= 5  # the sweep did run, again and again, while the execution was slow
    # The worker kept beating to the end, long after the 2 s in which a dead one is taken for dead.
    assert action.execution_heartbeat_at - action.execution_started_at >= timedelta(seconds=7)
    with capsys.disabled():
        print(f"\n10 s execution at a 1 s heartbeat: succeeded; {sweeps_during} sweeps ran meanwhile")


# --- lost execute tasks ----------------------------------------------------------------------------------


def broker_messages(server: RedisServer) -> list[bytes]:
    return redis.Redis(port=server.port).lrange("celery", 0, -1)


def run_together(calls: int, call) -> list:
    barrier = threading.Barrier(calls)
    results: list = []

    def run():
        try:
            barrier.wait(timeout=10)
            results.append(call())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a sweep is stuck"
    return results


def test_a_lost_execute_task_is_redispatched_once_by_concurrent_sweeps_and_a_queued_one_never(
    agent, reviewer, target, credential, private_broker
):
    action_id = propose_and_approve(agent, reviewer, "POST", "/v1/invoices")
    grant = ExecutionGrant.objects.get(action_id=action_id)
    assert (grant.dispatches, grant.dispatched_at is not None) == (1, True)
    [queued] = broker_messages(private_broker)
    assert f'"{execute_task_id(grant.id, 1)}"'.encode() in queued

    # A slow queue: the task has waited a minute and no worker took it, but it is still in the queue.
    ExecutionGrant.objects.filter(id=grant.id).update(dispatched_at=timezone.now() - timedelta(seconds=60))
    assert services.redispatch_lost_executions() == 0
    assert OutboxMessage.objects.filter(action_id=action_id, kind=OutboxMessage.Kind.EXECUTE).count() == 1

    # Redis restarts without persistence: the task is gone. Sweeps that piled up run at the same moment.
    private_broker.stop()
    private_broker.start()
    assert broker_messages(private_broker) == []
    results = run_together(6, services.redispatch_lost_executions)

    assert sorted(results) == [0, 0, 0, 0, 0, 1]
    redispatches = OutboxMessage.objects.filter(action_id=action_id, kind=OutboxMessage.Kind.EXECUTE)
    assert [m.payload.get("redispatch", False) for m in redispatches.order_by("id")] == [False, True]
    grant.refresh_from_db()
    assert grant.dispatches == 2 and grant.redeemed_at is None
    [requeued] = broker_messages(private_broker)
    assert f'"{execute_task_id(grant.id, 2)}"'.encode() in requeued
    assert verbs(action_id).count("execution.redispatched") == 1
    assert status_of(action_id) == ActionStatus.APPROVED
    # Now queued again: the next sweep leaves it alone.
    ExecutionGrant.objects.filter(id=grant.id).update(dispatched_at=timezone.now() - timedelta(seconds=60))
    assert services.redispatch_lost_executions() == 0


def test_a_started_execution_is_never_redispatched(agent, reviewer, target, credential, private_broker):
    action_id = propose_and_approve(agent, reviewer, "POST", "/v1/invoices")
    private_broker.stop()
    private_broker.start()  # the task is gone from the broker...
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED  # ...but a worker had already run it
    ExecutionGrant.objects.filter(action_id=action_id).update(dispatched_at=timezone.now() - timedelta(seconds=60))
    assert services.redispatch_lost_executions() == 0
    assert len(target.requests) == 1


def taken_by_a_worker_that_died(server: RedisServer, seconds_ago: float) -> bytes:
    """What kombu's Redis transport leaves when a worker takes the task and is killed before starting it: the
    message moved from the queue into the ``unacked`` hash, indexed by the time it was taken."""
    client = redis.Redis(port=server.port)
    message = client.rpop("celery")
    tag = "dead-worker-tag-1"
    client.hset("unacked", tag, json.dumps([json.loads(message), "", "celery"]))
    client.zadd("unacked_index", {tag: time.time() - seconds_ago})
    return message


def test_an_execute_task_a_dead_worker_took_is_redispatched_once_and_a_fresh_take_never(
    agent, reviewer, target, credential, private_broker
):
    action_id = propose_and_approve(agent, reviewer, "POST", "/v1/invoices")
    grant = ExecutionGrant.objects.get(action_id=action_id)
    ExecutionGrant.objects.filter(id=grant.id).update(dispatched_at=timezone.now() - timedelta(seconds=60))

    # Taken a moment ago: a worker is starting it.
    taken_by_a_worker_that_died(private_broker, seconds_ago=1)
    assert services.redispatch_lost_executions() == 0
    # Taken 40 s ago and never started: its worker died holding it (the broker would wait 10 minutes).
    redis.Redis(port=private_broker.port).zadd("unacked_index", {"dead-worker-tag-1": time.time() - 40})
    assert sorted(run_together(4, services.redispatch_lost_executions)) == [0, 0, 0, 1]
    grant.refresh_from_db()
    assert grant.dispatches == 2
    [requeued] = broker_messages(private_broker)
    assert f'"{execute_task_id(grant.id, 2)}"'.encode() in requeued
    redispatched = AuditEvent.objects.get(action_id=action_id, verb="execution.redispatched")
    assert redispatched.data["reason"] == "execute task taken by a worker that never started it"

    # The new task runs the action once; when the broker finally hands back the old copy, it does nothing.
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED
    assert len(target.requests) == 1


def test_an_outcome_is_recorded_even_if_the_database_connection_dies_during_the_call(
    agent, reviewer, target, credential, private_broker
):
    """PostgreSQL restarted while the target was answering: the worker's connection is dead when it comes to
    record the outcome. It records it on a fresh connection instead of leaving the sweep to say "unknown"."""
    action_id = propose_and_approve(agent, reviewer, "POST", "/v1/invoices")
    connection.ensure_connection()
    worker_backend = connection.connection.info.backend_pid

    def answer_after_the_connection_died(request):
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [worker_backend])
        return {"id": "inv-1"}

    target.resources["/v1/invoices"] = answer_after_the_connection_died
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED
    assert status_of(action_id) == ActionStatus.SUCCEEDED
    assert len(target.requests) == 1
    assert "execution.succeeded" in verbs(action_id)
