"""The reviewer-edit rule, once: what edited parameters must pass before a reviewer may approve with them.

``check_edit`` is the one implementation. Approving with edits calls it inside its transaction
(approvals.services.reviews.approve_action, which the web, the API, Slack and HumanLayer all reach), and the
desk's live check (approvals.desk.check_edited_params) calls it as the reviewer types, so what the reviewer is
told while typing is what approving does. Reads only: it writes nothing, and imports no service.
"""

from __future__ import annotations

from typing import Any

from agents.capabilities import constraint_violation
from agents.models import Capability
from approvals.action_types.base import ActionType
from approvals.errors import Conflict, EditRefused, InvalidInput
from approvals.evaluation import EditOutcome, reevaluate_edit
from approvals.models import ActionRequest, Review
from approvals.params import validate_params


def check_edit(action: ActionRequest, action_type: ActionType, edited_params: dict[str, Any]) -> EditOutcome:
    """Everything approving with ``edited_params`` checks, without writing: the schema, credential and type's
    checks, the agent's capability, that nobody approved yet, and the policy on the edited action.

    Raises InvalidInput, Conflict or EditRefused; returns what the action will need.
    """
    validate_params(action_type, edited_params)
    # A reviewer may narrow what the agent asked for, never widen it past the agent's capability.
    capability = Capability.objects.filter(agent_id=action.agent_id, action_type=action.action_type).first()
    violation = capability and constraint_violation(action.agent.name, capability, edited_params)
    if violation:
        raise InvalidInput(
            "The edit is outside the agent's capability.",
            errors={"params": [f"Outside the agent's capability: {violation}"]},
        )
    if action.reviews.filter(verdict=Review.Verdict.APPROVE).exists():
        raise Conflict("Others already approved these parameters; approve them as they are, or reject.")
    outcome = reevaluate_edit(action, action_type, edited_params)
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
