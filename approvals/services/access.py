"""Time-boxed access and reverts: grant for a time, take it back by itself, extend, end early, undo (issue 23).

A time-boxed action (its type says ``time_boxed``, its params carry ``duration``) that succeeds gets an
``AccessLease``: when the access ends and what reverting it will do, computed by the type's ``reverse`` from what
execution recorded, so the revert only removes what the grant added and never access the person had before.

When the lease is due, ``revert_due`` (beat's sweep) starts the revert: an action of its own, proposed by
Countersign (``system:countersign``), linked to the grant (``reverts``), approved by the floor's rule for reverts
(``policy:revert-floor``: it only takes back what was approved) and executed by the worker under its own grant,
like any action. Everything is in the database, so a revert due while every process was down starts at the next
sweep (late, and the audit says how late), and the lease's row lock and state make it start once. A revert that
fails is tried again with backoff (``retrying``: an alert on every reviewer's desk until it succeeds); it is never
dropped.

Every time is taken from ``timezone.now()`` (tests move the clock instead of sleeping).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from approvals.action_types.durations import DurationError, describe_seconds, parse_duration
from approvals.action_types.params import resolve_credential
from approvals.errors import Conflict, InvalidInput, NotAllowed, NotFound, ServiceError
from approvals.models import AccessLease, ActionRequest, ActionStatus, OutboxMessage, Review
from approvals.models.action import TERMINAL
from approvals.notify import notifications
from approvals.outbox import dispatcher as outbox
from approvals.selectors.presenters import present_action
from approvals.services.approval import complete_approval
from approvals.services.proposals import Proposal, propose_action
from approvals.services.transitions import (
    approval_count,
    audit_action,
    lock_action,
    next_webhook_sequence,
    write_review,
)
from audit.canonical import digest
from audit.chain import Actor
from catalog import registry
from catalog.base import ActionType, Reverse

COUNTERSIGN = Actor.system("countersign")
REVERT_RULE = "revert-floor"
REVERT_POLICY = Actor("policy", REVERT_RULE, "policy")
EXPIRED, ENDED_EARLY, UNDO = "expired", "ended_early", "undo"
# Reverts Countersign proposes and approves itself; an undo goes through the normal policies.
SYSTEM_REVERT_REASONS = frozenset({EXPIRED, ENDED_EARLY})
State = AccessLease.State


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


def retry_delay(attempts: int) -> timedelta:
    """Backoff after the ``attempts``-th failed revert: 30 s, 1 min, 2 min, ... at most an hour (settings)."""
    base = _setting("COUNTERSIGN_REVERT_RETRY_SECONDS", 30)
    ceiling = _setting("COUNTERSIGN_REVERT_RETRY_MAX_SECONDS", 3600)
    return timedelta(seconds=min(ceiling, base * 2 ** max(0, attempts - 1)))


def late_after() -> int:
    """A revert started more than this many seconds after its due time was missed (Countersign was down)."""
    return _setting("COUNTERSIGN_REVERT_LATE_SECONDS", 60)


def is_system_revert(action: ActionRequest) -> bool:
    """Countersign's own revert of a grant that expired or was ended early."""
    return action.reverts_id is not None and action.revert_reason in SYSTEM_REVERT_REASONS


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


# --- telling everyone ---------------------------------------------------------------------------------------


def _announce(action: ActionRequest, event_type: str) -> None:
    """The original's timeline changed: live pages re-fetch it, its Slack message is updated, and the agent's
    webhook hears ``event_type`` (``access.reverted`` ...), all through the outbox, in the caller's transaction."""
    push = {
        "action_id": str(action.id),
        "status": action.status,
        "approvals": approval_count(action),
        "required_approvals": action.required_approvals,
        "reviewer_group_id": action.reviewer_group_id,
    }
    outbox.enqueue(OutboxMessage.Kind.PUSH, payload=push, action_id=action.id)
    notifications.enqueue(action, notifications.STATUS)
    if action.callback_url:
        event = {"type": event_type, "sequence": next_webhook_sequence(action), "at": _iso(timezone.now())}
        outbox.enqueue(
            OutboxMessage.Kind.WEBHOOK, payload={"action": present_action(action), "event": event}, action_id=action.id
        )


# --- after execution (called by approvals.services.execution, in its transaction, the action locked) ---------


def after_execution(action: ActionRequest, outcome: str) -> None:
    """Schedule the revert of a time-boxed grant that succeeded; move a revert's lease; mark an undone action."""
    if is_system_revert(action):
        _revert_finished(action, outcome)
        return
    if outcome != ActionStatus.SUCCEEDED:
        return
    if action.revert_reason == UNDO and action.reverts_id is not None:
        _undo_succeeded(action)
        return
    if action.extends_id is not None:
        _extension_succeeded(action)
        return
    schedule(action)


def _reverse_of(action: ActionRequest, action_type: ActionType) -> Reverse | None:
    params = action.effective_params
    try:
        credential = resolve_credential(action_type, params)
    except InvalidInput:
        credential = None
    return action_type.reverse(params, action.result or {}, action.state_before, credential)


def schedule(action: ActionRequest) -> AccessLease | None:
    """A lease for a succeeded time-boxed action; None when it is not time-boxed. The caller holds its lock."""
    action_type = registry.get(action.action_type)
    params = action.effective_params
    if action_type is None or not action_type.time_boxed or "duration" not in params:
        return None
    try:
        seconds = parse_duration(params["duration"])
    except DurationError:
        return None  # refused at proposal and at every edit: not reachable
    now = timezone.now()
    # From when the change may have taken effect (the execution's start), not from when it was recorded: an
    # outcome a reviewer resolved an hour later does not buy an hour more.
    granted_at = min(action.execution_started_at or now, now)
    expires_at = granted_at + timedelta(seconds=seconds)
    reverse = _reverse_of(action, action_type)
    lease = AccessLease.objects.create(
        action=action,
        state=State.ACTIVE if reverse is not None else State.NOTHING_TO_REVERT,
        granted_at=granted_at,
        expires_at=expires_at,
        next_attempt_at=expires_at,
        revert_params=reverse.params if reverse is not None else {},
        updated_at=now,
    )
    if reverse is None:
        # Everyone already had the access: there is nothing to take back, and nothing must be taken back.
        audit_action(
            action,
            actor=COUNTERSIGN,
            verb="access.nothing_to_revert",
            data={"duration_seconds": seconds, "reason": "the grant changed nothing"},
        )
        return lease
    action.access_expires_at = expires_at
    action.save(update_fields=["access_expires_at"])
    audit_action(
        action,
        actor=COUNTERSIGN,
        verb="access.scheduled",
        data={
            "duration_seconds": seconds,
            "expires_at": _iso(expires_at),
            "revert": {"action_type": reverse.action_type, "params": reverse.params, "summary": reverse.summary},
        },
    )
    _announce(action, "access.scheduled")
    return lease


# --- starting a revert ---------------------------------------------------------------------------------------


def _start_revert(lease: AccessLease, *, reason: str, actor: Actor, now: datetime) -> ActionRequest:
    """Propose, approve and queue the revert of ``lease`` (locked by the caller, its state checked)."""
    original = lock_action(lease.action_id)
    action_type = registry.get(original.action_type)
    if action_type is None:
        raise Conflict(f"action type {original.action_type} is not installed: the revert cannot run")
    late = max(0, int((now - lease.expires_at).total_seconds())) if reason == EXPIRED else 0
    revert = _create_revert(original, lease, action_type, reason=reason, now=now)
    lease.state = State.REVERTING
    lease.reason = lease.reason or reason
    lease.attempts += 1
    lease.revert_action = revert
    lease.updated_at = now
    lease.save()
    audit_action(
        original,
        actor=actor,
        verb="access.revert_started",
        data={
            "revert_action": str(revert.id),
            "reason": reason,
            "due_at": _iso(lease.expires_at),
            "late_seconds": late,
            "missed": late > late_after(),
            "attempt": lease.attempts,
        },
    )
    _announce(original, "access.revert_started")
    review = write_review(
        revert, Review(action=revert, reviewer=None, verdict=Review.Verdict.APPROVE, via=Review.Via.POLICY)
    )
    revert.hold_reviews([review])
    complete_approval(revert, actor=REVERT_POLICY, action_type=action_type)
    return revert


def _create_revert(
    original: ActionRequest, lease: AccessLease, action_type: ActionType, *, reason: str, now: datetime
) -> ActionRequest:
    params = lease.revert_params
    why = "its time ran out" if reason == EXPIRED else "it was ended early"
    explanation = (
        f"rule `{REVERT_RULE}`: Countersign's own revert of a time-boxed grant ({why}); it only takes back what "
        f"the grant added, so the floor's rule for reverts approves it"
    )
    revert = ActionRequest.objects.create(
        agent=original.agent,
        action_type=action_type.name,
        params=params,
        summary=f"Take back ({why}): {original.summary}"[:280],
        context={"reverts": str(original.id), "reason": reason},
        on_behalf_of=original.on_behalf_of,
        on_behalf_of_user=original.on_behalf_of_user,
        request_digest=digest({"reverts": str(original.id), "attempt": lease.attempts + 1, "params": params}),
        callback_url=original.callback_url,
        risk=original.risk,
        modifies_access=original.modifies_access,
        required_approvals=0,
        reviewer_group=original.reviewer_group,
        policy_rule=REVERT_RULE,
        policy_effect="auto_approve",
        policy_explanation=explanation[:500],
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(seconds=settings.COUNTERSIGN_GRANT_TTL_SECONDS),
        reverts=original,
        revert_reason=reason,
    )
    revert.agent = original.agent
    revert.hold_reviews([])
    audit_action(
        revert,
        actor=COUNTERSIGN,
        verb="action.proposed",
        data={
            "action_type": revert.action_type,
            "summary": revert.summary,
            "risk": revert.risk,
            "on_behalf_of": revert.on_behalf_of,
            "modifies_access": revert.modifies_access,
            "params_digest": digest(params),
            "reverts": str(original.id),
            "reason": reason,
            "policy": {"rule": REVERT_RULE, "effect": "auto_approve", "explanation": revert.policy_explanation},
        },
    )
    return revert


def revert_due(now: datetime | None = None, *, limit: int = 100) -> int:
    """The sweep (beat): start every revert that is due, retry failed ones whose backoff passed, and settle
    reverts that ended without telling their lease. Returns how many reverts it started."""
    now = now or timezone.now()
    _reconcile_in_flight()
    due = list(
        AccessLease.objects.filter(state__in=[State.ACTIVE, State.RETRYING], next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
    started = 0
    for lease_id in due:
        try:
            with transaction.atomic():
                # Re-checked under the lock: another sweep (or an early end) may have started it meanwhile.
                lease = (
                    AccessLease.objects.select_for_update(skip_locked=True)
                    .filter(id=lease_id, state__in=[State.ACTIVE, State.RETRYING], next_attempt_at__lte=now)
                    .first()
                )
                if lease is None:
                    continue
                _start_revert(lease, reason=lease.reason or EXPIRED, actor=Actor.system("beat"), now=now)
                started += 1
        except ServiceError as exc:
            # It could not even be proposed (its credential was deleted): an alert, tried again later.
            _record_start_failure(lease_id, exc.detail, now=now)
    return started


def _record_start_failure(lease_id: int, error: str, *, now: datetime) -> None:
    with transaction.atomic():
        lease = AccessLease.objects.select_for_update().filter(id=lease_id).first()
        if lease is None or lease.state not in (State.ACTIVE, State.RETRYING):
            return
        lease.attempts += 1
        _retry_later(lease, error, now=now)


def _retry_later(lease: AccessLease, error: str, *, now: datetime) -> None:
    """The lease's revert failed: an alert until a later attempt succeeds (never dropped). Lease locked."""
    lease.state = State.RETRYING
    lease.reason = lease.reason or EXPIRED
    lease.last_error = error[:2000]
    lease.next_attempt_at = now + retry_delay(lease.attempts)
    lease.updated_at = now
    lease.save()
    original = lock_action(lease.action_id)
    audit_action(
        original,
        actor=COUNTERSIGN,
        verb="access.revert_failed",
        data={
            "attempt": lease.attempts,
            "error": lease.last_error,
            "revert_action": str(lease.revert_action_id) if lease.revert_action_id else None,
            "next_attempt_at": _iso(lease.next_attempt_at),
        },
    )
    _announce(original, "access.revert_failed")


def _reconcile_in_flight() -> None:
    """A revert that ended without passing through after_execution (its grant was refused, it was cancelled):
    its lease learns it here."""
    stuck = list(
        AccessLease.objects.filter(state=State.REVERTING)
        .exclude(revert_action__status__in=[s for s in ActionStatus.values if s not in TERMINAL])
        .values_list("id", flat=True)[:100]
    )
    for lease_id in stuck:
        with transaction.atomic():
            lease = (
                AccessLease.objects.select_for_update(skip_locked=True)
                .filter(id=lease_id, state=State.REVERTING)
                .select_related("revert_action")
                .first()
            )
            if lease is None:
                continue
            revert = lease.revert_action
            if revert is not None and revert.status not in TERMINAL:
                continue
            if revert is not None and revert.status == ActionStatus.SUCCEEDED:
                _mark_reverted(lease, revert, now=timezone.now())
            else:
                error = (revert.result or {}).get("error", "") if revert is not None else ""
                status = revert.status if revert is not None else "gone"
                _retry_later(lease, f"the revert ended {status}" + (f": {error}" if error else ""), now=timezone.now())


def _revert_finished(revert: ActionRequest, outcome: str) -> None:
    lease = AccessLease.objects.select_for_update().filter(revert_action_id=revert.id).first()
    if lease is None or lease.state != State.REVERTING:
        return  # an older attempt, already settled
    now = timezone.now()
    if outcome == ActionStatus.SUCCEEDED:
        _mark_reverted(lease, revert, now=now)
        return
    error = str((revert.result or {}).get("error") or f"the revert ended {outcome}")
    _retry_later(lease, error, now=now)


def _mark_reverted(lease: AccessLease, revert: ActionRequest, *, now: datetime) -> None:
    lease.state = State.REVERTED
    lease.reverted_at = now
    lease.last_error = ""
    lease.updated_at = now
    lease.save()
    original = lock_action(lease.action_id)
    original.reverted_at = original.updated_at = now  # updated_at: Slack redraws a message when it moves
    original.save(update_fields=["reverted_at", "updated_at"])
    late = max(0, int((now - lease.expires_at).total_seconds())) if lease.reason == EXPIRED else 0
    audit_action(
        original,
        actor=COUNTERSIGN,
        verb="access.reverted",
        data={
            "revert_action": str(revert.id),
            "reason": lease.reason,
            "ended_by": lease.ended_by.get_username() if lease.ended_by is not None else None,
            "due_at": _iso(lease.expires_at),
            "late_seconds": late,
            "attempts": lease.attempts,
            "result": {k: v for k, v in (revert.result or {}).items() if k in ("removed", "added", "changed")},
        },
    )
    _announce(original, "access.reverted")


# --- ending early, extending, undoing -----------------------------------------------------------------------


def end_access(action_id, *, actor: Actor, user=None, reason: str = "") -> AccessLease:
    """End a time-boxed grant now: its revert starts at once, as if its time had run out.

    Staff (``user.is_staff``) or an operator's command (``user`` None). A second call finds it no longer active:
    Conflict, and nothing happens twice."""
    if user is not None and not (user.is_active and user.is_staff):
        raise NotAllowed("Only staff end access early.")
    now = timezone.now()
    with transaction.atomic():
        lease = AccessLease.objects.select_for_update().filter(action_id=action_id).first()
        if lease is None:
            if not ActionRequest.objects.filter(id=action_id).exists():
                raise NotFound("No such action.")
            raise Conflict("This action granted no time-boxed access.")
        if lease.state != State.ACTIVE:
            raise Conflict(f"This access is no longer active ({lease.state}).", extra={"state": lease.state})
        original = lock_action(action_id)
        lease.reason = ENDED_EARLY
        lease.ended_by = user
        original.access_expires_at = original.updated_at = now  # updated_at: Slack redraws a message when it moves
        original.save(update_fields=["access_expires_at", "updated_at"])
        audit_action(
            original,
            actor=actor,
            verb="access.end_requested",
            data={"reason": reason[:500], "was_due_at": _iso(lease.expires_at)},
        )
        lease.expires_at = now
        _start_revert(lease, reason=ENDED_EARLY, actor=actor, now=now)
    return lease


def propose_extension(
    action_id, *, duration: Any, agent: Agent | None = None, user=None, summary: str = ""
) -> ActionRequest:
    """Propose more time for an active grant: a new action of the same type with the grant's params and the
    extra ``duration``, decided by the normal policy (the same approvals as the grant). When it succeeds the
    grant's lease ends ``duration`` later than it would have.

    Asked by the agent that made the grant, or by the person it was for (``user``)."""
    original = ActionRequest.objects.select_related("agent", "on_behalf_of_user").filter(id=action_id).first()
    if original is None or (agent is not None and original.agent_id != agent.id):
        raise NotFound("No such action.")
    if user is not None and original.on_behalf_of_user_id != user.id and not user.is_staff:
        raise NotAllowed("Only the person the access is for (or staff) asks to extend it.")
    lease = AccessLease.objects.filter(action=original).first()
    if lease is None or lease.state == State.NOTHING_TO_REVERT:
        raise Conflict("This action granted no time-boxed access.")
    if lease.state != State.ACTIVE:
        raise Conflict(f"This access is no longer active ({lease.state}): propose a new grant.")
    pending = original.extensions.exclude(status__in=TERMINAL).first()
    if pending is not None:
        raise Conflict("An extension of this access is already waiting.", extra={"extension": str(pending.id)})
    action_type = registry.get(original.action_type)
    if action_type is None:
        raise Conflict("This action type is no longer installed.")
    try:
        seconds = parse_duration(duration)
    except DurationError as exc:
        raise InvalidInput(str(exc), errors={"duration": [str(exc)]}) from None
    params = {**original.effective_params, "duration": duration}
    text = summary.strip() or f"Extend by {describe_seconds(seconds)}: {original.summary}"
    extension, _ = propose_action(
        agent=original.agent,
        proposal=Proposal(
            action_type=original.action_type,
            params=params,
            summary=text[:280],
            context={"extends": str(original.id)},
            on_behalf_of=original.on_behalf_of,
            callback_url=original.callback_url,
            extends=original,
        ),
    )
    with transaction.atomic():
        original = lock_action(action_id)
        by = Actor.user(user, "api") if user is not None else Actor.agent(original.agent)
        audit_action(
            original,
            actor=by,
            verb="access.extension_proposed",
            data={"extension": str(extension.id), "duration_seconds": seconds, "status": extension.status},
        )
        _announce(original, "access.extension_proposed")
    return extension


def _extension_succeeded(extension: ActionRequest) -> None:
    lease = AccessLease.objects.select_for_update().filter(action_id=extension.extends_id).first()
    if lease is None or lease.state != State.ACTIVE:
        # Approved after the grant ended: it granted the access again, so it is a grant of its own.
        schedule(extension)
        return
    seconds = parse_duration(extension.effective_params["duration"])
    before = lease.expires_at
    lease.expires_at = before + timedelta(seconds=seconds)
    lease.next_attempt_at = lease.expires_at
    action_type = registry.get(extension.action_type)
    added = _reverse_of(extension, action_type) if action_type is not None else None
    if added is not None:
        # Someone was taken out meanwhile and the extension added them back: the revert takes them out again.
        params = dict(lease.revert_params)
        params["remove"] = sorted({*params.get("remove", []), *added.params.get("remove", [])})
        lease.revert_params = params
    lease.updated_at = timezone.now()
    lease.save()
    original = lock_action(extension.extends_id)
    original.access_expires_at = lease.expires_at
    original.updated_at = timezone.now()  # Slack redraws a message when it moves
    original.save(update_fields=["access_expires_at", "updated_at"])
    extension.access_expires_at = lease.expires_at
    extension.save(update_fields=["access_expires_at"])
    audit_action(
        original,
        actor=COUNTERSIGN,
        verb="access.extended",
        data={
            "extension": str(extension.id),
            "duration_seconds": seconds,
            "from": _iso(before),
            "to": _iso(lease.expires_at),
        },
    )
    _announce(original, "access.extended")


def can_undo(action: ActionRequest) -> bool:
    """Whether "Undo" applies: a succeeded action whose type can reverse it, not reverted, none pending."""
    if action.status != ActionStatus.SUCCEEDED or action.reverted_at is not None or is_system_revert(action):
        return False
    lease = AccessLease.objects.filter(action=action).first()
    if lease is not None:
        return lease.state == State.ACTIVE  # Undo of a time-boxed grant is ending it early
    if action.reversals.exclude(status__in=TERMINAL).exists():
        return False
    action_type = registry.get(action.action_type)
    return action_type is not None and _reverse_of(action, action_type) is not None


def propose_undo(action_id, *, user=None, agent: Agent | None = None) -> ActionRequest:
    """Undo a succeeded reversible action: the type's reverse, proposed as a new action linked to it
    (``reverts``), through the normal policies. Undo of an active time-boxed grant is ending it early
    (staff); returns the revert. Conflict when there is nothing to undo."""
    original = ActionRequest.objects.select_related("agent").filter(id=action_id).first()
    if original is None or (agent is not None and original.agent_id != agent.id):
        raise NotFound("No such action.")
    lease = AccessLease.objects.filter(action=original).first()
    if lease is not None and lease.state == State.ACTIVE:
        by = Actor.user(user, "web") if user is not None else Actor.agent(original.agent)
        if user is None:
            raise NotAllowed("Only staff end time-boxed access early.")
        ended = end_access(action_id, actor=by, user=user, reason="undo")
        return ended.revert_action  # type: ignore[return-value]
    if original.status != ActionStatus.SUCCEEDED:
        raise Conflict("Only a succeeded action can be undone.")
    if original.reverted_at is not None or (lease is not None and lease.holds_access is False):
        raise Conflict("This action was already reverted.")
    if is_system_revert(original):
        raise Conflict("A revert is not undone: propose the access again.")
    pending = original.reversals.exclude(status__in=TERMINAL).first()
    if pending is not None:
        raise Conflict("An undo of this action is already waiting.", extra={"undo": str(pending.id)})
    action_type = registry.get(original.action_type)
    reverse = _reverse_of(original, action_type) if action_type is not None else None
    if reverse is None:
        raise Conflict("This action cannot be undone: its type does not know how to reverse it.")
    undo, _ = propose_action(
        agent=original.agent,
        proposal=Proposal(
            action_type=reverse.action_type,
            params=reverse.params,
            summary=f"Undo: {reverse.summary}"[:280],
            context={"reverts": str(original.id)},
            on_behalf_of=original.on_behalf_of,
            callback_url=original.callback_url,
            reverts=original,
            revert_reason=UNDO,
        ),
    )
    with transaction.atomic():
        original = lock_action(action_id)
        by = Actor.user(user, "web") if user is not None else Actor.agent(original.agent)
        audit_action(original, actor=by, verb="action.undo_proposed", data={"undo": str(undo.id)})
        _announce(original, "action.undo_proposed")
    return undo


def _undo_succeeded(undo: ActionRequest) -> None:
    original = lock_action(undo.reverts_id)
    if original.reverted_at is not None:
        return
    original.reverted_at = original.updated_at = timezone.now()  # updated_at: Slack redraws a message when it moves
    original.save(update_fields=["reverted_at", "updated_at"])
    audit_action(original, actor=COUNTERSIGN, verb="action.undone", data={"undo": str(undo.id)})
    _announce(original, "action.undone")
