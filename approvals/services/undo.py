"""Undo: a reviewer takes back their approval within the undo window, before its execution is dispatched.

A person's approval that completes an action mints the grant and enqueues the execute message held for
``COUNTERSIGN_UNDO_SECONDS`` (approvals.services.approval, approvals.outbox.dispatcher ``enqueue(delay=…)``).
Until the outbox claims that message, the approver may withdraw: the review is marked withdrawn (it no longer
counts, approvals.policies.separation_of_duties), the grant is revoked, the message is settled as withdrawn and
the action is pending again. An approval that did not complete its action (1 of 2) is simply withdrawn.

Undo against dispatch at the boundary: exactly one wins. The withdrawal holds the action's row lock and then the
execute message's (``FOR UPDATE``); the outbox claims a message with one conditional UPDATE that requires it
undelivered and unclaimed. A claim that came first leaves the message claimed (or delivered), and the withdrawal
is refused; a withdrawal that came first leaves it delivered, and the claim's UPDATE, re-checked once the lock
is released, matches nothing. Redemption checks the action is still approved too (approvals.services.execution).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from approvals.errors import Conflict, NotAllowed, NotFound
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, OutboxMessage, Review
from approvals.services.reviews import record_decision_refused
from approvals.services.transitions import approval_count, audit_action, lock_action, publish, transition
from audit.chain import Actor, audited_atomic

VERB = "action.approval_withdrawn"
WITHDRAWN = "withdrawn: the reviewer undid the approval"


def undo_window() -> timedelta:
    return timedelta(seconds=settings.COUNTERSIGN_UNDO_SECONDS)


def withdraw_approval(action_id, reviewer, *, via: str = Review.Via.WEB) -> ActionRequest:
    """Withdraw ``reviewer``'s approval of ``action_id``; the action returns to pending if it had been approved.

    Refused (NotAllowed, audited as ``decision.refused``) for anyone but the approver; refused (Conflict) once
    the window has passed or the execution was dispatched.
    """
    try:
        return _withdraw(action_id, reviewer, via)
    except NotAllowed as exc:
        # Recorded after the withdrawal's transaction rolled back, so the refusal survives it.
        record_decision_refused(action_id, reviewer, via, "withdraw", exc.detail)
        raise


def _withdraw(action_id, reviewer, via: str) -> ActionRequest:
    with audited_atomic():
        try:
            action = lock_action(action_id)
        except (ActionRequest.DoesNotExist, ValueError):
            raise NotFound("No such action.") from None
        review = _own_approval(action, reviewer)
        now = timezone.now()
        if settings.COUNTERSIGN_UNDO_SECONDS <= 0 or review.created_at + undo_window() <= now:
            raise Conflict("The undo window has passed; the approval stands.")
        if review.edited_params is not None:
            # The edit changed the parameters and the rule in force; taking it back is a new decision, not an undo.
            raise Conflict("An approval with edits cannot be undone; ask another reviewer to reject the action.")
        data: dict = {"review": review.id, "approved_at": review.created_at.isoformat()}
        if action.status == ActionStatus.APPROVED:
            data.update(_stop_execution(action, now))
        elif action.status != ActionStatus.PENDING:
            raise Conflict(f"The action is {action.status}; its execution has started and cannot be undone.")
        review.withdrawn_at = now
        review.save(update_fields=["withdrawn_at"])
        actor = Actor.user(reviewer, via)
        if action.status == ActionStatus.APPROVED:
            action.decided_at = None  # decided again by whoever decides next
            transition(action, ActionStatus.PENDING, actor=actor, verb=VERB, data=data)
        else:
            approvals = approval_count(action)
            audit_action(
                action,
                actor=actor,
                verb=VERB,
                data={**data, "approvals": approvals, "required_approvals": action.required_approvals},
            )
            publish(action, approvals=approvals)
    return action


def _own_approval(action: ActionRequest, reviewer) -> Review:
    if not getattr(reviewer, "is_authenticated", False) or not reviewer.is_active:
        raise NotAllowed("you are not signed in as an active reviewer")
    review = (
        Review.objects.select_for_update()
        .filter(action=action, reviewer=reviewer, verdict=Review.Verdict.APPROVE, withdrawn_at__isnull=True)
        .first()
    )
    if review is None:
        raise NotAllowed("only the reviewer who approved this action can undo that approval")
    return review


def _stop_execution(action: ActionRequest, now) -> dict:
    """Settle the held execute message as withdrawn and revoke the grant; Conflict when it already went out."""
    if action.finished_at is not None:
        # decision.only: the agent was told at once and may already have acted.
        raise Conflict("The agent was told of this approval at once (it acts itself); it cannot be undone.")
    message = (
        OutboxMessage.objects.select_for_update()
        .filter(kind=OutboxMessage.Kind.EXECUTE, action_id=action.id, delivered_at__isnull=True)
        .order_by("-id")
        .first()
    )
    if message is None or message.attempts > 0 or (message.claimed_until is not None and message.claimed_until > now):
        raise Conflict("The execution was already dispatched; the approval can no longer be undone.")
    OutboxMessage.objects.filter(id=message.id).update(delivered_at=now, claimed_until=None, last_error=WITHDRAWN)
    # Expired now, never redeemable: kept (not deleted) so the audit trail's grant id still names a row.
    revoked = ExecutionGrant.objects.filter(action=action, redeemed_at__isnull=True).update(expires_at=now)
    return {"outbox_message": message.id, "grant": message.payload.get("grant"), "grants_revoked": revoked}


def undo_deadline(action: ActionRequest, reviewer) -> datetime | None:
    """Until when ``reviewer`` may still undo their approval of ``action`` (for the page), or None: no undo."""
    if settings.COUNTERSIGN_UNDO_SECONDS <= 0 or action.finished_at is not None:
        return None
    if action.status not in (ActionStatus.PENDING, ActionStatus.APPROVED):
        return None
    review = (
        Review.objects.filter(
            action=action, reviewer=reviewer, verdict=Review.Verdict.APPROVE, withdrawn_at__isnull=True
        )
        .filter(edited_params__isnull=True)
        .first()
    )
    if review is None:
        return None
    deadline = review.created_at + undo_window()
    return deadline if deadline > timezone.now() else None
