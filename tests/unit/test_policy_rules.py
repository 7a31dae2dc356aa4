"""The policy rule language on its own (approvals/policies/rules.py): conditions one operator at a time,
malformed conditions, first match wins (rules in action: tests/policies/test_policies.py)."""

from __future__ import annotations

import pytest

from approvals.policies.rules import Condition, PolicyError, Rule, decide

DOC = {
    "agent": "deploy-bot",
    "action_type": "slack.post_message",
    "risk": "medium",
    "on_behalf_of": "dana@example.com",
    "params": {"channel": "#prod-alerts", "count": 7, "tags": ["db", "urgent"], "items": [{"name": "x"}]},
}


@pytest.mark.parametrize(
    ("path", "op", "value", "holds"),
    [
        ("params.channel", "equals", "#prod-alerts", True),
        ("params.channel", "equals", "#prod", False),
        ("params.channel", "not_equals", "#prod", True),
        ("params.missing", "not_equals", "x", True),
        ("params.channel", "in", ["#a", "#prod-alerts"], True),
        ("params.channel", "not_in", ["#a"], True),
        ("params.channel", "matches", "#prod-*", True),
        ("params.channel", "matches", ["#dev-*", "#test-*"], False),
        ("params.channel", "regex", r"^#prod-(alerts|pages)$", True),
        ("params.count", "lt", 10, True),
        ("params.count", "lte", 7, True),
        ("params.count", "gt", 7, False),
        ("params.count", "gte", 7.0, True),
        ("params.channel", "gt", 1, False),  # not a number: never matches
        ("params.tags", "contains", "urgent", True),
        ("params.tags[0]", "equals", "db", True),
        ("params.items[0].name", "equals", "x", True),
        ("params.items[3].name", "equals", "x", False),
        ("params.count", "exists", True, True),
        ("params.nope", "exists", False, True),
        ("on_behalf_of", "matches", "*@example.com", True),
        ("agent", "equals", "deploy-bot", True),
    ],
)
def test_condition_operators(path, op, value, holds):
    assert Condition(path, op, value).holds(DOC) is holds


@pytest.mark.parametrize(
    ("path", "op", "value"),
    [
        ("channel", "equals", "x"),  # must start with params/agent/...
        ("params..x", "equals", "x"),
        ("params.x", "approximately", "x"),
        ("params.x", "in", "not-a-list"),
        ("params.x", "lt", "ten"),
        ("params.x", "regex", "(unclosed"),
        ("params.x", "exists", "yes"),
        ("params.x", "matches", 5),
    ],
)
def test_malformed_conditions_are_refused(path, op, value):
    with pytest.raises(PolicyError):
        Condition(path, op, value)


def test_first_matching_rule_wins_and_disabled_rules_are_skipped():
    rules = [
        Rule("off", "deny", action_type="slack.*"),
        Rule(
            "prod-slack",
            "require",
            action_type="slack.*",
            required_approvals=2,
            reviewer_group="sre",
            conditions=(Condition("params.channel", "matches", "#prod-*"),),
        ),
        Rule("any-slack", "auto_approve", action_type="slack.*"),
    ]
    kwargs = dict(agent_name="bot", action_type="slack.post_message", risk="medium", modifies_access=False)
    decision = decide(params={"channel": "#prod-x"}, rules=rules[1:], **kwargs)
    assert (decision.rule, decision.effect, decision.required_approvals) == ("prod-slack", "require", 2)
    assert decision.explanation == "rule `prod-slack`: channel matches #prod-* needs 2 approvals from sre"
    assert decide(params={"channel": "#dev"}, rules=rules[1:], **kwargs).effect == "auto_approve"
    assert decide(params={"channel": "#dev"}, rules=rules, **kwargs).effect == "deny"
    assert decide(params={}, rules=[], **kwargs).rule == "default"
