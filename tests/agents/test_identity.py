"""No borrowed identity: an agent is only itself, a reviewer is never an agent, on_behalf_of grants nothing."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from agents.services import grant_capability
from approvals.action_types.decision_only import DecisionOnly
from approvals.models import ActionRequest, ActionStatus
from catalog import registry
from tests.api.test_api import assert_problem
from tests.conftest import CLI, propose_body, token_client

pytestmark = pytest.mark.django_db


class HighRiskDecision(DecisionOnly):
    name = "test.high_risk"
    title = "High-risk decision"
    risk = "high"


@pytest.fixture
def high_risk(agent):
    registry.register(HighRiskDecision())
    grant_capability(agent=agent, action_type=HighRiskDecision.name, actor=CLI)
    yield HighRiskDecision.name
    registry._registry.pop(HighRiskDecision.name, None)


def test_on_behalf_of_is_recorded_and_shown_to_reviewers(agent_api, reviewer):
    response = agent_api.post("/api/v1/actions", propose_body(on_behalf_of="dana@example.com"), format="json")
    action_id = response.json()["id"]
    assert response.json()["on_behalf_of"] == "dana@example.com"
    browser = Client()
    browser.force_login(reviewer)
    assert "dana@example.com" in browser.get(f"/actions/{action_id}").content.decode()
    assert "dana@example.com" in browser.get("/").content.decode()


def test_on_behalf_of_a_reviewer_does_not_let_that_reviewer_approve_high_risk(agent_api, reviewer, high_risk):
    body = propose_body(action_type=high_risk, on_behalf_of=reviewer.email)
    action_id = agent_api.post("/api/v1/actions", body, format="json").json()["id"]
    response = token_client(reviewer).post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    assert "on your behalf" in assert_problem(response, 403)["detail"]
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING


def test_the_agents_owner_cannot_approve_its_high_risk_actions(agent_api, owner, reviewers_group, high_risk):
    owner.groups.add(reviewers_group)
    action_id = agent_api.post("/api/v1/actions", propose_body(action_type=high_risk), format="json").json()["id"]
    response = token_client(owner).post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    assert "you own the agent" in assert_problem(response, 403)["detail"]


def test_on_behalf_of_grants_the_agent_nothing(agent_api, reviewer):
    action_id = agent_api.post("/api/v1/actions", propose_body(on_behalf_of=reviewer.username), format="json").json()[
        "id"
    ]
    assert_problem(agent_api.post(f"/api/v1/actions/{action_id}/approve", {}, format="json"), 403)
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING


@pytest.mark.parametrize("path", ["/", "/history", "/admin/", "/admin/approvals/credential/", "/admin/agents/agent/"])
def test_an_agent_key_opens_no_page(agent_key, path):
    response = Client().get(path, HTTP_AUTHORIZATION=f"Bearer {agent_key}")
    assert response.status_code == 302 and "login" in response["Location"]


def test_there_is_no_api_for_credentials(agent_api, credential):
    for path in ("/api/v1/credentials", f"/api/v1/credentials/{credential.pk}"):
        assert_problem(agent_api.get(path), 404)


def test_reviewer_sessions_and_tokens_never_act_as_an_agent(agent_api, reviewer, reviewer_api):
    action_id = agent_api.post("/api/v1/actions", propose_body(), format="json").json()["id"]
    browser = APIClient()
    browser.force_login(reviewer)
    for client in (reviewer_api, browser):
        assert_problem(client.post("/api/v1/actions", propose_body(), format="json"), 403)
        assert_problem(client.post(f"/api/v1/actions/{action_id}/cancel"), 403)
    assert ActionRequest.objects.count() == 1
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING


def test_a_reviewer_token_is_not_an_agent_key_and_vice_versa(agent_key, reviewer):
    from approvals.models import ReviewerToken

    _, token = ReviewerToken.issue(reviewer)
    for header in (f"Token {agent_key}", f"Bearer {token}"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        assert_problem(client.get("/api/v1/actions"), 401)
