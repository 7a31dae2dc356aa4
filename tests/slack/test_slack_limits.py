# ruff: noqa: F811 - pytest fixtures come from tests/support/slack_helpers
"""Slack text within limits, always (issue 16.6), and deciding in Slack at the floor (issue 15.9).

The attacks: an agent writes text that, once escaped (``&`` → ``&amp;``), is over one of Slack's
limits, so Slack answers ``invalid_blocks`` and the proposal never reaches the channel reviewers
watch; or a reason with ``<`` and ``&`` breaks ``chat.update`` and leaves live buttons on a rejected
action; or agent text renders as Slack formatting (``*bold*``, mentions, links, quotes). And a
hand-made, validly signed Slack payload tries to approve an action its policy wants decided on the
web page.

The fake Slack (tests/support/fake_slack.py) refuses what Slack refuses (``block_errors``), so a violation
fails these tests the way it fails in production. The property tests build the blocks from
arbitrary text (Hypothesis) and check every limit and that no displayed text holds an unmarked
invisible character.
"""

from __future__ import annotations

import json

import pytest

from approvals import services
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.slack.blocks import APPROVE, OPEN, REJECT, reject_modal
from approvals.slack.interactions import TASK
from audit.models import AuditEvent
from tests.factories import propose
from tests.support.fake_slack import block_errors, slack_len
from tests.support.slack_helpers import (
    APPROVALS,
    all_text,
    block,
    buttons,
    click_payload,
    deliver_due,
    form,
    mrkdwn_texts,
    post_interaction,
    posted,
    signed,
    slack,  # noqa: F401 - fixture
    slack_id,
    submission_payload,
    worker,  # noqa: F401 - fixture
)

# The properties (any text, every limit; clipping) need no Slack and no database: tests/unit/test_slack_blocks.py.

# --- the reported cases, through the fake Slack ---------------------------------------------------


def _message(slack, action) -> dict:
    row = posted(action)
    return slack.message(row.external_channel, row.external_id)


@pytest.mark.django_db
def test_a_high_risk_summary_full_of_ampersands_still_posts_with_a_confirm_text_in_limits(slack, agent):
    summary = ("Merge R&D & QA & Ops & Sales & Legal " * 10)[:280]
    action = propose(agent, summary=summary)
    ActionRequest.objects.filter(id=action.id).update(risk="high")
    deliver_due()
    assert slack.refused == []
    confirm = buttons(_message(slack, action)["blocks"])[APPROVE]["confirm"]
    assert confirm["text"]["type"] == "plain_text" and slack_len(confirm["text"]["text"]) <= 300
    assert confirm["text"]["text"].startswith("Merge R&amp;D &amp; QA")


@pytest.mark.django_db
def test_long_parameter_keys_and_values_of_ampersands_still_post(slack, agent):
    params = {("k&<" * 200) + str(i): "&" * 500 for i in range(8)}
    action = propose(agent, params=params, summary="<!channel> " + "&" * 269)
    deliver_due()
    assert slack.refused == []
    message = _message(slack, action)
    for section in block(message["blocks"], "section"):
        if "text" in section:
            assert slack_len(section["text"]["text"]) <= 3000
    assert "&lt;!channel&gt;" in block(message["blocks"], "header")[0]["text"]["text"]


@pytest.mark.django_db
def test_the_fake_slack_refuses_what_slack_would(slack):
    """The guard the tests rely on: a section over 3,000 escaped characters is refused, like Slack does."""
    over = [{"type": "section", "text": {"type": "mrkdwn", "text": "&amp;" * 601}}]
    assert block_errors(over) and "3001" in block_errors(over)[0]
    confirm = {"title": {"type": "plain_text", "text": "t"}, "text": {"type": "plain_text", "text": "x" * 301}}
    confirm |= {"confirm": {"type": "plain_text", "text": "ok"}, "deny": {"type": "plain_text", "text": "no"}}
    button = {"type": "button", "text": {"type": "plain_text", "text": "Approve"}, "value": "v", "confirm": confirm}
    assert block_errors([{"type": "actions", "elements": [button]}])
    assert block_errors([{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}])  # plain_text only
    assert block_errors([{"type": "section", "fields": [{"type": "mrkdwn", "text": "x"}] * 11}])


@pytest.mark.django_db
def test_a_reason_of_any_length_with_markup_always_updates_the_message(slack, agent, reviewer):
    action = propose(agent)
    deliver_due()
    reason = ("<@U0BOSS> <https://evil.example|click> *now* " + "<&>" * 700)[:2000]
    services.reject_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB, reason=reason)
    deliver_due()
    assert slack.refused == []
    [update] = slack.calls_to("chat.update")
    message = _message(slack, action)
    assert buttons(message["blocks"]) == {}  # no live buttons left on a rejected action
    assert block(message["blocks"], "header")[0]["text"]["text"].startswith(":x: Rejected: ")
    [shown] = [s for s in block(message["blocks"], "section") if s.get("text", {}).get("text", "").startswith("Reason")]
    assert shown["text"]["type"] == "plain_text"  # never a mention, a link or bold
    assert slack_len(shown["text"]["text"]) <= 3000 and shown["text"]["text"].endswith("…")
    assert update.params["text"]


@pytest.mark.django_db
def test_agent_text_never_renders_as_slack_formatting(slack, agent):
    action = propose(
        agent,
        summary="*bold* _italic_ ~strike~ `code` > quote <!channel> <@U0BOSS> <https://evil.example|docs>",
        params={"*key*": "_value_", "> quoted": "<#C0SECRET>"},
        on_behalf_of="*Ivan* _Petrov_",
    )
    deliver_due()
    message = _message(slack, action)
    for text in mrkdwn_texts(message["blocks"]):
        for raw in ("*bold*", "_italic_", "~strike~", "`code`", "*key*", "_value_", "*Ivan*", "<#C0SECRET>"):
            assert raw not in text
    text = all_text(message["blocks"])
    assert "*bold* _italic_" in text and "• *key*: &quot;_value_&quot;" not in text  # shown as written
    assert '• *key*: "_value_"' in text and "*Ivan* _Petrov_" in text


@pytest.mark.django_db
def test_invisible_characters_and_look_alikes_are_marked_in_slack_with_a_warning(slack, agent):
    action = propose(
        agent,
        summary="Delete /tickets/\u202e321/etelednimda\u202c",
        params={"channel": "#prod-\u0430dmins", "path": "/tickets/\u202e321/etelednimda\u202c"},
    )
    deliver_due()
    message = _message(slack, action)
    text = all_text(message["blocks"])
    assert "\u202e" not in text and "\u0430dmins" not in text
    assert "/tickets/⟨U+202E⟩321/etelednimda⟨U+202C⟩" in block(message["blocks"], "header")[0]["text"]["text"]
    assert "#prod-⟨Cyrillic \u0430 U+0430⟩dmins" in text
    assert "could not see or could misread" in text and "params.channel" in text


# --- deciding in Slack at the floor is a choice (issue 15.9) ----------------------------------------


@pytest.fixture
def rita_in_slack(slack, reviewer):
    user_id = slack_id()
    slack.add_user(user_id, email="rita@example.com")
    return user_id


@pytest.fixture
def web_only(slack, agent):
    """A pending high-risk action whose policy wants it decided on the web page, posted to #approvals."""
    action = propose(agent, summary="Grant Ivan admin on prod")
    ActionRequest.objects.filter(id=action.id).update(risk="high", web_decision_only=True)
    action.refresh_from_db()
    deliver_due()
    return action, _message(slack, action)


def _forged_click(action, action_id: str, slack_user: str, message: dict) -> str:
    """A block_actions payload for a button the message does not have, signed with the app's secret."""
    payload = click_payload(
        {**message, "blocks": [{"type": "actions", "elements": [{"action_id": OPEN, "value": None}]}]},
        APPROVALS,
        OPEN,
        slack_user,
    )
    payload["actions"][0].update(
        action_id=action_id, value=json.dumps({"action": str(action.id), "fingerprint": "0" * 64})
    )
    return form(payload)


@pytest.mark.django_db
def test_a_web_only_action_shows_a_review_link_instead_of_approve_and_reject(web_only):
    action, message = web_only
    elements = buttons(message["blocks"])
    assert set(elements) == {OPEN}
    assert elements[OPEN]["text"]["text"] == "Review in Countersign"
    assert elements[OPEN]["url"].endswith(f"/actions/{action.id}")
    assert "decided in Countersign only" in all_text(message["blocks"])


@pytest.mark.django_db
@pytest.mark.parametrize("clicked", [APPROVE, REJECT])
def test_a_forged_signed_decision_for_a_web_only_action_is_refused_and_audited(
    slack, worker, web_only, rita_in_slack, clicked
):
    action, message = web_only
    body = _forged_click(action, clicked, rita_in_slack, message)
    response = post_interaction(body, signed(body))
    assert response.status_code == 200
    assert worker.tasks(TASK)[0][0]["kind"] in ("approve", "reject_click")
    assert worker.run() == ["web_only"]

    fresh = ActionRequest.objects.get(id=action.id)
    assert fresh.status == ActionStatus.PENDING and not Review.objects.filter(action=action).exists()
    assert slack.views == []  # not even the reject form opened
    [note] = slack.ephemerals
    assert note["user"] == rita_in_slack and "can only be decided in Countersign" in note["text"]
    assert "Nothing was changed" in note["text"]
    [refusal] = AuditEvent.objects.filter(action_id=action.id, verb="slack.interaction_refused")
    assert refusal.data["reason"] == "web_decision_only" and refusal.data["slack_user"] == rita_in_slack


@pytest.mark.django_db
def test_a_forged_reject_submission_for_a_web_only_action_is_refused(slack, worker, web_only, rita_in_slack):
    action, _ = web_only
    view = reject_modal(action, channel=APPROVALS, message_ts=posted(action).external_id)
    body = form(submission_payload(view, rita_in_slack, "forged"))
    assert post_interaction(body, signed(body)).status_code == 200
    assert worker.run() == ["web_only"]
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.PENDING
    assert AuditEvent.objects.filter(action_id=action.id, verb="slack.interaction_refused").count() == 1


@pytest.mark.django_db
def test_the_same_action_without_the_flag_keeps_its_buttons(slack, agent):
    action = propose(agent)
    ActionRequest.objects.filter(id=action.id).update(risk="high")
    deliver_due()
    assert set(buttons(_message(slack, action)["blocks"])) == {APPROVE, REJECT, OPEN}
