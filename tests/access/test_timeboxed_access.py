"""Time-boxed access (issue 23) against a real SCIM 2.0 server, with the clock moved rather than slept.

Every grant here goes the whole way: an agent proposes ``scim.group_membership`` with a ``duration``, two humans
approve, the worker's code executes it against the SCIM server, and when the time is up the beat sweep
(``revert_due``) starts Countersign's own revert, which the worker's code executes in turn. Membership is always
read back from the SCIM server itself.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from approvals import services
from approvals.errors import Conflict, NotAllowed
from approvals.models import AccessLease, ActionRequest, ActionStatus, Review
from approvals.selectors.access import access_counts, active_access, failing_reverts
from approvals.selectors.dashboard import dashboard_for
from approvals.services import access
from audit.chain import verify_log
from audit.models import AuditEvent
from tests import factories
from tests.conftest import CLI
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

State = AccessLease.State


@pytest.fixture
def staff(db):
    return UserFactory(username="stella", is_staff=True)


def propose(agent, duration="PT2M", **params) -> ActionRequest:
    body = {"credential": "idp", "group": "prod-admin", "add": ["alice"]} | params
    if duration is not None:
        body["duration"] = duration
    return factories.propose(
        agent, "scim.group_membership", body, summary="Give alice prod-admin for the incident", on_behalf_of="olivia"
    )


def approve(action, *reviewers, **fields) -> None:
    for reviewer in reviewers:
        services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API, **fields)


def grant(agent, reviewer, second_reviewer, duration="PT2M", **params) -> ActionRequest:
    action = propose(agent, duration, **params)
    approve(action, reviewer, second_reviewer)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    action.refresh_from_db()
    return action


def lease_of(action) -> AccessLease:
    return AccessLease.objects.get(action=action)


def run_revert(original) -> ActionRequest:
    """The worker runs the revert the sweep queued (the execute task the outbox hands to the broker)."""
    revert = lease_of(original).revert_action
    assert revert is not None
    services.execute_action(revert.id)
    revert.refresh_from_db()
    return revert


def until(moment) -> float:
    """Seconds from the (moved) clock's now to ``moment``."""
    return (moment - timezone.now()).total_seconds()


def verbs(action) -> list[str]:
    return list(AuditEvent.objects.filter(action_id=action.id).order_by("seq").values_list("verb", flat=True))


def event(action, verb) -> AuditEvent:
    return AuditEvent.objects.filter(action_id=action.id, verb=verb).order_by("seq").last()


# --- the grant ends by itself ---------------------------------------------------------------------------------


def test_a_two_minute_grant_is_reverted_at_two_minutes_and_only_then(
    scim, scim_agent, reviewer, second_reviewer, clock
):
    original = grant(scim_agent, reviewer, second_reviewer, duration="PT2M")
    assert scim.members(scim.group_id) == {"alice", "bob", "carol"}
    lease = lease_of(original)
    assert lease.state == State.ACTIVE
    assert original.access_expires_at == lease.expires_at
    assert lease.expires_at - lease.granted_at == timedelta(minutes=2)
    assert lease.revert_params == {"credential": "idp", "group": scim.group_id, "remove": ["alice"]}

    clock.advance(seconds=until(lease.expires_at) - 1)
    assert access.revert_due() == 0
    assert scim.members(scim.group_id) == {"alice", "bob", "carol"}

    clock.advance(seconds=1)
    assert access.revert_due() == 1
    revert = lease_of(original).revert_action
    # Countersign's own action, linked to the grant, approved by the floor's rule for reverts: no human needed.
    assert revert.reverts_id == original.id and revert.revert_reason == "expired"
    assert revert.status == ActionStatus.APPROVED
    assert (revert.policy_rule, revert.policy_effect, revert.required_approvals) == ("revert-floor", "auto_approve", 0)
    assert event(revert, "action.proposed").actor_type == "system"
    assert event(revert, "action.approved").actor == "revert-floor"

    assert run_revert(original).status == ActionStatus.SUCCEEDED
    assert scim.members(scim.group_id) == {"bob", "carol"}
    original.refresh_from_db()
    assert original.reverted_at is not None
    assert lease_of(original).state == State.REVERTED
    started = event(original, "access.revert_started").data
    assert started["reason"] == "expired" and started["late_seconds"] < 60 and started["missed"] is False
    assert verify_log().broken is None


def test_the_api_shows_expiry_revert_and_link(scim, scim_agent, reviewer, second_reviewer, clock, agent_api):
    original = grant(scim_agent, reviewer, second_reviewer, duration=120)
    body = agent_api.get(f"/api/v1/actions/{original.id}").json()
    assert body["access_expires_at"] == original.access_expires_at.isoformat().replace("+00:00", "Z")
    assert body["reverted_at"] is None and body["reverts"] is None

    clock.advance(minutes=2)
    access.revert_due()
    revert = run_revert(original)
    body = agent_api.get(f"/api/v1/actions/{original.id}").json()
    assert body["reverted_at"] is not None
    revert_body = agent_api.get(f"/api/v1/actions/{revert.id}").json()
    assert revert_body["reverts"] == str(original.id) and revert_body["status"] == "succeeded"


def test_pre_existing_membership_is_left_alone(scim, scim_agent, reviewer, second_reviewer, clock):
    # bob was a member before; the grant adds alice and "adds" bob, who already had it.
    original = grant(scim_agent, reviewer, second_reviewer, add=["alice", "bob"])
    assert original.result["added"] == ["alice"] and original.result["already_members"] == ["bob"]
    assert lease_of(original).revert_params["remove"] == ["alice"]

    clock.advance(minutes=2)
    access.revert_due()
    run_revert(original)
    assert scim.members(scim.group_id) == {"bob", "carol"}  # bob keeps what he had before


def test_a_grant_that_added_nobody_has_nothing_to_revert(scim, scim_agent, reviewer, second_reviewer, clock):
    original = grant(scim_agent, reviewer, second_reviewer, add=["bob"])
    assert lease_of(original).state == State.NOTHING_TO_REVERT
    clock.advance(hours=1)
    assert access.revert_due() == 0
    assert scim.members(scim.group_id) == {"bob", "carol"}
    assert "access.nothing_to_revert" in verbs(original)


def test_two_humans_grant_two_hours_and_the_audit_says_who_when_and_how_it_was_taken_back(
    scim, scim_agent, reviewer, second_reviewer, clock
):
    original = grant(scim_agent, reviewer, second_reviewer, duration="PT2H")
    clock.advance(seconds=until(lease_of(original).expires_at) - 60)
    assert access.revert_due() == 0
    assert scim.members(scim.group_id) == {"alice", "bob", "carol"}
    clock.advance(minutes=1)
    assert access.revert_due() == 1
    revert = run_revert(original)
    assert scim.members(scim.group_id) == {"bob", "carol"}

    trail = list(AuditEvent.objects.filter(action_id=original.id).order_by("seq"))
    by_verb = {e.verb: e for e in trail}
    assert by_verb["action.proposed"].actor == "helper-bot"  # who asked for it
    assert by_verb["action.proposed"].data["on_behalf_of"] == "olivia"  # for whom
    approvers = [e.actor for e in trail if e.verb == "action.reviewed"]
    assert approvers == ["rita", "sam"]  # who approved
    scheduled = by_verb["access.scheduled"]
    assert scheduled.data["duration_seconds"] == 7200
    assert scheduled.data["revert"]["params"]["remove"] == ["alice"]
    reverted = by_verb["access.reverted"]  # when and how it was taken back
    assert reverted.data["revert_action"] == str(revert.id) and reverted.data["reason"] == "expired"
    granted = lease_of(original)
    assert scheduled.data["expires_at"] == granted.expires_at.isoformat().replace("+00:00", "Z")
    assert granted.expires_at - granted.granted_at == timedelta(hours=2)
    assert reverted.at >= granted.expires_at and reverted.at - scheduled.at < timedelta(hours=2, minutes=1)
    order = [e.verb for e in trail]
    assert order.index("access.scheduled") < order.index("access.revert_started") < order.index("access.reverted")
    # The revert's own trail: proposed by Countersign, approved by the revert floor, executed by the worker.
    revert_verbs = verbs(revert)
    assert revert_verbs[:2] == ["action.proposed", "action.approved"]
    assert "execution.succeeded" in revert_verbs
    assert verify_log().broken is None


# --- extend, end early ----------------------------------------------------------------------------------------


def test_an_approved_extension_moves_the_end(scim, scim_agent, reviewer, second_reviewer, clock, agent_api):
    original = grant(scim_agent, reviewer, second_reviewer, duration="PT2M")
    due = lease_of(original).expires_at
    response = agent_api.post(f"/api/v1/actions/{original.id}/extend", {"duration": "PT1M"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["extends"] == str(original.id) and body["status"] == "pending"
    assert body["required_approvals"] == 2  # the same approvals as the grant: the access floor
    extension = ActionRequest.objects.get(id=body["id"])

    approve(extension, reviewer, second_reviewer)
    assert services.execute_action(extension.id) == ActionStatus.SUCCEEDED
    assert lease_of(original).expires_at == due + timedelta(minutes=1)
    original.refresh_from_db()
    assert original.access_expires_at == due + timedelta(minutes=1)
    assert "access.extended" in verbs(original)

    clock.advance(minutes=2)
    assert access.revert_due() == 0
    assert scim.members(scim.group_id) == {"alice", "bob", "carol"}
    clock.advance(minutes=1)
    assert access.revert_due() == 1
    run_revert(original)
    assert scim.members(scim.group_id) == {"bob", "carol"}


def test_a_refused_extension_changes_nothing(scim, scim_agent, reviewer, second_reviewer, clock):
    original = grant(scim_agent, reviewer, second_reviewer, duration="PT2M")
    due = lease_of(original).expires_at
    extension = access.propose_extension(original.id, agent=scim_agent, duration=3600)
    services.reject_action(action_id=extension.id, reviewer=reviewer, via=Review.Via.API, reason="not needed")
    assert lease_of(original).expires_at == due
    clock.advance(minutes=2)
    assert access.revert_due() == 1
    run_revert(original)
    assert scim.members(scim.group_id) == {"bob", "carol"}


def test_staff_end_access_early_once(scim, scim_agent, reviewer, second_reviewer, staff, clock):
    original = grant(scim_agent, reviewer, second_reviewer, duration="PT2H")
    with pytest.raises(NotAllowed):
        access.end_access(original.id, actor=CLI, user=reviewer)  # a reviewer who is not staff
    clock.advance(minutes=10)
    access.end_access(original.id, actor=CLI, user=staff, reason="incident over")
    lease = lease_of(original)
    assert lease.state == State.REVERTING and lease.reason == "ended_early" and lease.ended_by == staff
    run_revert(original)
    assert scim.members(scim.group_id) == {"bob", "carol"}
    # Ending it again, or the due time passing later, starts nothing more.
    with pytest.raises(Conflict):
        access.end_access(original.id, actor=CLI, user=staff)
    clock.advance(hours=3)
    assert access.revert_due() == 0
    assert ActionRequest.objects.filter(reverts=original).count() == 1
    reverted = event(original, "access.reverted").data
    assert reverted["reason"] == "ended_early" and reverted["ended_by"] == "stella"


def test_end_access_command(scim, scim_agent, reviewer, second_reviewer):
    original = grant(scim_agent, reviewer, second_reviewer, duration="PT8H")
    call_command("end_access", str(original.id), "--reason", "done")
    run_revert(original)
    assert scim.members(scim.group_id) == {"bob", "carol"}
    with pytest.raises(CommandError, match="no longer active"):
        call_command("end_access", str(original.id))
    with pytest.raises(CommandError, match="not an action id"):
        call_command("end_access", "nope")


# --- failures, retries, crashes -------------------------------------------------------------------------------


def test_a_failing_revert_is_an_alert_retried_with_backoff_until_it_succeeds(
    scim, scim_agent, reviewer, second_reviewer, clock
):
    original = grant(scim_agent, reviewer, second_reviewer, duration="PT2M")
    scim.down = True
    clock.advance(minutes=2)
    assert access.revert_due() == 1
    first = run_revert(original)
    assert first.status == ActionStatus.FAILED
    lease = lease_of(original)
    assert lease.state == State.RETRYING and lease.is_alert and "503" in lease.last_error
    # Every reviewer's desk sees it: the failing list, the active-access row, the dashboard's count.
    assert [failed.id for failed in failing_reverts(reviewer)] == [lease.id]
    assert [row.is_alert for row in active_access(second_reviewer)] == [True]
    assert access_counts(reviewer)["failed_reverts"] == 1
    assert dashboard_for(reviewer).access["failed_reverts"] == 1
    assert event(original, "access.revert_failed").data["attempt"] == 1

    # Not before the backoff; then again (still down), then with a longer wait.
    assert access.revert_due() == 0
    clock.advance(seconds=30)
    assert access.revert_due() == 1
    assert run_revert(original).status == ActionStatus.FAILED
    assert lease_of(original).next_attempt_at - clock.advance() > timedelta(seconds=50)
    clock.advance(seconds=30)
    assert access.revert_due() == 0
    scim.down = False
    clock.advance(seconds=30)
    assert access.revert_due() == 1
    last = run_revert(original)
    assert last.status == ActionStatus.SUCCEEDED
    assert scim.members(scim.group_id) == {"bob", "carol"}
    assert lease_of(original).state == State.REVERTED and lease_of(original).attempts == 3
    assert failing_reverts(reviewer) == [] and access_counts(reviewer)["expired"] == 1
    assert ActionRequest.objects.filter(reverts=original).count() == 3


def test_everything_down_across_the_expiry_then_the_sweep_reverts_once_and_says_how_late(
    scim, scim_agent, reviewer, second_reviewer, clock
):
    # The grant's only trace of its revert is the lease row: no broker message, no timer in any process.
    original = grant(scim_agent, reviewer, second_reviewer, duration="PT2M")
    assert lease_of(original).revert_action is None
    clock.advance(hours=1, minutes=2)  # every process was down for an hour past the expiry
    assert access.revert_due() == 1
    assert access.revert_due() == 0  # a second sweep (another beat, a restart) starts nothing more
    started = event(original, "access.revert_started").data
    assert 3600 <= started["late_seconds"] < 3660 and started["missed"] is True
    revert = run_revert(original)
    assert services.execute_action(revert.id) == ActionStatus.SUCCEEDED  # a replayed execute task does nothing
    assert scim.members(scim.group_id) == {"bob", "carol"}
    assert ActionRequest.objects.filter(reverts=original).count() == 1
    assert verbs(original).count("access.reverted") == 1
    assert verbs(revert).count("execution.started") == 1


def test_a_revert_whose_grant_was_refused_is_retried_by_the_sweep(scim, scim_agent, reviewer, second_reviewer, clock):
    original = grant(scim_agent, reviewer, second_reviewer, duration="PT2M")
    clock.advance(minutes=2)
    access.revert_due()
    revert = lease_of(original).revert_action
    clock.advance(minutes=30)  # its execution grant expired before any worker ran it
    assert services.execute_action(revert.id) == ActionStatus.FAILED
    assert lease_of(original).state == State.RETRYING
    clock.advance(minutes=1)
    assert access.revert_due() == 1
    assert run_revert(original).status == ActionStatus.SUCCEEDED
    assert scim.members(scim.group_id) == {"bob", "carol"}


def test_a_frozen_agents_grant_is_still_taken_back(scim, scim_agent, reviewer, second_reviewer, clock):
    from approvals.services.containment import freeze_agent

    original = grant(scim_agent, reviewer, second_reviewer, duration="PT2M")
    freeze_agent(scim_agent, "compromised", CLI)
    clock.advance(minutes=2)
    access.revert_due()
    assert run_revert(original).status == ActionStatus.SUCCEEDED
    assert scim.members(scim.group_id) == {"bob", "carol"}


def test_active_access_view_rows(scim, scim_agent, reviewer, second_reviewer, outsider, clock):
    original = grant(scim_agent, reviewer, second_reviewer, duration="PT2H")
    clock.advance(minutes=30)
    [row] = active_access(reviewer)
    assert row.action.id == original.id and row.users == ["alice"] and row.group == "prod-admin"
    assert row.granted_by == ["rita", "sam"] and row.on_behalf_of == "olivia" and row.agent == "helper-bot"
    assert 5390 <= row.seconds_left <= 5400 and row.state == "active" and not row.is_alert
    assert active_access(outsider) == []  # scoped like every read
    assert access_counts(reviewer) == {"active": 1, "expired": 0, "ended_early": 0, "failed_reverts": 0}


def test_an_unknown_outcome_resolved_as_succeeded_still_ends_and_spares_earlier_members(
    scim, scim_agent, reviewer, second_reviewer, staff, clock
):
    original = propose(scim_agent, "PT2M", add=["alice", "bob"])
    approve(original, reviewer, second_reviewer)
    scim.down_after_patch = True  # the PATCH lands, reading the group back fails: nobody knows
    assert services.execute_action(original.id) == ActionStatus.UNKNOWN
    scim.down, scim.down_after_patch = False, False
    assert not AccessLease.objects.filter(action=original).exists()

    services.resolve_unknown_outcome(
        original.id, user=staff, outcome="succeeded", note="alice is in the group", via=Review.Via.API
    )
    lease = lease_of(original)
    assert lease.state == State.ACTIVE and lease.revert_params["remove"] == ["alice"]  # bob was a member before
    clock.advance(minutes=2)
    assert access.revert_due() == 1
    run_revert(original)
    assert scim.members(scim.group_id) == {"bob", "carol"}
