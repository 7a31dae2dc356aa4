"""The SDK asks for time-boxed access and an extension through a real web server (tests/support/servers.py)."""

from __future__ import annotations

import pytest
from countersign import Countersign
from countersign.mcp.server import describe, tools

from approvals import services
from approvals.models import ActionRequest, ActionStatus, Review
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cs(web_server, scim_agent, agent_key):
    with Countersign(web_server.url, agent_key, timeout=15) as client:
        yield client


def test_the_sdk_proposes_a_time_boxed_grant_and_asks_to_extend_it(cs, scim, reviewer, second_reviewer):
    action = cs.propose(
        "scim.group_membership",
        {"credential": "idp", "group": "prod-admin", "add": ["alice"]},
        "alice needs prod-admin for the incident",
        on_behalf_of="olivia",
        duration="PT2H",
    )
    assert action.params["duration"] == "PT2H" and action.access_expires_at is None
    for person in (reviewer, second_reviewer):
        services.approve_action(action_id=action.id, reviewer=person, via=Review.Via.API)
    assert factories.executed(action.id).status == ActionStatus.SUCCEEDED
    granted = cs.get(action.id)
    assert granted.access_expires_at is not None and granted.reverted_at is None
    assert "takes it back at" in describe(granted)

    extension = cs.extend(action.id, 3600, summary="the incident is not over")
    assert extension.status == "pending" and extension.extends == action.id
    assert ActionRequest.objects.get(id=extension.id).params["duration"] == 3600


def test_the_mcp_tool_description_says_how_to_ask_for_time_boxed_access():
    [propose] = [tool for tool in tools() if tool.name == "propose_action"]
    assert "params.duration" in propose.description and "takes the access back" in propose.description
