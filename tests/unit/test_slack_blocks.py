"""Slack blocks built from any agent text stay within Slack's limits and show no unmarked control character, and
clipping never splits what it cuts; checked with the fake Slack's own copy of what Slack refuses (no Slack, no
database; the messages Slack really gets: tests/slack/test_slack_limits.py)."""

from __future__ import annotations

import re
from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents.models import Agent
from approvals.models import ActionRequest, Review
from approvals.presentation import display
from approvals.slack import blocks as slack_blocks
from approvals.slack.blocks import action_message, clip, escape, reject_modal, result_message
from catalog.base import Preview
from tests.support.fake_slack import block_errors, slack_len, view_errors
from tests.support.slack_helpers import all_text, mrkdwn_texts

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
