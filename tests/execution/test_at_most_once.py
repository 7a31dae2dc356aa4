"""A worker killed with SIGKILL mid-execution: the target sees the request at most once, and the action
still ends in a state that tells the truth (``unknown``: it may have happened; or retried when the request is
idempotent). The sweep is called here once the heartbeat went stale (tests/execution/test_heartbeats.py runs it from beat)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from approvals import services
from approvals.models import ActionRequest, ActionStatus, Review
from audit.models import AuditEvent
from tests import factories
from tests.conftest import ARTIFACTS
from tests.support.servers import start_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def status_of(action_id) -> str:
    return ActionRequest.objects.values_list("status", flat=True).get(id=action_id)


def settle_once_the_heartbeat_is_stale() -> int:
    """Run the sweep until it settles something: the dead worker's last beat must first grow stale."""
    with override_settings(COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS=1, COUNTERSIGN_EXECUTION_HEARTBEAT_MISSES=2):
        return wait_until(services.settle_interrupted_executions, timeout=20, interval=0.2, message="a stale beat")


@pytest.fixture
def crash_and_recover(celery_worker, stack_env):
    """Kill the shared worker mid-task; recover with a worker that re-delivers unacknowledged tasks at once."""
    recovery = {}

    def crash():
        celery_worker.kill()  # SIGKILL to the whole process group: no cleanup, no ack

    def recover():
        env = {
            **stack_env,
            "CELERY_VISIBILITY_TIMEOUT": "1",
            "CELERY_UNACKED_RESTORE_INTERVAL": "1",
            "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        }
        recovery["worker"] = start_worker(env, ARTIFACTS / "logs", name="recovery-worker")
        return recovery["worker"]

    yield crash, recover
    if "worker" in recovery:
        recovery["worker"].stop()
    celery_worker.start()
    wait_until(lambda: "ready." in celery_worker.log(), timeout=30, message="worker restart")


def executed(target, method: str) -> list:
    """The requests the executions sent (the decision's preview reads the target with GETs too)."""
    return [r for r in target.requests if r.method == method]


def propose_and_approve(agent, reviewer, credential, method: str) -> str:
    action = factories.propose(
        agent,
        "http.request",
        {"credential": credential.name, "method": method, "path": "/slow"},
        summary=f"{method} the slow endpoint",
    )
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    return str(action.id)


def test_sigkill_mid_execution_never_repeats_a_non_idempotent_request(
    agent, reviewer, credential, target, crash_and_recover
):
    crash, recover = crash_and_recover
    target.delay, target.slow_methods = 4.0, frozenset({"POST"})
    action_id = propose_and_approve(agent, reviewer, credential, "POST")

    wait_until(lambda: executed(target, "POST"), timeout=20, message="the worker to reach the target")
    assert status_of(action_id) == ActionStatus.EXECUTING
    crash()

    worker = recover()
    # The broker hands the unacknowledged task to the new worker, which finds it already executing.
    wait_until(
        lambda: worker.log().count("approvals.execute_action") >= 2, timeout=30, message="redelivery of the task"
    )
    assert status_of(action_id) == ActionStatus.EXECUTING

    assert settle_once_the_heartbeat_is_stale() == 1
    action = ActionRequest.objects.get(id=action_id)
    assert action.status == ActionStatus.UNKNOWN  # it reached the target; whether it took effect, nobody knows
    assert "interrupted" in action.result["error"] and "not idempotent" in action.result["error"]
    assert action.result["advice"] == "check the target before retrying"
    assert AuditEvent.objects.filter(verb="execution.outcome_unknown", action_id=action_id).count() == 1
    assert len(executed(target, "POST")) == 1


def test_sigkill_mid_execution_retries_an_idempotent_request_with_the_same_key(
    agent, reviewer, credential, target, crash_and_recover
):
    crash, recover = crash_and_recover
    target.delay, target.slow_methods = 4.0, frozenset({"PUT"})
    action_id = propose_and_approve(agent, reviewer, credential, "PUT")

    wait_until(lambda: executed(target, "PUT"), timeout=20, message="the worker to reach the target")
    crash()
    target.delay = 0
    recover()

    assert settle_once_the_heartbeat_is_stale() == 1
    assert AuditEvent.objects.filter(verb="execution.retrying", action_id=action_id).exists()
    wait_until(lambda: status_of(action_id) == ActionStatus.SUCCEEDED, timeout=30, message="the retry to succeed")

    keys = [r.headers["Idempotency-Key"] for r in executed(target, "PUT")]
    assert keys == [action_id, action_id]
    action = ActionRequest.objects.get(id=action_id)
    assert action.execution_attempts == 2
    assert action.grants.count() == 2 and all(g.redeemed_at for g in action.grants.all())
