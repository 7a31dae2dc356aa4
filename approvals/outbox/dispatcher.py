"""The one place side effects are dispatched.

``enqueue`` records a message in the caller's transaction and arranges for
delivery right after commit; nothing is sent for a rolled-back transaction.
A message is claimed with a conditional UPDATE (a lease), so two processes
never deliver it at the same time; a failed delivery is retried with backoff
by ``sweep``, which beat runs every few seconds.

Senders (webhooks, Slack, email) report a failed delivery through the one contract of approvals.outbox.transport
(``TransportError``: ``permanent``, ``retry_after``); any other exception is a transient failure. The senders
are named here, not imported: they enqueue through this module (a change's notifications, a refresh of a Slack
message), so importing them back would make a circle.

Every process shares the channel layer (Redis: embedded or not), so a push is sent from whichever process
delivers it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from approvals.live.events import groups_for, send_to_groups
from approvals.models import ActionRequest, OutboxMessage
from approvals.models.grant import record_dispatch
from approvals.outbox import marks
from approvals.outbox.transport import TransportError
from audit.chain import Actor, insert_with_events, record_event

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
WRITER_LEASE = timedelta(seconds=15)  # a message its writer delivers right after commit (enqueue)
MAX_BACKOFF_SECONDS = 300
SWEEP_GRACE = timedelta(seconds=2)


def enqueue(kind: str, *, payload: dict, action_id=None, delay: float = 0) -> OutboxMessage:
    """Record a message in the caller's transaction; delivered right after commit, or ``delay`` seconds later.

    A delayed message (an approval's execution, held for the reviewer's undo window) is not due until then:
    nothing claims it sooner, and until it is claimed it can be withdrawn (approvals.services.undo). After commit
    a worker task is queued to run when it falls due, so it goes out promptly; the sweep delivers it if that
    task is lost.
    """
    conn = transaction.get_connection()
    if not conn.in_atomic_block:
        raise RuntimeError("outbox messages are enqueued inside the transaction that causes them")
    if delay > 0:
        message = OutboxMessage.objects.create(
            kind=kind, payload=payload, action_id=action_id, next_attempt_at=timezone.now() + timedelta(seconds=delay)
        )
        transaction.on_commit(lambda: _deliver_when_due(message.id, delay))
        return message
    # Written already claimed by this process, which delivers it right after the commit: no claiming statement then.
    # Worker kinds are claimed after commit instead (webhooks in order, see _CLAIM_SQL; their worker takes the lease
    # over). If this process dies before delivering, the sweep takes the message when the writer's short lease ends;
    # a push or an execute message that goes out twice is harmless (a live event is idempotent on the page, an
    # execution is redeemed at most once).
    held = None if kind in WORKER_KINDS else timezone.now() + WRITER_LEASE
    message = OutboxMessage(kind=kind, payload=payload, action_id=action_id, claimed_until=held)
    insert_with_events(message)  # its id is there by the commit, when the hooks below read it
    kept = _kept_executions.get()
    if kind == OutboxMessage.Kind.EXECUTE and kept is not None:
        transaction.on_commit(lambda: kept.append(message))  # the caller executes it first (keep_executions)
    else:
        transaction.on_commit(lambda: deliver_ids([message.id], written=message))
    return message


_kept_executions: ContextVar[list[OutboxMessage] | None] = ContextVar("countersign_kept_executions", default=None)


@contextmanager
def keep_executions() -> Iterator[list[OutboxMessage]]:
    """Execute messages committed inside are kept for the caller instead of going to the broker after the commit.

    For a caller that runs the execution itself, at once, in this process (the gateway's auto-approved call): handed
    to the broker first, each message made a worker load the action only to find it already executed, which cost
    the gateway a third of its throughput (docs/BENCHMARKS.md §10). The caller settles them with
    ``settle_kept_executions`` once it has tried. Should this process die first, the message is still written,
    and the sweep delivers it once the writer's lease has passed (the worker then runs it, or finds it done).
    """
    kept: list[OutboxMessage] = []
    token = _kept_executions.set(kept)
    try:
        yield kept
    finally:
        _kept_executions.reset(token)


def settle_kept_executions(kept: list[OutboxMessage], *, executed: bool) -> None:
    """``executed``: the action left ``approved`` here (run, or found taken): the messages are done, no broker.
    Otherwise (held by a pause, an error before the grant was redeemed) they are delivered as usual."""
    if not kept:
        return
    if not executed:
        for message in kept:
            deliver_ids([message.id], written=message)
        return
    try:
        _run(_EXECUTED_HERE_SQL, [timezone.now(), [message.id for message in kept]])
    except Exception:  # like a failed delivery: the sweep delivers it later, and the worker finds it done
        log.exception("could not settle execute messages %s; the sweep will deliver them", [m.id for m in kept])


def _deliver_when_due(message_id: int, delay: float) -> None:
    from config.celery_app import PUBLISH_RETRY, app

    try:
        # The worker claims it like anyone else (due, unheld, undelivered): a withdrawn message stays put.
        app.send_task("approvals.deliver_outbox", args=[message_id], countdown=delay, retry_policy=PUBLISH_RETRY)
    except Exception:  # the broker is down: the sweep delivers it when it is due
        log.exception("could not schedule outbox message #%s; the sweep will deliver it", message_id)


def deliver_ids(ids: list[int], *, written: OutboxMessage | None = None) -> None:
    for message_id in ids:
        try:
            deliver(message_id, written=written if written is not None and written.id == message_id else None)
        except Exception:  # delivery must never break the request that committed
            log.exception("outbox delivery of #%s failed; the sweep will retry", message_id)


# Kinds whose delivery is slow network I/O: run by a worker, never inside
# the web request that committed them or by beat.
WORKER_KINDS = frozenset({OutboxMessage.Kind.WEBHOOK, OutboxMessage.Kind.NOTIFY})


# Every proposal and decision runs these two right after its commit: written out, they cost a third of what
# building the same statements through the ORM did (docs/BENCHMARKS.md, section 1).
# One action's webhooks go out in order: one is not claimed while an earlier one of its action is undelivered
# (still retrying), so the agent never hears "approved" before "pending". Answered from the partial index
# outbox_webhook_undelivered (action_id, id), which holds only undelivered webhooks.
_CLAIM_SQL = (
    "UPDATE {table} SET claimed_until = %s WHERE id = %s AND delivered_at IS NULL "
    "AND next_attempt_at <= %s AND (claimed_until IS NULL OR claimed_until < %s) "
    "AND (kind <> 'webhook' OR NOT EXISTS (SELECT 1 FROM {table} earlier WHERE earlier.action_id = {table}.action_id "
    "AND earlier.kind = 'webhook' AND earlier.delivered_at IS NULL AND earlier.id < {table}.id))"
)
# Only a worker kind's lease is taken over: its dispatcher claimed it and handed it to this worker. Any other kind
# reaching a worker (an execution held for its undo window) is claimed as usual, when due and unheld.
_TAKE_OVER_SQL = (
    "UPDATE {table} SET claimed_until = %s WHERE id = %s AND delivered_at IS NULL "
    "AND kind IN ('webhook', 'notify') "  # WORKER_KINDS
    "AND (kind <> 'webhook' OR NOT EXISTS (SELECT 1 FROM {table} earlier WHERE earlier.action_id = {table}.action_id "
    "AND earlier.kind = 'webhook' AND earlier.delivered_at IS NULL AND earlier.id < {table}.id))"
)
_EXECUTED_HERE_SQL = (
    "UPDATE {table} SET delivered_at = %s, attempts = attempts + 1, claimed_until = NULL, last_error = '' "
    "WHERE id = ANY(%s) AND delivered_at IS NULL"
)
_DELIVERED_SQL = (
    "UPDATE {table} SET delivered_at = %s, attempts = %s, claimed_until = NULL, last_error = '' WHERE id = %s"
)


def _run(sql: str, params: list) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql.format(table=connection.ops.quote_name(OutboxMessage._meta.db_table)), params)
        return cursor.rowcount


def _claim(message_id: int, *, take_over: bool = False, written: OutboxMessage | None = None) -> OutboxMessage | None:
    if written is not None and written.claimed_until is not None:
        return written  # claimed when written (enqueue), and delivered by its writer
    now = timezone.now()
    if take_over:
        claimed = _run(_TAKE_OVER_SQL, [now + LEASE, message_id])
    else:
        claimed = _run(_CLAIM_SQL, [now + LEASE, message_id, now, now])
    if claimed != 1:
        return None
    if written is not None:
        # Claimed right after the commit that wrote it: the row is still what this process wrote (any
        # other delivery attempt would have left it delivered or not yet due), so it need not be read back.
        written.claimed_until = now + LEASE
        return written
    return OutboxMessage.objects.get(id=message_id)


def deliver(message_id: int, *, in_worker: bool = False, written: OutboxMessage | None = None) -> bool:
    """Deliver one message if it is due and nobody else holds it; True when delivered.

    ``in_worker`` is set by the worker task that was handed a worker-kind
    message: it takes over the lease its dispatcher left. ``written`` is the
    message as ``enqueue`` wrote it, when delivering right after that commit.
    """
    message = _claim(message_id, take_over=in_worker, written=written)
    if message is None and in_worker:
        message = _claim(message_id)  # not a worker kind: a delayed message that fell due
    if message is None:
        return False
    handler = _hand_to_worker if message.kind in WORKER_KINDS and not in_worker else _HANDLERS[message.kind]
    try:
        handler(message)
    except Exception as exc:
        _failed(message, exc)
        return False
    if handler is _hand_to_worker:
        return False  # the lease stays until the worker delivers it, or expires and the sweep re-dispatches
    if written is not None and message.kind == OutboxMessage.Kind.PUSH and marks.batched():
        marks.delivered_marks.note(message.id, timezone.now())  # still under its writer's lease until marked
    else:
        _run(_DELIVERED_SQL, [timezone.now(), message.attempts + 1, message.id])
    if in_worker and message.kind == OutboxMessage.Kind.WEBHOOK:
        _deliver_next_webhook(message)
    return True


def _failed(message: OutboxMessage, exc: Exception) -> None:
    """Retry with backoff (never sooner than a ``TransportError``'s ``retry_after``), or stop at a permanent one."""
    attempts = message.attempts + 1
    error = f"{type(exc).__name__}: {exc}"[:2000]
    if isinstance(exc, TransportError) and exc.permanent:
        # Sending it again cannot help: settled with its error, kept for the admin until retention prunes it.
        OutboxMessage.objects.filter(id=message.id).update(
            attempts=attempts, claimed_until=None, delivered_at=timezone.now(), last_error=error
        )
        log.error("outbox %s #%s failed for good (attempt %s): %s", message.kind, message.id, attempts, error)
        return
    delay = min(MAX_BACKOFF_SECONDS, 2**attempts)
    if isinstance(exc, TransportError) and exc.retry_after is not None:
        delay = max(delay, exc.retry_after)
    OutboxMessage.objects.filter(id=message.id).update(
        attempts=attempts,
        claimed_until=None,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        last_error=error,
    )
    log.warning("outbox %s #%s failed (attempt %s): %s", message.kind, message.id, attempts, type(exc).__name__)


def _deliver_next_webhook(delivered: OutboxMessage) -> None:
    """The action's next webhook may have been waiting for this one: send it now, from this worker, rather than
    at the next sweep. Claimed like any message (due, nobody holding it, nothing earlier undelivered)."""
    next_id = (
        OutboxMessage.objects.filter(
            kind=OutboxMessage.Kind.WEBHOOK,
            action_id=delivered.action_id,
            delivered_at__isnull=True,
            id__gt=delivered.id,
        )
        .order_by("id")
        .values_list("id", flat=True)
        .first()
    )
    if next_id is not None and _claim(next_id) is not None:
        deliver(next_id, in_worker=True)


def _hand_to_worker(message: OutboxMessage) -> None:
    from config.celery_app import PUBLISH_RETRY, app

    app.send_task("approvals.deliver_outbox", args=[message.id], retry_policy=PUBLISH_RETRY)


def _deliver_push(message: OutboxMessage) -> None:
    event = {"type": "action.event", "event": {**message.payload, "seq": message.id}}
    send_to_groups(groups_for(message.payload), event)  # one round trip to Redis for all the groups


def _deliver_execute(message: OutboxMessage) -> None:
    """Hand the execute task to the broker, counted on its grant first (``dispatched_at``, ``dispatches``) and
    named after that dispatch, so the lost-execution sweep can ask the broker for it
    (approvals.services.execution.redispatch_lost_executions)."""
    from config.celery_app import PUBLISH_RETRY, app

    task_id = record_dispatch(message.payload.get("grant"))
    app.send_task(
        "approvals.execute_action", args=[str(message.action_id)], task_id=task_id, retry_policy=PUBLISH_RETRY
    )


# Named, not imported: the senders enqueue through this module (see the docstring).
NOTIFY_SENDER = "approvals.notify.notifications.deliver"
WEBHOOK_SENDER = "approvals.notify.webhooks.post_webhook"


def _deliver_notification(message: OutboxMessage) -> None:
    try:
        import_string(NOTIFY_SENDER)(message)
    except Exception as exc:
        _audit_notification_failure(message, exc)
        raise


def _audit_notification_failure(message: OutboxMessage, exc: Exception) -> None:
    """``notification.failed``: which channel, which attempt, the error's type (its text may quote a target)."""
    agent_name = ActionRequest.objects.filter(id=message.action_id).values_list("agent__name", flat=True).first() or ""
    try:
        with transaction.atomic():
            record_event(
                actor=Actor.system("worker"),
                verb="notification.failed",
                object_type="action",
                object_id=str(message.action_id),
                action_id=message.action_id,
                agent_name=agent_name,
                data={
                    "channel": message.payload.get("channel", ""),
                    "event": message.payload.get("event", ""),
                    "attempt": message.attempts + 1,
                    "error": type(exc).__name__,
                },
            )
    except Exception:  # the send already failed; report this too, and let the outbox retry the message
        log.exception("could not audit the failed notification #%s", message.id)


_HANDLERS = {
    OutboxMessage.Kind.PUSH: _deliver_push,
    OutboxMessage.Kind.EXECUTE: _deliver_execute,
    OutboxMessage.Kind.WEBHOOK: lambda message: import_string(WEBHOOK_SENDER)(message),
    OutboxMessage.Kind.NOTIFY: _deliver_notification,
}


def sweep(limit: int = 500) -> int:
    """Deliver what is due and was not delivered right after its commit."""
    now = timezone.now()
    pending = OutboxMessage.objects.filter(
        delivered_at__isnull=True, next_attempt_at__lte=now, created_at__lte=now - SWEEP_GRACE
    )
    # A webhook waiting for an earlier one of its action is due but cannot be claimed: left out, so that a dead
    # callback's queue never fills the sweep's batch and starves what can go.
    earlier_webhook = OutboxMessage.objects.filter(
        kind=OutboxMessage.Kind.WEBHOOK,
        action_id=OuterRef("action_id"),
        delivered_at__isnull=True,
        id__lt=OuterRef("id"),
    )
    pending = pending.filter(~Q(kind=OutboxMessage.Kind.WEBHOOK) | ~Exists(earlier_webhook))
    delivered = 0
    for message_id in pending.order_by("id").values_list("id", flat=True)[:limit]:
        if deliver(message_id):
            delivered += 1
    return delivered
