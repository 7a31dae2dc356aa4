"""Thin Celery tasks: take ids, call a service."""

from __future__ import annotations

from celery import shared_task

from approvals import services
from approvals.outbox import dispatcher as outbox
from approvals.services import access, retention
from approvals.slack import interactions as slack_interactions
from audit import chain, checkpoints


@shared_task(name="approvals.execute_action")
def execute_action(action_id: str) -> str:
    return services.execute_action(action_id)


@shared_task(name="approvals.expire_due_actions")
def expire_due_actions() -> int:
    return services.expire_due_actions()


@shared_task(name="approvals.settle_interrupted_executions")
def settle_interrupted_executions() -> int:
    return services.settle_interrupted_executions()


@shared_task(name="approvals.fail_stuck_executions")
def fail_stuck_executions() -> int:
    """The interrupted-execution sweep's name before heartbeats: a message still queued under it runs the sweep."""
    return services.settle_interrupted_executions()


@shared_task(name="approvals.sweep_outbox")
def sweep_outbox() -> int:
    """Beat, and each worker as it (re)connects to the broker: what a broker outage leaves behind. Execute tasks
    the broker lost are queued again (once each), then the outbox delivers what is due."""
    services.redispatch_lost_executions()
    return outbox.sweep()


@shared_task(name="approvals.deliver_outbox")
def deliver_outbox(message_id: int) -> bool:
    return outbox.deliver(message_id, in_worker=True)


@shared_task(name=slack_interactions.TASK)
def slack_interaction(interaction: dict) -> str:
    """An Approve / Reject click or the reject modal, handed over by POST /slack/interactivity."""
    return slack_interactions.handle(slack_interactions.Interaction(**interaction))


@shared_task(name="approvals.revert_due_access")
def revert_due_access() -> int:
    """Beat: start the reverts of time-boxed access that ended, and retry failed ones (approvals.services.access)."""
    return access.revert_due()


@shared_task(name="approvals.send_due_reminders")
def send_due_reminders() -> int:
    return services.send_due_reminders()


@shared_task(name="approvals.report_refusal_counts")
def report_refusal_counts() -> int:
    """Beat: the refusals counted (not written one by one) in minutes that are over (audit.chain)."""
    return chain.report_refusal_counts()


@shared_task(name="approvals.audit_checkpoint")
def audit_checkpoint() -> int:
    """Beat: sign the audit chain's head into the log (audit.checkpoints); -1 when no key is set."""
    try:
        return checkpoints.emit_checkpoint().seq
    except checkpoints.CheckpointError as exc:
        checkpoints.log.error("no audit checkpoint: %s", exc)  # loud every interval, without a traceback
        return -1


@shared_task(name="approvals.prune_expired_records")
def prune_expired_records() -> int:
    """Beat: delivered outbox rows, webhook delivery logs and finished actions' notifications past retention."""
    return retention.prune_expired_records().total


@shared_task(name="approvals.beat_heartbeat")
def beat_heartbeat() -> None:
    """Beat schedules this so that it has something to publish often: the heartbeat itself is written by beat
    when it publishes the task (config/heartbeat.py), so a worker that is down does not make beat look dead.
    Nothing to do here."""
