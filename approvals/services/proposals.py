"""Proposing an action: validate, decide by policy, record, publish."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import IntegrityError
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from agents.capabilities import GRANT_COLUMNS, MCP_TOOL_CALL, capability_refusal, granted, granted_refusal, grants
from agents.models import Agent, Capability
from approvals.action_types.durations import DurationError, duration_refusal, parse_duration
from approvals.action_types.params import validate_params
from approvals.errors import IdempotencyConflict, InvalidInput, NotAllowed
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.policies import rules as policies
from approvals.policies.evaluation import Evaluation, evaluate
from approvals.policies.store import HEAD_COLUMNS, PolicyHead, head_of, likely_reviewer_groups
from approvals.services.approval import complete_approval
from approvals.services.transitions import audit_action, publish, transition, write_review
from audit.canonical import digest
from audit.chain import Actor, audited_atomic, insert_with_events, record_refusal
from catalog import registry
from catalog.base import ActionType
from config.prepared import PreparedQuery


@dataclass(frozen=True)
class Proposal:
    action_type: str
    params: dict[str, Any]
    summary: str
    context: dict[str, Any] = field(default_factory=dict)
    on_behalf_of: str = ""
    idempotency_key: str | None = None
    callback_url: str = ""
    expires_in: int | None = None
    # Where the agent's own run can be inspected, which run it was, and how sure the agent is (0..1).
    trace_url: str = ""
    run_id: str = ""
    confidence: float | None = None
    # Set by Countersign, never by an agent's request (approvals.services.access): the time-boxed grant an
    # extension extends, the action an undo reverses and why. Not part of the request digest.
    extends: ActionRequest | None = None
    reverts: ActionRequest | None = None
    revert_reason: str = ""

    def digest(self) -> str:
        body: dict[str, Any] = {
            "action_type": self.action_type,
            "params": self.params,
            "summary": self.summary,
            "context": self.context,
            "on_behalf_of": self.on_behalf_of,
            "callback_url": self.callback_url,
            "expires_in": self.expires_in,
        }
        # Only when given, so that a retry of a proposal recorded before these fields existed still matches.
        extra = {"trace_url": self.trace_url, "run_id": self.run_id, "confidence": self.confidence}
        body.update({k: v for k, v in extra.items() if v not in ("", None)})
        return digest(body)


MAX_TRACE_URL = 2000
MAX_RUN_ID = 200


def trace_field_errors(proposal: Proposal) -> dict[str, list[str]]:
    """What is wrong with a proposal's trace_url, run_id and confidence (empty: nothing).

    The trace URL becomes a link on the reviewer's page, so only http(s) URLs with a host are taken:
    a ``javascript:`` or ``data:`` URL would run or show whatever its author wrote.
    """
    errors: dict[str, list[str]] = {}
    url = proposal.trace_url
    if url:
        if not isinstance(url, str) or len(url) > MAX_TRACE_URL:
            errors["trace_url"] = [f"At most {MAX_TRACE_URL} characters."]
        else:
            try:
                parts = urlsplit(url)
                valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            except ValueError:
                valid = False
            if not valid or any(ch.isspace() or ord(ch) < 32 for ch in url):
                errors["trace_url"] = ["Must be an http:// or https:// URL with a host."]
    if proposal.run_id and (not isinstance(proposal.run_id, str) or len(proposal.run_id) > MAX_RUN_ID):
        errors["run_id"] = [f"At most {MAX_RUN_ID} characters."]
    value = proposal.confidence
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            errors["confidence"] = ["Must be a number from 0 to 1."]
        elif not 0 <= value <= 1:
            errors["confidence"] = ["Must be between 0 and 1."]
    return errors


def propose_action(*, agent: Agent, proposal: Proposal) -> tuple[ActionRequest, bool]:
    """Record a proposal; returns (action, created). A repeated idempotency key returns the original."""
    action_type = registry.get(proposal.action_type)
    if action_type is None:
        raise InvalidInput(
            "Unknown action type.", errors={"action_type": [f"No action type named {proposal.action_type!r}."]}
        )

    errors = trace_field_errors(proposal)
    if errors:
        raise InvalidInput("Invalid trace fields.", errors=errors)

    request_digest = proposal.digest()
    if proposal.idempotency_key:
        existing = _existing_for_key(agent, proposal.idempotency_key, request_digest)
        if existing is not None:
            return existing, False

    groups: dict[str, int] = {}
    if action_type.name == MCP_TOOL_CALL:
        refusal, policy_head = capability_refusal(agent, action_type.name, proposal.params), None
    else:
        grant, policy_head, groups = _grant_policy_head_and_groups(agent, action_type.name)
        refusal = granted_refusal(agent, action_type.name, grant, proposal.params)
    if refusal:
        _record_refused(agent, action_type, refusal)
        raise NotAllowed(refusal)

    if action_type.time_boxed and "duration" in proposal.params:
        try:
            parse_duration(proposal.params["duration"])
        except DurationError as exc:
            # Refused before anything else is read, and audited: another spelling of a too-long grant is an attempt.
            _record_refused(agent, action_type, str(exc), duration=proposal.params["duration"])
            raise InvalidInput(str(exc), errors={"params.duration": [str(exc)]}) from None
    credential = validate_params(action_type, proposal.params)
    # Risk follows the credential; the person on_behalf_of names is resolved now, once (approvals.policies.people).
    evaluation = evaluate(
        agent_name=agent.name,
        action_type=action_type,
        params=proposal.params,
        on_behalf_of=proposal.on_behalf_of,
        credential=credential,
        find_credential=False,
        policy_head=policy_head,
    )
    refusal = evaluation.requester_refusal
    if refusal:
        _record_refused(
            agent,
            action_type,
            refusal,
            on_behalf_of=proposal.on_behalf_of,
            policy={**evaluation.decision.as_dict(), "floors": list(evaluation.decision.floors)},
        )
        detail = (
            f"on_behalf_of {proposal.on_behalf_of!r} names nobody Countersign knows."
            if proposal.on_behalf_of.strip()
            else "on_behalf_of is required: say whom this action is for."
        )
        raise InvalidInput(detail, errors={"on_behalf_of": [refusal]})
    refusal = _duration_refusal(action_type, proposal.params, evaluation, credential)
    if refusal:
        _record_refused(agent, action_type, refusal, duration=proposal.params.get("duration"))
        raise NotAllowed(refusal, errors={"params.duration": [refusal]})
    # Read (or made) before the transaction, which then sends nothing but its writes: one statement, its own
    # transaction (audit.chain.audited_atomic).
    group = _reviewer_group(evaluation.decision.reviewer_group, groups) if evaluation.decision.reviewer_group else None
    try:
        with audited_atomic():
            action = _create(agent, proposal, action_type, evaluation, request_digest, group)
    except IntegrityError:
        # Lost a race with the same idempotency key.
        existing = _existing_for_key(agent, proposal.idempotency_key or "", request_digest)
        if existing is None:
            raise
        return existing, False
    return action, True


def _duration_refusal(action_type: ActionType, params: dict[str, Any], evaluation: Evaluation, credential: Any) -> str:
    """Why ``params.duration`` breaks the maximum (or the requirement) of the rule in force or the credential;
    "" when it does not. On the parsed length: another spelling of a day is still a day."""
    decision = evaluation.decision
    if decision.effect == policies.DENY:
        return ""  # refused anyway, with the rule's own reason
    refusal, _ = duration_refusal(
        time_boxed=action_type.time_boxed,
        raw=params.get("duration"),
        given="duration" in params,
        rule_name=decision.rule,
        rule_max=decision.max_duration_seconds,
        require=decision.require_duration,
        credential=credential,
    )
    return refusal


def _record_refused(agent: Agent, action_type: ActionType, reason: str, **data: Any) -> None:
    """An agent's proposal refused before anything was written: audited, counted per minute (record_refusal)."""
    record_refusal(
        actor=Actor.agent(agent),
        verb="action.refused",
        kind=f"{action_type.name}: {reason}",
        reason=reason,
        object_type="agent",
        object_id=str(agent.id),
        agent_name=agent.name,
        data={"action_type": action_type.name, **data},
    )


def _existing_for_key(agent: Agent, key: str, request_digest: str) -> ActionRequest | None:
    existing = ActionRequest.objects.filter(agent=agent, idempotency_key=key).first()
    if existing is not None and existing.request_digest != request_digest:
        raise IdempotencyConflict(f"The idempotency key {key!r} was already used with a different request body.")
    return existing


# Every proposal reads the agent's grant of its action type, the policy head and the reviewer groups its rule is likely
# to name, all fresh: one statement, where each was a round trip of its own (docs/BENCHMARKS.md, section 9). It stands
# on the agent's row, which authentication has just read, so it answers one row whether the grant exists or not. The
# groups are looked up by the names the rules last read in this process name (``likely_reviewer_groups``): a rule
# naming any other group, or a group not there yet, is looked up (or made) on its own (``_reviewer_group``).
_GROUP_SLOTS = 4
_GROUP_NAME = Group._meta.get_field("name")
_GRANT_POLICY_HEAD_AND_GROUPS = PreparedQuery(
    lambda agent_id, action_type, **groups: Agent.objects.filter(pk=agent_id).values_list(
        *(Subquery(grants(OuterRef("pk"), action_type).values(column)[:1]) for column in GRANT_COLUMNS),
        *HEAD_COLUMNS,
        *(Subquery(Group.objects.filter(name=groups[f"group{slot}"]).values("id")[:1]) for slot in range(_GROUP_SLOTS)),
    ),
    agent_id=Agent._meta.pk,
    action_type=Capability._meta.get_field("action_type"),
    **{f"group{slot}": _GROUP_NAME for slot in range(_GROUP_SLOTS)},
)


def _grant_policy_head_and_groups(
    agent: Agent, action_type: str
) -> tuple[Capability | None, PolicyHead | None, dict[str, int]]:
    """(the agent's capability for ``action_type`` or None, the policy head's (number, digest), the ids of the likely
    reviewer groups that exist, by name); a head of None (the agent's row gone meanwhile) is read again by the policy
    store."""
    names = likely_reviewer_groups(_GROUP_SLOTS)
    slots = {f"group{slot}": names[slot] if slot < len(names) else "" for slot in range(_GROUP_SLOTS)}
    row = _GRANT_POLICY_HEAD_AND_GROUPS.first(agent_id=agent.pk, action_type=action_type, **slots)
    if row is None:
        return None, None, {}
    width = len(GRANT_COLUMNS)
    number, digest_ = row[width : width + 2]
    # An unused slot's answer is left out with it (zip stops at the names).
    groups = {name: id_ for name, id_ in zip(names, row[width + 2 :], strict=False) if id_ is not None}
    return granted(agent, action_type, row[:width]), head_of(number, digest_), groups


# The rule's reviewer group when the proposal's statement did not find it: by a statement compiled once
# (config/prepared.py), made when a rule names a group that does not exist yet.
_GROUP_BY_NAME = PreparedQuery(
    lambda name: Group.objects.filter(name=name).values_list("id", "name")[:1], name=_GROUP_NAME
)


def _reviewer_group(name: str, found: dict[str, int]) -> Group:
    if name in found:
        return Group.from_db("default", ["id", "name"], (found[name], name))
    row = _GROUP_BY_NAME.first(name=name)
    return Group.from_db("default", ["id", "name"], row) if row else Group.objects.get_or_create(name=name)[0]


def _create(
    agent: Agent,
    proposal: Proposal,
    action_type: ActionType,
    evaluation: Evaluation,
    request_digest: str,
    group: Group | None,
) -> ActionRequest:
    decision, policy_version, requester = evaluation.decision, evaluation.version, evaluation.requester
    now = timezone.now()
    ttl = min(proposal.expires_in or decision.ttl_seconds, settings.COUNTERSIGN_MAX_TTL_SECONDS)
    action = ActionRequest(
        agent=agent,
        action_type=action_type.name,
        params=proposal.params,
        summary=proposal.summary,
        context=proposal.context,
        trace_url=proposal.trace_url,
        run_id=proposal.run_id,
        confidence=None if proposal.confidence is None else float(proposal.confidence),
        on_behalf_of=proposal.on_behalf_of,
        on_behalf_of_user=requester,
        idempotency_key=proposal.idempotency_key or None,
        request_digest=request_digest,
        callback_url=proposal.callback_url,
        risk=evaluation.exposure.risk,
        modifies_access=evaluation.exposure.modifies_access,
        web_decision_only=decision.web_decision_only,
        required_approvals=decision.required_approvals,
        reviewer_group=group,
        policy_rule=decision.rule,
        policy_effect=decision.effect,
        policy_explanation=decision.explanation,
        policy_version=policy_version or None,
        notify_channels=list(decision.notify),
        escalate_channels=list(decision.escalate_to),
        remind_at=now + timedelta(seconds=decision.reminder_after_seconds) if decision.reminder_after_seconds else None,
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(seconds=ttl),
        extends=proposal.extends,
        reverts=proposal.reverts,
        revert_reason=proposal.revert_reason,
    )
    action.agent = agent
    action.hold_reviews([])
    audit_action(
        action,
        actor=Actor.agent(agent),
        verb="action.proposed",
        data={
            "action_type": action.action_type,
            "summary": action.summary,
            "risk": action.risk,
            "on_behalf_of": action.on_behalf_of,
            "on_behalf_of_user": requester.get_username() if requester is not None else None,
            "modifies_access": action.modifies_access,
            "params_digest": digest(action.params),
            "policy": {
                **decision.as_dict(),
                "version": policy_version,
                "floors": list(decision.floors),
                "floor_reasons": list(decision.floor_reasons),
            },
        },
    )
    # The row is written once (config/prepared.py's insert, as save() writes it): pending here, or decided by the
    # policy's transition, which writes a new action instead of updating it. With the events, in one statement that
    # is the whole transaction (audit.chain.audited_atomic).
    policy_actor = Actor("policy", decision.rule, "policy")
    if decision.effect == policies.DENY:
        action.decision_reason = decision.reason
        transition(
            action, ActionStatus.REJECTED, actor=policy_actor, verb="action.rejected", data={"reason": decision.reason}
        )
    elif decision.effect == policies.AUTO_APPROVE:
        # Written before its action's row, which the transition writes: foreign keys are checked at commit.
        review = write_review(
            action, Review(action=action, reviewer=None, verdict=Review.Verdict.APPROVE, via=Review.Via.POLICY)
        )
        action.hold_reviews([review])
        complete_approval(action, actor=policy_actor, action_type=action_type)
    else:
        insert_with_events(action)
        publish(action, approvals=0)
    return action
