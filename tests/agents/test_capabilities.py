"""Capabilities: an agent proposes only what it was granted, within its constraints; forged requests are refused."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from agents.models import Capability
from agents.services import create_agent, grant_capability
from approvals.models import ActionRequest, ActionStatus
from audit.models import AuditEvent
from tests.api.test_api import assert_problem
from tests.conftest import CLI, propose_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def ticket_bot(owner, credential):
    agent, _, raw = create_agent(name="ticket-bot", owner=owner, actor=CLI)
    grant_capability(
        agent=agent,
        action_type="http.request",
        actor=CLI,
        constraints={"credential": [credential.name], "method": ["GET", "POST"], "path": ["/tickets/*"]},
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.agent = agent
    return client


def http(stored, **overrides):
    return propose_body(
        action_type="http.request",
        params={"credential": stored.name, "method": "POST", "path": "/tickets/42/comments"} | overrides,
        summary="Comment on ticket 42",
    )


def test_a_proposal_inside_the_constraints_is_accepted(ticket_bot, credential):
    response = ticket_bot.post("/api/v1/actions", http(credential), format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"method": "DELETE"}, "method"),
        ({"path": "/admin/users"}, "path"),
        ({"path": "/ticketsX"}, "path"),
        ({"credential": "other-api"}, "credential"),
    ],
)
def test_a_proposal_outside_the_constraints_is_403_naming_it_and_audited(ticket_bot, credential, overrides, named):
    response = ticket_bot.post("/api/v1/actions", http(credential, **overrides), format="json")
    body = assert_problem(response, 403)
    assert f"with {named} in [" in body["detail"]
    assert not ActionRequest.objects.exists()
    refused = AuditEvent.objects.get(verb="action.refused")
    assert refused.agent_name == "ticket-bot" and named in refused.data["reason"]


def test_a_constrained_parameter_cannot_be_left_out(owner):
    agent, _, raw = create_agent(name="poster", owner=owner, actor=CLI)
    grant_capability(agent=agent, action_type="decision.only", actor=CLI, constraints={"channel": ["#infra-*"]})
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    ok = client.post("/api/v1/actions", propose_body(params={"channel": "#infra-help"}), format="json")
    assert ok.status_code == 201
    for params in ({"text": "no channel"}, {"channel": ["#infra-help", "#general"]}, {"channel": {"$ne": ""}}):
        assert_problem(client.post("/api/v1/actions", propose_body(params=params), format="json"), 403)
    assert ActionRequest.objects.count() == 1


def test_an_action_type_not_granted_is_refused_even_with_valid_params(owner, credential):
    _, _, raw = create_agent(name="chat-only", owner=owner, actor=CLI, allow=["decision.only"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = assert_problem(client.post("/api/v1/actions", http(credential), format="json"), 403)
    assert "not granted" in body["detail"]


def test_reviewer_edits_cannot_widen_the_agents_capability(ticket_bot, credential, reviewer_api):
    action_id = ticket_bot.post("/api/v1/actions", http(credential), format="json").json()["id"]
    response = reviewer_api.post(
        f"/api/v1/actions/{action_id}/approve",
        {"params": {"credential": credential.name, "method": "DELETE", "path": "/tickets/42"}},
        format="json",
    )
    assert_problem(response, 400, "params")
    assert ActionRequest.objects.get(id=action_id).status == ActionStatus.PENDING
    narrowed = {"credential": credential.name, "method": "GET", "path": "/tickets/42"}
    response = reviewer_api.post(f"/api/v1/actions/{action_id}/approve", {"params": narrowed}, format="json")
    assert response.status_code == 200
    assert response.json()["decision"]["edited_params"] == narrowed


@pytest.mark.parametrize(
    "constraints", [["GET"], {"method": "GET"}, {"method": []}, {"method": [""]}, {"": ["x"]}, {"m": [1]}]
)
def test_malformed_constraints_are_refused(agent, constraints):
    with pytest.raises(ValidationError):
        grant_capability(agent=agent, action_type="decision.only", actor=CLI, constraints=constraints)
    assert Capability.objects.get(agent=agent, action_type="decision.only").constraints == {}


def test_grant_capability_command_sets_and_revokes_constraints(agent):
    out = io.StringIO()
    call_command(
        "grant_capability", agent.name, "http.request", "--only", "method=GET", "--only", "path=/a/*", stdout=out
    )
    assert Capability.objects.get(agent=agent, action_type="http.request").constraints == {
        "method": ["GET"],
        "path": ["/a/*"],
    }
    granted = AuditEvent.objects.filter(verb="capability.granted").last()
    assert granted.data["constraints"] == {"method": ["GET"], "path": ["/a/*"]}

    call_command("grant_capability", agent.name, "http.request", "--revoke", stdout=out)
    assert not Capability.objects.filter(agent=agent, action_type="http.request").exists()
    assert AuditEvent.objects.filter(verb="capability.revoked").exists()
    with pytest.raises(CommandError, match="PARAM=PATTERN"):
        call_command("grant_capability", agent.name, "http.request", "--only", "method")
    with pytest.raises(CommandError, match="No action type"):
        call_command("grant_capability", agent.name, "launch.missiles")


def test_a_literal_mcp_tool_call_row_grants_no_tool(owner):
    # `mcp.tool_call` is never granted (Capability.clean), but a row written past that check (by SQL, by an older
    # version) must still grant nothing: an MCP call is judged by the tools' own capabilities, never by that row.
    from agents.capabilities import granted_refusal

    agent, _, raw = create_agent(name="side-road", owner=owner, actor=CLI)
    literal = Capability.objects.create(agent=agent, action_type="mcp.tool_call", constraints={})
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = propose_body(
        action_type="mcp.tool_call", params={"server": "git", "tool": "git_status", "arguments": {}}, summary="status"
    )
    response = client.post("/api/v1/actions", body, format="json")
    assert "not granted the capability 'mcp.git.git_status'" in assert_problem(response, 403)["detail"]
    assert AuditEvent.objects.get(verb="action.refused").data["action_type"] == "mcp.tool_call"
    assert not ActionRequest.objects.exists()
    with pytest.raises(ValueError, match="tools' capabilities"):
        granted_refusal(agent, "mcp.tool_call", literal, body["params"])
