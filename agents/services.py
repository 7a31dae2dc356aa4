"""Agent and key lifecycle; every change audited."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from agents.keys import new_key
from agents.models import Agent, AgentKey, Capability, new_webhook_secret
from audit.chain import Actor, record_event


def _audit(actor: Actor, verb: str, agent: Agent, data: dict | None = None) -> None:
    record_event(
        actor=actor, verb=verb, object_type="agent", object_id=str(agent.id), agent_name=agent.name, data=data or {}
    )


def issue_key(*, agent: Agent, actor: Actor, expires_at: datetime | None = None) -> tuple[AgentKey, str]:
    """A new key for ``agent``; the full key is returned once and never stored."""
    with transaction.atomic():
        raw, public_id, secret_hash = new_key()
        key = AgentKey.objects.create(agent=agent, public_id=public_id, secret_hash=secret_hash, expires_at=expires_at)
        _audit(
            actor,
            "agent_key.created",
            agent,
            {"key": key.prefix, "expires_at": expires_at.isoformat() if expires_at else None},
        )
    return key, raw


def create_agent(
    *, name: str, owner, actor: Actor, allow: Iterable[str] = (), description: str = ""
) -> tuple[Agent, AgentKey, str]:
    with transaction.atomic():
        agent = Agent(name=name, owner=owner, description=description)
        agent.full_clean()  # the name is a slug: it appears in URLs, audit events and Slack messages
        agent.save()
        _audit(actor, "agent.created", agent, {"owner": owner.get_username()})
        for action_type in allow:
            grant_capability(agent=agent, action_type=action_type, actor=actor)
        key, raw = issue_key(agent=agent, actor=actor)
    return agent, key, raw


def grant_capability(*, agent: Agent, action_type: str, actor: Actor, constraints: dict | None = None) -> Capability:
    with transaction.atomic():
        capability = Capability.objects.filter(agent=agent, action_type=action_type).first() or Capability(
            agent=agent, action_type=action_type
        )
        capability.constraints = constraints or {}
        capability.full_clean(exclude=["agent"])
        capability.save()
        _audit(actor, "capability.granted", agent, {"action_type": action_type, "constraints": capability.constraints})
    return capability


def revoke_capability(*, agent: Agent, action_type: str, actor: Actor) -> bool:
    with transaction.atomic():
        deleted, _ = Capability.objects.filter(agent=agent, action_type=action_type).delete()
        if deleted:
            _audit(actor, "capability.revoked", agent, {"action_type": action_type})
    return bool(deleted)


def revoke_key(*, key: AgentKey, actor: Actor) -> AgentKey:
    with transaction.atomic():
        key = AgentKey.objects.select_for_update().select_related("agent").get(pk=key.pk)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            _audit(actor, "agent_key.revoked", key.agent, {"key": key.prefix})
    return key


def rotate_key(*, agent: Agent, actor: Actor) -> tuple[AgentKey, str]:
    """Issue a new key and revoke every other key of the agent, atomically."""
    with transaction.atomic():
        new, raw = issue_key(agent=agent, actor=actor)
        for old in AgentKey.objects.filter(agent=agent, revoked_at__isnull=True).exclude(pk=new.pk):
            revoke_key(key=old, actor=actor)
    return new, raw


WEBHOOK_SECRET_OVERLAP = timedelta(hours=24)


def rotate_webhook_secret(*, agent: Agent, actor: Actor, overlap: timedelta = WEBHOOK_SECRET_OVERLAP) -> str:
    """A new webhook secret, returned once (the caller shows it). For ``overlap`` the old one signs too, so the
    agent can switch over without rejecting a delivery; audited without either secret."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        until = timezone.now() + overlap if overlap > timedelta(0) else None
        agent.previous_webhook_secret = agent.webhook_secret if until else ""
        agent.previous_webhook_secret_until = until
        agent.webhook_secret = new_webhook_secret()
        agent.save(update_fields=["webhook_secret", "previous_webhook_secret", "previous_webhook_secret_until"])
        _audit(
            actor,
            "agent.webhook_secret_rotated",
            agent,
            {"previous_secret_valid_until": until.isoformat() if until else None},
        )
    return agent.webhook_secret


def webhook_signing_secrets(agent: Agent) -> list[str]:
    """The secrets a webhook is signed with now: the current one, and the previous one during its overlap."""
    secrets = [agent.webhook_secret]
    until = agent.previous_webhook_secret_until
    if agent.previous_webhook_secret and until is not None and until > timezone.now():
        secrets.append(agent.previous_webhook_secret)
    return secrets


def update_agent(*, agent: Agent, actor: Actor, **changes) -> Agent:
    """Change an agent's owner, description or active flag; audited with before and after."""
    allowed = {"owner", "description", "is_active"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        diff = {}
        for field, value in changes.items():
            before = getattr(agent, field)
            if before != value:
                show = (lambda u: u.get_username()) if field == "owner" else (lambda v: v)
                diff[field] = {"before": show(before), "after": show(value)}
                setattr(agent, field, value)
        if diff:
            agent.full_clean()
            agent.save()
            verb = "agent.updated"
            if set(diff) == {"is_active"}:
                verb = "agent.activated" if agent.is_active else "agent.deactivated"
            _audit(actor, verb, agent, diff)
    return agent


def set_key_expiry(*, key: AgentKey, expires_at: datetime | None, actor: Actor) -> AgentKey:
    with transaction.atomic():
        key = AgentKey.objects.select_for_update().select_related("agent").get(pk=key.pk)
        if key.expires_at != expires_at:
            before = key.expires_at
            key.expires_at = expires_at
            key.save(update_fields=["expires_at"])
            _audit(
                actor,
                "agent_key.expiry_changed",
                key.agent,
                {
                    "key": key.prefix,
                    "before": before.isoformat() if before else None,
                    "after": expires_at.isoformat() if expires_at else None,
                },
            )
    return key
