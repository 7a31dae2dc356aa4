"""The HTTP gateway's fixtures: a live Countersign (uvicorn on the test database), a recording target behind a
stored credential, an agent allowed ``http.request`` on that credential only, and the policy every gateway
deployment starts from: reads auto-approved, writes held for a reviewer."""

from __future__ import annotations

import pytest

from agents.services import grant_capability
from approvals.policies import store as policy_store
from approvals.services.credentials import create_credential
from audit.chain import Actor
from tests.conftest import TARGET_SECRET
from tests.factories import CLI, AgentFactory

STAFF = Actor("user", "ada", "admin")


@pytest.fixture
def reads_auto_approved(db):
    return policy_store.save_rule(
        {
            "name": "gateway-reads",
            "action_type": "http.request",
            "effect": "auto_approve",
            "conditions": [{"path": "params.method", "op": "equals", "value": "GET"}],
        },
        actor=STAFF,
    )


@pytest.fixture
def gw_agent(owner):
    agent = AgentFactory(name="gateway-bot", owner=owner, allow=[])
    grant_capability(agent=agent, action_type="http.request", actor=CLI, constraints={"credential": ["internal-api"]})
    return agent


@pytest.fixture
def gw_key(gw_agent):
    return gw_agent.raw_key


@pytest.fixture
def other_credential(db, target):
    """A second credential on the same target the agent holds no capability for."""
    return create_credential(
        name="payroll-api",
        kind="http_bearer",
        secret="payroll-secret-never-shown",
        scope={"base_url": target.url},
        actor=CLI,
    )


@pytest.fixture
def gateway_url(web_server):
    return f"{web_server.url}/gateway/internal-api"


__all__ = ["TARGET_SECRET"]
