"""Human decisions on pending actions, cancellation by the agent, and expiry."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.capabilities import constraint_violation
from agents.models import Agent, Capability
from approvals import notifications
from approvals.action_types import registry
from approvals.audit import Actor
from approvals.canonical import digest
from approvals.errors import Conflict, InvalidInput, NotAllowed, NotFound, NotPending, TargetChanged
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.permissions import review_refusal
from approvals.previews import compute_preview, fingerprint, preview_as_dict
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
    if action.expires_at <= timezone.now():
        # The expiry job may not have run yet; past its time to live nobody decides it.
        raise NotPending("The action expired; it can no longer be decided.")


def approve_action(
    *,
    action_id,
    reviewer,
    via: str,
    comment: str = "",
    edited_params: dict[str, Any] | None = None,
    preview_fingerprint: str | None = None,
) -> ActionRequest:
    """Add ``reviewer``'s approval; approve the action when it has all it needs.

    ``preview_fingerprint`` is what the reviewer saw of the target
    (approvals.previews.fingerprint); the preview is recomputed now and a
    changed target refuses the approval with the fresh preview attached.
    """
    if len(comment) > MAX_COMMENT:
        raise InvalidInput("Comment too long.", errors={"comment": [f"At most {MAX_COMMENT} characters."]})
    if preview_fingerprint is not None:
        _refuse_if_target_changed(action_id, preview_fingerprint)
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
            # A reviewer may narrow what the agent asked for, never widen it past the agent's capability.
            capability = Capability.objects.filter(agent=action.agent, action_type=action.action_type).first()
            violation = capability and constraint_violation(action.agent.name, capability, edited_params)
            if violation:
                raise InvalidInput("The edit is outside the agent's capability.", errors={"params": [violation]})
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


def _refuse_if_target_changed(action_id, seen: str) -> None:
    # Outside the transaction: reading the target is network I/O, and no row lock is held across it.
    action = ActionRequest.objects.filter(id=action_id).only("action_type", "params").first()
    if action is None:
        return  # the locked read below answers 404
    fresh = compute_preview(action.action_type, action.params)
    if fingerprint(fresh) != seen:
        raise TargetChanged(
            "The target changed since you reviewed it; review the fresh preview and approve again.",
            extra={"preview": preview_as_dict(fresh)},
        )


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


def send_due_reminders(limit: int = 500) -> int:
    """Remind the policy's channels (and its escalation channels) about actions still pending."""
    now = timezone.now()
    due = list(
        ActionRequest.objects.filter(status=ActionStatus.PENDING, remind_at__lte=now, reminded_at__isnull=True)
        .order_by("remind_at")
        .values_list("id", flat=True)[:limit]
    )
    sent = 0
    for action_id in due:
        with transaction.atomic():
            action = lock_action(action_id)
            if not action.is_pending or action.reminded_at is not None:
                continue
            action.reminded_at = timezone.now()
            action.save(update_fields=["reminded_at", "updated_at"])
            channels = list(dict.fromkeys([*action.notify_channels, *action.escalate_channels]))
            audit_action(action, actor=Actor.system("beat"), verb="action.reminder_due", data={"channels": channels})
            notifications.enqueue(action, notifications.REMINDER, channels=channels)
            sent += 1
    return sent
