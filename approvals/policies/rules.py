"""Which humans an action needs. Pure: no database writes, no I/O.

Rules are matched in order and the first match wins; when none matches the
default rule requires one approval from the default reviewers. Floors are
applied after matching and no rule can lower them. The rules themselves are
stored, versioned and loaded by approvals.policies.store.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

from django.conf import settings

AUTO_APPROVE = "auto_approve"
DENY = "deny"
REQUIRE = "require"
EFFECTS = (AUTO_APPROVE, DENY, REQUIRE)
RISKS = ("low", "medium", "high", "critical")

MIN_APPROVALS_FOR_ACCESS = 2
MAX_FRESH_AUTH_MINUTES = 24 * 60

OPERATORS = ("equals", "not_equals", "in", "not_in", "matches", "regex", "lt", "lte", "gt", "gte", "exists", "contains")
_PATH_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")
_MISSING = object()


class PolicyError(ValueError):
    """A rule (or a question about one) that can't be used as written; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str = "rule"):
        super().__init__(message)
        self.field = field


# --- conditions ------------------------------------------------------------------------------


def parse_path(path: str) -> list[str | int]:
    """``params.json.groups[0]`` -> ["params", "json", "groups", 0]."""
    if not isinstance(path, str) or not path:
        raise PolicyError("a condition needs a path such as params.channel")
    parts: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if not match or (pos == 0 and path.startswith(".")):
            raise PolicyError(f"path {path!r} is not like params.channel or params.items[0].name")
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    if parts[0] not in ("params", "agent", "action_type", "risk", "on_behalf_of"):
        raise PolicyError(f"path {path!r} must start with params, agent, action_type, risk or on_behalf_of")
    return parts


def resolve(document: dict[str, Any], parts: list[str | int]) -> Any:
    value: Any = document
    for part in parts:
        # Two branches, not one `or`: only so does mypy pair each kind of index with its container.
        if isinstance(part, int) and isinstance(value, list) and part < len(value):  # noqa: SIM114
            value = value[part]
        elif isinstance(part, str) and isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass(frozen=True)
class Condition:
    path: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        parse_path(self.path)
        if self.op not in OPERATORS:
            raise PolicyError(f"unknown operator {self.op!r}; use one of {', '.join(OPERATORS)}")
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise PolicyError(f"{self.op} takes a list of values")
        if self.op in ("lt", "lte", "gt", "gte") and _number(self.value) is None:
            raise PolicyError(f"{self.op} takes a number")
        if self.op == "matches" and not (
            isinstance(self.value, str)
            or (isinstance(self.value, list) and all(isinstance(v, str) for v in self.value))
        ):
            raise PolicyError("matches takes a shell-style pattern or a list of them")
        if self.op == "regex":
            if not isinstance(self.value, str) or len(self.value) > 500:
                raise PolicyError("regex takes a regular expression (at most 500 characters)")
            try:
                re.compile(self.value)
            except re.error as exc:
                raise PolicyError(f"regex {self.value!r} does not compile: {exc}") from None
        if self.op == "exists" and not isinstance(self.value, bool):
            raise PolicyError("exists takes true or false")

    @classmethod
    def from_dict(cls, data: Any) -> Condition:
        if not isinstance(data, dict) or set(data) - {"path", "op", "value"} or "path" not in data or "op" not in data:
            raise PolicyError('a condition is {"path": ..., "op": ..., "value": ...}')
        return cls(data["path"], data["op"], data.get("value"))

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "op": self.op, "value": self.value}

    def holds(self, document: dict[str, Any]) -> bool:
        found = resolve(document, parse_path(self.path))
        op, want = self.op, self.value
        if op == "exists":
            return (found is not _MISSING) == want
        if found is _MISSING:
            return op in ("not_equals", "not_in")
        if op == "equals":
            return found == want
        if op == "not_equals":
            return found != want
        if op == "in":
            return found in want
        if op == "not_in":
            return found not in want
        if op == "contains":
            return isinstance(found, (list, str)) and want in found
        if op == "matches":
            patterns = [want] if isinstance(want, str) else want
            return isinstance(found, str) and any(fnmatch.fnmatchcase(found, p) for p in patterns)
        if op == "regex":
            return isinstance(found, str) and re.search(want, found) is not None
        number, limit = _number(found), _number(want)
        if number is None or limit is None:
            return False
        return {"lt": number < limit, "lte": number <= limit, "gt": number > limit, "gte": number >= limit}[op]

    def describe(self) -> str:
        subject = self.path.removeprefix("params.")
        words = {
            "equals": "is",
            "not_equals": "is not",
            "in": "in",
            "not_in": "not in",
            "matches": "matches",
            "regex": "matches /",
            "lt": "<",
            "lte": "≤",
            "gt": ">",
            "gte": "≥",
            "contains": "contains",
        }
        if self.op == "exists":
            return f"{subject} {'is set' if self.value else 'is not set'}"
        value = ", ".join(map(str, self.value)) if isinstance(self.value, list) else str(self.value)
        return f"{subject} {words[self.op]} {value}{'/' if self.op == 'regex' else ''}"


# --- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    effect: str
    agent: str = "*"
    action_type: str = "*"
    risk: Sequence[str] = ()
    conditions: Sequence[Condition] = ()
    required_approvals: int = 1
    reviewer_group: str = ""
    ttl_seconds: int | None = None
    notify: Sequence[str] = ()
    reminder_after_seconds: int | None = None
    escalate_to: Sequence[str] = ()
    reason: str = ""
    description: str = ""
    # High and critical actions this rule decides are decided on the web page only (Slack links to it).
    web_decision_only: bool = False
    # Refuse proposals whose on_behalf_of names nobody known (at the access floor this holds for every rule).
    require_known_requester: bool = False
    # Step-up: approving a high or critical action this rule decides needs a sign-in at the identity provider
    # within this many minutes (OIDC auth_time); only the web page can send the reviewer through the provider, so
    # the API and Slack refuse such an approval (approvals.services.reviews). None: no step-up.
    fresh_auth_minutes: int | None = None
    # Time-boxed access (approvals.action_types.durations): the longest ``duration`` allowed, and whether one is
    # required, for action types that can be time-boxed. Checked on the parsed length, whatever its spelling.
    max_duration_seconds: int | None = None
    require_duration: bool = False

    def __post_init__(self) -> None:
        if self.effect not in EFFECTS:
            raise PolicyError(f"effect must be one of {', '.join(EFFECTS)}")
        unknown = set(self.risk) - set(RISKS)
        if unknown:
            raise PolicyError(f"unknown risk {', '.join(sorted(unknown))}")
        if not 1 <= self.required_approvals <= 10:
            raise PolicyError("required_approvals is between 1 and 10")
        if self.fresh_auth_minutes is not None and (
            isinstance(self.fresh_auth_minutes, bool)
            or not isinstance(self.fresh_auth_minutes, int)
            or not 1 <= self.fresh_auth_minutes <= MAX_FRESH_AUTH_MINUTES
        ):
            raise PolicyError(f"fresh_auth_minutes is between 1 and {MAX_FRESH_AUTH_MINUTES}")
        if self.max_duration_seconds is not None and (
            isinstance(self.max_duration_seconds, bool)
            or not isinstance(self.max_duration_seconds, int)
            or self.max_duration_seconds <= 0
        ):
            raise PolicyError("max_duration_seconds is a positive number of seconds")
        for channel in (*self.notify, *self.escalate_to):
            validate_channel(channel)

    def matches(self, document: dict[str, Any]) -> bool:
        if not fnmatch.fnmatchcase(document["agent"], self.agent):
            return False
        if not fnmatch.fnmatchcase(document["action_type"], self.action_type):
            return False
        if self.risk and document["risk"] not in self.risk:
            return False
        return all(condition.holds(document) for condition in self.conditions)

    def what(self, action_type: str) -> str:
        """The subject of the explanation: what this rule is about."""
        if self.description:
            return self.description
        if self.conditions:
            return " and ".join(c.describe() for c in self.conditions)
        return action_type


def fresh_auth_minutes(rule: Rule | None, risk: str) -> int | None:
    """Minutes within which the approver must have signed in at the identity provider, or None.

    Step-up is for the floor: a rule's ``fresh_auth_minutes`` applies to the high and critical actions it decides.
    """
    if rule is None or rule.fresh_auth_minutes is None or risk not in RISKS:
        return None
    return rule.fresh_auth_minutes if RISKS.index(risk) >= RISKS.index("high") else None


def validate_channel(channel: str) -> None:
    kind, _, target = str(channel).partition(":")
    if kind == "slack" and re.fullmatch(r"#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{6,}", target):
        return
    if kind == "email" and re.fullmatch(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+", target):
        return
    raise PolicyError(f"channel {channel!r} is not like slack:#channel or email:someone@example.com")


@dataclass(frozen=True)
class PolicyDecision:
    rule: str
    effect: str
    required_approvals: int
    reviewer_group: str
    ttl_seconds: int
    explanation: str
    reason: str = ""
    notify: tuple[str, ...] = ()
    reminder_after_seconds: int | None = None
    escalate_to: tuple[str, ...] = ()
    floors: tuple[str, ...] = field(default=())
    # Why each floor applied, in words (the simulator and the proposal's audit event show them).
    floor_reasons: tuple[str, ...] = field(default=())
    risk: str = ""
    modifies_access: bool = False
    web_decision_only: bool = False
    require_known_requester: bool = False
    # The rule's limits on time-boxed access (see Rule).
    max_duration_seconds: int | None = None
    require_duration: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "effect": self.effect, "explanation": self.explanation}


class _Routing(TypedDict):
    """Who hears of a decision that needs review, and when; PolicyDecision's fields of the same names."""

    notify: tuple[str, ...]
    reminder_after_seconds: int | None
    escalate_to: tuple[str, ...]


class _Facts(TypedDict):
    """What a decision records about the action whatever its effect; PolicyDecision's fields of the same names."""

    risk: str
    modifies_access: bool
    web_decision_only: bool
    require_known_requester: bool
    floors: tuple[str, ...]
    floor_reasons: tuple[str, ...]
    max_duration_seconds: int | None
    require_duration: bool


# --- risk follows the credential ---------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """What an action really is: its risk and whether it is at the access floor, and why.

    Risk follows the credential, not only the action type: the same "add this user to the admins
    group" is an access change whether it is sent as ``scim.group_membership`` or as a plain
    ``http.request`` through a credential for the identity provider.
    """

    risk: str
    modifies_access: bool
    access_reason: str = ""  # "credential `idp-admin` changes access"
    risk_reason: str = ""  # "credential `idp-admin` is at least high risk"

    @property
    def separation_of_duties(self) -> bool:
        """The agent's owner and the person it acts for may not decide: at the floor, or high and critical."""
        return self.modifies_access or RISKS.index(self.risk) >= RISKS.index("high")


def higher_risk(a: str, b: str) -> str:
    return max(a or "low", b or "low", key=RISKS.index)


def assess(*, action_type: str, type_risk: str, type_modifies_access: bool, credential: Any = None) -> Exposure:
    """The action's risk: max(type risk, credential.min_risk, "high" for an access-control credential).

    At the access floor when the type modifies access or the credential is marked ``access_control``.
    ``credential`` is anything with ``name``, ``access_control`` and ``min_risk`` (or None).
    """
    risk, risk_reason = str(type_risk), ""
    access = bool(type_modifies_access)
    access_reason = f"{action_type} changes access" if access else ""
    if credential is not None:
        name = getattr(credential, "name", "")
        min_risk = getattr(credential, "min_risk", "") or ""
        if min_risk in RISKS and RISKS.index(min_risk) > RISKS.index(risk):
            risk, risk_reason = min_risk, f"credential `{name}` is at least {min_risk} risk"
        if getattr(credential, "access_control", False):
            if RISKS.index(risk) < RISKS.index("high"):
                risk, risk_reason = "high", f"credential `{name}` changes access, so it is at least high risk"
            if not access:
                access, access_reason = True, f"credential `{name}` changes access"
    return Exposure(risk=risk, modifies_access=access, access_reason=access_reason, risk_reason=risk_reason)


def default_rule() -> Rule:
    return Rule(
        name="default",
        effect=REQUIRE,
        required_approvals=1,
        reviewer_group=settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP,
        notify=tuple(settings.COUNTERSIGN_DEFAULT_NOTIFY),
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
    on_behalf_of: str = "",
    rules: Sequence[Rule] = (),
    access_reason: str = "",
    risk_reason: str = "",
) -> PolicyDecision:
    """The first matching rule's decision, with the floors applied.

    ``risk`` and ``modifies_access`` are the action's as ``assess`` found them (the credential
    included); ``access_reason`` and ``risk_reason`` say why, for the explanation and ``floors``.
    """
    document = {
        "agent": agent_name,
        "action_type": action_type,
        "risk": risk,
        "on_behalf_of": on_behalf_of,
        "params": params,
    }
    rule = next((r for r in rules if r.matches(document)), None) or default_rule()
    group = rule.reviewer_group or settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP
    ttl = rule.ttl_seconds or settings.COUNTERSIGN_DEFAULT_TTL_SECONDS
    common: _Routing = {
        "notify": tuple(rule.notify),
        "reminder_after_seconds": rule.reminder_after_seconds,
        "escalate_to": tuple(rule.escalate_to),
    }
    facts: _Facts = {
        "risk": risk,
        "modifies_access": modifies_access,
        # Deciding in Slack is a choice the policy makes for high and critical actions (issue 15, point 9).
        "web_decision_only": rule.web_decision_only and RISKS.index(risk) >= RISKS.index("high"),
        "require_known_requester": rule.require_known_requester or modifies_access,
        "floors": ("risk-raised-by-credential",) if risk_reason else (),
        "floor_reasons": (risk_reason,) if risk_reason else (),
        "max_duration_seconds": rule.max_duration_seconds,
        "require_duration": rule.require_duration,
    }
    what = rule.what(action_type)
    if rule.effect == DENY:
        reason = rule.reason or "denied by policy"
        return PolicyDecision(
            rule.name, DENY, 0, "", ttl, f"rule `{rule.name}`: {what} is denied ({reason})", reason, **facts
        )
    if rule.effect == AUTO_APPROVE:
        decision = PolicyDecision(
            rule.name, AUTO_APPROVE, 0, group, ttl, f"rule `{rule.name}`: {what} is auto-approved", **facts
        )
    else:
        n = rule.required_approvals
        decision = PolicyDecision(
            rule.name,
            REQUIRE,
            n,
            group,
            ttl,
            f"rule `{rule.name}`: {what} {_approvals_phrase(n, group)}",
            **common,
            **facts,
        )
    return apply_floors(
        decision, modifies_access=modifies_access, action_type=action_type, common=common, access_reason=access_reason
    )


def apply_floors(
    decision: PolicyDecision,
    *,
    modifies_access: bool,
    action_type: str,
    common: Mapping[str, Any] | None = None,
    access_reason: str = "",
) -> PolicyDecision:
    """Access changes need two different humans, are never auto-approved, and are never decided by the agent's
    owner or the person it acts for (approvals.policies.separation_of_duties), whatever a rule says."""
    if not modifies_access or decision.effect == DENY:
        return decision
    why = access_reason or f"{action_type} changes access"
    floors = (*decision.floors, "access-needs-two-humans", "separation-of-duties", "known-requester")
    reasons = (
        *decision.floor_reasons,
        f"{why}: at least {MIN_APPROVALS_FOR_ACCESS} approvals from different people, never auto-approved",
        f"{why}: neither the agent's owner nor the person it acts for may decide it",
        f"{why}: on_behalf_of must name a known person",
    )
    if decision.effect == REQUIRE and decision.required_approvals >= MIN_APPROVALS_FOR_ACCESS:
        return replace(decision, floors=floors, floor_reasons=reasons, require_known_requester=True)
    n = MIN_APPROVALS_FOR_ACCESS
    return replace(
        decision,
        effect=REQUIRE,
        required_approvals=n,
        explanation=f"rule `{decision.rule}`: {why}, so it {_approvals_phrase(n, decision.reviewer_group)} (floor)",
        floors=floors,
        floor_reasons=reasons,
        require_known_requester=True,
        **(common or {}),
    )
