"""The worked example in docs/ACTION_TYPES.md runs as written, end to end against a loopback tracker."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from agents.services import grant_capability
from approvals import services
from approvals.models import ActionStatus, Review
from approvals.presentation.previews import compute_preview
from approvals.services.credentials import create_credential
from catalog import registry
from tests.conftest import CLI, TARGET_SECRET

pytestmark = pytest.mark.django_db

DOC = Path(__file__).resolve().parents[2] / "docs" / "ACTION_TYPES.md"


@pytest.fixture
def close_ticket():
    source = re.search(r"`tracker/countersign_types.py`:\n\n```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    module = types.ModuleType("tracker.countersign_types")
    exec(compile(source, str(DOC), "exec"), module.__dict__)  # our own documentation
    action_type = module.CloseTicket()
    registry.register(action_type)
    yield action_type
    registry._registry.pop(action_type.name, None)


def test_the_documented_action_type_previews_and_executes(close_ticket, agent, reviewer, target):
    target.resources["/api/tickets/4711"] = {"id": 4711, "status": "open"}
    base = f"{target.url}/api"
    create_credential(
        name="tracker",
        kind="http_bearer",
        secret=TARGET_SECRET,
        scope={"base_url": base},
        actor=CLI,
        allow_preview_reads=True,
    )
    grant_capability(agent=agent, action_type="ticket.close", actor=CLI, constraints={"credential": ["tracker"]})
    params = {"credential": "tracker", "ticket": 4711, "comment": "Fixed in 2026.11.3"}
    action, _ = services.propose_action(
        agent=agent, proposal=services.Proposal(action_type="ticket.close", params=params, summary="Close #4711")
    )

    preview = compute_preview(action.action_type, action.params)
    assert (preview.before, preview.after) == ({"status": "open"}, {"status": "closed"})

    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    close = target.requests[-1]
    assert (close.method, close.path) == ("POST", "/api/tickets/4711/close")
    assert close.headers["Authorization"] == f"Bearer {TARGET_SECRET}"
    assert close.json() == {"comment": "Fixed in 2026.11.3"}
