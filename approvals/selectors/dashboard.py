"""The dashboard's numbers: what is waiting, how fast and how reviewers decide, what failed.

Scoped like every read (``selectors.actions_for``): a reviewer's dashboard
counts only the actions routed to their groups. "Decisions" are the ones
people made (policy effect ``require``); actions a policy approved or denied
on its own are counted apart, so they do not flatter the time to decision.
Time to decision is ``decided_at - created_at``; its median and 90th
percentile come from ``percentile_cont`` on PostgreSQL and are computed in
Python on SQLite (the embedded default, small by nature). Executions count
for the window when the action was decided and finished in it.

Every number reads the window through the ``decided_at`` index
(``action_desk_decided``): three scans of it, whatever the table's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db import connection
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from approvals.models import ActionRequest, ActionStatus
from approvals.selectors import actions as selectors
from approvals.selectors.access import access_counts

WINDOWS = (7, 30)
APPROVED = (
    ActionStatus.APPROVED,
    ActionStatus.EXECUTING,
    ActionStatus.SUCCEEDED,
    ActionStatus.FAILED,
    ActionStatus.UNKNOWN,
)
DECIDED = (*APPROVED, ActionStatus.REJECTED)
HUMAN = "require"  # the policy effect of actions that people decide
TOP = 10
RECENT_FAILURES = 8


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(p) WITHIN GROUP (ORDER BY expr)``; works on intervals too."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction: float, **extra):
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be within [0, 1]")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


@dataclass(frozen=True)
class RateRow:
    label: str
    approved: int
    rejected: int

    @property
    def total(self) -> int:
        return self.approved + self.rejected

    @property
    def rate(self) -> float | None:
        return self.approved / self.total if self.total else None


@dataclass(frozen=True)
class Day:
    day: date
    approved: int
    rejected: int
    expired: int

    @property
    def total(self) -> int:
        return self.approved + self.rejected + self.expired


@dataclass(frozen=True)
class Dashboard:
    days: int
    since: datetime
    pending_now: int
    decided_today: int
    decisions: int
    approved: int
    rejected: int
    expired: int
    by_policy: int
    median_seconds: float | None
    p90_seconds: float | None
    succeeded: int
    failed: int
    per_day: list[Day]
    by_agent: list[RateRow]
    by_type: list[RateRow]
    recent_failures: list[ActionRequest]
    unknown: int = 0  # executions whose outcome nobody knows yet (interrupted; a reviewer resolves them)
    # Time-boxed access now (approvals.selectors.access.access_counts): held, taken back by expiry or early, and
    # reverts failing now (an alert until they succeed).
    access: dict[str, int] = field(default_factory=dict)

    @property
    def approval_rate(self) -> float | None:
        return self.approved / self.decisions if self.decisions else None


def window(value) -> int:
    """7 or 30 (days); anything else is 7."""
    try:
        days = int(value)
    except (TypeError, ValueError):
        return WINDOWS[0]
    return days if days in WINDOWS else WINDOWS[0]


def dashboard_for(principal, *, days: int = 7, now: datetime | None = None) -> Dashboard:
    """Three scans of the window (outcomes per day; per agent and type; the percentiles) and two small reads."""
    now = now or timezone.now()
    local_now = timezone.localtime(now)
    today = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)  # today and the days - 1 before it
    visible = selectors.actions_for(principal).select_related(None).prefetch_related(None).order_by()
    in_window = visible.filter(decided_at__gte=since)
    human = in_window.filter(status__in=DECIDED, policy_effect=HUMAN)

    tz = timezone.get_current_timezone()
    per_day: dict[date, dict[str, int]] = {}
    totals = {
        "approved": 0,
        "rejected": 0,
        "today": 0,
        "expired": 0,
        "by_policy": 0,
        "succeeded": 0,
        "failed": 0,
        "unknown": 0,
    }
    outcomes = (
        in_window.annotate(day=TruncDate("decided_at", tzinfo=tz))
        .values("day", "status", "policy_effect")
        .annotate(n=Count("pk"), finished=Count("pk", filter=Q(finished_at__gte=since)))
    )
    for row in outcomes:
        status, n, day = row["status"], row["n"], row["day"]
        if status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.UNKNOWN):
            totals[status] += row["finished"]
        if status == ActionStatus.EXPIRED:
            kind = "expired"
        elif status not in DECIDED:
            continue  # cancelled
        elif row["policy_effect"] != HUMAN:
            totals["by_policy"] += n
            continue
        else:
            kind = "approved" if status in APPROVED else "rejected"
            if day == today.date():
                totals["today"] += n
        totals[kind] += n
        per_day.setdefault(day, {}).setdefault(kind, 0)
        per_day[day][kind] += n

    median, p90 = _time_to_decision(human)
    dates = [since.date() + timedelta(days=i) for i in range(days)]
    by_agent, by_type = _rates(human)
    return Dashboard(
        days=days,
        since=since,
        pending_now=visible.filter(status=ActionStatus.PENDING).count(),
        decided_today=totals["today"],
        decisions=totals["approved"] + totals["rejected"],
        approved=totals["approved"],
        rejected=totals["rejected"],
        expired=totals["expired"],
        by_policy=totals["by_policy"],
        median_seconds=median,
        p90_seconds=p90,
        succeeded=totals["succeeded"],
        failed=totals["failed"],
        unknown=totals["unknown"],
        per_day=[Day(d, *(per_day.get(d, {}).get(k, 0) for k in ("approved", "rejected", "expired"))) for d in dates],
        by_agent=by_agent,
        by_type=by_type,
        recent_failures=list(
            selectors.actions_for(principal)
            .filter(status=ActionStatus.FAILED, decided_at__gte=since, finished_at__gte=since)
            .order_by("-decided_at", "-id")[:RECENT_FAILURES]
        ),
        access=access_counts(principal),
    )


def _duration():
    return ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())


def _time_to_decision(decided: QuerySet) -> tuple[float | None, float | None]:
    if connection.vendor == "postgresql":
        row = decided.aggregate(
            median=PercentileCont(_duration(), 0.5, output_field=DurationField()),
            p90=PercentileCont(_duration(), 0.9, output_field=DurationField()),
        )
        return tuple(v.total_seconds() if v is not None else None for v in (row["median"], row["p90"]))
    seconds = sorted((d - c).total_seconds() for c, d in decided.values_list("created_at", "decided_at"))
    return percentile(seconds, 0.5), percentile(seconds, 0.9)


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks: what percentile_cont computes."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _rates(human: QuerySet) -> tuple[list[RateRow], list[RateRow]]:
    """Approval rate by agent and by action type, from one GROUP BY (agent, type, outcome)."""
    agents: dict[str, list[int]] = {}
    types: dict[str, list[int]] = {}
    rows = human.values("agent__name", "action_type").annotate(
        approved=Count("pk", filter=Q(status__in=APPROVED)),
        rejected=Count("pk", filter=Q(status=ActionStatus.REJECTED)),
    )
    for row in rows:
        for book, key in ((agents, row["agent__name"]), (types, row["action_type"])):
            counts = book.setdefault(str(key), [0, 0])
            counts[0] += row["approved"]
            counts[1] += row["rejected"]

    def top(book: dict[str, list[int]]) -> list[RateRow]:
        ranked = sorted(book.items(), key=lambda kv: (-(kv[1][0] + kv[1][1]), kv[0]))[:TOP]
        return [RateRow(label, a, r) for label, (a, r) in ranked]

    return top(agents), top(types)
