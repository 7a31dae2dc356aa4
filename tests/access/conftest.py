"""The access tests' shared SCIM target (tests/support/scim.py), its agent, and a clock they move (the credential:
``scim_credential`` in tests/conftest.py)."""

from __future__ import annotations

import pytest

from agents.services import grant_capability
from tests.access.support import Clock, ScimServer
from tests.conftest import CLI


@pytest.fixture
def scim():
    """alice, bob, carol and dave; prod-admin holds bob and carol before any test changes it."""
    server = ScimServer()
    for name in ("alice", "bob", "carol", "dave"):
        server.add_user(name)
    server.group_id = server.add_group("prod-admin", ["bob", "carol"])
    yield server
    server.stop()


@pytest.fixture
def scim_agent(agent, scim_credential):
    grant_capability(agent=agent, action_type="scim.group_membership", actor=CLI)
    return agent


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)
