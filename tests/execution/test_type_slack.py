"""``slack.post_message`` against a fake Slack Web API on loopback (tests/support/fake_slack.py).

The real ``slack_sdk.WebClient`` does the HTTP; the fake checks the bot token
and answers as Slack does, so every assertion is about what reached "Slack".
"""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from agents.services import grant_capability
from approvals import services
from approvals.action_types.slack_post import SlackPostMessage
from approvals.credentials.scoped import CredentialView
from approvals.errors import InvalidInput
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.presentation.previews import compute_preview, preview_as_dict
from approvals.services.credentials import create_credential, update_scope
from audit.models import AuditEvent
from catalog import registry
from tests import factories
from tests.conftest import CLI
from tests.support.fake_slack import BOT_USER_ID, FakeSlack
from tests.support.servers import free_port

pytestmark = pytest.mark.django_db

SLACK_TOKEN = "xoxb-1111-2222-never-shown-to-agents"
INFRA = "C0INFRA01"
THREAD = "1700000000.000100"


@pytest.fixture
def slack():
    with FakeSlack(token=SLACK_TOKEN) as fake:
        fake.add_channel(INFRA, "infra-help")
        fake.add_channel("C0RANDOM1", "random")
        fake.add_channel("C0ARCHIV1", "old-infra", is_archived=True)
        fake.add_thread(INFRA, THREAD, user="U0ALICE", text="Disk full on *db-2*?")
        with override_settings(COUNTERSIGN_SLACK_API_URL=fake.url):
            yield fake


@pytest.fixture
def bot(slack, db):
    return create_credential(
        name="slack-bot",
        kind="slack_bot",
        secret=SLACK_TOKEN,
        scope={"channels": ["#infra-help", INFRA, "C0ARCHIV1"]},
        actor=CLI,
        allow_preview_reads=True,
    )


@pytest.fixture
def slack_agent(agent):
    grant_capability(agent=agent, action_type="slack.post_message", actor=CLI)
    return agent


def propose(agent, **params):
    return factories.propose(
        agent,
        "slack.post_message",
        {"credential": "slack-bot", "channel": INFRA, "text": "Restarting *billing* now."} | params,
        summary="Tell #infra-help",
    )


def run(agent, reviewer, **params) -> ActionRequest:
    action = propose(agent, **params)
    # A reason, for the cases whose preview says the post will fail (an archived channel): the executor must
    # fail it as well.
    reason = "the executor must fail it as well"
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API, override_reason=reason)
    services.execute_action(action.id)
    action.refresh_from_db()
    return action


def test_the_type_is_registered():
    assert isinstance(registry.get("slack.post_message"), SlackPostMessage)
    assert registry.get("slack.post_message").credential_kinds == ("slack_bot",)


def test_the_approved_message_lands_in_slack_with_the_bot_token(slack_agent, reviewer, bot, slack):
    text = "Disk on *db-2* is at 97% — rotating logs.\n> see <https://grafana.example/d/1|dashboard>"
    action = run(slack_agent, reviewer, text=text, thread_ts=THREAD, unfurl_links=False)

    assert action.status == ActionStatus.SUCCEEDED, action.result
    # The decision read the channel and thread (its preview, stored as the reviewer's evidence); execution only
    # posted, once, last.
    assert {c.method for c in slack.calls[:-1]} <= {"conversations.info", "conversations.replies"}
    assert slack.calls[-1].method == "chat.postMessage"
    [call] = slack.calls_to("chat.postMessage")
    assert call.http_method == "POST"
    assert call.authorization == f"Bearer {SLACK_TOKEN}"
    assert call.params == {"channel": INFRA, "text": text, "thread_ts": THREAD, "unfurl_links": False}
    reply = slack.threads[(INFRA, THREAD)][-1]
    assert (reply["text"], reply["user"], reply["thread_ts"]) == (text, BOT_USER_ID, THREAD)
    assert action.result == {"channel": INFRA, "ts": reply["ts"], "thread_ts": THREAD}


def test_a_channel_name_posts_top_level_and_reports_the_channel_id(slack_agent, reviewer, bot, slack):
    action = run(slack_agent, reviewer, channel="#infra-help", text="hello")
    assert action.status == ActionStatus.SUCCEEDED, action.result
    [call] = slack.calls_to("chat.postMessage")
    assert call.params == {"channel": "#infra-help", "text": "hello"}
    assert action.result["channel"] == INFRA and "thread_ts" not in action.result
    assert slack.threads[(INFRA, action.result["ts"])][0]["text"] == "hello"


def test_a_channel_outside_the_credentials_scope_is_400_at_propose(slack_agent, agent_api, bot, slack):
    body = {
        "action_type": "slack.post_message",
        "params": {"credential": "slack-bot", "channel": "#random", "text": "psst"},
        "summary": "Post in #random",
    }
    response = agent_api.post("/api/v1/actions", body, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert "#infra-help" in errors["params.channel"][0]
    # The same channel by ID is outside the list too: IDs and names are matched as given.
    body["params"]["channel"] = "C0RANDOM1"
    assert agent_api.post("/api/v1/actions", body, format="json").status_code == 400
    assert not ActionRequest.objects.exists()
    assert slack.calls == []


@pytest.mark.parametrize("channel", ["#Infra Help", "@alice", "U0ALICE01", "infra-help", "#", "#a<b>", "C0INFRA01 "])
def test_malformed_channels_are_refused(slack_agent, bot, channel):
    with pytest.raises(InvalidInput) as raised:
        propose(slack_agent, channel=channel)
    assert "params.channel" in raised.value.errors


def test_channel_names_in_scope_match_case_insensitively(slack_agent, bot):
    action = propose(slack_agent, channel="#Infra-Help", text="hi")
    assert action.params["channel"] == "#Infra-Help"


def test_without_a_channel_list_any_channel_is_allowed(slack_agent, reviewer, slack):
    create_credential(name="slack-bot", kind="slack_bot", secret=SLACK_TOKEN, scope={}, actor=CLI)
    action = run(slack_agent, reviewer, channel="C0RANDOM1", text="hi all")
    assert action.status == ActionStatus.SUCCEEDED, action.result
    assert slack.calls_to("chat.postMessage")[0].params["channel"] == "C0RANDOM1"


@pytest.mark.parametrize(
    "scope", [{"channels": "#infra-help"}, {"channels": []}, {"channels": ["infra help"]}, {"channels": [7]}]
)
def test_a_malformed_channel_list_is_refused_when_the_credential_is_saved(db, scope):
    with pytest.raises(ValidationError):
        create_credential(name="bad-bot", kind="slack_bot", secret="x", scope=scope, actor=CLI)


def test_a_scope_narrowed_after_approval_stops_the_post(slack_agent, reviewer, bot, slack):
    action = propose(slack_agent)
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    update_scope(credential=bot, scope={"channels": ["#infra-help"]}, actor=CLI)
    assert services.execute_action(action.id) == ActionStatus.FAILED
    action.refresh_from_db()
    assert "may post only to #infra-help" in action.result["error"]
    assert slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize(
    ("channel", "arrange", "slack_error"),
    [
        (INFRA, lambda s: s.fail("chat.postMessage", "channel_not_found"), "channel_not_found"),
        ("C0ARCHIV1", lambda s: None, "is_archived"),
        (INFRA, lambda s: s.fail("chat.postMessage", "not_in_channel"), "not_in_channel"),
    ],
)
def test_a_slack_error_fails_the_action_with_that_error(
    slack_agent, reviewer, bot, slack, channel, arrange, slack_error
):
    arrange(slack)
    action = run(slack_agent, reviewer, channel=channel)
    assert action.status == ActionStatus.FAILED
    assert action.result["slack_error"] == slack_error
    assert action.result["error"] == f"Slack chat.postMessage failed: {slack_error}"
    assert len(slack.calls_to("chat.postMessage")) == 1
    event = AuditEvent.objects.get(verb="execution.failed", action_id=action.id)
    assert slack_error in event.data["result"]["error"]


def test_rate_limiting_fails_once_with_retry_after_and_is_not_retried_blindly(slack_agent, reviewer, bot, slack):
    slack.rate_limit("chat.postMessage", retry_after=17)
    action = run(slack_agent, reviewer)
    assert action.status == ActionStatus.FAILED
    assert action.result["slack_error"] == "ratelimited"
    assert action.result["status_code"] == 429 and action.result["retry_after"] == "17"
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert SlackPostMessage().is_idempotent(action.params) is False


def test_a_lost_reply_is_not_posted_again_and_its_outcome_is_unknown(slack_agent, reviewer, bot, slack):
    """Slack got the post but the answer never came back: a retry would post it twice, so none is made, and the
    action says it may have been posted (``unknown``), not that it failed."""
    slack.drop_connection("chat.postMessage")
    action = run(slack_agent, reviewer)
    assert action.status == ActionStatus.UNKNOWN
    assert "may have been posted" in action.result["error"]
    assert action.result["advice"] == "check the target before retrying"
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert AuditEvent.objects.filter(action_id=action.id, verb="execution.outcome_unknown").count() == 1


def test_a_post_answered_after_the_timeout_is_unknown_though_it_is_in_the_channel(slack_agent, reviewer, bot, slack):
    slack.answer_late("chat.postMessage", 3)
    with override_settings(COUNTERSIGN_HTTP_TIMEOUT_SECONDS=1):
        action = run(slack_agent, reviewer)
    assert action.status == ActionStatus.UNKNOWN, action.result
    assert action.result["transport_error"] == "TimeoutError"
    assert len(slack.calls_to("chat.postMessage")) == 1


def test_a_wrong_token_fails_with_invalid_auth(slack_agent, reviewer, slack):
    create_credential(name="slack-bot", kind="slack_bot", secret="xoxb-revoked", scope={}, actor=CLI)
    action = run(slack_agent, reviewer)
    assert action.status == ActionStatus.FAILED
    assert action.result["slack_error"] == "invalid_auth"
    assert slack.calls[0].authorization == "Bearer xoxb-revoked"


def test_slack_unreachable_fails_without_a_retry(slack_agent, reviewer, bot):
    with override_settings(COUNTERSIGN_SLACK_API_URL=f"http://127.0.0.1:{free_port()}/api"):
        action = run(slack_agent, reviewer)
    assert action.status == ActionStatus.FAILED
    assert action.result["error"].startswith("Slack chat.postMessage failed: could not reach Slack")


def test_the_preview_shows_the_thread_parent_read_from_slack(slack_agent, reviewer_api, bot, slack):
    action = propose(slack_agent, thread_ts=THREAD, text="Yes, rotating logs.")
    response = reviewer_api.get(f"/api/v1/actions/{action.id}/preview")
    assert response.status_code == 200, response.content
    preview = response.json()
    assert preview["kind"] == "message"
    assert preview["title"] == f"Message to #infra-help ({INFRA}) (thread reply)"
    assert preview["after"] == {
        "channel": INFRA,
        "text": "Yes, rotating logs.",
        "thread_ts": THREAD,
        "thread_parent": {"user": "U0ALICE", "text": "Disk full on *db-2*?"},
    }
    assert preview["error"] == ""
    [replies] = slack.calls_to("conversations.replies")
    assert replies.authorization == f"Bearer {SLACK_TOKEN}"
    assert (replies.params["channel"], replies.params["ts"]) == (INFRA, THREAD)
    assert slack.calls_to("chat.postMessage") == []  # a preview never posts
    assert SLACK_TOKEN not in json.dumps(preview)


def test_the_preview_notes_what_it_cannot_show(slack_agent, bot, slack):
    missing = compute_preview(
        "slack.post_message",
        {"credential": "slack-bot", "channel": INFRA, "text": "x", "thread_ts": "1600000000.000001"},
    )
    assert missing.kind == "message" and missing.after["thread_parent"] is None
    assert any("thread_not_found" in n for n in missing.notes)

    by_name = compute_preview(
        "slack.post_message", {"credential": "slack-bot", "channel": "#infra-help", "text": "x", "thread_ts": THREAD}
    )
    assert by_name.after["thread_parent"] is None
    assert any("channel ID" in n for n in by_name.notes)
    assert len(slack.calls_to("conversations.replies")) == 1  # only the first could ask Slack

    archived = compute_preview("slack.post_message", {"credential": "slack-bot", "channel": "C0ARCHIV1", "text": "x"})
    assert "The channel is archived." in archived.notes


def test_the_token_reaches_no_result_preview_or_audit_even_when_slack_echoes_it(slack_agent, reviewer, bot, slack):
    slack.fail("chat.postMessage", f"token_revoked:{SLACK_TOKEN}")
    slack.fail("conversations.replies", f"bad_token:{SLACK_TOKEN}")
    action = propose(slack_agent, thread_ts=THREAD)
    preview = preview_as_dict(compute_preview("slack.post_message", action.params))
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.API)
    services.execute_action(action.id)
    action.refresh_from_db()

    assert action.status == ActionStatus.FAILED
    assert action.result["slack_error"] == "token_revoked:[redacted]"
    assert any("bad_token:[redacted]" in n for n in preview["notes"])
    assert SLACK_TOKEN not in json.dumps(action.result) and SLACK_TOKEN not in json.dumps(preview)
    assert SLACK_TOKEN not in json.dumps(list(AuditEvent.objects.values_list("data", flat=True)))


def test_the_narrowed_client_exposes_neither_the_token_nor_a_web_client(bot, slack):
    view = CredentialView("slack-bot", "slack_bot", {}, SLACK_TOKEN)
    client = SlackPostMessage().make_client(view, {"channel": INFRA, "text": "x"}, idempotency_key="k")
    public = {name: getattr(client, name) for name in dir(client) if not name.startswith("_")}
    assert set(public) == {
        *("channel", "thread_ts", "post_message", "channel_info", "thread_parent", "redact"),
        *("redactor", "reads"),  # scrubs without handing out what it scrubs; what a preview read
    }
    assert SLACK_TOKEN not in repr(client) and SLACK_TOKEN not in str(public)
    with pytest.raises(AttributeError):
        client.token = "x"  # __slots__: nothing can be hung on it either


def test_the_fake_answers_like_slack(slack):
    """The fake itself, for the tests that will reuse it: auth, updates, unknown methods, waiting."""
    web = WebClient(token=SLACK_TOKEN, base_url=slack.url)
    assert web.auth_test()["user_id"] == BOT_USER_ID
    posted = web.chat_postMessage(channel="#infra-help", text="v1")
    updated = web.chat_update(channel=INFRA, ts=posted["ts"], text="v2")
    assert updated["message"]["text"] == "v2" and slack.threads[(INFRA, posted["ts"])][0]["text"] == "v2"
    with pytest.raises(SlackApiError) as raised:
        web.chat_update(channel=INFRA, ts="1.2", text="x")
    assert raised.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as raised:
        WebClient(token="xoxb-wrong", base_url=slack.url).auth_test()
    assert raised.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as raised:
        WebClient(base_url=slack.url).api_call("auth.test")
    assert raised.value.response["error"] == "not_authed"
    with pytest.raises(SlackApiError) as raised:
        web.api_call("admin.users.remove")
    assert raised.value.response["error"] == "unknown_method"
    assert [c.method for c in slack.wait_for("auth.test", count=3)] == ["auth.test"] * 3
    with pytest.raises(AssertionError):
        slack.wait_for("chat.delete", timeout=0.05)
