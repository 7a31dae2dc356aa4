"""What happens when an action has all the approvals it needs."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from approvals.action_types.params import resolve_credential
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, OutboxMessage
from approvals.outbox import dispatcher as outbox
from approvals.services.transitions import audit_action, transition
from audit.canonical import digest
from audit.chain import Actor, insert_with_events
from catalog.base import ActionType

UNDOABLE_VIA = frozenset({"web", "api"})


def complete_approval(action: ActionRequest, *, actor: Actor, action_type: ActionType) -> None:
    """Approve (caller holds the lock); mint the grant and enqueue execution."""
    if not action_type.executes:
        # decision.only: the agent acts itself, so approval is the end.
        action.finished_at = timezone.now()
    transition(action, ActionStatus.APPROVED, actor=actor, verb="action.approved")
    if not action_type.executes:
        return
    # A person's approval from the pages or the API, where it can be withdrawn (approvals.services.undo), waits out
    # the undo window before its execution is dispatched; Slack has no undo button, and a policy nobody to change
    # their mind.
    delay = settings.COUNTERSIGN_UNDO_SECONDS if actor.type == "user" and actor.via in UNDOABLE_VIA else 0
    mint_grant_and_enqueue(action, action_type=action_type, actor=actor, delay=delay)


def mint_grant_and_enqueue(
    action: ActionRequest, *, action_type: ActionType, actor: Actor, delay: float = 0
) -> ExecutionGrant:
    """A single-use grant bound to the action, its credential and its approved params; then queue the run,
    ``delay`` seconds from now (the undo window) or at once."""
    credential = resolve_credential(action_type, action.effective_params)
    grant = insert_with_events(
        ExecutionGrant(
            action=action,
            credential=credential,
            params_digest=digest(action.effective_params),
            expires_at=timezone.now() + timedelta(seconds=settings.COUNTERSIGN_GRANT_TTL_SECONDS),
        )
    )
    audit_action(
        action,
        actor=Actor.system("policy" if actor.type == "policy" else actor.via),
        verb="grant.minted",
        data={
            "grant": str(grant.id),
            "credential": credential.name if credential else None,
            "params_digest": grant.params_digest,
            "expires_at": grant.expires_at.isoformat(),
        },
    )
    outbox.enqueue(OutboxMessage.Kind.EXECUTE, payload={"grant": str(grant.id)}, action_id=action.id, delay=delay)
    return grant
