"""The policy's view of an action: risk (the credential included), the rule in force, the requester.

One function, ``evaluate``, answers "what does the policy say about these parameters?" for all three
places that ask: a proposal (approvals.services.proposals), an edit made while approving
(``reevaluate_edit``, called by the one edit check, approvals.policies.edits, for approving and for the desk's live
check), and the simulator (approvals.policies.store.simulate). So the simulator and the decision cannot disagree.

An edit is a new proposal for the policy, but never a more lenient one (``stricter``):

- more required approvals is stricter;
- on an equal count, the rule that comes first in the policy is stricter (first match wins, so the
  policy's authors put the narrower, more demanding exceptions first; the default rule comes last).
  Only then does the eligible group change to the new rule's;
- a deny rule refuses the edit; an auto-approve rule (or a lower count) changes nothing.
Reads only; the callers write. It sits below the services (which write) and the reads alike, so both import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from agents.capabilities import capability_refusal
from agents.models import Agent
from approvals.models import ActionRequest, Credential
from approvals.policies import people
from approvals.policies import rules as policies
from approvals.policies import store as policy_store
from approvals.policies.rules import PolicyError
from approvals.validation import schema_errors
from catalog import registry
from catalog.base import ActionType


@dataclass(frozen=True)
class Evaluation:
    version: int
    decision: policies.PolicyDecision
    exposure: policies.Exposure
    requester: Any  # the user on_behalf_of names, or None
    rules: tuple[policies.Rule, ...] = ()

    @property
    def requester_refusal(self) -> str:
        """Why the proposal must be refused for its on_behalf_of, or "" when it may go on."""
        if self.decision.effect == policies.DENY and not self.exposure.modifies_access:
            return ""
        if not self.decision.require_known_requester or self.requester is not None:
            return ""
        if self.exposure.modifies_access:
            why = self.exposure.access_reason or "the action changes access"
            return (
                f"{why}: on_behalf_of must name the person who asked for it (a username, an email address "
                "or a linked Slack id), so that they cannot approve it themselves."
            )
        return f"Rule `{self.decision.rule}` requires on_behalf_of to name a known person."


def credential_for(action_type: ActionType, params: dict[str, Any]) -> Credential | None:
    """The credential the params name (of a kind the type can use), or None; never raises."""
    if not action_type.credential_kinds or not isinstance(params, dict):
        return None
    try:
        name = action_type.credential_name(params)
    except Exception:  # malformed params name no credential; validation reports them
        return None
    if not isinstance(name, str) or not name:
        return None
    return Credential.objects.filter(name=name, kind__in=action_type.credential_kinds).first()


def evaluate(
    *,
    agent_name: str,
    action_type: ActionType,
    params: dict[str, Any],
    on_behalf_of: str = "",
    credential: Credential | None = None,
    find_credential: bool = True,
    policy_head: tuple[int, str] | None = None,
) -> Evaluation:
    """What the policy says about ``agent_name`` proposing ``params`` now. Creates nothing. ``policy_head``: the
    head just read by the caller (``store.active_rules``)."""
    if credential is None and find_credential:
        credential = credential_for(action_type, params)
    exposure = policies.assess(
        action_type=action_type.name,
        # A type whose risk depends on the params says so (mcp.tool_call: the upstream's annotations, if trusted).
        type_risk=str(action_type.risk_for(params) if hasattr(action_type, "risk_for") else action_type.risk),
        type_modifies_access=action_type.modifies_access,
        credential=credential,
    )
    version, rules = policy_store.active_rules(policy_head)
    decision = policies.decide(
        agent_name=agent_name,
        action_type=action_type.name,
        risk=exposure.risk,
        modifies_access=exposure.modifies_access,
        params=params,
        on_behalf_of=on_behalf_of,
        rules=rules,
        access_reason=exposure.access_reason,
        risk_reason=exposure.risk_reason,
    )
    return Evaluation(version, decision, exposure, people.resolve_person(on_behalf_of), tuple(rules))


# --- edits ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditOutcome:
    """What an edit leaves the action needing. ``denied`` is the deny rule's reason ("" when not denied)."""

    evaluation: Evaluation
    rule: str
    effect: str
    explanation: str
    required_approvals: int
    reviewer_group: str
    risk: str
    modifies_access: bool
    web_decision_only: bool
    denied: str = ""
    requester_refusal: str = ""

    def changes(self, action: ActionRequest) -> dict[str, Any]:
        """The fields that differ from the action's now: {"field": [before, after]}."""
        now = {
            "policy_rule": action.policy_rule,
            "policy_effect": action.policy_effect,
            "required_approvals": action.required_approvals,
            "reviewer_group": action.reviewer_group.name if action.reviewer_group is not None else "",
            "risk": action.risk,
            "modifies_access": action.modifies_access,
            "web_decision_only": action.web_decision_only,
        }
        then = {
            "policy_rule": self.rule,
            "policy_effect": self.effect,
            "required_approvals": self.required_approvals,
            "reviewer_group": self.reviewer_group,
            "risk": self.risk,
            "modifies_access": self.modifies_access,
            "web_decision_only": self.web_decision_only,
        }
        return {k: [now[k], then[k]] for k in now if now[k] != then[k]}

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "effect": self.effect,
            "explanation": self.explanation,
            "required_approvals": self.required_approvals,
            "reviewer_group": self.reviewer_group,
            "risk": self.risk,
            "modifies_access": self.modifies_access,
            "floors": list(self.evaluation.decision.floors),
            "denied": self.denied,
        }


class _EditFacts(TypedDict):
    """What every outcome of an edit carries whichever rule it ends under; EditOutcome's fields of the same names."""

    evaluation: Evaluation
    risk: str
    modifies_access: bool
    web_decision_only: bool
    requester_refusal: str


def _position(rule_name: str, rules: tuple[policies.Rule, ...]) -> int:
    """Where ``rule_name`` stands in the policy: earlier is stricter; the default (or a vanished rule) is last."""
    for index, rule in enumerate(rules):
        if rule.name == rule_name:
            return index
    return len(rules)


def stricter(new_count: int, new_rule: str, old_count: int, old_rule: str, rules: tuple[policies.Rule, ...]) -> bool:
    """Is the new rule's requirement stricter than the old one's? (See the module's docstring.)"""
    if new_count != old_count:
        return new_count > old_count
    return new_rule != old_rule and _position(new_rule, rules) < _position(old_rule, rules)


def reevaluate_edit(
    action: ActionRequest,
    action_type: ActionType,
    edited_params: dict[str, Any],
    *,
    policy_head: policy_store.PolicyHead | None = None,
) -> EditOutcome:
    """The policy on the edited parameters, merged with what the action already needed (never lower).
    ``policy_head``: as ``evaluate`` takes it."""
    evaluation = evaluate(
        agent_name=action.agent.name,
        action_type=action_type,
        params=edited_params,
        on_behalf_of=action.on_behalf_of,
        policy_head=policy_head,
    )
    decision, exposure = evaluation.decision, evaluation.exposure
    old_group = action.reviewer_group.name if action.reviewer_group is not None else ""
    risk = policies.higher_risk(action.risk, exposure.risk)
    modifies_access = action.modifies_access or exposure.modifies_access
    web_only = action.web_decision_only or decision.web_decision_only
    # The requester is the one resolved at proposal; the edited action is refused when the rule now in force
    # (or the floor it reached) needs a known requester and there is none.
    requester_refusal = "" if action.on_behalf_of_user_id is not None else evaluation.requester_refusal
    base: _EditFacts = {
        "evaluation": evaluation,
        "risk": risk,
        "modifies_access": modifies_access,
        "web_decision_only": web_only,
        "requester_refusal": requester_refusal,
    }
    if decision.effect == policies.DENY:
        return EditOutcome(
            rule=decision.rule,
            effect=policies.DENY,
            explanation=decision.explanation,
            required_approvals=action.required_approvals,
            reviewer_group=old_group,
            denied=decision.reason or "denied by policy",
            **base,
        )
    new_count = decision.required_approvals if decision.effect == policies.REQUIRE else 0
    if stricter(new_count, decision.rule, action.required_approvals, action.policy_rule, evaluation.rules):
        return EditOutcome(
            rule=decision.rule,
            effect=decision.effect,
            explanation=decision.explanation,
            required_approvals=new_count,
            reviewer_group=decision.reviewer_group,
            **base,
        )
    explanation = action.policy_explanation
    if decision.rule != action.policy_rule:
        explanation = (
            f"{action.policy_explanation}; the edit matches rule `{decision.rule}`, which asks no more, "
            "so this stays (an edit never lowers what was required)"
        )[:500]
    return EditOutcome(
        rule=action.policy_rule,
        effect=action.policy_effect,
        explanation=explanation,
        required_approvals=action.required_approvals,
        reviewer_group=old_group,
        **base,
    )


# --- simulation ----------------------------------------------------------------------------------


def simulate(*, agent_name: str, action_type: str, params: dict[str, Any], on_behalf_of: str = "") -> dict[str, Any]:
    """What would happen if ``agent_name`` proposed this; creates nothing."""
    agent = Agent.objects.filter(name=agent_name).first()
    if agent is None:
        raise PolicyError(f"no agent named {agent_name!r}", field="agent")
    found = registry.get(action_type)
    if found is None:
        raise PolicyError(f"no action type named {action_type!r}", field="action_type")
    refusal = capability_refusal(agent, found.name, params) or ("" if agent.is_active else "the agent is inactive")
    # The same evaluation a proposal (and an edit) gets: risk with the credential, floors, the requester.
    evaluation = evaluate(agent_name=agent.name, action_type=found, params=params, on_behalf_of=on_behalf_of)
    version, decision, exposure = evaluation.version, evaluation.decision, evaluation.exposure
    return {
        "policy_version": version,
        "rule": decision.rule,
        "effect": decision.effect,
        "required_approvals": decision.required_approvals,
        "reviewer_group": decision.reviewer_group,
        "ttl_seconds": decision.ttl_seconds,
        "notify": list(decision.notify),
        "reminder_after_seconds": decision.reminder_after_seconds,
        "escalate_to": list(decision.escalate_to),
        "floors": list(decision.floors),
        "floor_reasons": list(decision.floor_reasons),
        "risk": exposure.risk,
        "modifies_access": exposure.modifies_access,
        "on_behalf_of_user": evaluation.requester.get_username() if evaluation.requester is not None else None,
        "requester_refusal": evaluation.requester_refusal,
        "web_decision_only": decision.web_decision_only,
        "explanation": decision.explanation,
        "reason": decision.reason,
        "agent_may_propose": not refusal,
        "capability_refusal": refusal,
        "params_errors": schema_errors(found.params_schema, params, "params"),
    }
