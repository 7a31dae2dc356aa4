"""Running approved actions, at most once, and telling what happened.

1. Redeem the grant and move to ``executing`` in one committed transaction,
   before any side effect: a redelivered task finds ``executing`` and stops.
2. Run the executor outside any transaction, with a client narrowed to the
   approved parameters, while a heartbeat thread renews
   ``execution_heartbeat_at`` every ``COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS``.
3. Record the outcome: ``succeeded``, ``failed`` (known not to have taken
   effect) or ``unknown`` (it may have reached the target and nobody knows
   whether it took effect: the executor lost the connection after sending, or
   ran out of time mid-call).

A worker killed between 1 and 3 stops beating; ``settle_interrupted_executions``
finds the stale heartbeat and re-queues the action if its type says these
params are idempotent, or else settles it ``unknown`` rather than run it
blindly again. ``redispatch_lost_executions`` queues again an execution whose
task the broker lost before any worker took it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.utils import timezone

from approvals.credentials.crypto import CredentialDecryptError, decrypt_secret
from approvals.credentials.redaction import Redactor, apply_visibility, redactor_for
from approvals.credentials.scoped import credential_view
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, OutboxMessage
from approvals.models.grant import execute_task_id
from approvals.ops import broker_queue
from approvals.outbox import dispatcher as outbox
from approvals.services import access, containment
from approvals.services.approval import mint_grant_and_enqueue
from approvals.services.transitions import audit_action, lock_action, transition
from audit.canonical import digest
from audit.chain import Actor, audited_atomic
from catalog import registry
from catalog.base import ActionType, ExecutionError
from config.prepared import PreparedInstances, update

log = logging.getLogger(__name__)
WORKER = Actor.system("worker")
BEAT = Actor.system("beat")
# What an agent, a reviewer or a webhook reader is told to do with an ``unknown`` outcome.
UNKNOWN_OUTCOME_ADVICE = "check the target before retrying"
OUTCOME_VERBS: dict[str, str] = {
    ActionStatus.SUCCEEDED: "execution.succeeded",
    ActionStatus.FAILED: "execution.failed",
    ActionStatus.UNKNOWN: "execution.outcome_unknown",
}


def execute_action(action_id) -> str:
    """Run one approved action; returns the status it ended in (or found)."""
    plan = _redeem(action_id)
    if plan is None:
        return ActionRequest.objects.values_list("status", flat=True).get(id=action_id)
    action, params, credential = plan
    # _redeem hands out a plan only for an installed action type (_grant_refusal refuses the others).
    action_type = cast(ActionType, registry.get(action.action_type))
    secret = client = before = None
    try:
        with ExecutionHeartbeat(action.id, attempt=action.execution_attempts):
            secret = decrypt_secret(credential.secret_encrypted) if credential else None
            client = action_type.make_client(
                credential_view(credential, secret), params, idempotency_key=str(action.id)
            )
            # What the target held before, for the type's reverse (file.write: the content it replaces).
            before = action_type.record_before(params, client)
            result = action_type.execute(params, client)
        outcome, payload = ActionStatus.SUCCEEDED, result
    except ExecutionError as exc:
        if exc.outcome_unknown:
            outcome = ActionStatus.UNKNOWN
            payload = {"error": exc.message, "advice": UNKNOWN_OUTCOME_ADVICE, **exc.details}
        else:
            outcome, payload = ActionStatus.FAILED, {"error": exc.message, **exc.details}
    except SoftTimeLimitExceeded:
        # Celery stopped the executor at the soft time limit, wherever it was: perhaps mid-call to the target.
        outcome = ActionStatus.UNKNOWN
        payload = {
            "error": f"execution stopped at the task's time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s), "
            "possibly in the middle of a call to the target",
            "advice": UNKNOWN_OUTCOME_ADVICE,
        }
    except CredentialDecryptError as exc:
        outcome, payload = ActionStatus.FAILED, {"error": str(exc)}
    except Exception as exc:
        # The message could echo anything, the secret included: report the type, log a redacted trace.
        trace = redactor_for(credential.kind if credential else None, secret, client).text(traceback.format_exc())
        log.error("executor for %s crashed:\n%s", action.action_type, trace)
        outcome, payload = ActionStatus.FAILED, {"error": f"executor crashed ({type(exc).__name__})"}
    # Every form of every secret the client put on the wire (approvals.credentials.redaction), in the result.
    redactor = redactor_for(credential.kind if credential else None, secret, client)
    attempt = action.execution_attempts
    if before is not None:
        before = redactor.json(before)
    return _finish(
        action_id, attempt, outcome, result_for_agent(payload, redactor, credential, action_type), before=before
    )


def result_for_agent(payload: dict[str, Any], redactor: Redactor, credential, action_type) -> dict[str, Any]:
    """The one result the agent, reviewers, webhooks and Slack see: scrubbed, then cut to what the
    credential shows (``result_visibility``; the request headers Countersign sent are never in a result)."""
    payload = redactor.json(payload)
    if credential is not None and action_type is not None:
        visibility = credential.result_visibility or []
        payload = apply_visibility(payload, visibility, action_type.result_parts)
    return payload


# of=self: the credential join is nullable, and PostgreSQL refuses FOR UPDATE on it.
_NEWEST_GRANT_LOCKED = PreparedInstances(
    ExecutionGrant,
    lambda action_id: (
        ExecutionGrant.objects.select_for_update(of=("self",)).filter(action_id=action_id).order_by("-created_at")[:1]
    ),
    related=("credential",),
    action_id=ActionRequest._meta.pk,
)


def _redeem(action_id):
    with audited_atomic():
        try:
            action = lock_action(action_id)
        except ActionRequest.DoesNotExist:
            log.warning("execute_action: no action %s", action_id)
            return None
        action_type = registry.get(action.action_type)
        if action.status != ActionStatus.APPROVED or (action_type is not None and not action_type.executes):
            return None  # already executing, finished, never approved, or nothing for Countersign to run
        if containment.executions_paused():
            # Held, not refused: the action stays approved; resume_executions dispatches it with a fresh grant.
            audit_action(action, actor=WORKER, verb="execution.held", data={"reason": "executions are paused"})
            return None
        grant = _NEWEST_GRANT_LOCKED.first(action_id=action.id)
        params = action.effective_params
        refusal = _grant_refusal(grant, action, action_type, params)
        if refusal:
            audit_action(action, actor=WORKER, verb="grant.refused", data={"reason": refusal})
            action.result = {"error": f"execution refused: {refusal}"}
            transition(
                action,
                ActionStatus.FAILED,
                actor=WORKER,
                verb="execution.failed",
                data={"error": action.result["error"]},
            )
            access.after_execution(action, ActionStatus.FAILED)  # a refused revert is retried, not dropped
            return None
        grant = cast(ExecutionGrant, grant)  # _grant_refusal refused a missing grant
        grant.redeemed_at = timezone.now()
        update(grant)  # the row is locked (_NEWEST_GRANT_LOCKED): written whole, by a statement built once
        audit_action(action, actor=WORKER, verb="grant.redeemed", data={"grant": str(grant.id)})
        # The first beat: the sweep measures staleness from here until the heartbeat thread takes over.
        action.execution_heartbeat_at = grant.redeemed_at
        transition(action, ActionStatus.EXECUTING, actor=WORKER, verb="execution.started")
        return action, params, grant.credential


def _grant_refusal(
    grant: ExecutionGrant | None, action: ActionRequest, action_type: ActionType | None, params: dict[str, Any]
) -> str | None:
    if action_type is None:
        return f"action type {action.action_type} is not installed"
    if grant is None:
        return "no execution grant"
    if grant.redeemed_at is not None:
        return "grant already redeemed"
    if grant.expires_at <= timezone.now():
        return "grant expired"
    if grant.params_digest != digest(params):
        return "parameters changed after approval"
    expected_credential = action_type.credential_name(params)
    actual = grant.credential.name if grant.credential else None
    if expected_credential != actual:
        return "credential does not match the approved one"
    if access.is_system_revert(action):
        # Countersign's own revert of a grant that ended: it takes back access, so it runs even when the agent
        # lost its standing (a frozen agent's grants end all the same).
        return None
    # The approval is not a licence once the agent lost its standing: disabled, frozen, keyless, or no longer
    # holding the capability (or its constraints no longer admit these params). The action fails as revoked.
    return containment.execution_refusal(action, params)


# How long a worker keeps trying to record an outcome while the database is unreachable (a PostgreSQL restart):
# what it learnt from the target is worth waiting for; the sweep would only be able to say "unknown".
FINISH_RETRY_SECONDS = 60.0


def _finish(action_id, attempt: int, outcome: str, payload: dict[str, Any], *, before: Any = None) -> str:
    give_up_at = time.monotonic() + FINISH_RETRY_SECONDS
    pause = 0.2
    while True:
        try:
            return _record_outcome(action_id, attempt, outcome, payload, before=before)
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + pause > give_up_at:
                raise
            log.warning("recording the outcome of %s failed (%s); retrying in %.1fs", action_id, exc, pause)
            connection.close()  # the connection the restart cut; the next try opens a fresh one
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def _record_outcome(action_id, attempt: int, outcome: str, payload: dict[str, Any], *, before: Any = None) -> str:
    with audited_atomic():
        action = lock_action(action_id)
        if action.status != ActionStatus.EXECUTING or action.execution_attempts != attempt:
            # The sweep took this execution for dead (its heartbeat went stale) and settled it, or retried it and
            # another attempt is running now: keep what this worker learnt after all on the record, for whoever
            # checks the target, without touching the action.
            log.warning("execution of %s finished %s after it was settled %s", action_id, outcome, action.status)
            audit_action(
                action,
                actor=WORKER,
                verb="execution.finished_late",
                data={"outcome": outcome, "status": action.status, "result": _audit_excerpt(payload)},
            )
            return action.status
        action.result = payload
        if before is not None:
            action.state_before = before
        transition(action, outcome, actor=WORKER, verb=OUTCOME_VERBS[outcome], data={"result": _audit_excerpt(payload)})
        # Time-boxed access: a grant that took effect is scheduled to be taken back; a revert's end moves its lease.
        access.after_execution(action, outcome)
        return outcome


def _audit_excerpt(payload: dict[str, Any]) -> dict[str, Any]:
    keep = {k: payload[k] for k in ("status_code", "error") if k in payload}
    keep["result_digest"] = digest(payload)
    return keep


# --- heartbeats ------------------------------------------------------------------------------------------------


class ExecutionHeartbeat:
    """Renews ``execution_heartbeat_at`` every ``COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS`` while the executor runs.

    A thread of its own with its own database connection (closed when it stops), so that a slow call to the
    target, which holds the worker's thread, still beats. Each beat is one UPDATE guarded by
    ``status = 'executing'`` and this attempt: once the sweep settled or retried the action, beating changes
    nothing. It stops when the executor returns or raises; a worker that dies stops beating with it, which is
    what the sweep looks for.
    """

    def __init__(self, action_id: uuid.UUID, *, attempt: int):
        self.action_id, self.attempt = action_id, attempt
        self.interval = float(settings.COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{action_id}", daemon=True)

    def __enter__(self) -> ExecutionHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    ActionRequest.objects.filter(
                        id=self.action_id, status=ActionStatus.EXECUTING, execution_attempts=self.attempt
                    ).update(execution_heartbeat_at=timezone.now())
                except DatabaseError as exc:
                    # A missed beat, not a dead worker: try again at the next one, on a fresh connection.
                    log.warning("heartbeat of execution %s not written (%s)", self.action_id, type(exc).__name__)
                    connection.close()
        finally:
            connection.close()  # this thread's own connection


def heartbeat_stale_before() -> datetime:
    """A heartbeat older than this missed ``COUNTERSIGN_EXECUTION_HEARTBEAT_MISSES`` beats in a row."""
    window = settings.COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS * settings.COUNTERSIGN_EXECUTION_HEARTBEAT_MISSES
    return timezone.now() - timedelta(seconds=window)


def unbeaten_started_before() -> datetime:
    """An execution with no heartbeat at all was started by a worker from before heartbeats: it is interrupted
    once no task could still be running it (Celery's hard time limit) and the heartbeat window has passed."""
    window = settings.CELERY_TASK_TIME_LIMIT + (
        settings.COUNTERSIGN_EXECUTION_HEARTBEAT_SECONDS * settings.COUNTERSIGN_EXECUTION_HEARTBEAT_MISSES
    )
    return timezone.now() - timedelta(seconds=window)


def _interrupted(stale_before: datetime, unbeaten_before: datetime) -> Q:
    return Q(status=ActionStatus.EXECUTING) & (
        Q(execution_heartbeat_at__lte=stale_before)
        | Q(execution_heartbeat_at__isnull=True, execution_started_at__lte=unbeaten_before)
    )


def settle_interrupted_executions(limit: int = 500) -> int:
    """Settle executions whose worker stopped beating: retry the idempotent, tell the rest ``unknown``.

    Never re-run blindly: only an action type that says these params are idempotent is re-queued (with a fresh
    grant, the same idempotency key), at most ``COUNTERSIGN_MAX_EXECUTION_ATTEMPTS`` times in all. Anything
    else may or may not have reached its target before the worker died, so it ends ``unknown`` with the advice
    to check the target: ``failed`` would invite the agent to repeat something that may have happened.
    """
    stale_before, unbeaten_before = heartbeat_stale_before(), unbeaten_started_before()
    candidates = list(
        ActionRequest.objects.filter(_interrupted(stale_before, unbeaten_before)).values_list("id", flat=True)[:limit]
    )
    settled = 0
    for action_id in candidates:
        with audited_atomic():
            # Re-checked under the lock: the worker may have beaten or finished since the list was read.
            action = (
                ActionRequest.objects.select_for_update(of=("self",))
                .select_related("agent", "reviewer_group")
                .filter(_interrupted(stale_before, unbeaten_before), id=action_id)
                .first()
            )
            if action is None:
                continue
            _settle_interrupted(action)
            settled += 1
    return settled


def _settle_interrupted(action: ActionRequest) -> None:
    action_type = registry.get(action.action_type)
    idempotent = action_type is not None and action_type.is_idempotent(action.effective_params)
    # _interrupted selects only actions with a heartbeat or a start time.
    last_seen = cast(datetime, action.execution_heartbeat_at or action.execution_started_at)
    last_beat = last_seen.isoformat().replace("+00:00", "Z")
    # ``action_type is not None`` is implied by ``idempotent``; said again for the type checker.
    if (
        idempotent
        and action_type is not None
        and action.execution_attempts < settings.COUNTERSIGN_MAX_EXECUTION_ATTEMPTS
    ):
        transition(
            action,
            ActionStatus.APPROVED,
            actor=BEAT,
            verb="execution.retrying",
            data={
                "attempts": action.execution_attempts,
                "reason": "interrupted; idempotent",
                "last_heartbeat": last_beat,
            },
        )
        mint_grant_and_enqueue(action, action_type=action_type, actor=BEAT)
        return
    why = "attempts exhausted" if idempotent else "not idempotent"
    action.result = {
        "error": f"execution interrupted: its worker stopped (last heartbeat {last_beat}) after "
        f"{action.execution_attempts} attempt(s), possibly after reaching the target; not retried ({why})",
        "advice": UNKNOWN_OUTCOME_ADVICE,
        "attempts": action.execution_attempts,
    }
    transition(
        action,
        ActionStatus.UNKNOWN,
        actor=BEAT,
        verb="execution.outcome_unknown",
        data={"reason": f"interrupted; {why}", "attempts": action.execution_attempts, "last_heartbeat": last_beat},
    )


# --- dispatches and lost executions ------------------------------------------------------------------------


def redispatch_lost_executions(limit: int = 100) -> int:
    """Queue execution again, once, for an approved action whose execute task the broker lost.

    Handing a task to the broker is not running it: a Redis restart without persistence drops every queued
    task, and with it the only message that would have run an approved action. A grant's execute task is
    lost when all of these hold:

    - its action is still ``approved``, the grant is its newest and unredeemed, and no heartbeat was written
      since the grant was minted: no worker started it;
    - its newest dispatch was handed to the broker more than ``COUNTERSIGN_EXECUTE_REDISPATCH_SECONDS`` ago,
      and no execute message of the action is still waiting in the outbox;
    - the broker holds no task with that dispatch's id, neither queued nor delivered and unacknowledged
      (approvals.ops.broker_queue). A task still queued behind others is slow, not lost. Or a worker took it
      more than ``COUNTERSIGN_EXECUTE_ABANDONED_SECONDS`` ago and never started it: a worker reserves no more
      tasks than it has free processes (prefetch multiplier 1, acknowledged late) and starts what it takes at
      once, so the one that took it died; the broker would give it back only after its visibility timeout
      (10 min). If that worker was merely slow, the single-use grant still runs the action once.

    Decided under the lock of the action and then the grant (the order redemption takes them), with the
    dispatch count re-read inside: sweeps that piled up while workers were down and run together redispatch
    one lost execution once. The redispatch goes through the outbox, which records it on the grant when it
    hands it to the broker. A grant dispatched before dispatches were recorded (none counted) has no task id
    to look for: it is taken as lost on age alone, as before.
    """
    if containment.executions_paused():
        return 0  # held on purpose, not lost: resume_executions dispatches them
    cutoff = timezone.now() - timedelta(seconds=settings.COUNTERSIGN_EXECUTE_REDISPATCH_SECONDS)
    newer_grant = ExecutionGrant.objects.filter(action_id=OuterRef("action_id"), created_at__gt=OuterRef("created_at"))
    executes = OutboxMessage.objects.filter(kind=OutboxMessage.Kind.EXECUTE, action_id=OuterRef("action_id"))
    candidates = list(
        ExecutionGrant.objects.filter(
            redeemed_at__isnull=True,
            action__status=ActionStatus.APPROVED,
            action__finished_at__isnull=True,  # decision.only ends approved, with finished_at
        )
        .filter(Q(action__execution_heartbeat_at__isnull=True) | Q(action__execution_heartbeat_at__lt=F("created_at")))
        .exclude(Exists(newer_grant))
        .exclude(Exists(executes.filter(delivered_at__isnull=True)))
        .annotate(handed_at=Subquery(executes.order_by("-id").values("delivered_at")[:1]))
        .filter(Q(dispatched_at__lte=cutoff) | Q(dispatches=0, handed_at__lte=cutoff))
        .values_list("id", "action_id", "dispatches")[:limit]
    )
    if not candidates:
        return 0
    held = broker_queue.tasks_held({execute_task_id(g, n) for g, _, n in candidates if n})
    if held is None:
        return 0  # the broker cannot be read: nothing is known to be lost
    abandoned_before = time.time() - settings.COUNTERSIGN_EXECUTE_ABANDONED_SECONDS
    redispatched = 0
    for grant_id, action_id, dispatches in candidates:
        reason = "execute task lost by the broker"
        task_id = execute_task_id(grant_id, dispatches) if dispatches else None
        if task_id in held:
            taken_at = held[task_id]
            if taken_at is None or taken_at > abandoned_before:
                continue  # queued, or being started
            reason = "execute task taken by a worker that never started it"
        if _redispatch(grant_id, action_id, dispatches, reason=reason):
            redispatched += 1
    return redispatched


def _redispatch(grant_id, action_id, dispatches_seen: int, *, reason: str) -> bool:
    with audited_atomic():
        action = lock_action(action_id)
        grant = ExecutionGrant.objects.select_for_update(of=("self",)).filter(id=grant_id).first()
        if (
            action.status != ActionStatus.APPROVED
            or grant is None
            or grant.redeemed_at is not None
            or grant.dispatches != dispatches_seen  # dispatched again since the broker was read
            or ExecutionGrant.objects.filter(action_id=action_id, created_at__gt=grant.created_at).exists()
            # Another sweep decided first (its message may not have reached the broker yet).
            or OutboxMessage.objects.filter(
                kind=OutboxMessage.Kind.EXECUTE, action_id=action_id, delivered_at__isnull=True
            ).exists()
        ):
            return False
        log.warning("action %s approved but never started (%s); queueing it again", action_id, reason)
        audit_action(
            action,
            actor=BEAT,
            verb="execution.redispatched",
            data={"grant": str(grant.id), "dispatches": grant.dispatches, "reason": reason},
        )
        outbox.enqueue(
            OutboxMessage.Kind.EXECUTE, payload={"grant": str(grant.id), "redispatch": True}, action_id=action_id
        )
        return True
