"""What the desk and Slack tests of time-boxed access share (issue 23): a real SCIM 2.0 server (scim2-server, in
memory, on loopback) that can be taken down, a staff reviewer, and a grant proposed, approved by two people and
executed through the real services."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.utils import timezone

from approvals import services
from approvals.models import AccessLease, ActionRequest, ActionStatus, Review
from approvals.services import access as access_services
from tests import factories
from tests.support.scim import ScimServer

REQUESTER = "ann.lee"


@pytest.fixture
def scim():
    server = ScimServer()  # can go down: every request then 503 (tests/support/scim.py)
    for name in ("alice", "bob", "carol"):
        server.add_user(name)
    server.group_id = server.add_group("engineering", ["bob"])
    yield server
    server.stop()


@pytest.fixture
def staff(reviewers_group):
    """stella reviews and is staff: she may end access early."""
    return factories.ReviewerFactory(username="stella", is_staff=True)


@pytest.fixture
def requester(db):
    return factories.UserFactory(username=REQUESTER)


@pytest.fixture
def idp(scim_agent, requester):
    """The SCIM credential, and the agent allowed to change memberships with it."""
    return scim_agent


def grant_params(duration: Any = "PT2H", add=("alice",)) -> dict[str, Any]:
    params: dict[str, Any] = {"credential": "idp", "group": "engineering", "add": list(add)}
    if duration is not None:
        params["duration"] = duration
    return params


def propose_grant(agent, duration: Any = "PT2H", add=("alice",)) -> ActionRequest:
    return factories.propose(
        agent,
        "scim.group_membership",
        grant_params(duration, add),
        summary=f"Add {', '.join(add)} to engineering",
        on_behalf_of=REQUESTER,
    )


def approve_by(action: ActionRequest, *reviewers) -> ActionRequest:
    for reviewer in reviewers:
        services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API, comment="ok")
    action.refresh_from_db()
    return action


def execute(action: ActionRequest) -> ActionRequest:
    factories.executed(action.id)
    action.refresh_from_db()
    return action


def granted(agent, reviewers, duration: Any = "PT2H", add=("alice",)) -> ActionRequest:
    """A time-boxed grant, approved by two people and executed: alice is in engineering until it ends."""
    action = execute(approve_by(propose_grant(agent, duration, add), *reviewers))
    assert action.status == ActionStatus.SUCCEEDED, action.result
    assert AccessLease.objects.get(action=action).state == AccessLease.State.ACTIVE
    return action


def revert_of(action: ActionRequest) -> ActionRequest:
    lease = AccessLease.objects.get(action=action)
    assert lease.revert_action_id, lease.state
    return ActionRequest.objects.get(id=lease.revert_action_id)


def run_due_reverts() -> list[ActionRequest]:
    """What beat and the worker do once the clock has passed a lease's next attempt: start the revert, run it."""
    access_services.revert_due(timezone.now())
    reverts = list(ActionRequest.objects.filter(status=ActionStatus.APPROVED, reverts__isnull=False))
    for revert in reverts:
        factories.executed(revert.id)
    return reverts


def params_text(action: ActionRequest) -> str:
    return json.dumps(action.params)
