"""Telling humans about actions where they are: Slack channels and email.

A policy names channels (``slack:#sre``, ``email:ops@example.com``). Every
change of an action enqueues one ``notify`` outbox message per channel, in
the transaction of the change; a worker delivers it. Senders render the
action's *current* state when they run, so late or reordered deliveries
converge on the truth, and they keep what they need to update their message
later in a ``Notification`` row.
"""

from __future__ import annotations

from typing import Protocol

from django.utils.module_loading import import_string

from approvals.models import ActionRequest, OutboxMessage
from approvals.outbox import dispatcher as outbox

STATUS = "status"  # the action was created or changed: post or update
REMINDER = "reminder"  # still pending after the policy's reminder delay
EVENTS = (STATUS, REMINDER)


class Sender(Protocol):
    def __call__(self, action: ActionRequest, event: str, target: str) -> None: ...


def channel_kind(channel: str) -> tuple[str, str]:
    kind, _, target = channel.partition(":")
    return kind, target


def status_channels(action: ActionRequest) -> list[str]:
    """Where a change must be told: the policy's channels, and its Slack escalation channels once reminded.

    A reminder posts the whole message (with buttons) in a Slack escalation channel; from then on every
    change must update it there too. The Slack sender only updates what it posted in a channel it does not
    notify, never announces there. Email escalation stays a one-off reminder: a sent mail cannot change.
    """
    escalated = [c for c in action.escalate_channels if channel_kind(c)[0] == "slack"] if action.reminded_at else []
    return list(dict.fromkeys([*action.notify_channels, *escalated]))


def enqueue(action: ActionRequest, event: str, channels: list[str] | None = None) -> None:
    """One notify message per channel (default: ``status_channels``)."""
    for channel in status_channels(action) if channels is None else channels:
        outbox.enqueue(OutboxMessage.Kind.NOTIFY, payload={"event": event, "channel": channel}, action_id=action.id)


SENDERS = {"email": "approvals.notify.email.send", "slack": "approvals.slack.notify.send"}


def deliver(message: OutboxMessage) -> None:
    """Outbox handler (in a worker): the outbox names it (approvals.outbox.dispatcher.NOTIFY_SENDER) rather than
    importing it.

    Raises to have the outbox retry with backoff (approvals.outbox.transport: ``retry_after``, ``permanent``)."""
    action = ActionRequest.objects.select_related("agent", "agent__owner", "reviewer_group").get(id=message.action_id)
    kind, target = channel_kind(message.payload["channel"])
    if kind not in SENDERS:
        raise ValueError(f"no sender for channel kind {kind!r}")
    sender: Sender = import_string(SENDERS[kind])
    sender(action, message.payload["event"], target)
