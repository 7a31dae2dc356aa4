"""Claims: "I am working on this one", a soft lock every other reviewer sees on the queue and the action.

A claim never refuses anyone: whoever may decide an action still decides it, claimed or not, and anyone who
may see a pending action may claim it (taking it over from whoever held it; the audit log keeps who had it).
Only what a reviewer may see can be claimed: an action outside their groups is "No such action" whether it
exists or not, the same answer as any other read, and the attempt is recorded as a refusal.
"""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from approvals.errors import NotFound, NotPending
from approvals.live.events import ActionEvent
from approvals.models import ActionRequest, OutboxMessage
from approvals.outbox import dispatcher as outbox
from approvals.selectors import actions as selectors
from approvals.services.transitions import approval_count, audit_action, lock_action
from audit.chain import Actor, record_refusal


def claim_action(*, action_id: uuid.UUID, user, via: str) -> ActionRequest:
    """``user`` claims the pending action (taking it over from anyone who held it). Raises NotFound, NotPending."""
    _require_visible(action_id, user, via, "claim")
    with transaction.atomic():
        action = _locked(action_id)
        if not action.is_pending:
            raise NotPending(f"The action is {action.status}; it can no longer be claimed.")
        if action.claimed_by_id == user.pk:
            return action  # already theirs: nothing changed, nothing to record
        previous = action.claimed_by.get_username() if action.claimed_by is not None else ""
        action.claimed_by, action.claimed_at = user, timezone.now()
        action.save(update_fields=["claimed_by", "claimed_at"])
        audit_action(action, actor=Actor.user(user, via), verb="action.claimed", data={"from": previous})
        _push(action)
    return action


def release_action(*, action_id: uuid.UUID, user, via: str) -> ActionRequest:
    """Give the claim back; anyone who may see the action may release it (a soft lock, not an ownership)."""
    _require_visible(action_id, user, via, "release")
    with transaction.atomic():
        action = _locked(action_id)
        if action.claimed_by is None:
            return action
        previous = action.claimed_by.get_username()
        action.claimed_by, action.claimed_at = None, None
        action.save(update_fields=["claimed_by", "claimed_at"])
        audit_action(action, actor=Actor.user(user, via), verb="action.released", data={"from": previous})
        _push(action)
    return action


def _require_visible(action_id, user, via: str, verb: str) -> None:
    """Through the one read rule: a claim never tells anyone that an action exists. Checked before the
    transaction, so the refusal's record is not rolled back with it."""
    if not selectors.actions_for(user).filter(id=action_id).exists():
        _refused(action_id, user, via, verb)
        raise NotFound("No such action.")


def _locked(action_id) -> ActionRequest:
    try:
        return lock_action(action_id)
    except ActionRequest.DoesNotExist:
        raise NotFound("No such action.") from None


def _refused(action_id, user, via: str, verb: str) -> None:
    exists = ActionRequest.objects.filter(id=action_id).values_list("agent__name", flat=True).first()
    record_refusal(
        actor=Actor.user(user, via),
        verb="claim.refused",
        kind=f"{verb}: not allowed to see this action",
        reason="not allowed to see this action",
        object_type="action",
        object_id=str(action_id),
        action_id=action_id if exists is not None else None,
        agent_name=exists or "",
        data={"verb": verb},
    )


def _push(action: ActionRequest) -> None:
    """Tell the live pages (not the agent: a claim is the reviewers' business) that the action's row changed."""
    event: ActionEvent = {
        "action_id": str(action.id),
        "status": action.status,
        "approvals": approval_count(action),
        "required_approvals": action.required_approvals,
        "reviewer_group_id": action.reviewer_group_id,
    }
    # "kind" tells pages it is not news (static/js/notify.js announces only new proposals).
    outbox.enqueue(OutboxMessage.Kind.PUSH, payload={**event, "kind": "claim"}, action_id=action.id)
