"""Every refusal is in the audit log, and a flood of them cannot fill it.

The confused deputy's signature is a refused attempt: the person the agent acts for, the agent's owner or
the agent itself trying to approve. Each gets 403 and leaves an event (who, which action, why). The same
refusal repeated by the same actor within a minute is one event plus a ``refusals.counted`` event.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from agents.services import create_agent
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.services import containment
from audit import chain as audit
from audit.chain import Actor, record_refusal, report_refusal_counts
from audit.models import AuditEvent, RefusalTally
from tests.conftest import CLI, propose_body, token_client

pytestmark = pytest.mark.django_db

MINUTE = datetime(2026, 12, 4, 10, 15, tzinfo=UTC)


@pytest.fixture
def one_minute(monkeypatch):
    """Every refusal falls in the same minute, whatever the wall clock does meanwhile."""
    clock = {"minute": MINUTE}
    monkeypatch.setattr(audit, "_refusal_minute", lambda: clock["minute"])
    return clock


@pytest.fixture
def ivan(reviewers_group):
    user = User.objects.create_user("ivan", email="ivan@example.com", password="pw-ivan", first_name="Ivan")
    user.groups.add(reviewers_group)
    return user


def high_risk_action(agent_api, invoker) -> str:
    """A high-risk action Ivan asked the agent for (forged to high risk: separation of duties applies)."""
    action_id = agent_api.post("/api/v1/actions", propose_body(on_behalf_of=invoker.email), format="json").json()["id"]
    ActionRequest.objects.filter(id=action_id).update(risk="high", on_behalf_of_user=invoker)
    return action_id


def refused(verb: str = "decision.refused"):
    return AuditEvent.objects.filter(verb=verb).order_by("seq")


def test_the_invoker_the_owner_and_the_agent_trying_to_approve_get_403_and_leave_a_trace(
    agent_api, ivan, owner, reviewers_group, one_minute
):
    owner.groups.add(reviewers_group)  # the owner is a reviewer too: the rule that stops her is separation
    action_id = high_risk_action(agent_api, ivan)

    for user in (ivan, owner):
        response = token_client(user).post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
        assert response.status_code == 403, response.content
    assert agent_api.post(f"/api/v1/actions/{action_id}/approve", {}, format="json").status_code == 403

    events = list(refused())
    assert [(e.actor, e.via, e.action_id and str(e.action_id), e.agent_name) for e in events] == [
        ("ivan", "api", action_id, "helper-bot"),
        ("olivia", "api", action_id, "helper-bot"),
    ]
    assert "on your behalf" in events[0].data["reason"] and events[0].data["verdict"] == "approve"
    assert "you own the agent" in events[1].data["reason"]
    [agent_attempt] = refused("access.refused")
    assert (agent_attempt.actor_type, agent_attempt.actor) == ("agent", "helper-bot")
    assert agent_attempt.data["reason"] == "an agent key on a reviewer endpoint"
    assert agent_attempt.data["path"] == f"/api/v1/actions/{action_id}/approve"
    action = ActionRequest.objects.get(id=action_id)
    assert action.status == ActionStatus.PENDING and not action.reviews.exists()


def test_refusals_through_the_web_and_humanlayer_doors_are_recorded_too(
    agent_api, agent_key, ivan, outsider, one_minute
):
    action_id = high_risk_action(agent_api, ivan)
    browser = Client()
    browser.force_login(ivan)
    browser.post(f"/actions/{action_id}/reject", {"reason": "I asked for it, but no"})
    browser.force_login(outsider)
    # Oscar may not even see it: 404, and the attempt is recorded all the same.
    assert browser.post(f"/actions/{action_id}/approve", {"confirm_risk": "yes"}).status_code == 404

    humanlayer = APIClient()
    humanlayer.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_key}")
    response = humanlayer.post(f"/humanlayer/v1/agent/function_calls/{action_id}/respond", {}, format="json")
    assert response.status_code == 403

    assert [(e.actor, e.via, e.data["verdict"]) for e in refused()] == [
        ("ivan", "web", "reject"),
        ("oscar", "web", "approve"),
    ]
    assert "only members of reviewers" in refused()[1].data["reason"]
    [agent_attempt] = refused("access.refused")
    assert agent_attempt.data["path"].startswith("/humanlayer/v1/agent/function_calls/")
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING


def test_a_hundred_refusals_in_a_minute_are_one_event_and_a_count(agent_api, outsider, reviewer, one_minute):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    oscar = token_client(outsider)
    for _ in range(100):
        assert oscar.post(f"/api/v1/actions/{action_id}/approve", {}, format="json").status_code == 403
    assert refused().count() == 1
    [tally] = RefusalTally.objects.all()
    assert tally.count == 100

    # Someone else's refusal is their own event, not hidden in Oscar's count.
    reviewer.groups.clear()
    token_client(reviewer).post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    assert [e.actor for e in refused()] == ["oscar", "rita"]

    assert report_refusal_counts(now=MINUTE + timedelta(minutes=1)) == 1  # beat, once the minute is over
    [counted] = AuditEvent.objects.filter(verb="refusals.counted")
    assert (counted.actor, counted.via) == ("oscar", "api")
    assert counted.data | {"kind": None} == {
        "verb": "decision.refused",
        "kind": None,
        "minute": MINUTE.isoformat(),
        "refusals": 100,
        "counted": 99,
    }
    assert not RefusalTally.objects.exists()
    assert report_refusal_counts(now=MINUTE + timedelta(minutes=5)) == 0  # reported once
    assert ActionRequest.objects.get(id=action_id).reviews.count() == 0


def test_the_next_minutes_first_refusal_reports_the_last_minutes_count(one_minute):
    actor = Actor("user", "mallory", "api")
    for _ in range(3):
        record_refusal(actor=actor, verb="decision.refused", reason="not in the group")
    one_minute["minute"] = MINUTE + timedelta(minutes=1)
    assert record_refusal(actor=actor, verb="decision.refused", reason="not in the group") is True
    assert list(AuditEvent.objects.order_by("seq").values_list("verb", flat=True)) == [
        "decision.refused",
        "refusals.counted",
        "decision.refused",
    ]
    assert AuditEvent.objects.get(verb="refusals.counted").data["refusals"] == 3


def test_a_frozen_agent_hammering_the_api_is_one_event_and_a_count(agent, agent_api, one_minute):
    containment.freeze_agent(agent, "contained", CLI)
    for _ in range(30):
        assert agent_api.get("/api/v1/actions").status_code == 401
    [event] = refused("access.refused")
    assert event.data["reason"] == "agent frozen: contained"
    report_refusal_counts(now=MINUTE + timedelta(minutes=1))
    assert AuditEvent.objects.get(verb="refusals.counted").data["refusals"] == 30


def test_a_revoked_keys_use_is_recorded(agent, agent_api, one_minute):
    containment.revoke_all_keys(agent=agent, actor=CLI)
    assert agent_api.get("/api/v1/actions").status_code == 401
    [event] = refused("access.refused")
    assert (event.actor, event.data["reason"]) == ("helper-bot", "key revoked")


def test_a_refusal_is_recorded_even_though_the_decision_rolled_back(agent_api, outsider, one_minute):
    """The decision's transaction rolls back on NotAllowed; the refusal is written after it, and stays."""
    from approvals import services
    from approvals.errors import NotAllowed

    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    with pytest.raises(NotAllowed):
        services.approve_action(action_id=action_id, reviewer=outsider, via=Review.Via.SLACK)
    [event] = refused()
    assert (event.actor, event.via) == ("oscar", "slack")


def test_refusals_do_not_break_the_chain(agent_api, outsider, one_minute):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    for _ in range(5):
        token_client(outsider).post(f"/api/v1/actions/{action_id}/reject", {"reason": "x"}, format="json")
    report_refusal_counts(now=MINUTE + timedelta(minutes=1))
    assert audit.verify_log().broken is None


def test_an_agent_of_another_owner_is_counted_apart(owner, agent_api, one_minute):
    _, _, other_key = create_agent(name="other-bot", owner=owner, actor=CLI, allow=["decision.only"])
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    for client in (agent_api, other, agent_api):
        client.post("/api/v1/policies/simulate", {}, format="json")
    assert [e.actor for e in refused("access.refused")] == ["helper-bot", "other-bot"]


def test_an_agent_key_on_a_reviewer_page_authenticates_nothing_and_is_recorded(agent_api, agent_key, one_minute):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    page = Client(HTTP_AUTHORIZATION=f"Bearer {agent_key}")
    response = page.post(f"/actions/{action_id}/approve", {"comment": "lgtm"})
    assert response.status_code in (302, 403)  # to the log-in page, or refused for CSRF: never a decision
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING
    [event] = refused("access.refused")
    assert (event.actor, event.data["path"]) == ("helper-bot", f"/actions/{action_id}/approve")
    assert Client(HTTP_AUTHORIZATION="Bearer cs_forged_key").get("/").status_code == 302
    assert refused("access.refused").count() == 1  # a key that is not one is nobody's attempt
