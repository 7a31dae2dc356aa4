# ruff: noqa: F811 - pytest fixtures come from tests/support/slack_helpers
"""Every message Countersign posts in Slack, posted once and kept true (issue 17, point 5).

- Slack accepts a post but answers after the client's timeout: the retry looks in the channel
  (``conversations.history`` with message metadata) and adopts the message instead of posting a second one.
  Without the scope to look, it does not post again, and says so in the audit log.
- Every copy (the message in each notified channel, the message a reminder brought to an escalation
  channel, each reminder) shows the decision once it is made, and none keeps live buttons.
- Slack counts approvals as the API does: after an edit moved the action to another group, an approval
  from outside that group does not count in Slack either.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import override_settings
from django.utils import timezone

from approvals import services
from approvals.models import ActionRequest, ActionStatus, Notification, OutboxMessage, Review
from approvals.policies import store as policy_store
from approvals.slack.notify import METADATA_EVENT
from audit.models import AuditEvent
from tests.conftest import CLI, token_client
from tests.factories import propose
from tests.support.slack_helpers import (
    APPROVALS,
    ESCALATION,
    all_text,
    buttons,
    deliver_due,
    posted,
    remind_after_a_minute,
    send_reminder_now,
    slack,  # noqa: F401 - fixture
    time_passes,
)

pytestmark = pytest.mark.django_db

CLIENT_TIMEOUT = 0.5  # seconds; the fake answers after it, as a slow Slack would
SLOW_ANSWER = CLIENT_TIMEOUT * 4


@pytest.fixture
def impatient():
    with override_settings(COUNTERSIGN_SLACK_TIMEOUT_SECONDS=CLIENT_TIMEOUT):
        yield


def ours(slack, channel_id: str, action) -> list[dict]:
    """The messages about ``action`` a person sees in the channel (top level and broadcast replies)."""
    return [
        m
        for m in slack.channel_messages(channel_id)
        if (m.get("metadata") or {}).get("event_payload", {}).get("action_id") == str(action.id)
    ]


def retry_later():
    """What the outbox does a little later: retry the notifications that failed."""
    time_passes(600)
    return deliver_due()


# --- never twice --------------------------------------------------------------------------------------


def test_a_post_slack_accepted_after_the_timeout_is_found_not_posted_again(slack, agent, reviewer, impatient):
    slack.answer_late("chat.postMessage", SLOW_ANSWER, times=1)
    action = propose(agent)
    assert deliver_due() == 0  # the client gave up: the outcome is unknown to Countersign
    message = OutboxMessage.objects.get(kind="notify", action_id=action.id)
    assert message.attempts == 1 and message.delivered_at is None
    [in_slack] = ours(slack, APPROVALS, action)  # ... but Slack did post it
    assert in_slack["metadata"] == {
        "event_type": METADATA_EVENT,
        "event_payload": {"action_id": str(action.id), "copy": "message"},
    }

    assert retry_later() == 1
    assert len(slack.calls_to("chat.postMessage")) == 1  # looked, found, did not post again
    [history] = slack.calls_to("conversations.history")
    assert history.params["channel"] == APPROVALS and history.params["include_all_metadata"] in ("1", "true")
    assert len(ours(slack, APPROVALS, action)) == 1
    row = posted(action)
    assert (row.external_channel, row.external_id) == (APPROVALS, in_slack["ts"])
    sent = AuditEvent.objects.get(action_id=action.id, verb="notification.sent")
    assert "found" in sent.data["did"] and sent.data["ts"] == in_slack["ts"]

    # The adopted message is the one kept in step: the decision replaces its buttons.
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    deliver_due()
    [decided] = ours(slack, APPROVALS, action)
    assert buttons(decided["blocks"]) == {} and "Approved by *rita*" in all_text(decided["blocks"])


def test_a_reminder_slack_accepted_after_the_timeout_is_not_repeated(slack, agent, impatient):
    remind_after_a_minute("remind", notify=("slack:#approvals",))
    action = propose(agent)
    deliver_due()
    assert send_reminder_now(action) == 1
    slack.answer_late("chat.postMessage", SLOW_ANSWER, times=1)
    assert deliver_due() == 0
    assert retry_later() == 1

    reminders = [m for m in ours(slack, APPROVALS, action) if m.get("subtype") == "thread_broadcast"]
    assert len(reminders) == 1 and reminders[0]["metadata"]["event_payload"]["copy"] == "reminder-1"
    assert len(slack.replies(APPROVALS, posted(action).external_id)) == 1
    assert posted(action).reminders_sent == 1


def test_without_history_access_a_post_that_may_have_gone_is_not_posted_again(slack, agent, impatient):
    slack.answer_late("chat.postMessage", SLOW_ANSWER, times=1)
    slack.fail("conversations.history", "missing_scope")
    action = propose(agent)
    deliver_due()
    retry_later()

    assert len(slack.calls_to("chat.postMessage")) == 1 and len(ours(slack, APPROVALS, action)) == 1
    [failed] = [
        e
        for e in AuditEvent.objects.filter(action_id=action.id, verb="notification.failed")
        if "conversations.history" in e.data["error"]
    ]
    assert "missing_scope" in failed.data["error"] and "channels:history" in failed.data["error"]
    assert "not posting again" in failed.data["error"]
    # Not retried for ever either: the operator was told; the next change of the action looks again.
    assert not OutboxMessage.objects.filter(kind="notify", action_id=action.id, delivered_at__isnull=True).exists()


def test_a_post_slack_refused_is_posted_on_the_next_event_without_looking(slack, agent, reviewer, second_reviewer):
    """Slack said no (nothing reached the channel): no guard is left behind to block the next attempt."""
    policy_store.save_rule(
        {
            "name": "two",
            "action_type": "decision.only",
            "effect": "require",
            "required_approvals": 2,
            "notify": ["slack:#approvals"],
        },
        actor=CLI,
    )
    slack.fail("chat.postMessage", "not_in_channel", times=1)
    action = propose(agent)
    deliver_due()
    assert not Notification.objects.filter(action=action).exists()

    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    deliver_due()
    assert slack.calls_to("conversations.history") == []
    [message] = ours(slack, APPROVALS, action)
    assert "1 of 2 approvals" in all_text(message["blocks"])


def test_a_result_slack_accepted_after_the_timeout_is_threaded_once(
    slack, agent, reviewer, credential, target, impatient
):
    action = propose(
        agent,
        action_type="http.request",
        params={"credential": credential.name, "method": "POST", "path": "/deploys", "json": {"v": 2}},
    )
    deliver_due()
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    slack.answer_late("chat.postMessage", SLOW_ANSWER, times=1)  # the result reply
    deliver_due()
    retry_later()

    row = posted(action)
    [reply] = slack.replies(APPROVALS, row.external_id)
    assert reply["metadata"]["event_payload"] == {"action_id": str(action.id), "copy": "result"}
    assert row.result_posted and len(slack.calls_to("chat.postMessage")) == 2
    assert slack.calls_to("conversations.replies")  # looked in the thread before threading it again


# --- every copy follows the action ------------------------------------------------------------------


def test_every_copy_shows_the_decision_and_none_keeps_its_buttons(slack, agent, reviewer):
    remind_after_a_minute("escalate", notify=("slack:#approvals",), escalate_to=("slack:#sre-leads",))
    action = propose(agent)
    deliver_due()
    assert send_reminder_now(action) == 1
    deliver_due()
    # Before the decision: the message and its reminder in #approvals, the whole message in #sre-leads.
    assert len(ours(slack, APPROVALS, action)) == 2 and len(ours(slack, ESCALATION, action)) == 1
    assert buttons(ours(slack, ESCALATION, action)[0]["blocks"])

    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    deliver_due()

    copies = ours(slack, APPROVALS, action) + ours(slack, ESCALATION, action)
    assert len(copies) == 3
    for message in copies:
        assert not buttons(message.get("blocks") or []), message
        assert "Still waiting" not in message["text"]
    message, reminder = ours(slack, APPROVALS, action)
    [escalated] = ours(slack, ESCALATION, action)
    for full in (message, escalated):
        assert "Approved by *rita*" in all_text(full["blocks"]) and "edited" in full
    assert reminder["text"].startswith(":alarm_clock: Reminder answered: :white_check_mark: Approved")
    assert len(slack.calls_to("chat.postMessage")) == 3  # nothing was posted anew for the decision


def test_a_late_decision_still_reaches_the_escalated_copy_when_the_reminder_went_first(slack, agent, reviewer):
    """Expiry after escalation: the escalation channel's copy says expired, without buttons."""
    remind_after_a_minute("escalate", escalate_to=("slack:#sre-leads",))
    action = propose(agent)
    send_reminder_now(action)
    deliver_due()
    ActionRequest.objects.filter(id=action.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.expire_due_actions()
    deliver_due()
    [escalated] = ours(slack, ESCALATION, action)
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.EXPIRED
    assert not buttons(escalated["blocks"]) and "Expired" in all_text(escalated["blocks"])


def test_an_escalation_whose_answer_was_lost_is_found_and_closed_when_decided(slack, agent, reviewer, impatient):
    """The reminder's post to the escalation channel timed out; the action is decided before any retry."""
    remind_after_a_minute("escalate-only", escalate_to=("slack:#sre-leads",))
    action = propose(agent)
    send_reminder_now(action)
    slack.answer_late("chat.postMessage", SLOW_ANSWER, times=1)
    assert deliver_due() == 0
    [escalated] = ours(slack, ESCALATION, action)
    assert buttons(escalated["blocks"])  # live buttons, and Countersign does not know the message's ts

    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    retry_later()
    [escalated] = ours(slack, ESCALATION, action)
    assert not buttons(escalated["blocks"]) and "Approved by *rita*" in all_text(escalated["blocks"])
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert posted(action, "slack:#sre-leads").external_id == escalated["ts"]


# --- counted as the API counts -------------------------------------------------------------------------


def test_slack_counts_only_approvals_that_count_after_an_edit_moved_the_group(slack, agent, reviewer):
    sre = Group.objects.create(name="sre")
    sre1 = User.objects.create_user(username="sre1", password="pw")
    sre1.groups.add(sre)
    policy_store.save_rule(
        {
            "name": "payments",
            "action_type": "decision.only",
            "effect": "require",
            "required_approvals": 2,
            "reviewer_group": "sre",
            "notify": ["slack:#approvals"],
            "conditions": [{"path": "params.service", "op": "equals", "value": "payments"}],
        },
        actor=CLI,
    )
    action = propose(agent)  # billing: the default rule, one approval from reviewers
    deliver_due()
    # rita (reviewers) moves it onto payments and approves in the same breath: her approval no longer counts.
    services.approve_action(
        action_id=action.id,
        reviewer=reviewer,
        via=Review.Via.WEB,
        edited_params={"command": "restart", "service": "payments"},
    )
    deliver_due()
    api = token_client(sre1).get(f"/api/v1/actions/{action.id}").json()
    assert (api["approvals"], api["required_approvals"]) == (0, 2)
    [message] = ours(slack, APPROVALS, action)
    text = all_text(message["blocks"])
    assert "Approvals\n0 of 2" in text and "1 of 2" not in text
    assert buttons(message["blocks"])  # still pending, still decidable in Slack

    services.approve_action(action_id=action.id, reviewer=sre1, via=Review.Via.WEB)
    deliver_due()
    [message] = ours(slack, APPROVALS, action)
    assert "Approvals\n1 of 2" in all_text(message["blocks"])
    assert "*sre1*" in all_text(message["blocks"]) and "*rita*" not in all_text(message["blocks"])

    sre2 = User.objects.create_user(username="sre2", password="pw")
    sre2.groups.add(sre)
    services.approve_action(action_id=action.id, reviewer=sre2, via=Review.Via.WEB)
    deliver_due()
    [message] = ours(slack, APPROVALS, action)
    text = all_text(message["blocks"])
    assert "Approved by *sre1* (via web), *sre2* (via web)" in text and "*rita*" not in text
    assert not buttons(message["blocks"])
