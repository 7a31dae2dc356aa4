"""The state machine under real concurrency on PostgreSQL.

Each contender is a thread with its own database connection, released at the
same instant by a barrier; the row lock taken by the service layer must leave
exactly one outcome, one decision in the audit log and one execution.
"""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from approvals import services
from approvals.errors import Conflict, NotPending, ServiceError
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, OutboxMessage
from approvals.outbox import dispatcher as outbox
from approvals.policies import store as policy_store
from audit.models import AuditEvent
from tests.conftest import TARGET_SECRET
from tests.factories import CLI, ProposalFactory
from tests.support.servers import ROOT, VENV_BIN, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 10
DECISION_VERBS = ("action.approved", "action.rejected", "action.cancelled", "action.expired")


@dataclass
class Outcome:
    value: object = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def race(*calls) -> list[Outcome]:
    """Run each callable in its own thread, all released at once; return what each got."""
    barrier = threading.Barrier(len(calls))
    outcomes = [Outcome() for _ in calls]

    def run(i, call):
        try:
            barrier.wait(timeout=10)
            outcomes[i].value = call()
        except BaseException as exc:
            outcomes[i].error = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a contender is stuck (deadlock?)"
    for outcome in outcomes:
        # Anything but the service layer's own refusals is a bug (deadlock, IntegrityError, InvalidTransition...).
        assert outcome.ok or isinstance(outcome.error, ServiceError), repr(outcome.error)
    return outcomes


def propose(agent, **overrides) -> ActionRequest:
    action, created = services.propose_action(agent=agent, proposal=ProposalFactory.build(**overrides))
    assert created and action.status == ActionStatus.PENDING
    return action


def decision_verbs(action_id) -> list[str]:
    return list(AuditEvent.objects.filter(action_id=action_id, verb__in=DECISION_VERBS).values_list("verb", flat=True))


def assert_audit_chain_intact():
    call_command("verify_audit")


def assert_one_winner(outcomes: list[Outcome]) -> int:
    winners = [i for i, o in enumerate(outcomes) if o.ok]
    assert len(winners) == 1, outcomes
    for loser in (o for o in outcomes if not o.ok):
        assert isinstance(loser.error, NotPending), repr(loser.error)
        assert loser.error.status == 409
    return winners[0]


def test_approve_and_reject_at_the_same_moment_end_in_one_decision(agent, reviewer, second_reviewer):
    seen = Counter()
    for _ in range(ROUNDS):
        action = propose(agent)
        outcomes = race(
            lambda a=action: services.approve_action(action_id=a.id, reviewer=reviewer, via="api", comment="go"),
            lambda a=action: services.reject_action(action_id=a.id, reviewer=second_reviewer, via="api", reason="no"),
        )
        winner = assert_one_winner(outcomes)
        expected = [ActionStatus.APPROVED, ActionStatus.REJECTED][winner]
        seen[expected] += 1

        action.refresh_from_db()
        assert action.status == expected
        reviews = list(action.reviews.values_list("reviewer__username", "verdict"))
        assert reviews == ([("rita", "approve")] if winner == 0 else [("sam", "reject")])
        assert decision_verbs(action.id) == ["action.approved" if winner == 0 else "action.rejected"]
        reviewed = AuditEvent.objects.filter(action_id=action.id, verb="action.reviewed").count()
        assert reviewed == (1 if winner == 0 else 0)
        if winner == 1:
            assert action.decision_reason == "no"
    assert sum(seen.values()) == ROUNDS
    assert_audit_chain_intact()


def test_two_reviewers_approving_at_once_approve_once(agent, reviewer, second_reviewer):
    for _ in range(ROUNDS):
        action = propose(agent)
        outcomes = race(
            lambda a=action: services.approve_action(action_id=a.id, reviewer=reviewer, via="api"),
            lambda a=action: services.approve_action(action_id=a.id, reviewer=second_reviewer, via="web"),
        )
        assert_one_winner(outcomes)
        action.refresh_from_db()
        assert action.status == ActionStatus.APPROVED
        assert action.reviews.count() == 1
        assert decision_verbs(action.id) == ["action.approved"]
        assert AuditEvent.objects.filter(action_id=action.id, verb="action.reviewed").count() == 1
    assert_audit_chain_intact()


def test_one_reviewer_approving_a_two_person_action_twice_at_once_counts_once(agent, reviewer):
    """The attack: one reviewer sends the same approval through two doors at the same instant, so that each reads
    "no reviews yet" (ActionRequest.has_reviews) before the other writes, and the two count as two people. The flag is
    read with the row lock, which gives the row as the other decision committed it: the second is refused."""
    policy_store.save_rule({"name": "two-people", "action_type": "*", "required_approvals": 2}, actor=CLI)
    for _ in range(ROUNDS):
        action = propose(agent)
        assert action.required_approvals == 2
        outcomes = race(
            lambda a=action: services.approve_action(action_id=a.id, reviewer=reviewer, via="api"),
            lambda a=action: services.approve_action(action_id=a.id, reviewer=reviewer, via="web"),
        )
        assert [o.ok for o in outcomes].count(True) == 1, outcomes
        (refused,) = [o.error for o in outcomes if not o.ok]
        assert isinstance(refused, Conflict) and "already reviewed" in refused.detail
        action.refresh_from_db()
        assert action.status == ActionStatus.PENDING and action.has_reviews
        assert action.reviews.count() == 1
        assert AuditEvent.objects.filter(action_id=action.id, verb="action.reviewed").count() == 1
    assert_audit_chain_intact()


def test_reviewer_approve_against_agent_cancel(agent, reviewer):
    seen = Counter()
    for _ in range(ROUNDS):
        action = propose(agent)
        outcomes = race(
            lambda a=action: services.approve_action(action_id=a.id, reviewer=reviewer, via="api"),
            lambda a=action: services.cancel_action(action_id=a.id, agent=agent),
        )
        winner = assert_one_winner(outcomes)
        expected = [ActionStatus.APPROVED, ActionStatus.CANCELLED][winner]
        seen[expected] += 1
        action.refresh_from_db()
        assert action.status == expected
        assert decision_verbs(action.id) == ["action.approved" if winner == 0 else "action.cancelled"]
        assert action.reviews.count() == (1 if winner == 0 else 0)
    assert sum(seen.values()) == ROUNDS
    assert_audit_chain_intact()


def test_reviewer_approve_against_the_expiry_job(agent, reviewer):
    for _ in range(ROUNDS):
        action = propose(agent)
        ActionRequest.objects.filter(id=action.id).update(expires_at=timezone.now() - timedelta(seconds=1))
        outcomes = race(
            lambda a=action: services.approve_action(action_id=a.id, reviewer=reviewer, via="api"),
            services.expire_due_actions,
        )
        approve, expire = outcomes
        assert expire.ok
        action.refresh_from_db()
        if approve.ok:
            assert expire.value == 0
            assert action.status == ActionStatus.APPROVED
        else:
            assert isinstance(approve.error, NotPending)
            assert expire.value == 1
            assert action.status == ActionStatus.EXPIRED
        assert len(decision_verbs(action.id)) == 1
    assert_audit_chain_intact()


def test_two_required_approvals_given_at_once_approve_and_execute_once(
    agent, reviewer, second_reviewer, target, credential, celery_worker
):
    rounds = 5
    for i in range(rounds):
        action = propose(
            agent,
            action_type="http.request",
            params={"credential": "internal-api", "method": "POST", "path": f"/v1/groups/{i}/members"},
        )
        # As a policy requiring two approvals would have set it.
        ActionRequest.objects.filter(id=action.id).update(required_approvals=2)
        outcomes = race(
            lambda a=action: services.approve_action(action_id=a.id, reviewer=reviewer, via="api"),
            lambda a=action: services.approve_action(action_id=a.id, reviewer=second_reviewer, via="web"),
        )
        assert all(o.ok for o in outcomes), outcomes  # both approvals count, neither is lost

        action.refresh_from_db()
        assert action.status != ActionStatus.PENDING
        assert sorted(action.reviews.values_list("reviewer__username", flat=True)) == ["rita", "sam"]
        assert decision_verbs(action.id) == ["action.approved"]
        reviewed = AuditEvent.objects.filter(action_id=action.id, verb="action.reviewed").order_by("seq")
        assert [e.data["approvals"] for e in reviewed] == [1, 2]
        assert ExecutionGrant.objects.filter(action_id=action.id).count() == 1
        assert OutboxMessage.objects.filter(action_id=action.id, kind=OutboxMessage.Kind.EXECUTE).count() == 1

        # The real worker runs it, once.
        wait_until(
            lambda a=action: ActionRequest.objects.get(id=a.id).status == ActionStatus.SUCCEEDED,
            timeout=20,
            message="the worker to execute the approved action",
        )
    assert sorted(r.path for r in target.requests) == sorted(f"/v1/groups/{i}/members" for i in range(rounds))
    assert_audit_chain_intact()


def test_execute_delivered_twice_at_once_reaches_the_target_once(agent, reviewer, target, credential, monkeypatch):
    """Celery redelivery (acks_late): two workers get the same execute task at the same moment."""
    # Keep the execute message from the broker: this test plays both workers itself.
    monkeypatch.setitem(outbox._HANDLERS, OutboxMessage.Kind.EXECUTE, lambda message: None)
    target.delay = 0.3  # the first execution is still in flight when the second arrives
    rounds = 5
    for i in range(rounds):
        action = propose(
            agent,
            action_type="http.request",
            params={"credential": "internal-api", "method": "POST", "path": f"/v1/payments/{i}"},
        )
        services.approve_action(action_id=action.id, reviewer=reviewer, via="api")
        outcomes = race(lambda a=action: services.execute_action(a.id), lambda a=action: services.execute_action(a.id))
        assert all(o.ok for o in outcomes), outcomes
        assert ActionStatus.SUCCEEDED in {o.value for o in outcomes}

        # A late third delivery after it finished does nothing either.
        assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
        connection.close()

        action.refresh_from_db()
        assert action.status == ActionStatus.SUCCEEDED
        verbs = Counter(AuditEvent.objects.filter(action_id=action.id).values_list("verb", flat=True))
        assert verbs["grant.redeemed"] == verbs["execution.started"] == verbs["execution.succeeded"] == 1
        assert verbs["grant.refused"] == verbs["execution.failed"] == 0

    paths = [r.path for r in target.requests]
    assert sorted(paths) == sorted(f"/v1/payments/{i}" for i in range(rounds)), paths
    for request in target.requests:
        assert {k.lower(): v for k, v in request.headers.items()}["authorization"] == f"Bearer {TARGET_SECRET}"
    assert_audit_chain_intact()


@pytest.fixture
def some_history(agent, reviewer, second_reviewer):
    for verdict in ("approve", "reject", "approve"):
        action = propose(agent)
        if verdict == "approve":
            services.approve_action(action_id=action.id, reviewer=reviewer, via="api")
        else:
            services.reject_action(action_id=action.id, reviewer=second_reviewer, via="api", reason="not today")
    return list(AuditEvent.objects.order_by("seq"))


def tamper(sql: str, params: list) -> int:
    """Change audit rows the way someone with database superuser access could.

    ``session_replication_role = replica`` switches off triggers, so this still
    works once an append-only trigger guards the table: the hash chain is what
    must catch it.
    """
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql.format(table=table), params)
        return cursor.rowcount


def test_verify_audit_passes_on_an_honest_log(some_history, capsys):
    call_command("verify_audit")
    out = capsys.readouterr().out
    assert f"audit chain intact: {len(some_history)} events verified" in out


def test_verify_audit_names_a_row_changed_behind_its_back(some_history):
    target_event = next(e for e in some_history if e.verb == "action.rejected")
    changed = tamper(
        "UPDATE {table} SET data = %s::jsonb WHERE seq = %s",
        ['{"from": "pending", "to": "approved"}', target_event.seq],
    )
    assert changed == 1

    # Body and hash untouched: the columns no longer say what was hashed.
    with pytest.raises(CommandError, match=rf"broken at event #{target_event.seq}: columns do not match the hashed"):
        call_command("verify_audit")


def test_verify_audit_detects_a_deleted_row(some_history):
    victim = some_history[len(some_history) // 2]
    assert tamper("DELETE FROM {table} WHERE seq = %s", [victim.seq]) == 1
    with pytest.raises(CommandError, match=rf"#{victim.seq}"):
        call_command("verify_audit")


def test_verify_audit_command_exits_non_zero_on_tampering(some_history, stack_env):
    """As an operator runs it: ``manage.py verify_audit`` in a shell, exit status and message."""
    cmd = [str(VENV_BIN / "python"), "manage.py", "verify_audit"]
    honest = subprocess.run(cmd, env=stack_env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert honest.returncode == 0, honest.stderr
    assert "audit chain intact" in honest.stdout

    victim = some_history[1]
    assert tamper("UPDATE {table} SET actor = %s WHERE seq = %s", ["mallory", victim.seq]) == 1
    broken = subprocess.run(cmd, env=stack_env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert broken.returncode != 0
    assert f"audit chain broken at event #{victim.seq}" in broken.stderr
