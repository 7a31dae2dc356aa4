"""Undo of an approval (approvals.services.undo): only the approver, only within the window, only before dispatch.

A person's approval holds its execute message for ``COUNTERSIGN_UNDO_SECONDS``; these tests set the window
themselves (the test settings default it to 0 so the other execution tests dispatch at once).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from approvals import services
from approvals.errors import Conflict, NotAllowed
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, OutboxMessage, Review
from approvals.outbox import dispatcher as outbox
from approvals.services.transitions import approval_count
from approvals.services.undo import withdraw_approval
from audit.models import AuditEvent
from tests.execution.test_races import race
from tests.factories import propose
from tests.support.servers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def http_action(agent, path: str) -> ActionRequest:
    return propose(agent, "http.request", params={"credential": "internal-api", "method": "POST", "path": path})


def execute_message(action) -> OutboxMessage:
    return OutboxMessage.objects.get(action_id=action.id, kind=OutboxMessage.Kind.EXECUTE)


def verbs(action) -> list[str]:
    return list(AuditEvent.objects.filter(action_id=action.id).order_by("seq").values_list("verb", flat=True))


def test_undo_within_the_window_returns_the_action_to_pending_and_nothing_runs(
    agent, reviewer, target, credential, settings, celery_worker
):
    settings.COUNTERSIGN_UNDO_SECONDS = 2
    action = http_action(agent, "/v1/refunds")
    services.approve_action(action_id=action.id, reviewer=reviewer, via="web")
    held = execute_message(action)
    assert held.delivered_at is None and held.next_attempt_at > timezone.now() + timedelta(seconds=1)
    assert outbox.deliver(held.id) is False  # not due: nobody may dispatch it during the window

    undone = withdraw_approval(action.id, reviewer)
    assert undone.status == ActionStatus.PENDING and undone.decided_at is None
    review = Review.objects.get(action=action, reviewer=reviewer)
    assert review.withdrawn_at is not None
    assert approval_count(undone) == 0
    held.refresh_from_db()
    assert held.delivered_at is not None and "withdrawn" in held.last_error
    grant = ExecutionGrant.objects.get(action=action)
    assert grant.expires_at <= timezone.now() and grant.redeemed_at is None
    event = AuditEvent.objects.get(action_id=action.id, verb="action.approval_withdrawn")
    assert event.actor == "rita" and event.data["from"] == "approved" and event.data["to"] == "pending"

    # Past the window: the worker's scheduled delivery and the sweep both find nothing to send.
    time.sleep(2.5)
    outbox.sweep()
    time.sleep(0.5)
    assert target.requests == []
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.PENDING
    assert "grant.redeemed" not in verbs(action) and "execution.started" not in verbs(action)


def test_an_approval_not_undone_runs_promptly_after_the_window(
    agent, reviewer, target, credential, settings, celery_worker
):
    settings.COUNTERSIGN_UNDO_SECONDS = 1
    action = http_action(agent, "/v1/orders")
    approved_at = time.monotonic()
    services.approve_action(action_id=action.id, reviewer=reviewer, via="api")
    assert target.requests == []  # held for the window
    # No sweep runs in tests: the worker's delayed delivery dispatches it when due.
    wait_until(
        lambda: ActionRequest.objects.get(id=action.id).status == ActionStatus.SUCCEEDED,
        timeout=10,
        message="the approved action to run after its undo window",
    )
    assert time.monotonic() - approved_at >= 1
    assert [r.path for r in target.requests] == ["/v1/orders"]
    with pytest.raises(Conflict):
        withdraw_approval(action.id, reviewer)


def test_only_the_approver_may_undo_and_attempts_by_others_are_audited(
    agent, agent_key, reviewer, second_reviewer, credential, settings
):
    settings.COUNTERSIGN_UNDO_SECONDS = 30
    action = http_action(agent, "/v1/members")
    services.approve_action(action_id=action.id, reviewer=reviewer, via="web")

    with pytest.raises(NotAllowed):
        withdraw_approval(action.id, second_reviewer)
    refused = AuditEvent.objects.get(action_id=action.id, verb="decision.refused")
    assert refused.actor == "sam" and refused.data["verdict"] == "withdraw"

    # The agent cannot withdraw an approval either: a reviewer endpoint, refused at the door and audited.
    agent_client = APIClient()
    agent_client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_key}")
    response = agent_client.post(f"/api/v1/actions/{action.id}/withdraw")
    assert response.status_code in (401, 403), response.content
    assert AuditEvent.objects.filter(verb="access.refused", agent_name=agent.name).exists()

    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED
    assert execute_message(action).delivered_at is None  # still held, still the approver's to undo

    mine = APIClient()
    mine.force_authenticate(reviewer)
    response = mine.post(f"/api/v1/actions/{action.id}/withdraw")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "pending" and body["approvals"] == 0 and body["approved_by"] == []


def test_undo_is_refused_once_the_window_has_passed(agent, reviewer, credential, settings):
    settings.COUNTERSIGN_UNDO_SECONDS = 5
    action = http_action(agent, "/v1/late")
    services.approve_action(action_id=action.id, reviewer=reviewer, via="web")
    Review.objects.filter(action=action).update(created_at=timezone.now() - timedelta(seconds=6))
    with pytest.raises(Conflict, match="window has passed"):
        withdraw_approval(action.id, reviewer)
    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED
    assert "action.approval_withdrawn" not in verbs(action)


def test_a_withdrawn_partial_approval_no_longer_counts(agent, reviewer, second_reviewer, reviewers_group, settings):
    settings.COUNTERSIGN_UNDO_SECONDS = 30
    action = propose(agent)
    ActionRequest.objects.filter(id=action.id).update(required_approvals=2)  # as a two-person rule sets it
    services.approve_action(action_id=action.id, reviewer=reviewer, via="web")
    undone = withdraw_approval(action.id, reviewer)
    assert undone.status == ActionStatus.PENDING
    event = AuditEvent.objects.get(action_id=action.id, verb="action.approval_withdrawn")
    assert event.data["approvals"] == 0

    # The second approval is the only one that counts: one of two, still pending.
    after = services.approve_action(action_id=action.id, reviewer=second_reviewer, via="web")
    assert after.status == ActionStatus.PENDING
    assert approval_count(after) == 1
    assert AuditEvent.objects.filter(action_id=action.id, verb="action.reviewed").last().data["approvals"] == 1


def test_undo_and_dispatch_at_the_boundary_exactly_one_wins(agent, reviewer, credential, settings, monkeypatch):
    settings.COUNTERSIGN_UNDO_SECONDS = 30
    dispatched: list[int] = []
    # Record the hand-over to the broker instead of making it: this test plays the dispatcher itself.
    monkeypatch.setitem(outbox._HANDLERS, OutboxMessage.Kind.EXECUTE, lambda message: dispatched.append(message.id))
    wins = {"undo": 0, "dispatch": 0}
    for i in range(8):
        action = http_action(agent, f"/v1/boundary/{i}")
        services.approve_action(action_id=action.id, reviewer=reviewer, via="web")
        message = execute_message(action)
        # The window's last instant: the message falls due now, while the reviewer can still undo.
        OutboxMessage.objects.filter(id=message.id).update(
            next_attempt_at=timezone.now(), created_at=timezone.now() - timedelta(seconds=5)
        )
        undo, dispatch = race(
            lambda a=action: withdraw_approval(a.id, reviewer), lambda m=message: outbox.deliver(m.id)
        )
        connection.close()
        action.refresh_from_db()
        message.refresh_from_db()
        assert message.delivered_at is not None
        if undo.ok:
            assert dispatch.value is False and message.id not in dispatched
            assert action.status == ActionStatus.PENDING
            wins["undo"] += 1
        else:
            assert isinstance(undo.error, Conflict) and dispatch.value is True
            assert dispatched.count(message.id) == 1
            assert action.status == ActionStatus.APPROVED
            assert "action.approval_withdrawn" not in verbs(action)
            wins["dispatch"] += 1
    assert sum(wins.values()) == 8, wins


def test_bulk_refuses_a_batch_with_a_risky_action_or_two_types_and_decides_nothing(agent, reviewer, client):
    low = [propose(agent, summary=f"Restart worker {n}") for n in range(2)]
    risky = propose(agent, summary="Restart the primary database")
    ActionRequest.objects.filter(id__in=[a.id for a in low]).update(risk="low")
    ActionRequest.objects.filter(id=risky.id).update(risk="high")
    everything = [a.id for a in (*low, risky)]
    client.force_login(reviewer)

    response = client.post("/triage/bulk", {"ids": [str(a.id) for a in (*low, risky)], "verdict": "approve"})
    assert response.status_code == 400 and "low-risk" in response.json()["message"]
    assert set(ActionRequest.objects.filter(id__in=everything).values_list("status", flat=True)) == {"pending"}

    response = client.post("/triage/bulk", {"ids": [str(a.id) for a in low], "verdict": "approve"})
    assert response.status_code == 200, response.content
    assert [r["ok"] for r in response.json()["results"]] == [True, True]
    reviewed = AuditEvent.objects.filter(verb="action.reviewed", action_id__in=[a.id for a in low])
    assert reviewed.count() == 2  # one by one, each audited


def test_a_reviewer_who_undid_may_decide_again_and_slack_approvals_wait_for_nothing(
    agent, reviewer, target, credential, settings, celery_worker
):
    settings.COUNTERSIGN_UNDO_SECONDS = 30
    action = http_action(agent, "/v1/refunds")
    services.approve_action(action_id=action.id, reviewer=reviewer, via="web")
    withdraw_approval(action.id, reviewer)
    # Changed their mind back: the withdrawn review does not count as "already reviewed".
    again = services.approve_action(action_id=action.id, reviewer=reviewer, via="web")
    assert again.status == ActionStatus.APPROVED
    assert Review.objects.filter(action=action, reviewer=reviewer).count() == 2
    assert Review.objects.filter(action=action, reviewer=reviewer, withdrawn_at__isnull=True).count() == 1

    # Slack has no undo button: its approval is dispatched at once, not held for the window.
    other = http_action(agent, "/v1/other")
    services.approve_action(action_id=other.id, reviewer=reviewer, via="slack")
    assert execute_message(other).next_attempt_at <= timezone.now()
    # It runs at once (and is done before the test's tables are emptied).
    assert wait_until(lambda: ActionRequest.objects.get(id=other.id).status == ActionStatus.SUCCEEDED, timeout=20)
