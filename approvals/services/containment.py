"""Revocation and the kill switches: taking an agent's reach away takes its actions with it.

Owns:

- the staff entry points that reduce what an agent may do (disable, revoke a key, rotate keys, revoke or
  narrow a capability). Each calls ``agents.services`` for the agent's own rows (approvals calls agents,
  never the reverse) and, in the same transaction, cancels the agent's pending actions that lost their
  ground, through ``transition`` (audited ``action.cancelled`` with the reason; the outbox then tells the
  agent's ``wait`` and webhook and updates Slack messages);
- freezing an agent (``freeze_agent``): its keys stop authenticating (agents.authentication and
  ``AgentKey.objects.usable()`` refuse a frozen agent), its pending actions are cancelled, its
  approved-but-not-started executions fail ("agent frozen") with their grants refused;
- the global switch that holds every new execution (``pause_executions`` / ``resume_executions``);
- the re-check at redemption (``execution_refusal``, called by services.execution): an approval is not a
  licence once the agent lost its standing;
- the banner every reviewer sees while any of this is in force (``banner``, a cache read per page).

May import: agents (models, services, capabilities), audit.chain, models, services.transitions,
services.approval. Nothing here is called from a view without a staff check in front of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents import services as agent_services
from agents.capabilities import capability_refusal, constraint_violation
from agents.models import Agent, AgentKey, Capability
from approvals.errors import InvalidInput
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, ExecutionSwitch
from approvals.services.approval import mint_grant_and_enqueue
from approvals.services.transitions import audit_action, lock_action, transition
from audit.chain import Actor, record_event
from catalog import registry
from config.prepared import PreparedQuery

log = logging.getLogger(__name__)

MAX_REASON = 500
BANNER_CACHE_KEY = "containment:banner"
# Pages read the banner from the cache; a change deletes it on commit, and this bounds how long a process
# whose cache was not told (embedded mode: each process has its own memory cache) shows the old state.
BANNER_TTL_SECONDS = 10
BANNER_MAX_FROZEN = 10

AGENT_DISABLED = "agent disabled"
AGENT_FROZEN = "agent frozen"
NO_KEY_LEFT = "the agent's last usable key was revoked"
CAPABILITY_REVOKED = "capability revoked"
CAPABILITY_NARROWED = "capability narrowed"


# --- the entry points that reduce an agent's reach -------------------------------------------------------


def update_agent(*, agent: Agent, actor: Actor, **changes: Any) -> Agent:
    """``agents.services.update_agent``; disabling the agent also cancels all its pending actions."""
    with transaction.atomic():
        agent = agent_services.update_agent(agent=agent, actor=actor, **changes)
        if not agent.is_active:
            cancel_pending_actions(agent, actor=actor, reason=AGENT_DISABLED)
    return agent


def revoke_key(*, key: AgentKey, actor: Actor) -> AgentKey:
    """Revoke one key; when it was the agent's last usable one, cancel all its pending actions."""
    with transaction.atomic():
        key = agent_services.revoke_key(key=key, actor=actor)
        agent = Agent.objects.select_for_update().get(pk=key.agent_id)
        if not has_live_key(agent):
            cancel_pending_actions(agent, actor=actor, reason=NO_KEY_LEFT)
    return key


def revoke_all_keys(*, agent: Agent, actor: Actor) -> int:
    """Revoke every key of the agent (it keeps its actions' history); its pending actions are cancelled."""
    with transaction.atomic():
        keys = list(AgentKey.objects.filter(agent=agent, revoked_at__isnull=True))
        for key in keys:
            agent_services.revoke_key(key=key, actor=actor)
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if not has_live_key(agent):
            cancel_pending_actions(agent, actor=actor, reason=NO_KEY_LEFT)
    return len(keys)


def rotate_key(*, agent: Agent, actor: Actor) -> tuple[AgentKey, str]:
    """A new key replaces the old ones: the agent keeps its standing, so its pending actions stay."""
    return agent_services.rotate_key(agent=agent, actor=actor)


def revoke_capability(*, agent: Agent, action_type: str, actor: Actor) -> bool:
    """Take an action type away; the agent's pending actions of that type are cancelled."""
    with transaction.atomic():
        revoked = agent_services.revoke_capability(agent=agent, action_type=action_type, actor=actor)
        if revoked:
            cancel_pending_actions(agent, actor=actor, reason=CAPABILITY_REVOKED, action_types=[action_type])
    return revoked


def grant_capability(
    *, agent: Agent, action_type: str, actor: Actor, constraints: dict[str, Any] | None = None
) -> Capability:
    """Grant or change a capability; pending actions of its type that new constraints no longer admit are
    cancelled (narrowing a capability is a partial revocation)."""
    with transaction.atomic():
        capability = agent_services.grant_capability(
            agent=agent, action_type=action_type, actor=actor, constraints=constraints
        )
        if capability.constraints:
            cancel_pending_actions(
                agent,
                actor=actor,
                reason=CAPABILITY_NARROWED,
                action_types=[action_type],
                keep=lambda action: constraint_violation(agent.name, capability, action.effective_params) is None,
            )
    return capability


def has_live_key(agent: Agent) -> bool:
    """Whether the agent holds a key that is neither revoked nor expired (frozen or not)."""
    return _LIVE_KEY.first(agent_id=agent.pk, now=timezone.now()) is not None


# Both are read at every redemption: compiled once (config/prepared.py), as the key and capability reads are.
_LIVE_KEY = PreparedQuery(
    lambda agent_id, now: (
        AgentKey.objects.filter(agent_id=agent_id, revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .values_list("pk")[:1]
    ),
    agent_id=Agent._meta.pk,
    now=AgentKey._meta.get_field("expires_at"),
)
_PAUSED = PreparedQuery(lambda: ExecutionSwitch.objects.filter(pk=1, paused=True).values_list("pk")[:1])


def cancel_pending_actions(
    agent: Agent,
    *,
    actor: Actor,
    reason: str,
    action_types: Collection[str] | None = None,
    keep: Callable[[ActionRequest], bool] | None = None,
) -> int:
    """Cancel the agent's pending actions (of ``action_types``, all by default; not those ``keep`` spares).

    Each goes through ``transition`` under its row lock, so a reviewer approving at the same moment either
    got there first (then the redemption re-check stops it) or finds it cancelled. Runs in the caller's
    transaction.
    """
    pending = ActionRequest.objects.filter(agent=agent, status=ActionStatus.PENDING)
    if action_types is not None:
        pending = pending.filter(action_type__in=list(action_types))
    cancelled = 0
    for action_id in pending.order_by("created_at").values_list("id", flat=True):
        action = lock_action(action_id)
        if action.status != ActionStatus.PENDING or (keep is not None and keep(action)):
            continue
        action.result = {"error": f"cancelled by Countersign: {reason}"}
        transition(action, ActionStatus.CANCELLED, actor=actor, verb="action.cancelled", data={"reason": reason})
        cancelled += 1
    return cancelled


def _stop_unstarted_executions(agent: Agent, *, actor: Actor, reason: str) -> int:
    """Approved actions whose execution has not started fail now, their grants refused."""
    waiting = ActionRequest.objects.filter(agent=agent, status=ActionStatus.APPROVED, finished_at__isnull=True)
    stopped = 0
    for action_id in waiting.order_by("created_at").values_list("id", flat=True):
        action = lock_action(action_id)
        if action.status != ActionStatus.APPROVED or action.finished_at is not None:
            continue
        grant = ExecutionGrant.objects.filter(action=action, redeemed_at__isnull=True).order_by("-created_at").first()
        audit_action(
            action,
            actor=actor,
            verb="grant.refused",
            data={"reason": reason, "grant": str(grant.id) if grant else None},
        )
        action.result = {"error": f"execution refused: revoked: {reason}"}
        transition(action, ActionStatus.FAILED, actor=actor, verb="execution.failed", data={"error": reason})
        stopped += 1
    return stopped


# --- freeze --------------------------------------------------------------------------------------------


def _clean_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("A reason is required.", errors={"reason": ["Say why, for the audit log and the banner."]})
    if len(reason) > MAX_REASON:
        raise InvalidInput("Reason too long.", errors={"reason": [f"At most {MAX_REASON} characters."]})
    return reason


def _audit_agent(actor: Actor, verb: str, agent: Agent, data: dict[str, Any]) -> None:
    record_event(actor=actor, verb=verb, object_type="agent", object_id=str(agent.id), agent_name=agent.name, data=data)


def freeze_agent(agent: Agent, reason: str, actor: Actor) -> dict[str, int]:
    """The kill switch for one agent, in one transaction: keys suspended, pending actions cancelled,
    approved-but-not-started executions stopped. Freezing a frozen agent only sweeps again.

    Returns what it did: ``{"cancelled": n, "stopped": m}``.
    """
    reason = _clean_reason(reason)
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.frozen_at is None:
            agent.frozen_at = timezone.now()
            agent.frozen_reason = reason
            agent.save(update_fields=["frozen_at", "frozen_reason"])
            _audit_agent(actor, "agent.frozen", agent, {"reason": reason})
        cancelled = cancel_pending_actions(agent, actor=actor, reason=AGENT_FROZEN)
        stopped = _stop_unstarted_executions(agent, actor=actor, reason=AGENT_FROZEN)
        _banner_changed()
    return {"cancelled": cancelled, "stopped": stopped}


def unfreeze_agent(agent: Agent, actor: Actor) -> bool:
    """Give a frozen agent its keys back (what was cancelled or stopped stays so). False if it was not frozen."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.frozen_at is None:
            return False
        since, reason = agent.frozen_at, agent.frozen_reason
        agent.frozen_at, agent.frozen_reason = None, ""
        agent.save(update_fields=["frozen_at", "frozen_reason"])
        _audit_agent(actor, "agent.unfrozen", agent, {"frozen_at": since.isoformat(), "reason": reason})
        _banner_changed()
    return True


# --- pause executions ----------------------------------------------------------------------------------


def _locked_switch() -> ExecutionSwitch:
    ExecutionSwitch.objects.get_or_create(pk=1)
    return ExecutionSwitch.objects.select_for_update().get(pk=1)


def executions_paused() -> bool:
    """Read from the database at each redemption: the switch holds even where the cache is stale."""
    return _PAUSED.first() is not None


def pause_executions(reason: str, actor: Actor) -> ExecutionSwitch:
    """Hold every execution not yet started: approvals are still recorded, actions stay ``approved``."""
    reason = _clean_reason(reason)
    with transaction.atomic():
        switch = _locked_switch()
        if not switch.paused:
            switch.paused, switch.reason = True, reason
            switch.changed_by, switch.changed_at = actor.name[:150], timezone.now()
            switch.save()
            record_event(
                actor=actor,
                verb="executions.paused",
                object_type="execution_switch",
                object_id="1",
                data={"reason": reason},
            )
        _banner_changed()
    return switch


def resume_executions(actor: Actor) -> int:
    """Let executions run again and dispatch what waited (a fresh grant each: the old may have expired).

    Returns how many held executions were dispatched. Each runs at most once: the worker redeems the
    newest grant and a second task finds the action no longer ``approved``.
    """
    with transaction.atomic():
        switch = _locked_switch()
        if not switch.paused:
            return 0
        paused_since, reason = switch.changed_at, switch.reason
        switch.paused, switch.reason = False, ""
        switch.changed_by, switch.changed_at = actor.name[:150], timezone.now()
        switch.save()
        held = list(
            ActionRequest.objects.filter(status=ActionStatus.APPROVED, finished_at__isnull=True)
            .order_by("decided_at")
            .values_list("id", flat=True)
        )
        record_event(
            actor=actor,
            verb="executions.resumed",
            object_type="execution_switch",
            object_id="1",
            data={"paused_since": paused_since.isoformat(), "reason": reason, "held": len(held)},
        )
        dispatched = 0
        for action_id in held:
            action = lock_action(action_id)
            action_type = registry.get(action.action_type)
            if action.status != ActionStatus.APPROVED or action_type is None or not action_type.executes:
                continue
            mint_grant_and_enqueue(action, action_type=action_type, actor=actor)
            dispatched += 1
        _banner_changed()
    return dispatched


# --- the re-check at redemption ---------------------------------------------------------------------------


def execution_refusal(action: ActionRequest, params: dict[str, Any]) -> str | None:
    """Why the agent no longer stands behind this approved action, or None. ``action.agent`` was read with
    the action's row lock, in the redeeming transaction."""
    agent = action.agent
    if not agent.is_active:
        return f"revoked: {AGENT_DISABLED}"
    if agent.frozen_at is not None:
        return f"revoked: {AGENT_FROZEN}"
    if not has_live_key(agent):
        return "revoked: the agent has no usable key"
    refusal = capability_refusal(agent, action.action_type, params)
    if refusal:
        return f"revoked: {refusal}"
    return None


# --- the banner ------------------------------------------------------------------------------------------


def _forget_banner() -> None:
    try:
        cache.delete(BANNER_CACHE_KEY)
    except Exception:  # the cache is an optimisation; its entry lapses after BANNER_TTL_SECONDS anyway
        log.warning("could not clear the containment banner from the cache", exc_info=True)


def _banner_changed() -> None:
    """Forget the cached banner now (this process) and again on commit (a page drawn in between re-cached the
    old state)."""
    _forget_banner()
    transaction.on_commit(_forget_banner)


def _read_banner() -> dict[str, Any]:
    switch = ExecutionSwitch.objects.filter(pk=1, paused=True).values("reason", "changed_by", "changed_at").first()
    frozen = list(
        Agent.objects.filter(frozen_at__isnull=False)
        .order_by("name")
        .values_list("name", "frozen_reason")[: BANNER_MAX_FROZEN + 1]
    )
    return {
        "paused": switch,
        "frozen": [{"name": name, "reason": reason} for name, reason in frozen[:BANNER_MAX_FROZEN]],
        "more_frozen": len(frozen) > BANNER_MAX_FROZEN,
    }


def banner() -> dict[str, Any]:
    """What every reviewer page says about the kill switches: one cache read (two small queries on a miss)."""
    try:
        state = cache.get(BANNER_CACHE_KEY)
    except Exception:
        state = None
    if state is None:
        state = _read_banner()
        try:
            cache.set(BANNER_CACHE_KEY, state, timeout=BANNER_TTL_SECONDS)
        except Exception:
            log.warning("could not cache the containment banner", exc_info=True)
    return state
