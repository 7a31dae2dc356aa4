"""Human decisions on pending actions, cancellation by the agent, and expiry."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from approvals.action_types import registry
from approvals.audit import Actor
from approvals.canonical import digest
from approvals.errors import Conflict, InvalidInput, NotAllowed, NotFound, NotPending
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.permissions import review_refusal
from approvals.services.approval import complete_approval
from approvals.services.transitions import approval_count, audit_action, lock_action, publish, transition

MAX_COMMENT = 2000


def _locked_pending(action_id, *, agent: Agent | None = None) -> ActionRequest:
    try:
        action = lock_action(action_id, agent=agent)
    except (ActionRequest.DoesNotExist, ValueError):
        raise NotFound("No such action.") from None
    return action


def _require_pending(action: ActionRequest) -> None:
    if not action.is_pending:
        raise NotPending(f"The action is {action.status}; it can no longer be decided.")


def approve_action(
    *, action_id, reviewer, via: str, comment: str = "", edited_params: dict[str, Any] | None = None
) -> ActionRequest:
    if len(comment) > MAX_COMMENT:
        raise InvalidInput("Comment too long.", errors={"comment": [f"At most {MAX_COMMENT} characters."]})
    with transaction.atomic():
        action = _locked_pending(action_id)
        refusal = review_refusal(reviewer, action)
        if refusal:
            raise NotAllowed(refusal)
        _require_pending(action)
        if action.reviews.filter(reviewer=reviewer).exists():
            raise Conflict("You have already reviewed this action; another reviewer must add the next approval.")
        action_type = registry.get(action.action_type)
        edits = None
        if edited_params is not None and edited_params != action.effective_params:
            from approvals.services.proposals import validate_params

            validate_params(action_type, edited_params)
            if approval_count(action) > 0:
                raise Conflict("Others already approved these parameters; approve them as they are, or reject.")
            edits = {"before": action.effective_params, "after": edited_params}
            action.edited_params = edited_params
        Review.objects.create(
            action=action,
            reviewer=reviewer,
            verdict=Review.Verdict.APPROVE,
            via=via,
            comment=comment,
            edited_params=edits and edited_params,
        )
        actor = Actor.user(reviewer, via)
        approvals = approval_count(action)
        audit_action(
            action,
            actor=actor,
            verb="action.reviewed",
            data={
                "verdict": "approve",
                "comment": comment,
                "approvals": approvals,
                "required_approvals": action.required_approvals,
                **({"edited_params": edits, "params_digest": digest(edited_params)} if edits else {}),
            },
        )
        if approvals >= action.required_approvals:
            complete_approval(action, actor=actor, action_type=action_type)
        else:
            if edits:
                action.save(update_fields=["edited_params", "updated_at"])
            publish(action, approvals=approvals)
    return action


def reject_action(*, action_id, reviewer, via: str, reason: str) -> ActionRequest:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("A rejection needs a reason.", errors={"reason": ["Say why, so the agent can adapt."]})
    if len(reason) > MAX_COMMENT:
        raise InvalidInput("Reason too long.", errors={"reason": [f"At most {MAX_COMMENT} characters."]})
    with transaction.atomic():
        action = _locked_pending(action_id)
        refusal = review_refusal(reviewer, action)
        if refusal:
            raise NotAllowed(refusal)
        _require_pending(action)
        Review.objects.create(action=action, reviewer=reviewer, verdict=Review.Verdict.REJECT, via=via, comment=reason)
        action.decision_reason = reason
        transition(
            action,
            ActionStatus.REJECTED,
            actor=Actor.user(reviewer, via),
            verb="action.rejected",
            data={"reason": reason},
        )
    return action


def cancel_action(*, action_id, agent: Agent) -> ActionRequest:
    with transaction.atomic():
        action = _locked_pending(action_id, agent=agent)
        _require_pending(action)
        transition(action, ActionStatus.CANCELLED, actor=Actor.agent(agent), verb="action.cancelled")
    return action


def expire_due_actions(limit: int = 500) -> int:
    """Expire pending actions past their time to live; safe against racing reviewers."""
    now = timezone.now()
    due = list(
        ActionRequest.objects.filter(status=ActionStatus.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("id", flat=True)[:limit]
    )
    expired = 0
    for action_id in due:
        with transaction.atomic():
            action = lock_action(action_id)
            if action.is_pending and action.expires_at <= timezone.now():
                transition(action, ActionStatus.EXPIRED, actor=Actor.system("beat"), verb="action.expired")
                expired += 1
    return expired
