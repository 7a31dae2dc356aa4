"""Attacks on time-boxed access: a longer grant than the policy allows in another spelling, an agent posing as
Countersign's revert, a reviewer's edit that lengthens the grant, an agent on the staff-only end-access door."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from agents.services import create_agent, grant_capability
from approvals import services
from approvals.errors import InvalidInput, NotAllowed
from approvals.models import AccessLease, ActionRequest, ActionStatus, Review
from approvals.policies import store as policy_store
from approvals.services import access
from audit.models import AuditEvent
from tests import factories
from tests.conftest import CLI
from tests.support.scim import idp_credential

pytestmark = pytest.mark.django_db

EIGHT_HOURS = 8 * 3600


@pytest.fixture
def eight_hours_at_most(db):
    return policy_store.save_rule(
        {
            "name": "prod-admin-time-boxed",
            "action_type": "scim.group_membership",
            "conditions": [{"path": "params.group", "op": "equals", "value": "prod-admin"}],
            "required_approvals": 2,
            "max_duration_seconds": EIGHT_HOURS,
            "require_duration": True,
        },
        actor=CLI,
    )


def body(duration=None, **params) -> dict:
    proposal = {
        "action_type": "scim.group_membership",
        "params": {"credential": "idp", "group": "prod-admin", "add": ["alice"]} | params,
        "summary": "alice needs prod-admin",
        "on_behalf_of": "olivia",
    }
    if duration is not None:
        proposal["params"]["duration"] = duration
    return proposal


def refusals(verb="action.refused") -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(verb=verb).order_by("seq"))


@pytest.mark.parametrize(
    ("duration", "status"),
    [
        ("P1D", 403),
        (86400, 403),
        ("PT24H", 403),
        ("PT480M1S", 403),
        (EIGHT_HOURS + 1, 403),
        ("P1W", 403),
        ("86400 ", 400),
        ("86400", 400),
        (-1, 400),
        ("-PT1H", 400),
        ("P0D", 400),
        (0, 400),
        ("P1Y", 400),
        ("PT1.5H", 400),
        (True, 400),
        ("P", 400),
        ("PT", 400),
    ],
)
def test_a_duration_over_the_maximum_or_malformed_is_refused_in_every_spelling(
    scim, scim_agent, eight_hours_at_most, agent_api, duration, status
):
    response = agent_api.post("/api/v1/actions", body(duration), format="json")
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    problem = response.json()
    assert "params.duration" in problem["errors"]
    assert not ActionRequest.objects.exists()  # nothing half-written
    [refused] = refusals()  # the attempt is on the record
    assert refused.actor == "helper-bot" and refused.data["duration"] == duration


@pytest.mark.parametrize("duration", ["PT8H", EIGHT_HOURS, "PT479M", "P0DT8H", 60])
def test_a_duration_within_the_maximum_is_proposed(scim, scim_agent, eight_hours_at_most, agent_api, duration):
    response = agent_api.post("/api/v1/actions", body(duration), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["required_approvals"] == 2


def test_a_policy_that_requires_a_duration_refuses_a_grant_without_one(
    scim, scim_agent, eight_hours_at_most, agent_api
):
    response = agent_api.post("/api/v1/actions", body(), format="json")
    assert response.status_code == 403
    assert "requires a duration" in response.json()["detail"]
    assert not ActionRequest.objects.exists() and len(refusals()) == 1


def test_the_credential_caps_the_duration_too(scim, agent, agent_api):
    idp_credential(scim, allow_preview_reads=False, max_duration_seconds=3600)
    grant_capability(agent=agent, action_type="scim.group_membership", actor=CLI)
    assert agent_api.post("/api/v1/actions", body("PT61M"), format="json").status_code == 403
    assert agent_api.post("/api/v1/actions", body("PT1H"), format="json").status_code == 201


def test_a_time_boxed_change_only_adds(scim, scim_agent, agent_api):
    response = agent_api.post("/api/v1/actions", body("PT1H", remove=["bob"]), format="json")
    assert response.status_code == 400
    assert "only adds users" in str(response.json()["errors"])


def test_a_reviewer_may_shorten_never_lengthen_nor_drop_the_duration(
    scim, scim_agent, eight_hours_at_most, reviewer, second_reviewer
):
    action = factories.propose(
        scim_agent,
        "scim.group_membership",
        {"credential": "idp", "group": "prod-admin", "add": ["alice"], "duration": "PT2H"},
        summary="alice needs prod-admin",
        on_behalf_of="olivia",
    )
    longer = {**action.params, "duration": "PT3H"}
    dropped = {k: v for k, v in action.params.items() if k != "duration"}
    over = {**action.params, "duration": "P1D"}
    for edited in (longer, dropped, over):
        with pytest.raises(InvalidInput):
            services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API, edited_params=edited)
    assert not Review.objects.filter(action=action).exists()
    shorter = {**action.params, "duration": 1800}
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API, edited_params=shorter)
    services.approve_action(action_id=action.id, reviewer=second_reviewer, via=Review.Via.API)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    lease = AccessLease.objects.get(action=action)
    assert lease.expires_at - lease.granted_at == timedelta(minutes=30)


def test_an_agent_cannot_pose_as_countersigns_revert(scim, scim_agent, agent_api, reviewer, second_reviewer):
    # A grant the agent made earlier, for someone else (bob's membership predates it; alice's came with it).
    original = factories.propose(
        scim_agent,
        "scim.group_membership",
        {"credential": "idp", "group": "prod-admin", "add": ["alice"], "duration": "PT2H"},
        summary="alice needs prod-admin",
        on_behalf_of="olivia",
    )
    services.approve_action(action_id=original.id, reviewer=reviewer, via=Review.Via.API)
    services.approve_action(action_id=original.id, reviewer=second_reviewer, via=Review.Via.API)
    services.execute_action(original.id)

    # 1. The revert's link in the body: not a field an agent can set.
    forged = body(remove=["bob"]) | {"reverts": str(original.id)}
    forged["params"].pop("add")
    response = agent_api.post("/api/v1/actions", forged, format="json")
    assert response.status_code == 400 and "reverts" in response.json()["errors"]
    for field in ("revert_reason", "extends"):
        assert agent_api.post("/api/v1/actions", body() | {field: "expired"}, format="json").status_code == 400

    # 2. The same removal proposed plainly: an access change like any other, two humans, never auto-approved.
    plain = body(remove=["bob"])
    plain["params"].pop("add")
    response = agent_api.post("/api/v1/actions", plain, format="json")
    assert response.status_code == 201
    removal = response.json()
    assert removal["status"] == "pending" and removal["required_approvals"] == 2 and removal["reverts"] is None
    assert scim.members(scim.group_id) == {"alice", "bob", "carol"}

    # 3. The staff door to end access early: an agent key is refused and the attempt audited.
    before = AuditEvent.objects.filter(verb="access.refused").count()
    response = agent_api.post(f"/api/v1/actions/{original.id}/end-access", {}, format="json")
    assert response.status_code == 403
    assert AuditEvent.objects.filter(verb="access.refused").count() == before + 1
    assert AccessLease.objects.get(action=original).state == AccessLease.State.ACTIVE

    # 4. Nor can a reviewer who is not staff end it, nor an agent through the service.
    with pytest.raises(NotAllowed):
        access.end_access(original.id, actor=CLI, user=reviewer)
    with pytest.raises(NotAllowed):
        access.propose_undo(original.id, agent=scim_agent)


def test_extensions_are_the_agents_own_and_within_the_maximum(
    scim, scim_agent, eight_hours_at_most, agent_api, reviewer, second_reviewer, owner
):
    original = factories.propose(
        scim_agent,
        "scim.group_membership",
        {"credential": "idp", "group": "prod-admin", "add": ["alice"], "duration": "PT1H"},
        summary="alice needs prod-admin",
        on_behalf_of="olivia",
    )
    services.approve_action(action_id=original.id, reviewer=reviewer, via=Review.Via.API)
    services.approve_action(action_id=original.id, reviewer=second_reviewer, via=Review.Via.API)
    services.execute_action(original.id)

    too_long = agent_api.post(f"/api/v1/actions/{original.id}/extend", {"duration": "P1D"}, format="json")
    assert too_long.status_code == 403 and "params.duration" in too_long.json()["errors"]
    malformed = agent_api.post(f"/api/v1/actions/{original.id}/extend", {"duration": "86400 "}, format="json")
    assert malformed.status_code == 400
    unknown_field = agent_api.post(
        f"/api/v1/actions/{original.id}/extend", {"duration": 60, "group": "root"}, format="json"
    )
    assert unknown_field.status_code == 400

    _, _, other_key = create_agent(name="other-bot", owner=owner, actor=CLI, allow=["scim.group_membership"])
    other_api = APIClient()
    other_api.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    response = other_api.post(f"/api/v1/actions/{original.id}/extend", {"duration": 60}, format="json")
    assert response.status_code == 404
    assert not ActionRequest.objects.filter(extends=original).exists()

    ok = agent_api.post(f"/api/v1/actions/{original.id}/extend", {"duration": "PT2H"}, format="json")
    assert ok.status_code == 201
    again = agent_api.post(f"/api/v1/actions/{original.id}/extend", {"duration": "PT2H"}, format="json")
    assert again.status_code == 409  # one extension waits at a time
