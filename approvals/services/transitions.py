"""Moving an action along its state machine: the one place that does it."""

from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet
from django.utils import timezone

from agents.models import Agent
from approvals.live.events import ActionEvent
from approvals.models import ActionRequest, OutboxMessage, Review
from approvals.notify import notifications
from approvals.outbox import dispatcher as outbox
from approvals.policies.separation_of_duties import counted_approvals, review_counts
from approvals.policies.store import HEAD_COLUMNS, PolicyHead, head_of
from approvals.selectors.presenters import present_action
from audit.chain import Actor, insert_with_events, record_event, update_with_events
from config.prepared import PreparedInstances, PreparedQuery


# Every decision, cancellation and execution starts here: statements compiled once per process (config/prepared.py).
def _locked(action_id: Any) -> QuerySet[ActionRequest]:
    return ActionRequest.objects.select_for_update(of=("self",)).filter(id=action_id)


_LOCKED_RELATED = ("agent", "reviewer_group", "on_behalf_of_user")
_LOCKED = PreparedInstances(ActionRequest, _locked, related=_LOCKED_RELATED, action_id=ActionRequest._meta.pk)
# An approval decides under the rule in force: the policy head read by the statement that locks the action, where it
# was a statement of its own (issue 21). Fresh all the same, on every approval: as of the statement's start (a wait
# for another decision's lock re-reads the action, not the head), never kept from one request to the next.
_LOCKED_WITH_POLICY_HEAD = PreparedInstances(
    ActionRequest,
    _locked,
    related=_LOCKED_RELATED,
    extra=HEAD_COLUMNS,
    action_id=ActionRequest._meta.pk,
)
_LOCKED_FOR_AGENT = PreparedInstances(
    ActionRequest,
    lambda action_id, agent_id: ActionRequest.objects.select_for_update(of=("self",)).filter(
        id=action_id, agent_id=agent_id
    ),
    related=("agent", "reviewer_group"),
    action_id=ActionRequest._meta.pk,
    agent_id=Agent._meta.pk,
)
_COUNTED = PreparedQuery(
    lambda action_id: Review.objects.filter(action_id=action_id).filter(counted_approvals()).values_list("id"),
    action_id=ActionRequest._meta.pk,
)


def lock_action(action_id: Any, *, agent: Agent | None = None) -> ActionRequest:
    """Re-read the action under a row lock. Raises ActionRequest.DoesNotExist."""
    if agent is None:
        action = _LOCKED.first(action_id=action_id)
    else:
        action = _LOCKED_FOR_AGENT.first(action_id=action_id, agent_id=agent.pk)
    if action is None:
        raise ActionRequest.DoesNotExist("ActionRequest matching query does not exist.")
    return action


def lock_action_with_policy_head(action_id: Any) -> tuple[ActionRequest, PolicyHead]:
    """``lock_action``, and the policy head read by the same statement, for ``store.active_rules(head)``."""
    found = _LOCKED_WITH_POLICY_HEAD.first_and_extra(action_id=action_id)
    if found is None:
        raise ActionRequest.DoesNotExist("ActionRequest matching query does not exist.")
    action, (number, digest) = found
    return action, head_of(number, digest)


def write_review(action: ActionRequest, review: Review) -> Review:
    """Write ``review`` of ``action`` (with the transaction's other writes, audit.chain) and mark the action reviewed.

    The database marks an action reviewed as its first review is written, whoever writes it (``has_reviews``, a
    trigger of migration 0021). Marked here too, the action's own INSERT or UPDATE in this transaction writes it, and
    the trigger finds nothing left to write: one version of the row per decision instead of two."""
    insert_with_events(review)
    action.has_reviews = True
    return review


def approval_count(action: ActionRequest) -> int:
    """Approvals that count: from someone eligible under the rule now in force (permissions.counted_approvals); of
    the reviews the action holds when its reviews were read or written in this transaction (hold_reviews)."""
    if action.held_reviews is not None:
        return sum(1 for review in action.held_reviews if review_counts(review, action))
    return len(_COUNTED.rows(action_id=action.id))


def transition(action: ActionRequest, to: str, *, actor: Actor, verb: str, data: dict[str, Any] | None = None) -> None:
    """Change status, audit it and publish it. The caller holds the row lock, or is writing the action: a proposal
    that policy decides as it is made is written once, in its decided state (approvals.services.proposals)."""
    before = action.move_to(to)
    # action.save(), by a statement written once (config/prepared.py): of the columns changed since the locked read;
    # with the transaction's other writes (audit.chain)
    if action._state.adding:
        insert_with_events(action)
    else:
        update_with_events(action)
    audit_action(action, actor=actor, verb=verb, data={"from": before, "to": to, **(data or {})})
    publish(action)


def audit_action(action: ActionRequest, *, actor: Actor, verb: str, data: dict[str, Any] | None = None) -> None:
    record_event(
        actor=actor,
        verb=verb,
        object_type="action",
        object_id=str(action.id),
        action_id=action.id,
        agent_name=action.agent.name,
        data=data or {},
    )


def publish(action: ActionRequest, *, approvals: int | None = None) -> None:
    """Tell live pages and the agent that the action changed (after commit)."""
    if approvals is None:
        approvals = approval_count(action)
    event: ActionEvent = {
        "action_id": str(action.id),
        "status": action.status,
        "approvals": approvals,
        "required_approvals": action.required_approvals,
        "reviewer_group_id": action.reviewer_group_id,
    }
    outbox.enqueue(OutboxMessage.Kind.PUSH, payload=dict(event), action_id=action.id)
    notifications.enqueue(action, notifications.STATUS)
    if action.callback_url:
        # A snapshot: the agent learns each status in order, even if the action moved on before delivery
        # (approvals.outbox.dispatcher delivers one action's webhooks in sequence), and can tell a redelivery by its
        # number.
        snapshot = {"type": f"action.{action.status}", "sequence": next_webhook_sequence(action), "at": _iso_now()}
        outbox.enqueue(
            OutboxMessage.Kind.WEBHOOK,
            payload={"action": present_action(action), "event": snapshot},
            action_id=action.id,
        )


def next_webhook_sequence(action: ActionRequest) -> int:
    """Number the action's next webhook event: 1, 2, 3… with no gaps, in the order of its changes.

    Counted in the database, in the caller's transaction (which holds the action's row lock or just created
    it), so a stale copy of the action cannot hand out a number twice.
    """
    ActionRequest.objects.filter(id=action.id).update(webhook_sequence=F("webhook_sequence") + 1)
    action.webhook_sequence = ActionRequest.objects.filter(id=action.id).values_list("webhook_sequence", flat=True)[0]
    return action.webhook_sequence


def _iso_now() -> str:
    return timezone.now().isoformat().replace("+00:00", "Z")
