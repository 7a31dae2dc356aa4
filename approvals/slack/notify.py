"""Slack notifications: every message Countersign posts about an action, kept in step with the action.

``send`` is the sender ``approvals.notify.notifications.deliver`` calls (in a worker,
through the outbox) for ``slack:<channel>``. It always renders the action's
*current* state from the database, so late, repeated or reordered deliveries
converge on the truth:

- the action is pending and nothing was posted in a channel the policy
  notifies: post the message with Approve / Reject buttons (a later ``status``
  event for an action that was never announced and is no longer pending posts
  nothing);
- ``reminder``: a reply in the thread, also sent to the channel (or the whole
  message, in a channel that never had it, such as an escalation channel);
- every change: each copy posted in the channel (the message, each reminder)
  is brought up to date with ``chat.update`` (buttons replaced by the outcome,
  "1 of 2 approvals" while they grow; a reminder says it was answered);
- it finished executing and the result was not threaded yet: reply in the thread;
- ``refresh``: re-render the message even if nothing changed (a fresh preview
  after a Slack approval was refused because the target changed).

Copies. Each message posted is a ``Notification`` row: ``slack:#sre`` for the
message, ``slack:#sre~reminder-1`` for a reminder, ``slack:#sre~result`` for the
result (``~`` never occurs in a channel name or ID). Each carries Slack message
metadata ``countersign_action`` with the action id and the copy's name.

Never twice. A post whose answer is lost (Slack accepted it, then the client's
timeout fired; the worker died) must not be posted again. So the copy's row
is committed *before* the post; a later attempt that finds the row without a
``ts`` looks in the channel (``conversations.history`` with metadata, or the
thread's replies) and adopts the message it finds instead of posting. If it
cannot look (no ``channels:history`` / ``groups:history`` scope, the channel's
ID unknown) it does not post: it audits ``notification.failed`` and logs an
error (docs/slack.md). A Slack answer that says nothing was posted (refused,
rate limited) removes the row, so the next attempt posts without looking.

The rows of a channel are locked while Slack is called, so two workers never
post the same copy twice. Rate limits raise ``RetryLater`` (approvals.outbox.transport: the
outbox waits Slack's ``Retry-After``) and outages raise (the outbox backs off); nothing is
lost and no other message waits. Errors retrying cannot fix (channel_not_found,
invalid_auth, no token) are audited as ``notification.failed`` and not
retried; the next event tries again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from slack_sdk import WebClient

from approvals.models import ActionRequest, ActionStatus, Notification, OutboxMessage, Review
from approvals.notify.notifications import REMINDER, STATUS
from approvals.outbox import dispatcher as outbox
from approvals.outbox.transport import RetryLater
from approvals.presentation.previews import compute_preview, fingerprint
from approvals.selectors.actions import reviews_of
from approvals.slack.blocks import action_message, counted, reminder_text, result_message
from approvals.slack.client import SlackNotConfigured, SlackRefused, call, web_client
from audit.chain import Actor, record_event
from catalog.base import Preview

log = logging.getLogger(__name__)

REFRESH = "refresh"  # re-render now, even if the status and approvals did not change
EVENTS = (STATUS, REMINDER, REFRESH)
WORKER = Actor.system("worker")
FINISHED = (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.UNKNOWN)

METADATA_EVENT = "countersign_action"  # Slack message metadata event_type on every message Countersign posts
MAIN = "message"
RESULT = "result"
COPY_SEP = "~"
# How far before a copy's row was written to look for it: Slack's clock against ours, and the post's duration.
LOOKBACK = timedelta(minutes=5)
HISTORY_PAGE = 200
HISTORY_PAGES = 5
PASSES = 5  # each pass settles one copy (the message, a reminder, the result) after committing its row


def copy_key(channel: str, copy: str) -> str:
    """The Notification.channel of ``copy`` in ``channel`` ("slack:#sre", "slack:#sre~reminder-1")."""
    return channel if copy == MAIN else f"{channel}{COPY_SEP}{copy}"


def copy_name(key: str) -> str:
    _, sep, copy = key.partition(COPY_SEP)
    return copy if sep else MAIN


def base_channel(key: str) -> str:
    return key.partition(COPY_SEP)[0]


def _copy_rows(action: ActionRequest, channel: str) -> QuerySet[Notification]:
    return Notification.objects.filter(action=action).filter(
        Q(channel=channel) | Q(channel__startswith=channel + COPY_SEP)
    )


class CannotCheck(SlackRefused):
    """An earlier post may have reached Slack and Countersign cannot look: it does not post again."""


@dataclass
class _Pass:
    """One locked look at a channel's copies: what to post (already marked by a committed row) and what was done."""

    client: WebClient
    channel: str  # "slack:#sre"
    target: str  # "#sre" or "C0123ABCD", as the policy names it
    action: ActionRequest
    event: str
    rows: dict[str, Notification]
    marked: str | None  # the copy key whose row was committed for this pass's post
    fresh: bool  # that row was written by this pass: no earlier attempt can have posted it
    preview: Preview | None
    done: list[str] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)
    approvals: int = 0


def send(action: ActionRequest, event: str, target: str) -> None:
    """Post, update or thread what ``event`` calls for in Slack channel ``target`` ("#sre" or "C0123ABCD")."""
    if event not in EVENTS:
        return
    channel = f"slack:{target}"
    rows = {r.channel: r for r in _copy_rows(action, channel)}
    main = rows.get(channel)
    posted = bool(main and main.external_id)
    unsure = main is not None and not main.external_id  # a post may have reached Slack
    if not posted and not unsure and not _announces(action, channel, event):
        return  # never announced here; nobody needs to hear about it now
    try:
        client = web_client()
    except SlackNotConfigured as exc:
        _failed(action, channel, event, str(exc))
        return
    preview = None
    if action.is_pending and (event != REMINDER or not posted):
        # Network I/O to the target: before taking any lock.
        preview = compute_preview(action.action_type, action.params, action=action, via="slack")
    done: list[str] = []
    for attempt in range(PASSES):
        marked = _next_post(action, channel, event, done)
        if marked is None and attempt:
            return  # nothing more to post: the first pass already brought every copy up to date
        fresh = False
        if marked:
            # Committed before Slack is called: if the answer is lost, the next attempt knows to look first.
            fresh = Notification.objects.get_or_create(action=action, channel=marked)[1]
        try:
            step = _locked_pass(client, action, channel, target, event, marked, fresh, preview)
        except (SlackRefused, RetryLater) as exc:
            not_posted = getattr(exc, "not_posted", None)
            if not_posted:  # Slack answered: nothing was posted, so the next attempt need not look
                Notification.objects.filter(action=action, channel=not_posted, external_id="").delete()
            if isinstance(exc, RetryLater):
                raise
            if isinstance(exc, CannotCheck):
                log.error("Slack: not re-posting %s for %s in %s: %s", marked, action.id, target, exc)
            _failed(action, channel, event, str(exc))
            return
        done.extend(step)
        if not step:
            return


def _announces(action: ActionRequest, channel: str, event: str) -> bool:
    """Whether the message itself belongs in ``channel`` now: pending, and notified (or reminded) there."""
    return action.is_pending and (event == REMINDER or channel in action.notify_channels)


def _next_post(action: ActionRequest, channel: str, event: str, done: list[str]) -> str | None:
    """The copy key this pass may post (its row is committed first), from what is committed now."""
    rows = {r.channel: r for r in _copy_rows(action, channel)}
    main = rows.get(channel)
    if main is None or not main.external_id:
        return channel if main is not None or _announces(action, channel, event) else None
    unsure = [key for key, row in rows.items() if not row.external_id]
    if unsure:
        return unsure[0]  # an earlier attempt may have posted it: settle that first (found, posted or dropped)
    if event == REMINDER and action.is_pending and not _reminded(action, channel, done):
        return copy_key(channel, f"reminder-{main.reminders_sent + 1}")
    if action.status in FINISHED and not main.result_posted and "result" not in done:
        return copy_key(channel, RESULT)
    return None


def _reminded(action: ActionRequest, channel: str, done: list[str]) -> bool:
    """Whether this reminder event was already carried out in the channel by an earlier pass."""
    if "posted" in done or "reminded" in done or any(d.startswith("found reminder") for d in done):
        return True
    # In a channel it only reaches by escalation, the message found *is* the reminder.
    return "found" in done and channel not in action.notify_channels


def _locked_pass(
    client: WebClient,
    action: ActionRequest,
    channel: str,
    target: str,
    event: str,
    marked: str | None,
    fresh: bool,
    preview: Preview | None,
) -> list[str]:
    with transaction.atomic():
        rows = {r.channel: r for r in _copy_rows(action, channel).select_for_update().order_by("id")}
        current = ActionRequest.objects.select_related("agent", "agent__owner", "reviewer_group").get(id=action.id)
        step = _Pass(client, channel, target, current, event, rows, marked, fresh, preview)
        done = _sync(step)
        if done:
            for row in rows.values():
                row.save()
            main = rows.get(channel)
            record_event(
                actor=WORKER,
                verb="notification.sent",
                object_type="action",
                object_id=str(current.id),
                action_id=current.id,
                agent_name=current.agent.name,
                data={"channel": channel, "event": event, "did": done, "ts": main.external_id if main else ""},
            )
        return done


def _sync(p: _Pass) -> list[str]:
    """Bring every copy in the channel in line with the action (rows locked); returns what was done."""
    action = p.action
    p.reviews = reviews_of(action)
    p.approvals = len(counted(action, p.reviews))
    main = p.rows.get(p.channel)
    if main is None or not main.external_id:
        if p.marked != p.channel or main is None:
            return p.done  # another worker settled it, or there is nothing to post here
        if not p.fresh and _adopt(p, main, MAIN):
            p.done.append("found")
        elif _announces(action, p.channel, p.event):
            text, blocks = _render(action, p.reviews, p.preview)
            data = _post(p, main, MAIN, channel=p.target, text=text, blocks=blocks)
            main.external_channel, main.external_id = str(data["channel"]), str(data["ts"])
            _rendered(p, main)
            p.done.append("posted")
            if p.event == REMINDER:
                main.reminders_sent += 1
        else:
            main.delete()  # looked: it never reached the channel, and now it should not
            p.rows.pop(p.channel)
            return p.done
    elif p.marked and p.marked in p.rows and not p.rows[p.marked].external_id:
        _settle_copy(p, main, p.rows[p.marked])
    _update_copies(p)
    return p.done


def _settle_copy(p: _Pass, main: Notification, row: Notification) -> None:
    """Find, post or drop the reminder or result whose row was committed for this pass."""
    copy = copy_name(row.channel)
    action = p.action
    if not p.fresh and _adopt(p, row, copy, thread_of=main):
        p.done.append(f"found {copy}")
    elif copy.startswith("reminder-") and p.event == REMINDER and action.is_pending:
        text = reminder_text(action, p.approvals, settings.COUNTERSIGN_BASE_URL)
        data = _post(
            p,
            row,
            copy,
            channel=main.external_channel,
            thread_ts=main.external_id,
            reply_broadcast=True,
            text=text,
        )
        row.external_channel, row.external_id = str(data["channel"]), str(data["ts"])
        _rendered(p, row)
        p.done.append("reminded")
    elif copy == RESULT and action.status in FINISHED and not main.result_posted:
        text, blocks = result_message(action)
        data = _post(p, row, copy, channel=main.external_channel, thread_ts=main.external_id, text=text, blocks=blocks)
        row.external_channel, row.external_id = str(data["channel"]), str(data["ts"])
        p.done.append("result")
    else:
        row.delete()  # not in Slack, and no longer called for (or another worker did it)
        p.rows.pop(row.channel)
        return
    if copy == RESULT:
        _rendered(p, row)  # the result is history, not state: it is never updated
        main.result_posted = True
    else:
        main.reminders_sent = max(main.reminders_sent, int(copy.removeprefix("reminder-") or 0))


def _update_copies(p: _Pass) -> None:
    """``chat.update`` every posted copy (the message, each reminder) that does not show the action as it is now."""
    action = p.action
    for key, row in p.rows.items():
        if not row.external_id or copy_name(key) == RESULT:
            continue
        is_main = key == p.channel
        # An edit changes what the message shows without changing the status or the count: the action's
        # updated_at, mirrored on the row when it was rendered, says that it changed.
        stale = (row.rendered_status, row.rendered_approvals) != (action.status, p.approvals) or (
            row.updated_at < action.updated_at
        )
        if not stale and not (is_main and p.event == REFRESH):
            continue
        if is_main:
            text, blocks = _render(action, p.reviews, p.preview)
            content: dict[str, Any] = {"text": text, "blocks": blocks}
        else:
            content = {"text": reminder_text(action, p.approvals, settings.COUNTERSIGN_BASE_URL)}
        call(p.client, "chat_update", channel=row.external_channel, ts=row.external_id, **content)
        _rendered(p, row)
        p.done.append("updated" if is_main else f"updated {copy_name(key)}")


def _rendered(p: _Pass, row: Notification) -> None:
    """``row`` now shows the action as read in this pass (its status, count, and the version it was at)."""
    row.rendered_status, row.rendered_approvals = p.action.status, p.approvals
    row.updated_at = p.action.updated_at


def _metadata(action: ActionRequest, copy: str) -> dict[str, Any]:
    return {"event_type": METADATA_EVENT, "event_payload": {"action_id": str(action.id), "copy": copy}}


def _post(p: _Pass, row: Notification, copy: str, **kwargs: Any) -> dict[str, Any]:
    try:
        return call(p.client, "chat_postMessage", metadata=_metadata(p.action, copy), unfurl_links=False, **kwargs)
    except (SlackRefused, RetryLater) as exc:
        exc.not_posted = row.channel  # Slack said no: nothing reached the channel
        raise


def _adopt(p: _Pass, row: Notification, copy: str, *, thread_of: Notification | None = None) -> bool:
    """Look in Slack for ``copy`` posted by an attempt whose answer was lost; record its ts if found.

    Raises ``CannotCheck`` when Slack will not let Countersign look (it then does not post again).
    """
    oldest = f"{(row.created_at - LOOKBACK).timestamp():.6f}"
    wanted = _metadata(p.action, copy)
    try:
        channel_id = thread_of.external_channel if thread_of is not None else _channel_id(p.client, p.channel, p.target)
        if not channel_id:
            return False  # no such channel: nothing can have been posted there
        for message in _messages(p.client, channel_id, oldest, thread_ts=thread_of.external_id if thread_of else ""):
            metadata = message.get("metadata") or {}
            if (
                metadata.get("event_type") == METADATA_EVENT
                and metadata.get("event_payload") == wanted["event_payload"]
            ):
                row.external_channel, row.external_id = channel_id, str(message["ts"])
                row.rendered_status = ""  # what it shows is unknown: update it
                return True
    except SlackRefused as exc:
        raise CannotCheck(
            exc.method,
            f"{exc.error}: an earlier post may have reached Slack and Countersign may not read the channel to "
            "check (grant channels:history and groups:history); not posting again",
        ) from None
    return False


def _messages(client: WebClient, channel_id: str, oldest: str, *, thread_ts: str = ""):
    """The channel's recent messages (or a thread's replies), with their metadata, newest pages first."""
    method, extra = ("conversations_replies", {"ts": thread_ts}) if thread_ts else ("conversations_history", {})
    cursor = ""
    for _ in range(HISTORY_PAGES):
        data = call(
            client,
            method,
            channel=channel_id,
            oldest=oldest,
            limit=HISTORY_PAGE,
            include_all_metadata=True,
            cursor=cursor or None,
            **extra,
        )
        yield from data.get("messages") or []
        cursor = (data.get("response_metadata") or {}).get("next_cursor") or ""
        if not cursor:
            return


def _channel_id(client: WebClient, channel: str, target: str) -> str:
    """The Slack ID of ``target``: itself when the policy names it by ID, else as learnt from an earlier post,
    else from ``conversations.list`` (scopes ``channels:read``, ``groups:read``); "" when not found."""
    if not target.startswith("#"):
        return target
    known = (
        Notification.objects.filter(channel=channel)
        .exclude(external_channel="")
        .values_list("external_channel", flat=True)
        .first()
    )
    if known:
        return known
    name, cursor = target[1:], ""
    for _ in range(HISTORY_PAGES):
        data = call(
            client,
            "conversations_list",
            types="public_channel,private_channel",
            exclude_archived=True,
            limit=1000,
            cursor=cursor or None,
        )
        for found in data.get("channels") or []:
            if found.get("name") == name:
                return str(found["id"])
        cursor = (data.get("response_metadata") or {}).get("next_cursor") or ""
        if not cursor:
            return ""
    raise CannotCheck("conversations.list", f"too_many_channels: {target} not among the first channels listed")


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
            OutboxMessage.Kind.NOTIFY,
            payload={"event": REFRESH, "channel": base_channel(row.channel)},
            action_id=action.id,
        )
    return True
