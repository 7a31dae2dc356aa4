"""Which humans an action needs. Pure: no database writes, no I/O.

Rules are matched in order and the first match wins; when none matches the
default rule requires one approval from the default reviewers. Floors are
applied after matching and no rule can lower them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings

AUTO_APPROVE = "auto_approve"
DENY = "deny"
REQUIRE = "require"
EFFECTS = (AUTO_APPROVE, DENY, REQUIRE)

MIN_APPROVALS_FOR_ACCESS = 2


@dataclass(frozen=True)
class Rule:
    name: str
    effect: str
    agent: str = "*"
    action_type: str = "*"
    risk: Sequence[str] = ()
    required_approvals: int = 1
    reviewer_group: str = ""
    ttl_seconds: int | None = None
    reason: str = ""

    def matches(self, *, agent_name: str, action_type: str, risk: str, params: dict[str, Any]) -> bool:
        if not fnmatch.fnmatchcase(agent_name, self.agent):
            return False
        if not fnmatch.fnmatchcase(action_type, self.action_type):
            return False
        return not self.risk or risk in self.risk


@dataclass(frozen=True)
class PolicyDecision:
    rule: str
    effect: str
    required_approvals: int
    reviewer_group: str
    ttl_seconds: int
    explanation: str
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "effect": self.effect, "explanation": self.explanation}


def default_rule() -> Rule:
    return Rule(
        name="default",
        effect=REQUIRE,
        required_approvals=1,
        reviewer_group=settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP,
    )


def _approvals_phrase(n: int, group: str) -> str:
    return f"needs {n} approval{'s' if n != 1 else ''} from {group}"


def decide(
    *,
    agent_name: str,
    action_type: str,
    risk: str,
    modifies_access: bool,
    params: dict[str, Any],
    rules: Sequence[Rule] = (),
) -> PolicyDecision:
    rule = (
        next(
            (r for r in rules if r.matches(agent_name=agent_name, action_type=action_type, risk=risk, params=params)),
            None,
        )
        or default_rule()
    )
    group = rule.reviewer_group or settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP
    ttl = rule.ttl_seconds or settings.COUNTERSIGN_DEFAULT_TTL_SECONDS
    if rule.effect == DENY:
        reason = rule.reason or "denied by policy"
        return PolicyDecision(rule.name, DENY, 0, "", ttl, f"rule `{rule.name}`: denied ({reason})", reason)
    if rule.effect == AUTO_APPROVE:
        decision = PolicyDecision(rule.name, AUTO_APPROVE, 0, group, ttl, f"rule `{rule.name}`: auto-approved")
    else:
        n = max(1, rule.required_approvals)
        decision = PolicyDecision(
            rule.name, REQUIRE, n, group, ttl, f"rule `{rule.name}`: {action_type} {_approvals_phrase(n, group)}"
        )
    return apply_floors(decision, modifies_access=modifies_access, action_type=action_type)


def apply_floors(decision: PolicyDecision, *, modifies_access: bool, action_type: str) -> PolicyDecision:
    """Access changes need two humans, whatever a rule says."""
    if not modifies_access or decision.effect == DENY:
        return decision
    if decision.effect == REQUIRE and decision.required_approvals >= MIN_APPROVALS_FOR_ACCESS:
        return decision
    n = MIN_APPROVALS_FOR_ACCESS
    return replace(
        decision,
        effect=REQUIRE,
        required_approvals=n,
        explanation=(
            f"rule `{decision.rule}`: {action_type} changes access, "
            f"so it {_approvals_phrase(n, decision.reviewer_group)} (floor)"
        ),
    )
