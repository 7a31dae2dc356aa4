"""Slack's interactivity requests: the Approve / Reject buttons and the reject modal.

The web process (``receive``, behind ``POST /slack/interactivity``):

1. verifies Slack's signature on the raw body with the signing secret and
   refuses a timestamp outside five minutes (``slack_sdk.signature``);
2. refuses a replay: each signature is accepted once (``cache.add``, atomic
   in Redis, kept longer than the window);
3. reduces the payload to a small ``Interaction`` and hands it to a worker
   (Celery task ``approvals.slack_interaction``, in approvals/tasks.py), answering Slack at once,
   well within its 3 seconds.

The worker (``handle``) maps the Slack user to a reviewer (approvals.slack.users),
applies the web's permission rules, and decides through the service layer with
``via=slack``; the Approve button carries the preview fingerprint the message
showed, so a changed target is refused as on the web (and the message is
re-rendered with the fresh preview). Whoever is refused (unlinked, not a
reviewer of this action) gets an ephemeral explanation, nothing changes, and
the refusal is audited (``slack.interaction_refused``). An action whose policy
wants it decided on the web page (``web_decision_only``: high and critical
risk under such a rule) is shown in Slack without Approve / Reject; a decision
for it that arrives anyway (an old message, a hand-made payload signed with
the app's secret) is refused the same way. Requests that fail the signature
check are only logged: unauthenticated input never writes to the audit chain.

End access early (issue 23): a granted time-boxed access carries an "End access early" button; it is staff's,
as on the web page. Anyone else who clicks it is refused and audited, and so is a click on a grant that is no
longer active (ended already: ending twice) and a signed click on a button Countersign never sent (a forged
``countersign_*`` action id).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import parse_qs

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from slack_sdk.signature import SignatureVerifier

from approvals import services
from approvals.errors import NotAllowed, ServiceError, TargetChanged
from approvals.models import ActionRequest, Review
from approvals.outbox.transport import RetryLater
from approvals.policies.separation_of_duties import review_refusal
from approvals.services import access as access_services
from approvals.slack import notify as slack_notify
from approvals.slack.blocks import (
    APPROVE,
    END_ACCESS,
    OPEN,
    REASON_BLOCK,
    REASON_INPUT,
    REJECT,
    REJECT_VIEW,
    action_link,
    ephemeral_text,
    parse_button_value,
)
from approvals.slack.blocks import reject_modal as build_reject_modal
from approvals.slack.client import SlackNotConfigured, SlackRefused, SlackUnavailable, call, signing_secret, web_client
from approvals.slack.users import reviewer_for
from audit.chain import Actor, record_refusal

log = logging.getLogger(__name__)

TASK = "approvals.slack_interaction"
WINDOW_SECONDS = 5 * 60
REPLAY_TTL = WINDOW_SECONDS + 60  # a signature outlives its window in the cache
SLACK = Actor.system("slack")

# Interaction kinds
APPROVE_CLICK = "approve"
REJECT_CLICK = "reject_click"  # opens the modal
REJECT_SUBMIT = "reject_submit"  # the modal's reason
END_ACCESS_CLICK = "end_access"  # staff end a time-boxed grant now
UNKNOWN_CLICK = "unknown_button"  # a countersign_* action id Countersign never sends: refused and audited
BUTTONS = {APPROVE: APPROVE_CLICK, REJECT: REJECT_CLICK, END_ACCESS: END_ACCESS_CLICK}


class Interaction(TypedDict):
    kind: str
    action: str
    fingerprint: str | None
    slack_user: str
    team: str
    channel: str
    message_ts: str
    trigger_id: str
    reason: str


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


# --- the web side ---------------------------------------------------------------------------------


def receive(body: bytes, headers: Mapping[str, str]) -> Reply:
    """Verify, de-duplicate and hand over one interactivity request; the HTTP answer for Slack."""
    secret = signing_secret()
    if not secret:
        return Reply(503, b"Slack is not configured on this Countersign (SLACK_SIGNING_SECRET).")
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    refusal = verification_refusal(secret, body, timestamp, signature)
    if refusal:
        log.warning("Slack interactivity request refused: %s", refusal)
        return Reply(401, refusal.encode())
    try:
        interaction = parse(body)
    except (ValueError, TypeError, AttributeError) as exc:
        return Reply(400, f"Malformed interaction payload ({type(exc).__name__}).".encode())
    try:
        first = cache.add(f"slack-signature:{signature}", timestamp, REPLAY_TTL)
    except Exception:  # the replay store is down: refuse rather than risk accepting a replay
        log.exception("Slack interactivity: replay store unavailable")
        return Reply(503, b"Try again in a moment.")
    if not first:
        _audit_refused(interaction, "replayed", "the same signed request arrived twice")
        return Reply(409, b"Replayed request.")
    if interaction is None:
        return Reply(200)  # a click that is not ours to handle (the "Open" link button, a closed modal)
    if interaction["kind"] == UNKNOWN_CLICK:
        _audit_refused(interaction, "unknown_button", f"no Countersign button is called {interaction['reason']!r}")
        return Reply(400, b"Unknown button.")
    if interaction["kind"] == REJECT_SUBMIT and not interaction["reason"].strip():
        errors = {"response_action": "errors", "errors": {REASON_BLOCK: "Say why, so the agent can adapt."}}
        return Reply(200, json.dumps(errors).encode(), "application/json")
    try:
        dispatch(interaction)
    except Exception:
        log.exception("Slack interactivity: could not hand the interaction to a worker")
        return Reply(503, b"Countersign could not take the request; try again.")
    return Reply(200)


def verification_refusal(secret: str, body: bytes, timestamp: str, signature: str) -> str | None:
    """Why the request is not provably Slack's, sent within the last five minutes; None when it is."""
    try:
        sent = int(timestamp)
    except ValueError:
        return "missing or malformed X-Slack-Request-Timestamp"
    if abs(time.time() - sent) > WINDOW_SECONDS:
        return "request timestamp outside the 5-minute window"
    try:
        valid = SignatureVerifier(secret).is_valid(body=body, timestamp=timestamp, signature=signature)
    except (ValueError, UnicodeDecodeError):
        valid = False
    return None if valid else "bad signature"


def parse(body: bytes) -> Interaction | None:
    """The interaction in a verified request, None when it is not one Countersign acts on; ValueError if malformed."""
    form = parse_qs(body.decode("utf-8"), strict_parsing=False)
    raw = form.get("payload", [""])[0]
    payload = json.loads(raw) if raw else None
    if not isinstance(payload, dict):
        raise ValueError("no JSON payload")
    user = payload.get("user") or {}
    team = payload.get("team") or {}
    base: dict[str, Any] = {
        "slack_user": str(user.get("id") or ""),
        "team": str(team.get("id") or user.get("team_id") or ""),
        "trigger_id": str(payload.get("trigger_id") or ""),
        "fingerprint": None,
        "reason": "",
    }
    if payload.get("type") == "block_actions":
        actions = [a for a in payload.get("actions") or [] if isinstance(a, dict)]
        clicked = next((a for a in actions if a.get("action_id") in BUTTONS), None)
        container = payload.get("container") or {}
        channel = (payload.get("channel") or {}).get("id") or container.get("channel_id") or ""
        message_ts = container.get("message_ts") or (payload.get("message") or {}).get("ts") or ""
        if clicked is None:
            return _unknown_button(base, actions, str(channel), str(message_ts))
        action_id, fingerprint = parse_button_value(str(clicked.get("value") or ""))
        kind = BUTTONS[clicked["action_id"]]
        interaction = {**base, "kind": kind, "action": action_id, "fingerprint": fingerprint}
        interaction.update(channel=str(channel), message_ts=str(message_ts))
    elif payload.get("type") == "view_submission":
        view = payload.get("view") or {}
        if view.get("callback_id") != REJECT_VIEW:
            return None
        metadata = json.loads(view.get("private_metadata") or "{}")
        values = ((view.get("state") or {}).get("values") or {}).get(REASON_BLOCK) or {}
        reason = str((values.get(REASON_INPUT) or {}).get("value") or "")
        interaction = {**base, "kind": REJECT_SUBMIT, "action": str(metadata.get("action") or ""), "reason": reason}
        interaction.update(channel=str(metadata.get("channel") or ""), message_ts=str(metadata.get("ts") or ""))
    else:
        return None
    uuid.UUID(interaction["action"])  # ValueError when it is not an action id
    if not interaction["slack_user"]:
        raise ValueError("no user")
    return Interaction(**interaction)


def _unknown_button(base: dict[str, Any], actions: list[dict], channel: str, message_ts: str) -> Interaction | None:
    """A signed click on a ``countersign_*`` button Countersign never sends (forged); None for anything else (the
    Open link button, another app's). The action it names, if it names one, is kept for the audit event."""
    forged = next(
        (a for a in actions if str(a.get("action_id") or "").startswith("countersign_") and a["action_id"] != OPEN),
        None,
    )
    if forged is None:
        return None
    try:
        action_id = str(uuid.UUID(parse_button_value(str(forged.get("value") or ""))[0]))
    except (ValueError, TypeError, AttributeError):
        action_id = ""
    interaction = {**base, "kind": UNKNOWN_CLICK, "action": action_id, "reason": str(forged["action_id"])[:100]}
    interaction.update(channel=channel, message_ts=message_ts)
    if not interaction["slack_user"]:
        raise ValueError("no user")
    return Interaction(**interaction)


def dispatch(interaction: Interaction) -> None:
    from config.celery_app import app

    app.send_task(TASK, args=[dict(interaction)])


# --- the worker side ------------------------------------------------------------------------------


def handle(interaction: Interaction) -> str:
    """Carry out one interaction (the task ``TASK``, approvals/tasks.py); returns what happened (for logs and tests)."""
    action = ActionRequest.objects.select_related("agent", "agent__owner", "reviewer_group").filter(
        id=interaction["action"]
    )
    action = action.first()
    if action is None:
        ephemeral(interaction, "Countersign has no such action. Nothing was changed.")
        return "not_found"
    try:
        reviewer = reviewer_for(interaction["slack_user"])
    except (SlackUnavailable, RetryLater, SlackNotConfigured) as exc:
        log.warning("Slack interaction: could not look up %s: %s", interaction["slack_user"], exc)
        ephemeral(interaction, "Countersign could not check who you are with Slack just now; try again.")
        return "unavailable"
    if reviewer is None:
        refuse(
            interaction,
            action,
            "unmapped",
            "Your Slack account is not linked to a Countersign reviewer, so Countersign cannot take your decision. "
            "Ask an admin to link your Slack member ID, or to give your Countersign account your Slack email. "
            "Nothing was changed.",
        )
        return "unmapped"
    if interaction["kind"] == END_ACCESS_CLICK:
        return _end_access(interaction, action, reviewer)
    if action.web_decision_only:
        # Whoever it is: the policy wants this decided on the web page (log-in, full diff), never from Slack.
        link = action_link(settings.COUNTERSIGN_BASE_URL, action)
        refuse(
            interaction,
            action,
            "web_decision_only",
            f"This {action.risk}-risk action can only be decided in Countersign, where you sign in and see the "
            f"full diff: {link} . Nothing was changed.",
        )
        return "web_only"
    refusal = review_refusal(reviewer, action)
    if refusal:
        refuse(interaction, action, "not_allowed", f"You cannot decide this action: {refusal}. Nothing was changed.")
        return "not_allowed"
    if interaction["kind"] == APPROVE_CLICK:
        return _approve(interaction, action, reviewer)
    if interaction["kind"] == REJECT_CLICK:
        return _open_reject_modal(interaction, action)
    return _reject(interaction, action, reviewer)


def _approve(interaction: Interaction, action: ActionRequest, reviewer: AbstractBaseUser) -> str:
    try:
        services.approve_action(
            action_id=action.id,
            reviewer=reviewer,
            via=Review.Via.SLACK,
            # Never skip the stale-preview guard: a button without a fingerprint compares as changed.
            preview_fingerprint=interaction["fingerprint"] or "",
        )
    except TargetChanged:
        slack_notify.request_refresh(action, interaction["channel"], interaction["message_ts"])
        ephemeral(
            interaction,
            "The target changed since this message was posted, so your approval was not recorded. "
            "The message now shows the fresh preview: review it and approve again.",
        )
        return "target_changed"
    except NotAllowed as exc:
        refuse(interaction, action, "not_allowed", f"You cannot decide this action: {exc.detail} Nothing was changed.")
        return "not_allowed"
    except ServiceError as exc:
        ephemeral(interaction, f"Your approval was not recorded: {exc.detail}")
        return "conflict"
    return "approved"


def _end_access(interaction: Interaction, action: ActionRequest, reviewer: AbstractBaseUser) -> str:
    """Staff end a time-boxed grant now (approvals.services.access.end_access); anyone else is refused."""
    if not getattr(reviewer, "is_staff", False):
        refuse(interaction, action, "not_staff", "Only staff may end access early. Nothing was changed.")
        return "not_staff"
    try:
        access_services.end_access(action.id, actor=Actor.user(reviewer, "slack"), user=reviewer)
    except ServiceError as exc:
        refuse(interaction, action, "not_ended", f"The access was not ended: {exc.detail} Nothing was changed.")
        return "not_ended"
    ephemeral(interaction, "Ending the access now: Countersign is taking it back.")
    return "ended"


def _open_reject_modal(interaction: Interaction, action: ActionRequest) -> str:
    if not action.is_pending:
        ephemeral(interaction, f"The action is already {action.status}; it can no longer be rejected.")
        return "conflict"
    view = build_reject_modal(action, channel=interaction["channel"], message_ts=interaction["message_ts"])
    try:
        call(web_client(), "views_open", trigger_id=interaction["trigger_id"], view=view)
    except (SlackRefused, SlackUnavailable, RetryLater, SlackNotConfigured) as exc:
        log.warning("Slack interaction: views.open failed: %s", exc)
        ephemeral(interaction, "Slack did not let Countersign open the form in time; click Reject again.")
        return "modal_failed"
    return "modal_opened"


def _reject(interaction: Interaction, action: ActionRequest, reviewer: AbstractBaseUser) -> str:
    try:
        services.reject_action(
            action_id=action.id, reviewer=reviewer, via=Review.Via.SLACK, reason=interaction["reason"]
        )
    except NotAllowed as exc:
        refuse(interaction, action, "not_allowed", f"You cannot decide this action: {exc.detail} Nothing was changed.")
        return "not_allowed"
    except ServiceError as exc:
        ephemeral(interaction, f"Your rejection was not recorded: {exc.detail}")
        return "conflict"
    return "rejected"


def refuse(interaction: Interaction, action: ActionRequest | None, reason: str, text: str) -> None:
    _audit_refused(interaction, reason, text, action=action)
    ephemeral(interaction, text)


def _audit_refused(
    interaction: Interaction | None, reason: str, detail: str, *, action: ActionRequest | None = None
) -> None:
    interaction = interaction or {}
    action_id = None
    if action is not None:
        action_id = action.id
    elif interaction.get("action"):
        action_id = ActionRequest.objects.filter(id=interaction["action"]).values_list("id", flat=True).first()
    agent_name = action.agent.name if action is not None else ""
    # Counted per Slack user, reason and kind of click, one event a minute (a flood cannot fill the log).
    record_refusal(
        actor=SLACK,
        verb="slack.interaction_refused",
        kind=":".join([reason, *(str(interaction.get(k, "")) for k in ("team", "slack_user", "kind"))]),
        reason=reason,
        object_type="action" if action_id else "slack",
        object_id=str(action_id or interaction.get("slack_user") or "unknown"),
        action_id=action_id,
        agent_name=agent_name,
        data={
            "detail": detail[:500],
            "slack_user": interaction.get("slack_user", ""),
            "team": interaction.get("team", ""),
            "interaction": interaction.get("kind", ""),
        },
    )


def ephemeral(interaction: Interaction, text: str) -> None:
    """Tell only the person who clicked (best effort: a failure here changes nothing)."""
    if not interaction["channel"]:
        log.warning("Slack interaction: no channel to answer %s in: %s", interaction["slack_user"], text)
        return
    try:
        call(
            web_client(),
            "chat_postEphemeral",
            channel=interaction["channel"],
            user=interaction["slack_user"],
            text=ephemeral_text(text),
        )
    except (SlackRefused, SlackUnavailable, RetryLater, SlackNotConfigured) as exc:
        log.warning("Slack interaction: could not answer %s: %s", interaction["slack_user"], exc)
