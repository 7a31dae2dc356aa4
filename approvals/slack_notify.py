"""Slack notifications: one message per action and channel, kept in step with the action.

``send`` is the sender ``approvals.notifications.deliver`` calls (in a worker,
through the outbox) for ``slack:<channel>``. It always renders the action's
*current* state from the database, so late, repeated or reordered deliveries
converge on the truth:

- the action is pending and nothing was posted yet: post the message with
  Approve / Reject buttons (a later ``status`` event for an action that was
  never announced and is no longer pending posts nothing);
- it was posted and its status or approval count changed: ``chat.update`` it
  (buttons replaced by the outcome, "1 of 2 approvals" while they grow);
- it finished executing and the result was not threaded yet: reply in the thread;
- ``reminder``: a reply in the thread, also sent to the channel (or the whole
  message, in a channel that never had it, such as an escalation channel);
- ``refresh``: re-render even if nothing changed (a fresh preview after a
  Slack approval was refused because the target changed).

The ``Notification`` row for (action, channel) is locked while Slack is
called, so two workers never post the same action twice. Rate limits raise
``RetryLater`` (the outbox waits Slack's ``Retry-After``) and outages raise
(the outbox backs off); nothing is lost and no other message waits. Errors
retrying cannot fix (channel_not_found, invalid_auth, no token) are audited
as ``notification.failed`` and not retried; the next event tries again.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from slack_sdk import WebClient

from approvals import outbox
from approvals.action_types.base import Preview
from approvals.audit import Actor, record_event
from approvals.models import ActionRequest, ActionStatus, Notification, OutboxMessage, Review
from approvals.notifications import REMINDER, STATUS
from approvals.previews import compute_preview, fingerprint
from approvals.slack_blocks import action_message, reminder_text, result_message
from approvals.slack_client import SlackNotConfigured, SlackRefused, call, web_client

log = logging.getLogger(__name__)

REFRESH = "refresh"  # re-render now, even if the status and approvals did not change
EVENTS = (STATUS, REMINDER, REFRESH)
WORKER = Actor.system("worker")
FINISHED = (ActionStatus.SUCCEEDED, ActionStatus.FAILED)


def send(action: ActionRequest, event: str, target: str) -> None:
    """Post, update or thread what ``event`` calls for in Slack channel ``target`` ("#sre" or "C0123ABCD")."""
    if event not in EVENTS:
        return
    channel = f"slack:{target}"
    existing = Notification.objects.filter(action=action, channel=channel).first()
    posted = bool(existing and existing.external_id)
    if not posted and not action.is_pending:
        return  # never announced; nobody needs to hear about it now
    try:
        client = web_client()
    except SlackNotConfigured as exc:
        _failed(action, channel, event, str(exc))
        return
    preview = None
    if action.is_pending and (event != REMINDER or not posted):
        # Network I/O to the target: before taking any lock.
        preview = compute_preview(action.action_type, action.params, action=action, via="slack")
    try:
        with transaction.atomic():
            row, _ = Notification.objects.select_for_update().get_or_create(action=action, channel=channel)
            current = ActionRequest.objects.select_related("agent", "agent__owner", "reviewer_group").get(id=action.id)
            done = _sync(client, row, current, event, target, preview)
            if done:
                row.updated_at = timezone.now()
                row.save()
                record_event(
                    actor=WORKER,
                    verb="notification.sent",
                    object_type="action",
                    object_id=str(current.id),
                    action_id=current.id,
                    agent_name=current.agent.name,
                    data={"channel": channel, "event": event, "did": done, "ts": row.external_id},
                )
    except SlackRefused as exc:
        _failed(action, channel, event, str(exc))


def _sync(
    client: WebClient, row: Notification, action: ActionRequest, event: str, target: str, preview: Preview | None
) -> list[str]:
    """Bring the Slack message in line with ``action`` (row locked); returns what was done."""
    reviews = list(action.reviews.select_related("reviewer"))
    approvals = sum(1 for r in reviews if r.verdict == Review.Verdict.APPROVE)
    done: list[str] = []
    if not row.external_id:
        if not action.is_pending:
            return done
        text, blocks = _render(action, reviews, preview)
        data = call(client, "chat_postMessage", channel=target, text=text, blocks=blocks, unfurl_links=False)
        row.external_channel, row.external_id = str(data["channel"]), str(data["ts"])
        done.append("posted")
        if event == REMINDER:
            row.reminders_sent += 1
    elif event == REMINDER:
        if action.is_pending:
            call(
                client,
                "chat_postMessage",
                channel=row.external_channel,
                thread_ts=row.external_id,
                reply_broadcast=True,
                text=reminder_text(action, approvals, settings.COUNTERSIGN_BASE_URL),
                unfurl_links=False,
            )
            row.reminders_sent += 1
            done.append("reminded")
    elif event == REFRESH or (row.rendered_status, row.rendered_approvals) != (action.status, approvals):
        text, blocks = _render(action, reviews, preview)
        call(client, "chat_update", channel=row.external_channel, ts=row.external_id, text=text, blocks=blocks)
        done.append("updated")
    if action.status in FINISHED and row.external_id and not row.result_posted:
        text, blocks = result_message(action)
        call(
            client,
            "chat_postMessage",
            channel=row.external_channel,
            thread_ts=row.external_id,
            text=text,
            blocks=blocks,
        )
        row.result_posted = True
        done.append("result")
    if event != REMINDER or "posted" in done:
        row.rendered_status, row.rendered_approvals = action.status, approvals
    return done


def _render(action: ActionRequest, reviews: list[Review], preview: Preview | None) -> tuple[str, list[dict]]:
    if action.is_pending and preview is None:
        # only on a rare race; see send()
        preview = compute_preview(action.action_type, action.params, action=action, via="slack")
    return action_message(
        action,
        reviews=reviews,
        base_url=settings.COUNTERSIGN_BASE_URL,
        preview=preview,
        fingerprint=fingerprint(preview) if preview is not None else "",
    )


def _failed(action: ActionRequest, channel: str, event: str, error: str) -> None:
    log.warning("Slack notification for %s to %s failed: %s", action.id, channel, error)
    with transaction.atomic():
        record_event(
            actor=WORKER,
            verb="notification.failed",
            object_type="action",
            object_id=str(action.id),
            action_id=action.id,
            agent_name=action.agent.name,
            data={"channel": channel, "event": event, "error": error[:500]},
        )


def request_refresh(action: ActionRequest, slack_channel: str, message_ts: str) -> bool:
    """Have the message at (slack_channel, message_ts) re-rendered with a fresh preview, through the outbox."""
    row = Notification.objects.filter(action=action, external_channel=slack_channel, external_id=message_ts).first()
    if row is None:
        return False
    with transaction.atomic():
        outbox.enqueue(
            OutboxMessage.Kind.NOTIFY, payload={"event": REFRESH, "channel": row.channel}, action_id=action.id
        )
    return True
