"""Test data made through the real code paths, one way for every test.

People come from factory_boy over Django's user model (``create_user``, so the password is really hashed and
``client.login`` works). Agents come from ``agents.services.create_agent``: a real key, real capabilities and their
audit events, as the CLI and the admin make them. Actions are proposed through
``approvals.services.propose_action``, so validation, capabilities and policy all apply to test data too.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import factory
from django.conf import settings
from django.contrib.auth.models import Group, User

from agents.models import Agent, AgentKey
from agents.services import create_agent
from approvals.models import ActionRequest
from approvals.services import Proposal, propose_action
from audit.chain import Actor

# Who the tests are when they act as an operator at the command line.
CLI = Actor("user", "tests", "cli")


def reviewer_group() -> Group:
    return Group.objects.get_or_create(name=settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP)[0]


class UserFactory(factory.django.DjangoModelFactory):
    """A signed-up person in no group; the password is ``pw-<username>``."""

    class Meta:
        model = User
        skip_postgeneration_save = True  # groups.add() saves what it changes

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.LazyAttribute(lambda user: f"pw-{user.username}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return model_class.objects.create_user(*args, **kwargs)

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.add(*extracted)


class ReviewerFactory(UserFactory):
    """A person in the default reviewer group (COUNTERSIGN_DEFAULT_REVIEWER_GROUP)."""

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        if create:
            self.groups.add(reviewer_group(), *(extracted or ()))


class AgentFactory(factory.django.DjangoModelFactory):
    """An agent made by ``create_agent``; its raw key (shown once) is on ``agent.raw_key``."""

    class Meta:
        model = Agent

    name = factory.Sequence(lambda n: f"agent-{n}")
    owner = factory.SubFactory(UserFactory)
    allow = ("decision.only",)
    description = ""
    actor = CLI

    @classmethod
    def _create(cls, model_class, *, name, owner, allow, description, actor):
        agent, _, raw = create_agent(name=name, owner=owner, actor=actor, allow=allow, description=description)
        agent.raw_key = raw
        return agent


KEY_REFUSALS = ("revoked", "frozen", "disabled", "expired")


def refuse_keys(agent: Agent, how: str) -> None:
    """``agent``'s keys refused from now on, one of ``KEY_REFUSALS``: revoked or expired (the keys), frozen by an
    incident or disabled (the agent)."""
    now = datetime.now(UTC)
    if how == "revoked":
        AgentKey.objects.filter(agent=agent).update(revoked_at=now)
    elif how == "expired":
        AgentKey.objects.filter(agent=agent).update(expires_at=now - timedelta(seconds=1))
    elif how == "frozen":
        Agent.objects.filter(id=agent.id).update(frozen_at=now, frozen_reason="incident")
    elif how == "disabled":
        Agent.objects.filter(id=agent.id).update(is_active=False)
    else:
        raise ValueError(f"not one of {KEY_REFUSALS}: {how!r}")


def propose_body(**overrides: Any) -> dict[str, Any]:
    """The JSON an agent posts to /api/v1/actions: by default the decision.only restart every test knows."""
    return {
        "action_type": "decision.only",
        "params": {"command": "restart", "service": "billing"},
        "summary": "Restart the billing service",
        "context": {"reasoning": "It is stuck."},
    } | overrides


class ProposalFactory(factory.Factory):
    """The same proposal as ``propose_body``, as the service takes it."""

    class Meta:
        model = Proposal

    action_type = "decision.only"
    params = factory.LazyFunction(lambda: propose_body()["params"])
    summary = propose_body()["summary"]
    context = factory.LazyFunction(lambda: propose_body()["context"])


def propose(
    agent: Agent, action_type: str = "decision.only", params: dict[str, Any] | None = None, **fields: Any
) -> ActionRequest:
    """Propose through the service as ``agent`` would; ``fields`` are the other Proposal fields (summary, context,
    on_behalf_of, callback_url, idempotency_key, expires_in). Refusals raise as they do for the API."""
    if params is not None:
        fields["params"] = params
    action, _ = propose_action(agent=agent, proposal=ProposalFactory.build(action_type=action_type, **fields))
    return action


def api_propose(client, **overrides: Any) -> dict[str, Any]:
    """Propose over HTTP as the agent whose key ``client`` carries; the proposal must be accepted (201)."""
    response = client.post("/api/v1/actions", propose_body(**overrides), format="json")
    assert response.status_code == 201, response.content
    return response.json()


def executed(action_id, *, timeout: float = 15.0) -> ActionRequest:
    """Run an approved action's execution here and return the action once it has settled.

    A test session's Celery worker (started by the tests that need one, and running for the rest of the session)
    hears the same execute message and may take the execution first: at most once either way, so this waits
    until whichever ran it has finished, and no execution is still running when the test's database is cleared.
    """
    from approvals.models import ActionStatus
    from approvals.services import execute_action

    execute_action(action_id)
    deadline = time.monotonic() + timeout
    while True:
        action = ActionRequest.objects.get(id=action_id)
        if action.status not in (ActionStatus.APPROVED, ActionStatus.EXECUTING) or time.monotonic() > deadline:
            return action
        time.sleep(0.05)
