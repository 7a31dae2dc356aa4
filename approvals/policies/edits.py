"""The reviewer-edit rule, once: what edited parameters must pass before a reviewer may approve with them.

``check_edit`` is the one implementation. Approving with edits calls it inside its transaction
(approvals.services.reviews.approve_action, which the web, the API, Slack and HumanLayer all reach), and the
desk's live check (``check_edited_params``, below) calls it as the reviewer types, so what the reviewer is
told while typing is what approving does. ``parse_edited_params`` reads the text a reviewer typed, for the web
page's form and the desk's live check alike. Reads only: it writes nothing, and imports no service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.capabilities import MCP_TOOL_CALL, constraint_violation, mcp_refusal
from agents.models import Capability
from approvals.action_types.durations import DurationError, duration_refusal, parse_duration
from approvals.action_types.params import validate_params
from approvals.errors import Conflict, EditRefused, InvalidInput, ServiceError
from approvals.models import ActionRequest, Review
from approvals.policies.evaluation import EditOutcome, credential_for, reevaluate_edit
from approvals.policies.separation_of_duties import approval_would_count
from approvals.policies.store import PolicyHead
from approvals.validation import BadJSON, load_json
from catalog import registry
from catalog.base import ActionType

MAX_EDITED_TEXT = 256 * 1024


def parse_edited_params(text: str) -> dict[str, Any] | None:
    """The parameters a reviewer typed (JSON text), or None for "no edits" (nothing typed).

    Raises InvalidInput, its ``errors`` under ``params``, for text too large, not JSON or not an object."""
    text = (text or "").strip()
    if not text:
        return None
    problem = ""
    if len(text) > MAX_EDITED_TEXT:
        problem = "The parameters are larger than 256 KiB."
    else:
        try:
            params = load_json(text)
        except BadJSON as exc:
            problem = str(exc)
        else:
            if isinstance(params, dict):
                return params
            problem = "The parameters must be a JSON object."
    raise InvalidInput(problem, errors={"params": [problem]})


def check_edit(
    action: ActionRequest,
    action_type: ActionType,
    edited_params: dict[str, Any],
    *,
    policy_head: PolicyHead | None = None,
) -> EditOutcome:
    """Everything approving with ``edited_params`` checks, without writing: the schema, credential and type's
    checks, the agent's capability, that nobody approved yet, and the policy on the edited action.

    ``policy_head``: the head the caller read with the action it locked (an approval); None reads it.
    Raises InvalidInput, Conflict or EditRefused; returns what the action will need.
    """
    validate_params(action_type, edited_params)
    # A reviewer may narrow what the agent asked for, never widen it past the agent's capability.
    if action.action_type == MCP_TOOL_CALL:  # granted by mcp.<server>.<tool> capabilities: server, tool and arguments
        violation = mcp_refusal(action.agent, edited_params)
    else:
        capability = Capability.objects.filter(agent_id=action.agent_id, action_type=action.action_type).first()
        violation = constraint_violation(action.agent.name, capability, edited_params) if capability else None
    if violation:
        raise InvalidInput(
            "The edit is outside the agent's capability.",
            errors={"params": [f"Outside the agent's capability: {violation}"]},
        )
    if action.reviews.filter(verdict=Review.Verdict.APPROVE).exists():
        raise Conflict("Others already approved these parameters; approve them as they are, or reject.")
    outcome = reevaluate_edit(action, action_type, edited_params, policy_head=policy_head)
    _check_duration_edit(action, action_type, edited_params, outcome)
    if outcome.denied:
        raise EditRefused(
            f"The edited action is denied by rule `{outcome.rule}`: {outcome.denied}",
            errors={"params": [outcome.explanation]},
            extra={"policy": outcome.as_dict()},
        )
    if outcome.requester_refusal:
        raise EditRefused(
            f"The edited action cannot be approved: {outcome.requester_refusal}",
            errors={"params": [outcome.requester_refusal]},
            extra={"policy": outcome.as_dict()},
        )
    return outcome


def _check_duration_edit(
    action: ActionRequest, action_type: ActionType, edited_params: dict[str, Any], outcome: EditOutcome
) -> None:
    """A reviewer may shorten time-boxed access, never lengthen it, drop it, or pass the policy's maximum."""
    if not action_type.time_boxed or "duration" not in action.effective_params:
        return
    if "duration" not in edited_params:
        message = "This access is time-boxed: keep a duration (you may shorten it)."
        raise InvalidInput(message, errors={"params.duration": [message]})
    decision = outcome.evaluation.decision
    refusal, seconds = duration_refusal(
        time_boxed=True,
        raw=edited_params["duration"],
        given=True,
        rule_name=decision.rule,
        rule_max=decision.max_duration_seconds,
        require=decision.require_duration,
        credential=credential_for(action_type, edited_params),
    )
    try:
        asked = parse_duration(action.effective_params["duration"])
    except DurationError:
        asked = 0
    if not refusal and seconds is not None and seconds > asked:
        refusal = "A reviewer may shorten the duration the agent asked for, never lengthen it."
    if refusal:
        raise InvalidInput(refusal, errors={"params.duration": [refusal]})


# --- approve with edits: checked as the reviewer types ----------------------------------------


@dataclass(frozen=True)
class ParamsCheck:
    """What approving with these parameters would say about them, before anything is decided."""

    ok: bool
    changed: bool
    errors: dict[str, list[str]] = field(default_factory=dict)
    # The policy on the edited action (approvals.policies.evaluation): rule, approvals, group, and a sentence
    # for the reviewer, including whether their own approval would count under it. Empty when unchanged.
    policy: dict[str, Any] = field(default_factory=dict)


def check_edited_params(action: ActionRequest, raw: str, reviewer=None) -> ParamsCheck:
    """The checks ``approve_action`` runs on edited parameters (schema, credential, the type's own checks,
    the agent's capability, the policy re-evaluated), without approving: the one edit check approving runs
    (``approvals.policies.edits.check_edit``). Empty text means "no edits"."""
    try:
        params = parse_edited_params(raw)
    except InvalidInput as exc:
        return ParamsCheck(ok=False, changed=True, errors=exc.errors)
    if params is None or params == action.effective_params:
        return ParamsCheck(ok=True, changed=False)
    action_type = registry.get(action.action_type)
    if action_type is None:
        return ParamsCheck(ok=False, changed=True, errors={"params": ["This action type is no longer installed."]})
    try:
        outcome = check_edit(action, action_type, params)
    except ServiceError as exc:
        policy = exc.extra.get("policy", {})
        return ParamsCheck(ok=False, changed=True, errors=exc.errors or {"params": [exc.detail]}, policy=policy)
    return ParamsCheck(ok=True, changed=True, policy=_edit_policy(action, outcome, reviewer))


def _edit_policy(action: ActionRequest, outcome, reviewer) -> dict[str, Any]:
    """What the edited action will need, in words, and whether ``reviewer``'s own approval would count."""
    policy = outcome.as_dict()
    counts = True
    if reviewer is not None:
        counts = approval_would_count(
            reviewer,
            action,
            reviewer_group=outcome.reviewer_group,
            modifies_access=outcome.modifies_access,
            risk=outcome.risk,
        )
    n = outcome.required_approvals
    message = f"Rule `{outcome.rule}` applies: {n} approval{'s' if n != 1 else ''} from {outcome.reviewer_group}."
    if not counts:
        message += " Your approval would be recorded but would not count under it."
    return {**policy, "your_approval_counts": counts, "message": message}
