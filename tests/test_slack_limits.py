# ruff: noqa: F811 - pytest fixtures come from tests/slack_helpers
"""Slack text within limits, always (issue 16.6), and deciding in Slack at the floor (issue 15.9).

The attacks: an agent writes text that, once escaped (``&`` → ``&amp;``), is over one of Slack's
limits, so Slack answers ``invalid_blocks`` and the proposal never reaches the channel reviewers
watch; or a reason with ``<`` and ``&`` breaks ``chat.update`` and leaves live buttons on a rejected
action; or agent text renders as Slack formatting (``*bold*``, mentions, links, quotes). And a
hand-made, validly signed Slack payload tries to approve an action its policy wants decided on the
web page.

The fake Slack (tests/fake_slack.py) refuses what Slack refuses (``block_errors``), so a violation
fails these tests the way it fails in production. The property tests build the blocks from
arbitrary text (Hypothesis) and check every limit and that no displayed text holds an unmarked
invisible character.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents.models import Agent
from approvals import display, services, slack_blocks
from approvals.action_types.base import Preview
from approvals.models import ActionRequest, ActionStatus, AuditEvent, Review
from approvals.slack_blocks import APPROVE, OPEN, REJECT, action_message, clip, escape, reject_modal, result_message
from approvals.slack_interactions import TASK
from tests.fake_slack import block_errors, slack_len, view_errors
from tests.slack_helpers import (
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
    propose,
    signed,
    slack,  # noqa: F401 - fixture
    slack_id,
    submission_payload,
    worker,  # noqa: F401 - fixture
)

SENTINEL = "QZX"  # put in every piece of agent text: it must never reach a mrkdwn object

# Text an agent could send: anything, with a good share of what escaping, clipping and marking must handle.
TRICKY = (
    "&<>*_~`|!@#:\n\t\r\u202e\u202c\u200b\u200d\ufeff\u00ad\x1b\x85\u2028\ufe0f\u0301\u0430é👩🏽\U0001d49c\U000e0041"
)
agent_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from([*TRICKY, "a", " ", "&amp;", "<!channel>", "<@U0BOSS>"]), max_size=800).map("".join),
    st.builds(lambda n, c: c * n, st.integers(0, 1500), st.sampled_from(["&", "<", ">", "👩\u200d👩", "é"])),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | agent_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(agent_text, children, max_size=3),
    max_leaves=6,
)


def _user(pk: int, name: str) -> User:
    return User(pk=pk, username=name)


def _action(summary, params, *, status="pending", risk="high", reason="", explanation="", on_behalf_of="", edited=None):
    agent = Agent(name="helper-bot", owner=_user(1, "olivia"))
    now = timezone.now()
    return ActionRequest(
        agent=agent,
        action_type="http.request",
        params=params,
        edited_params=edited,
        summary=summary,
        on_behalf_of=on_behalf_of,
        status=status,
        risk=risk,
        required_approvals=2,
        policy_explanation=explanation,
        decision_reason=reason,
        expires_at=now + timedelta(hours=1),
        decided_at=None if status == "pending" else now,
        finished_at=now if status in ("succeeded", "failed") else None,
        result={"error": summary, "body": params} if status in ("succeeded", "failed") else None,
    )


def _check_texts(texts: list[str]) -> None:
    for text in texts:
        unmarked = [f"U+{ord(ch):04X}" for i, ch in enumerate(text) if display.is_invisible(text, i)]
        assert not unmarked, (unmarked, text[:200])


def _check_message(text: str, blocks: list[dict]) -> None:
    assert block_errors(blocks) == []
    assert 0 < slack_len(text) <= slack_blocks.FALLBACK_CHARS
    _check_texts([text, all_text(blocks)])
    for mrkdwn in mrkdwn_texts(blocks):
        assert SENTINEL not in mrkdwn, mrkdwn  # agent text is plain_text only


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    summary=agent_text,
    params=st.dictionaries(agent_text, json_values, max_size=12),
    reason=agent_text,
    explanation=agent_text,
    on_behalf_of=agent_text,
    preview=st.builds(
        Preview,
        kind=st.sampled_from(["text", "json", "message", "none", "unavailable"]),
        title=agent_text,
        before=json_values,
        after=json_values,
        notes=st.lists(agent_text, max_size=6),
        error=agent_text,
    ),
)
def test_blocks_from_any_text_stay_within_every_limit_and_show_no_unmarked_control(
    summary, params, reason, explanation, on_behalf_of, preview
):
    tag = SENTINEL + "*"
    preview.title = tag + preview.title
    reviews = [Review(reviewer=_user(2, "rita"), verdict=Review.Verdict.APPROVE, via="web")]
    # Every state the message can be in, for the same text: buttons with a confirmation, the web-only
    # link, an outcome with a reason, and the thread's result.
    for status, web_only in (("pending", False), ("pending", True), ("rejected", False), ("failed", False)):
        action = _action(
            tag + summary,
            {tag + k: v for k, v in params.items()},
            status=status,
            risk="critical",
            reason=tag + reason,
            explanation=tag + explanation,
            on_behalf_of=tag + on_behalf_of,
        )
        action.web_decision_only = web_only
        text, blocks = action_message(
            action, reviews=reviews, base_url="https://countersign.example.com", preview=preview, fingerprint="f" * 64
        )
        _check_message(text, blocks)
        if status == "failed":
            text, blocks = result_message(action)
            _check_message(text, blocks)
    view = reject_modal(action, channel="C0APPROVE1", message_ts="1700000000.000100")
    assert view_errors(view) == []
    _check_texts([all_text(view["blocks"])])


@settings(max_examples=200, deadline=None)
@given(raw=agent_text, limit=st.integers(1, 400))
@example(raw="\u0301" + "0", limit=1)
def test_clipping_escaped_text_never_splits_an_entity_a_marker_or_a_character(raw, limit):
    escaped = escape(display.mark_invisible(raw))
    clipped = clip(escaped, limit)
    assert slack_len(clipped) <= limit
    if clipped != escaped:
        assert clipped.endswith("…")
        kept = clipped[:-1]
        assert escaped.startswith(kept)
        # Every & left begins a whole entity; no marker is cut open; no combining mark lost its letter.
        assert not re.search(r"&(?!amp;|lt;|gt;)", kept)
        assert kept.count("⟨") == kept.count("⟩")
        rest = escaped[len(kept) :]
        # (A text that starts with a mark has no letter before it: clipping it to nothing separates nothing.)
        assert not (kept and rest) or not (rest[0] in "\u200d\ufe0f\u0301" or kept.endswith("\u200d"))


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
