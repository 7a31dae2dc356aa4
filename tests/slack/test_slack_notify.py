# ruff: noqa: F811 - pytest fixtures come from tests/support/slack_helpers
"""Approval requests in Slack (approvals/slack/notify.py) against a fake Slack Web API on loopback.

The real slack_sdk WebClient does the HTTP; the outbox delivers as a worker
would (in this process). Assertions are about what reached "Slack": the
Block Kit posted, the message as it reads after each update, thread replies.
"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client, override_settings
from django.utils import timezone

from approvals import services
from approvals.models import ActionRequest, ActionStatus, Notification, OutboxMessage, Review
from approvals.outbox import dispatcher as outbox
from approvals.policies import store as policy_store
from approvals.presentation.previews import compute_preview, fingerprint
from approvals.services.credentials import create_credential
from approvals.slack.blocks import APPROVE, OPEN, REJECT
from audit.models import AuditEvent
from tests.conftest import CLI, token_client
from tests.factories import propose
from tests.support.slack_helpers import (
    APPROVALS,
    BASE_URL,
    ESCALATION,
    all_text,
    block,
    buttons,
    deliver_due,
    mrkdwn_texts,
    posted,
    remind_after_a_minute,
    send_reminder_now,
    slack,  # noqa: F401 - fixture
    time_passes,
    worker,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.django_db


def propose_put(agent, credential, target) -> ActionRequest:
    target.resources["/users/7"] = {"name": "Ann", "groups": ["staff"]}
    return propose(
        agent,
        action_type="http.request",
        params={
            "credential": credential.name,
            "method": "PUT",
            "path": "/users/7",
            "json": {"name": "Ann", "groups": ["staff", "admin"]},
        },
        summary="Give Ann admin",
        on_behalf_of="alice@example.com",
    )


def current(slack, action, channel="slack:#approvals") -> dict:
    row = posted(action, channel)
    return slack.message(row.external_channel, row.external_id)


def audit_verbs(action) -> list[str]:
    return list(AuditEvent.objects.filter(action_id=action.id).order_by("seq").values_list("verb", flat=True))


# --- the message ---------------------------------------------------------------------------------


def test_a_pending_action_is_posted_with_its_facts_a_diff_excerpt_a_link_and_buttons(slack, agent, credential, target):
    action = propose_put(agent, credential, target)
    assert deliver_due() == 1

    [call] = slack.calls_to("chat.postMessage")
    assert call.authorization == "Bearer xoxb-countersign-bot-token-0001"
    assert call.params["channel"] == "#approvals"
    assert "Give Ann admin" in call.params["text"]  # the notification's fallback text
    blocks = call.params["blocks"]
    [header] = block(blocks, "header")
    assert header["text"]["text"] == ":hourglass_flowing_sand: Approval needed: Give Ann admin"
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in block(blocks, "section")[0]["fields"]}
    assert fields["Agent"] == "helper-bot (owner olivia)"
    assert fields["On behalf of"] == "alice@example.com"
    assert fields["Risk"].endswith(action.risk)
    assert fields["Approvals"] == "0 of 1"
    assert fields["Expires"].startswith("<!date^")
    # Agent text is plain_text (never parsed as formatting); only the date is mrkdwn.
    assert [f["type"] for f in block(blocks, "section")[0]["fields"]] == ["plain_text"] * 5 + ["mrkdwn"]
    text = all_text(blocks)
    assert f"Policy: {action.policy_explanation}" in text
    assert '• method: "PUT"' in text and '• path: "/users/7"' in text
    # The excerpt is the diff Countersign computed from the live target, not the agent's claim.
    assert '+ groups[1]: "admin"' in text and "What it will change — PUT " in text

    actions = buttons(blocks)
    assert set(actions) == {APPROVE, REJECT, OPEN}
    assert actions[APPROVE]["style"] == "primary" and actions[REJECT]["style"] == "danger"
    assert actions[OPEN]["url"] == f"{BASE_URL}/actions/{action.id}"
    value = json.loads(actions[APPROVE]["value"])
    assert value == {
        "action": str(action.id),
        "fingerprint": fingerprint(compute_preview(action.action_type, action.params)),
    }
    assert json.loads(actions[REJECT]["value"]) == value

    row = posted(action)
    assert (row.external_channel, row.rendered_status, row.rendered_approvals) == (APPROVALS, "pending", 0)
    assert slack.message(APPROVALS, row.external_id)["blocks"] == blocks
    sent = AuditEvent.objects.get(action_id=action.id, verb="notification.sent")
    assert sent.data["channel"] == "slack:#approvals" and sent.data["did"] == ["posted"]


def test_a_high_risk_approve_button_asks_for_confirmation(slack, agent):
    action = propose(agent)
    ActionRequest.objects.filter(id=action.id).update(risk="high")
    deliver_due()
    approve = buttons(slack.calls_to("chat.postMessage")[0].params["blocks"])[APPROVE]
    assert approve["confirm"]["title"]["text"] == "Approve a high-risk action?"


def test_agent_text_cannot_mention_the_channel_or_disguise_a_link(slack, agent):
    propose(
        agent,
        summary="Hi <!channel> see <https://evil.example|the runbook> & more",
        params={"note": "<!here> ```break out``` <@U0BOSS>"},
    )
    deliver_due()
    [call] = slack.calls_to("chat.postMessage")
    text = "\n".join([*mrkdwn_texts(call.params["blocks"]), call.params["text"]])
    for raw in ("<!channel>", "<!here>", "<https://evil", "<@U0BOSS>"):
        assert raw not in text
    assert "&lt;!channel&gt;" in text and "&lt;https://evil.example|the runbook&gt; &amp; more" in text
    assert "```break out```" not in text  # cannot close the code formatting it is shown in
    # The header is plain_text, which Slack never parses for mentions or links.
    assert block(call.params["blocks"], "header")[0]["text"]["type"] == "plain_text"


def test_an_action_decided_before_its_first_delivery_is_never_posted(slack, agent, reviewer):
    action = propose(agent)
    services.reject_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB, reason="No.")
    deliver_due()
    assert slack.calls_to("chat.postMessage") == []
    assert not Notification.objects.filter(action=action).exists()


# --- in sync with decisions made anywhere ----------------------------------------------------------


def test_a_web_approval_replaces_the_buttons_with_who_approved_and_when(slack, agent, reviewer):
    action = propose(agent)
    deliver_due()
    browser = Client()
    browser.force_login(reviewer)
    browser.post(f"/actions/{action.id}/approve", {"comment": "ok"})
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.APPROVED

    deliver_due()
    [update] = slack.calls_to("chat.update")
    row = posted(action)
    assert (update.params["channel"], update.params["ts"]) == (APPROVALS, row.external_id)
    message = current(slack, action)
    assert buttons(message["blocks"]) == {}
    assert block(message["blocks"], "header")[0]["text"]["text"].startswith(":white_check_mark: Approved: ")
    assert "Approved by *rita* (via web) on <!date^" in all_text(message["blocks"])
    assert "The agent carries it out itself." in all_text(message["blocks"])
    assert len(slack.calls_to("chat.postMessage")) == 1  # updated, never re-posted


def test_multi_approval_messages_count_up_then_show_the_outcome(slack, agent, reviewer, second_reviewer):
    policy_store.save_rule(
        {
            "name": "two-person",
            "action_type": "decision.only",
            "effect": "require",
            "required_approvals": 2,
            "notify": ["slack:#approvals"],
        },
        actor=CLI,
    )
    action = propose(agent)
    deliver_due()
    assert "Approvals\n0 of 2" in all_text(current(slack, action)["blocks"])

    token_client(reviewer).post(f"/api/v1/actions/{action.id}/approve", {"comment": "fine"}, format="json")
    deliver_due()
    message = current(slack, action)
    text = all_text(message["blocks"])
    assert "Approvals\n1 of 2" in text and "*1 of 2 approvals* so far: *rita* (via api). Needs 1 more." in text
    assert set(buttons(message["blocks"])) == {APPROVE, REJECT, OPEN}  # the second reviewer still needs them

    services.approve_action(action_id=action.id, reviewer=second_reviewer, via=Review.Via.WEB)
    deliver_due()
    message = current(slack, action)
    text = all_text(message["blocks"])
    assert "Approvals\n2 of 2" in text and "Approved by *rita* (via api), *sam* (via web)" in text
    assert buttons(message["blocks"]) == {}
    assert len(slack.calls_to("chat.update")) == 2 and len(slack.calls_to("chat.postMessage")) == 1


@pytest.mark.parametrize("how", ["expire", "cancel"])
def test_expiry_and_cancellation_update_the_message(slack, agent, how):
    action = propose(agent)
    deliver_due()
    if how == "expire":
        ActionRequest.objects.filter(id=action.id).update(expires_at=timezone.now() - timedelta(seconds=1))
        assert services.expire_due_actions() == 1
        expected = ":hourglass: Expired: ", "Expired on <!date^"
    else:
        services.cancel_action(action_id=action.id, agent=agent)
        expected = ":no_entry_sign: Withdrawn: ", "Withdrawn by the agent on <!date^"
    deliver_due()
    message = current(slack, action)
    assert block(message["blocks"], "header")[0]["text"]["text"].startswith(expected[0])
    assert expected[1] in all_text(message["blocks"]) and buttons(message["blocks"]) == {}


def test_execution_results_are_posted_once_in_the_thread(slack, agent, reviewer, credential, target):
    action = propose(
        agent,
        action_type="http.request",
        params={"credential": credential.name, "method": "POST", "path": "/deploys", "json": {"v": 2}},
    )
    deliver_due()
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    deliver_due()

    row = posted(action)
    message = current(slack, action)
    assert block(message["blocks"], "header")[0]["text"]["text"].startswith(":white_check_mark: Done: ")
    assert "the result is in the thread" in all_text(message["blocks"])
    [reply] = slack.replies(APPROVALS, row.external_id)
    assert ":white_check_mark: *Executed.*" in all_text(reply["blocks"]) and '"status_code": 200' in all_text(
        reply["blocks"]
    )
    assert row.result_posted

    # A late duplicate of the last status event changes nothing.
    with_duplicate = OutboxMessage.objects.filter(kind="notify", action_id=action.id).order_by("-id").first()
    OutboxMessage.objects.filter(id=with_duplicate.id).update(delivered_at=None)
    deliver_due()
    assert len(slack.replies(APPROVALS, row.external_id)) == 1


def test_a_failed_execution_says_why_in_the_thread(slack, agent, reviewer, credential, target):
    target.status = 500
    action = propose(
        agent, action_type="http.request", params={"credential": credential.name, "method": "POST", "path": "/deploys"}
    )
    deliver_due()
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    assert services.execute_action(action.id) == ActionStatus.FAILED
    deliver_due()
    [reply] = slack.replies(APPROVALS, posted(action).external_id)
    assert ":warning: *Execution failed.*" in all_text(reply["blocks"])
    assert "Error: POST " in all_text(reply["blocks"]) and "answered 500" in all_text(reply["blocks"])
    assert block(current(slack, action)["blocks"], "header")[0]["text"]["text"].startswith(":warning: Failed: ")


def test_late_and_reordered_deliveries_converge_on_the_current_state(slack, agent, reviewer, credential, target):
    action = propose(
        agent, action_type="http.request", params={"credential": credential.name, "method": "POST", "path": "/x"}
    )
    first = OutboxMessage.objects.get(kind="notify", action_id=action.id)
    outbox.deliver(first.id, in_worker=True)  # posted while pending
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    services.execute_action(action.id)
    later = list(
        OutboxMessage.objects.filter(kind="notify", action_id=action.id, delivered_at__isnull=True).order_by("-id")
    )
    assert len(later) == 3  # approved, executing, succeeded
    for message in later:  # newest first: the worst order
        outbox.deliver(message.id, in_worker=True)

    assert len(slack.calls_to("chat.update")) == 1  # rendered the final state once; the older events had nothing new
    assert block(current(slack, action)["blocks"], "header")[0]["text"]["text"].startswith(":white_check_mark: Done: ")
    assert len(slack.replies(APPROVALS, posted(action).external_id)) == 1


# --- reminders ----------------------------------------------------------------------------------------


def test_reminders_reply_in_the_thread_and_reach_escalation_channels_in_full(slack, agent):
    remind_after_a_minute("remind", notify=("slack:#approvals",), escalate_to=("slack:#sre-leads",))
    action = propose(agent)
    deliver_due()
    assert send_reminder_now(action) == 1
    deliver_due()

    [reminder] = slack.replies(APPROVALS, posted(action).external_id)
    assert reminder["text"].startswith(":alarm_clock: Still waiting for a decision: 0 of 1 approvals")
    [thread_call] = [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts")]
    assert thread_call.params["reply_broadcast"] is True
    escalated = posted(action, "slack:#sre-leads")
    assert escalated.external_channel == ESCALATION and escalated.reminders_sent == 1
    assert set(buttons(slack.message(ESCALATION, escalated.external_id)["blocks"])) == {APPROVE, REJECT, OPEN}
    assert posted(action).reminders_sent == 1


# --- Slack failing: rate limits, outages, refusals -----------------------------------------------------


def test_a_rate_limited_post_waits_at_least_retry_after_then_goes_once(slack, agent, worker):
    slack.rate_limit("chat.postMessage", retry_after=30, times=1)
    action = propose(agent)
    before = timezone.now()
    assert deliver_due() == 0

    message = OutboxMessage.objects.get(kind="notify", action_id=action.id)
    assert message.delivered_at is None and message.attempts == 1 and "rate limited" in message.last_error
    assert message.next_attempt_at >= before + timedelta(seconds=30)  # not the 2 s backoff of a first failure

    time_passes(25)  # still inside Slack's Retry-After: the sweep leaves it alone
    outbox.sweep()
    assert worker.tasks("approvals.deliver_outbox") == []

    time_passes(6)
    outbox.sweep()
    assert worker.tasks("approvals.deliver_outbox") == [[message.id]]
    worker.run()
    assert len(slack.calls_to("chat.postMessage")) == 2  # the refused one and the one that went
    assert posted(action).external_id
    assert OutboxMessage.objects.get(id=message.id).delivered_at is not None


def test_a_slack_outage_is_retried_with_backoff_and_blocks_no_other_notification(slack, agent, worker):
    slack.fail("chat.postMessage", "internal_error", status=500, times=1)
    with override_settings(COUNTERSIGN_DEFAULT_NOTIFY=["slack:#approvals", "email:ops@example.com"]):
        action = propose(agent, summary="Restart billing")

    deliver_due()
    slack_message = OutboxMessage.objects.get(kind="notify", payload__channel="slack:#approvals")
    assert (
        slack_message.delivered_at is None
        and slack_message.attempts == 1
        and "internal_error" in slack_message.last_error
    )
    assert (
        1 <= (slack_message.next_attempt_at - timezone.now()).total_seconds() <= 2.5
    )  # backoff, 2 s after one failure
    [email] = mail.outbox  # the email channel did not wait for Slack
    assert email.subject == "Approval needed: Restart billing"

    time_passes(3)
    outbox.sweep()
    worker.run()
    assert OutboxMessage.objects.get(id=slack_message.id).delivered_at is not None
    assert posted(action).external_id and len(slack.threads) == 1  # one message in the channel, not two


def test_an_error_retrying_cannot_fix_is_audited_and_not_retried(slack, agent):
    slack.fail("chat.postMessage", "channel_not_found")
    action = propose(agent)
    deliver_due()
    failed = AuditEvent.objects.get(action_id=action.id, verb="notification.failed")
    assert failed.data["channel"] == "slack:#approvals" and "channel_not_found" in failed.data["error"]
    assert OutboxMessage.objects.get(kind="notify", action_id=action.id).delivered_at is not None
    assert not Notification.objects.filter(action=action).exists()


def test_without_a_bot_token_nothing_is_sent_and_the_failure_is_audited(slack, agent):
    with override_settings(SLACK_BOT_TOKEN=""):
        action = propose(agent)
        deliver_due()
    assert slack.calls == []
    assert (
        "Slack is not configured"
        in AuditEvent.objects.get(action_id=action.id, verb="notification.failed").data["error"]
    )


def test_the_bot_token_can_be_kept_in_the_admin_as_a_credential(slack, agent):
    create_credential(name="countersign-slack", kind="slack_bot", secret=slack.token, scope={}, actor=CLI)
    with override_settings(SLACK_BOT_TOKEN=""):
        action = propose(agent)
        deliver_due()
    [call] = slack.calls_to("chat.postMessage")
    assert call.authorization == f"Bearer {slack.token}" and posted(action).external_id


@pytest.mark.django_db(transaction=True)
def test_two_workers_delivering_the_same_action_at_once_post_one_message(slack, agent, worker):
    """Each worker has its own connection; the Notification row lock makes the second one update, not re-post."""
    # `worker` keeps the after-commit hand-offs in this process: a shared Celery worker started by another
    # test must not deliver these messages before the race below does.
    import threading

    from django.db import connection, transaction

    from approvals.notify import notifications

    action = propose(agent)
    with transaction.atomic():  # a second status event for the same channel, as a quick change would enqueue
        notifications.enqueue(ActionRequest.objects.get(id=action.id), notifications.STATUS)
    ids = list(OutboxMessage.objects.filter(kind="notify", action_id=action.id).values_list("id", flat=True))
    assert len(ids) == 2
    slack.slow_down("chat.postMessage", 0.5)  # the first poster is still talking to Slack when the second arrives
    barrier = threading.Barrier(2)
    results = []

    def deliver(message_id):
        try:
            barrier.wait(timeout=10)
            results.append(outbox.deliver(message_id, in_worker=True))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [True, True]
    assert len(slack.calls_to("chat.postMessage")) == 1 and slack.calls_to("chat.update") == []
    assert Notification.objects.filter(action=action).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_syncing_a_finished_action_at_once_thread_its_result_once(
    slack, worker, agent, reviewer, credential, target
):
    # `worker` keeps the after-commit hand-offs in this process: a shared Celery worker started by another
    # test must not deliver these messages before the race below does.
    import threading

    from django.db import connection

    action = propose(
        agent, action_type="http.request", params={"credential": credential.name, "method": "POST", "path": "/x"}
    )
    outbox.deliver(OutboxMessage.objects.get(kind="notify", action_id=action.id).id, in_worker=True)
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    services.execute_action(action.id)
    ids = list(
        OutboxMessage.objects.filter(kind="notify", action_id=action.id, delivered_at__isnull=True).values_list(
            "id", flat=True
        )
    )
    slack.slow_down("chat.update", 0.5)
    barrier = threading.Barrier(2)

    def deliver(message_id):
        try:
            with contextlib.suppress(threading.BrokenBarrierError):  # a slow start only weakens the race
                barrier.wait(timeout=30)
            outbox.deliver(message_id, in_worker=True)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(i,)) for i in ids[-2:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(slack.replies(APPROVALS, posted(action).external_id)) == 1
    assert len(slack.calls_to("chat.update")) == 1
