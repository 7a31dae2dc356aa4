"""People, not strings (issue 15, point 4).

``on_behalf_of`` is resolved to a user when the action is proposed (approvals.policies.people) and separation of
duties compares that person, so no spelling of Ivan lets Ivan approve his own access change; an access
change on behalf of nobody known is refused at proposal, with a trace in the audit log.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from agents.services import grant_capability
from approvals.models import ActionRequest, ActionStatus, SlackIdentity
from approvals.policies import store as policy_store
from approvals.policies.people import resolve_person
from approvals.services.credentials import create_credential
from audit.chain import Actor
from audit.models import AuditEvent
from tests.api.test_api import assert_problem
from tests.conftest import CLI, propose_body, token_client

pytestmark = pytest.mark.django_db

IVAN_SLACK = "U0IVAN0001"


@pytest.fixture
def ivan(reviewers_group):
    """Ivan is a reviewer, and the person who asked the agent for his own access."""
    user = User.objects.create_user(
        username="ivan", email="ivan@example.com", password="pw", first_name="Ivan", last_name="Petrov"
    )
    user.groups.add(reviewers_group)
    SlackIdentity.objects.create(slack_user_id=IVAN_SLACK, user=user)
    return user


@pytest.mark.parametrize(
    "text",
    ["ivan", "IVAN", " Ivan ", "ivan@example.com", "IVAN@Example.COM", "Ivan Petrov <IVAN@example.com>",
     '"Petrov, Ivan" <ivan@EXAMPLE.com>', IVAN_SLACK, f"<@{IVAN_SLACK}>", f"<@{IVAN_SLACK}|ivan>"],
)  # fmt: skip
def test_every_spelling_of_ivan_resolves_to_ivan(ivan, text):
    assert resolve_person(text) == ivan


@pytest.mark.parametrize("text", ["", "Ivan Petrov", "ivan@evil.example", "U0NOBODY01", "<@U0NOBODY01>", "x" * 300])
def test_names_of_nobody_resolve_to_nobody(ivan, text):
    assert resolve_person(text) is None


def test_an_ambiguous_or_inactive_name_resolves_to_nobody(ivan):
    User.objects.create_user(username="ivan2", email="IVAN@example.com")  # two accounts share the address
    assert resolve_person("ivan@example.com") is None
    assert resolve_person("ivan") == ivan  # the username is still one person
    gone = User.objects.create_user(username="gone", email="gone@example.com", is_active=False)
    assert resolve_person("gone") is None and resolve_person(gone.email) is None


@pytest.fixture
def access_change(agent, target, db):
    """Proposes an access change (an http.request through the identity provider's credential)."""
    create_credential(
        name="idp-admin",
        kind="http_bearer",
        secret="idp-token",
        scope={"base_url": target.url},
        actor=CLI,
        access_control=True,
    )

    def propose(agent_api, on_behalf_of: str):
        return agent_api.post(
            "/api/v1/actions",
            propose_body(
                action_type="http.request",
                params={"credential": "idp-admin", "method": "POST", "path": "/groups/admins/members"},
                summary="Add ivan to admins",
                on_behalf_of=on_behalf_of,
            ),
            format="json",
        )

    return propose


@pytest.mark.parametrize(
    "spelling", ["Ivan Petrov <IVAN@example.com>", "IVAN", IVAN_SLACK, f"<@{IVAN_SLACK}>", "ivan@EXAMPLE.COM"]
)
def test_ivan_cannot_decide_his_own_access_change_however_he_is_spelled(
    agent_api, access_change, ivan, reviewer, second_reviewer, spelling
):
    response = access_change(agent_api, spelling)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["on_behalf_of"] == spelling and body["on_behalf_of_user"] == "ivan"

    ivan_api = token_client(ivan)
    refused = assert_problem(ivan_api.post(f"/api/v1/actions/{body['id']}/approve", {}, format="json"), 403)
    assert "on your behalf" in refused["detail"]
    # At the floor the requester decides neither way (the agent can still cancel its own proposal).
    assert_problem(ivan_api.post(f"/api/v1/actions/{body['id']}/reject", {"reason": "nah"}, format="json"), 403)
    assert ActionRequest.objects.get(id=body["id"]).status == ActionStatus.PENDING

    # Two colleagues, neither the owner nor Ivan, are what it takes.
    token_client(reviewer).post(f"/api/v1/actions/{body['id']}/approve", {}, format="json")
    token_client(second_reviewer).post(f"/api/v1/actions/{body['id']}/approve", {}, format="json")
    assert ActionRequest.objects.get(id=body["id"]).status == ActionStatus.APPROVED


def test_an_action_proposed_before_resolution_still_keeps_ivan_out(agent_api, ivan, high_risk_decision):
    body = agent_api.post(
        "/api/v1/actions",
        propose_body(action_type=high_risk_decision, on_behalf_of="Ivan Petrov <ivan@example.com>"),
        format="json",
    ).json()
    ActionRequest.objects.filter(id=body["id"]).update(on_behalf_of_user=None)  # as if proposed before 0011
    response = token_client(ivan).post(f"/api/v1/actions/{body['id']}/approve", {}, format="json")
    assert "on your behalf" in assert_problem(response, 403)["detail"]


@pytest.fixture
def high_risk_decision(agent):
    from approvals.action_types.decision_only import DecisionOnly
    from catalog import registry

    class HighRiskDecision(DecisionOnly):
        name = "test.high_risk_people"
        title = "High-risk decision"
        risk = "high"

    registry.register(HighRiskDecision())
    grant_capability(agent=agent, action_type=HighRiskDecision.name, actor=CLI)
    yield HighRiskDecision.name
    registry._registry.pop(HighRiskDecision.name, None)


@pytest.mark.parametrize("on_behalf_of", ["", "Mallory <mallory@evil.example>", "someone", "U0NOBODY01"])
def test_an_access_change_on_behalf_of_nobody_known_is_refused_and_audited(
    agent_api, access_change, ivan, on_behalf_of
):
    problem = assert_problem(access_change(agent_api, on_behalf_of), 400, "on_behalf_of")
    assert "credential `idp-admin` changes access" in problem["errors"]["on_behalf_of"][0]
    assert not ActionRequest.objects.exists()  # nothing half-written
    refused = AuditEvent.objects.get(verb="action.refused")
    assert refused.agent_name == "helper-bot" and refused.data["on_behalf_of"] == on_behalf_of
    assert "on_behalf_of" in refused.data["reason"]


def test_a_rule_can_demand_a_known_requester_for_other_risks(agent_api, ivan):
    # Without a rule, a medium action on behalf of nobody known is fine, and shown as unresolved.
    body = agent_api.post("/api/v1/actions", propose_body(on_behalf_of="dana@example.com"), format="json").json()
    assert body["on_behalf_of_user"] is None
    policy_store.save_rule(
        {"name": "know-who", "action_type": "decision.only", "require_known_requester": True},
        actor=Actor("user", "ada", "admin"),
    )
    response = agent_api.post("/api/v1/actions", propose_body(on_behalf_of="dana@example.com"), format="json")
    assert "know-who" in assert_problem(response, 400, "on_behalf_of")["errors"]["on_behalf_of"][0]
    response = agent_api.post("/api/v1/actions", propose_body(on_behalf_of="IVAN@example.com"), format="json")
    assert response.status_code == 201 and response.json()["on_behalf_of_user"] == "ivan"
    # The flag goes through YAML like every other field.
    assert "require_known_requester: true" in policy_store.to_yaml()


def test_reviewers_see_who_was_resolved_and_who_was_not(agent_api, ivan, reviewer):
    known = agent_api.post(
        "/api/v1/actions", propose_body(on_behalf_of="Ivan Petrov <ivan@example.com>"), format="json"
    )
    unknown = agent_api.post("/api/v1/actions", propose_body(on_behalf_of="dana@example.com"), format="json")
    browser = Client()
    browser.force_login(reviewer)
    page = browser.get(f"/actions/{known.json()['id']}").content.decode()
    assert 'id="requester"' in page and "= ivan" in page
    page = browser.get(f"/actions/{unknown.json()['id']}").content.decode()
    assert "requester unresolved" in page
