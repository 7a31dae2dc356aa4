"""Stored policy rules: loading them for decisions, changing them (versioned and audited), YAML.

Every change goes through ``save_rule``, ``delete_rule`` or ``replace_rules``;
each writes a new ``PolicyVersion`` holding the whole rule set and an audit
event naming what changed, in one transaction. Proposals record the version
they were decided under.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import yaml
from django.conf import settings
from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone

from approvals.models import PolicyRule, PolicyVersion
from approvals.policies.rules import Condition, PolicyError, Rule
from audit.canonical import digest
from audit.chain import Actor, record_event
from config.prepared import PreparedQuery

if TYPE_CHECKING:
    from django.db.models import Field

FIELDS = (
    "name",
    "position",
    "enabled",
    "description",
    "agent",
    "action_type",
    "risks",
    "conditions",
    "effect",
    "required_approvals",
    "reviewer_group",
    "ttl_seconds",
    "notify",
    "reminder_after_seconds",
    "escalate_to",
    "reason",
    "web_decision_only",
    "require_known_requester",
    "fresh_auth_minutes",
    "max_duration_seconds",
    "require_duration",
)


def _column(name: str) -> Field[Any, Any]:
    # Every name in FIELDS is a plain column of PolicyRule, never a reverse relation or a generic key.
    return cast("Field[Any, Any]", PolicyRule._meta.get_field(name))


DEFAULTS = {field: _column(field).get_default() for field in FIELDS if field != "name"}

_cache_lock = threading.Lock()
_cache: dict[str, Any] = {"version": None, "rules": (), "groups": ()}


def rule_from_row(row: PolicyRule | dict[str, Any]) -> Rule:
    """The pure Rule for a stored row; raises PolicyError naming what is wrong."""
    data = row if isinstance(row, dict) else {f: getattr(row, f) for f in FIELDS}
    for list_field in ("risks", "conditions", "notify", "escalate_to"):
        if not isinstance(data.get(list_field) or [], list):
            raise PolicyError(f"{list_field} must be a list")
    conditions = tuple(Condition.from_dict(c) for c in data.get("conditions") or [])
    return Rule(
        name=data["name"],
        effect=data.get("effect") or "require",
        agent=data.get("agent") or "*",
        action_type=data.get("action_type") or "*",
        risk=tuple(data.get("risks") or ()),
        conditions=conditions,
        required_approvals=int(data.get("required_approvals") or 1),
        reviewer_group=data.get("reviewer_group") or "",
        ttl_seconds=data.get("ttl_seconds") or None,
        notify=tuple(data.get("notify") or ()),
        reminder_after_seconds=data.get("reminder_after_seconds") or None,
        escalate_to=tuple(data.get("escalate_to") or ()),
        reason=data.get("reason") or "",
        description=data.get("description") or "",
        web_decision_only=_flag(data, "web_decision_only"),
        require_known_requester=_flag(data, "require_known_requester"),
        fresh_auth_minutes=_minutes(data, "fresh_auth_minutes"),
        max_duration_seconds=data.get("max_duration_seconds") or None,
        require_duration=_flag(data, "require_duration"),
    )


def _minutes(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{name} is a whole number of minutes")
    return value


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name) or False
    if not isinstance(value, bool):
        raise PolicyError(f"{name} is true or false")
    return value


def current_version() -> int:
    return PolicyVersion.objects.order_by("-number").values_list("number", flat=True).first() or 0


# The policy head: the newest version's (number, digest); (0, "") before the first version.
PolicyHead = tuple[int, str]

# Read on every proposal (the rules in force are the head's, never a stale copy), by a statement compiled once.
_HEAD = PreparedQuery(lambda: PolicyVersion.objects.order_by("-number").values_list("number", "digest")[:1])
# The same head as two columns of another statement (``values_list(*HEAD_COLUMNS)``), for a caller that reads it with
# its own row, fresh, without a round trip of its own (a decision, approvals.services.transitions.lock_action); turned
# into a head by ``head_of``.
HEAD_COLUMNS = (
    Subquery(PolicyVersion.objects.order_by("-number").values("number")[:1]),
    Subquery(PolicyVersion.objects.order_by("-number").values("digest")[:1]),
)


def head_of(number: int | None, digest_: str | None) -> PolicyHead:
    """The head read as ``HEAD_COLUMNS``: both None when there is no version yet."""
    return (number, digest_ or "") if number is not None else (0, "")


def active_rules(head: PolicyHead | None = None) -> tuple[int, tuple[Rule, ...]]:
    """(version, enabled rules in order); re-read only when the head version changed.

    Keyed by number *and* digest: a restored backup (or a rolled-back test)
    can bring back a version number with other rules. ``head``: the head's (number, digest) as the caller has just
    read it with other things (a proposal, approvals.services.proposals; a decision, with the action it locks); (0, "")
    when there is no version yet.
    """
    if head is None:
        head = _HEAD.first() or (0, "")
    with _cache_lock:
        if _cache["version"] == head:
            return head[0], _cache["rules"]
    rules = tuple(rule_from_row(r) for r in PolicyRule.objects.filter(enabled=True).order_by("position", "name"))
    groups = tuple(dict.fromkeys(rule.reviewer_group for rule in rules if rule.reviewer_group))
    with _cache_lock:
        _cache.update(version=head, rules=rules, groups=groups)
    return head[0], rules


def likely_reviewer_groups(limit: int) -> tuple[str, ...]:
    """Up to ``limit`` names of groups a rule may route a proposal to, the default group first, by the rules this
    process read last: for a caller that looks the groups up by name with a statement it makes anyway (a proposal,
    approvals.services.proposals). Only a guess at which names to look up, never an answer: the rules in force may
    have changed since, and the caller looks up any other name itself."""
    with _cache_lock:
        groups = _cache["groups"]
    return tuple(dict.fromkeys((settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP, *groups)))[:limit]


def snapshot() -> list[dict[str, Any]]:
    return [
        {f: getattr(row, f) for f in FIELDS}
        for row in PolicyRule.objects.order_by("position", "name")  # disabled ones too: they are policy
    ]


def _new_version(actor: Actor, comment: str, changes: dict[str, Any]) -> PolicyVersion:
    rules = snapshot()
    last = PolicyVersion.objects.select_for_update().order_by("-number").first()
    version = PolicyVersion.objects.create(
        number=(last.number if last else 0) + 1,
        author=f"{actor.type}:{actor.name}",
        comment=comment[:500],
        rules=rules,
        digest=digest(rules),
    )
    record_event(
        actor=actor,
        verb="policy.changed",
        object_type="policy",
        object_id=str(version.number),
        data={"version": version.number, "comment": comment, **changes},
    )
    return version


def _validated(data: dict[str, Any]) -> dict[str, Any]:
    unknown = set(data) - set(FIELDS)
    if unknown:
        raise PolicyError(f"unknown field(s): {', '.join(sorted(unknown))}")
    merged = {**DEFAULTS, **data}
    for name in FIELDS:
        # A YAML list or mapping where text belongs would otherwise be stored as its Python repr.
        field = _column(name)
        if field.get_internal_type() in ("CharField", "TextField", "SlugField") and not isinstance(merged[name], str):
            raise PolicyError(f"{name} is text, not {type(merged[name]).__name__} {merged[name]!r}")
    rule_from_row(merged)
    row = PolicyRule(**merged)
    try:
        row.full_clean(exclude=["name"] if PolicyRule.objects.filter(name=merged["name"]).exists() else None)
    except Exception as exc:
        messages = getattr(exc, "message_dict", None) or {"rule": [str(exc)]}
        raise PolicyError("; ".join(f"{k}: {' '.join(v)}" for k, v in messages.items())) from None
    return merged


def save_rule(data: dict[str, Any], *, actor: Actor, comment: str = "") -> PolicyRule:
    """Create or update the rule named ``data["name"]``."""
    merged = _validated(data)
    with transaction.atomic():
        existing = PolicyRule.objects.select_for_update().filter(name=merged["name"]).first()
        before = {f: getattr(existing, f) for f in FIELDS} if existing else None
        row = existing or PolicyRule(name=merged["name"])
        for key, value in merged.items():
            setattr(row, key, value)
        row.updated_at = timezone.now()
        row.save()
        after = {f: getattr(row, f) for f in FIELDS}
        if before != after:
            changed = {"rule": row.name, "before": before, "after": after}
            _new_version(actor, comment or f"{'changed' if before else 'added'} rule {row.name}", changed)
    return row


def delete_rule(name: str, *, actor: Actor, comment: str = "") -> bool:
    with transaction.atomic():
        row = PolicyRule.objects.select_for_update().filter(name=name).first()
        if row is None:
            return False
        before = {f: getattr(row, f) for f in FIELDS}
        row.delete()
        _new_version(actor, comment or f"removed rule {name}", {"rule": name, "before": before, "after": None})
    return True


@dataclass
class Plan:
    added: list[str]
    removed: list[str]
    changed: list[str]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        return (
            [f"+ {n}" for n in self.added] + [f"- {n}" for n in self.removed] + [f"~ {n}" for n in self.changed]
        ) or ["no changes"]


def plan_replace(rules: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Plan]:
    """Validate a full rule set; what replacing the stored one with it would change."""
    if not isinstance(rules, list):
        raise PolicyError("the file holds a list of rules under `rules:`")
    validated, names = [], set()
    for index, data in enumerate(rules):
        if not isinstance(data, dict) or not data.get("name") or not isinstance(data["name"], str):
            raise PolicyError(f"rule #{index + 1} needs a name")
        if data["name"] in names:
            raise PolicyError(f"rule {data['name']!r} appears twice")
        names.add(data["name"])
        try:
            merged = _validated({"position": (index + 1) * 10, **data})
        except PolicyError as exc:
            raise PolicyError(f"rule {data['name']!r}: {exc}") from None
        validated.append(merged)
    current = {r["name"]: r for r in snapshot()}
    plan = Plan(
        added=[r["name"] for r in validated if r["name"] not in current],
        removed=[n for n in current if n not in names],
        changed=[r["name"] for r in validated if r["name"] in current and current[r["name"]] != r],
    )
    return validated, plan


def replace_rules(rules: list[dict[str, Any]], *, actor: Actor, comment: str = "") -> Plan:
    """Make the stored rule set exactly ``rules`` (an import), as one new version."""
    validated, plan = plan_replace(rules)
    if plan.empty:
        return plan
    with transaction.atomic():
        PolicyRule.objects.select_for_update().all().delete()
        now = timezone.now()
        PolicyRule.objects.bulk_create([PolicyRule(**r, updated_at=now) for r in validated])
        _new_version(
            actor,
            comment or "imported rules",
            {"added": plan.added, "removed": plan.removed, "changed": plan.changed},
        )
    return plan


# --- YAML -------------------------------------------------------------------------------------


def to_yaml(rules: list[dict[str, Any]] | None = None) -> str:
    """Rules as YAML, leaving out fields at their defaults so files stay short."""
    out = []
    for rule in snapshot() if rules is None else rules:
        out.append({k: v for k, v in rule.items() if k in ("name", "position") or v != DEFAULTS.get(k)})
    return yaml.safe_dump({"rules": out}, sort_keys=False, allow_unicode=True)


def from_yaml(text: str) -> list[dict[str, Any]]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # One line (a command's error, a form's message): the problem and where, not PyYAML's excerpt.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError(f"not valid YAML{where}: {problem}") from None
    if not isinstance(document, dict) or set(document) != {"rules"}:
        raise PolicyError("the file is a mapping with one key, `rules`, holding a list")
    return document["rules"] or []
