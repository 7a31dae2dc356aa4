"""The history page's reads: decided actions by decision time, who decided them, and its filters.

Reads through ``selectors.actions_for``, so a reviewer's history holds only what they may see, and pages by
keyset (approvals.selectors.keyset) on the decision time, newest first, primary key last.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Exists, OuterRef, QuerySet

from agents.models import Agent
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.selectors import actions as selectors
from approvals.selectors import keyset
from approvals.validation import unstorable_text
from audit.models import AuditEvent
from catalog import registry

STATUSES = [s.value for s in ActionStatus if s != ActionStatus.PENDING]
ORDER: keyset.Ordering = (
    keyset.Key("decided_at", descending=True, kind=datetime),
    keyset.Key("id", descending=True, kind=uuid.UUID),
)
CURSOR_TAG = "history-decided"  # not "history": a link made when history was ordered by proposal is refused
# The audit verbs that take an action out of "pending": their actor decided it.
DECISION_VERBS = ("action.approved", "action.rejected", "action.expired", "action.cancelled")


@dataclass(frozen=True)
class HistoryFilters:
    """What the reviewer asked the history to show. Parsed leniently: a value not understood is dropped."""

    status: str = ""
    agent: str = ""
    action_type: str = ""
    decided_by: str = ""  # a reviewer's username: actions they approved or rejected
    since: date | None = None  # decided on or after this day (UTC)
    until: date | None = None  # decided on or before this day (UTC)

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> HistoryFilters:
        status = _text(query, "status")
        return cls(
            status=status if status in STATUSES else "",
            agent=_text(query, "agent")[:64],
            action_type=_text(query, "action_type")[:100],
            decided_by=_text(query, "decided_by")[:150],
            since=_day(query, "since"),
            until=_day(query, "until"),
        )

    def query_items(self) -> list[tuple[str, str]]:
        items = [(k, getattr(self, k)) for k in ("status", "agent", "action_type", "decided_by") if getattr(self, k)]
        items += [(k, getattr(self, k).isoformat()) for k in ("since", "until") if getattr(self, k)]
        return items

    def querystring(self, **extra: str) -> str:
        return urlencode(self.query_items() + [(k, v) for k, v in extra.items() if v])

    @property
    def is_default(self) -> bool:
        return not self.query_items()

    def apply(self, qs: QuerySet) -> QuerySet:
        if self.status:
            qs = qs.filter(status=self.status)
        if self.agent:
            qs = qs.filter(agent__name=self.agent)
        if self.action_type:
            qs = qs.filter(action_type=self.action_type)
        if self.decided_by:
            decided = Review.objects.filter(
                action_id=OuterRef("pk"),
                reviewer__username__iexact=self.decided_by,
                verdict__in=[Review.Verdict.APPROVE, Review.Verdict.REJECT],
                withdrawn_at__isnull=True,
            )
            qs = qs.filter(Exists(decided))
        if self.since:
            qs = qs.filter(decided_at__gte=datetime.combine(self.since, time.min, tzinfo=UTC))
        if self.until:
            qs = qs.filter(decided_at__lt=datetime.combine(self.until + timedelta(days=1), time.min, tzinfo=UTC))
        return qs


def _text(query: Mapping[str, Any], name: str) -> str:
    value = " ".join(str(query.get(name) or "").split())
    return "" if unstorable_text(value) else value


def _day(query: Mapping[str, Any], name: str) -> date | None:
    try:
        return date.fromisoformat(_text(query, name)[:10])
    except ValueError:
        return None


@dataclass(frozen=True)
class HistoryPage:
    filters: HistoryFilters
    rows: list[ActionRequest]
    decisions: dict[uuid.UUID, Decision]
    next_cursor: str | None


def history_page(user, filters: HistoryFilters, *, before: str = "", size: int = 50) -> HistoryPage:
    """One page of decided actions ``user`` may see, most recently decided first. Raises keyset.BadCursor."""
    after = keyset.decode_cursor(CURSOR_TAG, ORDER, before) if before else None
    # Every decided action has its decision time (ActionRequest.move_to sets it on leaving "pending").
    qs = filters.apply(
        selectors.actions_for(user).exclude(status=ActionStatus.PENDING).filter(decided_at__isnull=False)
    )
    found = keyset.page(qs, ORDER, size=size, after=after)
    rows = found.rows
    return HistoryPage(
        filters=filters,
        rows=rows,
        decisions=decisions_of(rows),
        next_cursor=keyset.encode_cursor(CURSOR_TAG, ORDER, rows[-1]) if found.has_next else None,
    )


def filter_choices() -> dict[str, list[str]]:
    return {
        "statuses": STATUSES,
        "agents": list(Agent.objects.order_by("name").values_list("name", flat=True)[:200]),
        "action_types": sorted(t.name for t in registry.all_types()),
    }


# --- who decided --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    by: str  # "sam", "sam, dana", "policy", "nobody (it expired)", "agent billing-bot"
    outcome: str  # approved | rejected | expired | cancelled
    at: datetime | None


def decisions_of(actions: Iterable[ActionRequest]) -> dict[uuid.UUID, Decision]:
    """Who decided each of these actions, and how: two queries for a page of them.

    The people whose approvals or rejection decided it (an approval withdrawn within the undo window does not
    count); when no person did, the actor of the decision's audit event (a policy, the expiry, the agent)."""
    actions = [a for a in actions if a.decided_at is not None]
    ids = [a.pk for a in actions]
    if not ids:
        return {}
    people: dict[uuid.UUID, list[str]] = {}
    reviews = (
        Review.objects.filter(action_id__in=ids, reviewer__isnull=False, withdrawn_at__isnull=True)
        .order_by("created_at", "id")
        .values_list("action_id", "reviewer__username", "verdict")
    )
    verdict_of = {ActionStatus.REJECTED: Review.Verdict.REJECT}
    by_status = {a.pk: a.status for a in actions}
    for action_id, username, verdict in reviews:
        wanted = verdict_of.get(by_status[action_id], Review.Verdict.APPROVE)
        if verdict == wanted:
            people.setdefault(action_id, []).append(username)
    events: dict[uuid.UUID, tuple[str, str, str]] = {}
    for action_id, verb, actor_type, actor in (
        AuditEvent.objects.filter(action_id__in=ids, verb__in=DECISION_VERBS)
        .order_by("seq")
        .values_list("action_id", "verb", "actor_type", "actor")
    ):
        events[action_id] = (verb, actor_type, actor)  # the last one wins: the decision that stands
    decided = {}
    for action in actions:
        verb, actor_type, actor = events.get(action.pk, ("", "", ""))
        outcome = verb.removeprefix("action.") or _outcome(action.status)
        by = ", ".join(people.get(action.pk, [])) or _actor_label(outcome, actor_type, actor)
        decided[action.pk] = Decision(by=by, outcome=outcome, at=action.decided_at)
    return decided


def decision_of(action: ActionRequest) -> Decision | None:
    """Who decided ``action`` and when; None while it is pending."""
    if action.is_pending:
        return None
    return decisions_of([action]).get(action.pk)


def _outcome(status: str) -> str:
    if status in (ActionStatus.REJECTED, ActionStatus.EXPIRED, ActionStatus.CANCELLED):
        return str(status)
    return "approved"  # approved, and whatever followed it (executing, succeeded, failed, unknown)


def _actor_label(outcome: str, actor_type: str, actor: str) -> str:
    if outcome == "expired":
        return "nobody (it expired)"
    if actor_type == "policy" or (not actor_type and outcome != "cancelled"):
        return "policy"
    if actor_type == "agent":
        return f"agent {actor}"
    return actor or "countersign"


def decision_sentence(decision: Decision, *, now: datetime | None = None) -> str:
    """ "sam approved this at 14:02 UTC" (a date too when it was not today): who decided what, and when."""
    when = ""
    if decision.at is not None:
        at = decision.at.astimezone(UTC)
        today = (now or datetime.now(UTC)).astimezone(UTC).date()
        when = at.strftime(" at %H:%M UTC") if at.date() == today else at.strftime(" on %Y-%m-%d at %H:%M UTC")
    if decision.outcome == "expired":
        return f"This action expired{when}"
    return f"{decision.by} {decision.outcome} this{when}"
