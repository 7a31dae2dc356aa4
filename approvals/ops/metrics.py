"""Prometheus metrics, read from the database (and the dependencies) at scrape time.

Counting from the tables (rather than in-process counters) gives the same answer from every web process and
survives restarts. Request rate, latency and errors are the one exception: they are counted where they happen,
by the web processes (config/request_metrics.py). docs/deploy.md lists every metric.

Cheap with millions of historic actions: each query reads an index, and most read only what is in flight
(pending, approved and not yet run, executing; undelivered outbox messages) or rare events (resolutions,
failed notifications). Two read more. The count of actions by status (``countersign_actions``,
``countersign_decisions_total``, ``countersign_executions_total``) reads one entry per action whatever the plan:
0.12-0.25 s per million actions on PostgreSQL, measured; only a table of counts kept by the transitions would make
it constant. The in-flight query reads the partial index ``action_in_flight`` (unfinished actions only).

The queries run in one read-only snapshot on PostgreSQL, so counters that move together (an unknown outcome
resolved: one less ``unknown`` now, one more resolution) never show half a move, which Prometheus would read as
a counter reset.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db import DatabaseError, connection, transaction
from django.db.models import Case, CharField, Count, DurationField, ExpressionWrapper, F, Min, Value, When
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from approvals.models import ActionRequest, ActionStatus, OutboxMessage
from approvals.ops import health
from approvals.selectors.dashboard import PercentileCont
from audit.models import AuditEvent

log = logging.getLogger(__name__)

OUTCOME_OF_STATUS = {
    ActionStatus.APPROVED: "approved",
    ActionStatus.EXECUTING: "approved",
    ActionStatus.SUCCEEDED: "approved",
    ActionStatus.FAILED: "approved",
    ActionStatus.UNKNOWN: "approved",
    ActionStatus.REJECTED: "rejected",
    ActionStatus.EXPIRED: "expired",
    ActionStatus.CANCELLED: "cancelled",
}
EXECUTION_OUTCOMES = (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.UNKNOWN)
# The stages of an action still in flight, and the time its age at that stage counts from.
OPEN_STAGES = {
    ActionStatus.PENDING: "created_at",  # waiting for a human since it was proposed
    ActionStatus.APPROVED: "decided_at",  # waiting for a worker since it was approved
    ActionStatus.EXECUTING: "execution_started_at",  # running since a worker started it
}
DELIVERY_CHANNELS = ("webhook", "slack", "email")
RECENT = timedelta(hours=24)
MAX_SAMPLES = 20_000


class CountersignCollector(Collector):
    def collect(self):
        up = dependencies_up()
        families = []
        if up[health.DATABASE]:
            try:
                with _snapshot():
                    families = list(_database_families())
            except DatabaseError:
                log.warning("metrics: the database failed during the scrape", exc_info=True)
                up[health.DATABASE] = False
        # The database down: the scrape still answers, with the request metrics and every dependency's state.
        yield from families
        dependency = GaugeMetricFamily(
            "countersign_dependency_up",
            "1 if the dependency answered a check within COUNTERSIGN_HEALTH_TIMEOUT_MS now, else 0 (beat: where its "
            "heartbeat file is visible only).",
            labels=["dependency"],
        )
        for name, answered in up.items():
            dependency.add_metric([name], 1 if answered else 0)
        yield dependency


@contextlib.contextmanager
def _snapshot() -> Iterator[None]:
    """PostgreSQL: every query of the scrape in one read-only REPEATABLE READ transaction (one snapshot)."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _database_families():
    now = timezone.now()
    # Index-only scan of action_status_created (status, created_at): one entry per action.
    by_status = dict(ActionRequest.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    pending = GaugeMetricFamily("countersign_queue_depth", "Actions waiting for a human decision.")
    pending.add_metric([], by_status.get(ActionStatus.PENDING, 0))
    yield pending

    status = GaugeMetricFamily("countersign_actions", "Actions by current status.", labels=["status"])
    for value in ActionStatus.values:
        status.add_metric([value], by_status.get(value, 0))
    yield status

    decisions = CounterMetricFamily("countersign_decisions", "Actions decided, by outcome.", labels=["outcome"])
    totals: dict[str, int] = {}
    for value, outcome in OUTCOME_OF_STATUS.items():
        totals[outcome] = totals.get(outcome, 0) + by_status.get(value, 0)
    for outcome, n in sorted(totals.items()):
        decisions.add_metric([outcome], n)
    yield decisions

    yield _executions(by_status)
    yield from _open_actions(now)
    yield _time_to_decision(now)
    yield from _outbox(now)
    yield from _delivery_failures(now)


def _executions(by_status: dict[str, int]) -> CounterMetricFamily:
    """Executions by how they ended. ``unknown`` counts every execution that ended unknown, including those a
    person has since resolved; a resolved one is not counted again under what it was resolved to, so that each
    series only ever goes up (a resolution moves an action from unknown to succeeded or failed)."""
    resolved = dict(
        AuditEvent.objects.filter(verb="execution.resolved")  # index audit_verb_seq; resolutions are rare
        .values_list("data__outcome")
        .annotate(n=Count("seq"))
        .values_list("data__outcome", "n")
    )
    executions = CounterMetricFamily(
        "countersign_executions",
        "Executions finished, by outcome: succeeded, failed (known not to have taken effect), unknown (interrupted "
        "after it may have reached the target; counted here even once resolved).",
        labels=["outcome"],
    )
    resolved_total = sum(resolved.values())
    for outcome in EXECUTION_OUTCOMES:
        if outcome == ActionStatus.UNKNOWN:
            n = by_status.get(outcome, 0) + resolved_total
        else:
            n = by_status.get(outcome, 0) - resolved.get(outcome, 0)
        executions.add_metric([outcome], max(0, n))
    return executions


def _open_actions(now: datetime):
    """How many actions are at each in-flight stage, and how long the oldest has been there.

    Approved means still to run: a ``decision.only`` action also ends ``approved`` (with ``finished_at``), so those
    are left out. The rows read are those of the partial index ``action_in_flight`` (unfinished actions) only.
    """
    rows = (
        # Pending and executing actions are never finished: one condition for all stages, which is the partial
        # index action_in_flight's, so only what is in flight is read.
        ActionRequest.objects.filter(status__in=list(OPEN_STAGES), finished_at__isnull=True)
        .values("status")
        .annotate(
            n=Count("id"),
            created=Min("created_at"),
            decided=Min("decided_at"),
            started=Min("execution_started_at"),
        )
    )
    since_field = {"created_at": "created", "decided_at": "decided", "execution_started_at": "started"}
    found = {row["status"]: row for row in rows}
    count = GaugeMetricFamily(
        "countersign_actions_open",
        "Actions in flight by stage: pending (waiting for a human), approved (waiting for a worker), executing.",
        labels=["status"],
    )
    age = GaugeMetricFamily(
        "countersign_oldest_action_age_seconds",
        "How long the oldest action at each stage has been there: pending since proposed, approved since approved, "
        "executing since started; 0 when there is none.",
        labels=["status"],
    )
    for stage, field in OPEN_STAGES.items():
        row = found.get(stage)
        count.add_metric([stage], row["n"] if row else 0)
        oldest = row[since_field[field]] if row else None
        age.add_metric([stage], _age(now, oldest))
    yield count
    yield age


def _time_to_decision(now: datetime) -> GaugeMetricFamily:
    """Quantiles of the newest decisions (at most MAX_SAMPLES) of the last 24 hours, read from the index
    action_desk_decided; computed by PostgreSQL (percentile_cont) rather than by reading the rows out."""
    recent = (
        ActionRequest.objects.filter(decided_at__gte=now - RECENT)
        .exclude(policy_effect="auto_approve")
        .exclude(policy_effect="deny")
        .order_by("-decided_at")
    )
    quantiles = (0.5, 0.9, 0.99)
    if connection.vendor == "postgresql":
        wait = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())
        sample = recent.annotate(wait=wait)[:MAX_SAMPLES]
        row = sample.aggregate(
            **{str(q): PercentileCont(F("wait"), q, output_field=DurationField()) for q in quantiles}
        )
        values = {q: row[str(q)].total_seconds() if row[str(q)] is not None else float("nan") for q in quantiles}
    else:
        waits = sorted(
            (decided - created).total_seconds()
            for created, decided in recent.values_list("created_at", "decided_at")[:MAX_SAMPLES]
        )
        values = {q: _quantile(waits, q) for q in quantiles}
    ttd = GaugeMetricFamily(
        "countersign_time_to_decision_seconds",
        "Time from proposal to human decision over the last 24 hours.",
        labels=["quantile"],
    )
    for q in quantiles:
        ttd.add_metric([str(q)], values[q])
    return ttd


def _outbox(now: datetime):
    # The partial index outbox_undelivered holds only undelivered rows.
    undelivered = OutboxMessage.objects.filter(delivered_at__isnull=True)
    backlog = GaugeMetricFamily("countersign_outbox_backlog", "Side effects not yet delivered.", labels=["kind"])
    rows = {row["kind"]: row for row in undelivered.values("kind").annotate(n=Count("id"), oldest=Min("created_at"))}
    for kind in OutboxMessage.Kind.values:
        backlog.add_metric([kind], rows[kind]["n"] if kind in rows else 0)
    yield backlog

    oldest = min((row["oldest"] for row in rows.values()), default=None)
    age = GaugeMetricFamily(
        "countersign_outbox_oldest_undelivered_seconds", "Age of the oldest undelivered side effect."
    )
    age.add_metric([], _age(now, oldest))
    yield age


def _delivery_failures(now: datetime):
    """Webhook, Slack and email deliveries that are failing.

    Two views, because failures end two ways. A failure the outbox retries (a webhook target down, Slack or
    the mail server unreachable, a rate limit) keeps its message undelivered with ``attempts`` > 0: the gauges
    count those messages and the age of the oldest, which is what to alert on (still failing, for how long),
    and they fall back to 0 once it goes through. Slack refusing a message for good (channel not found, bot not
    in the channel, no token) is not retried, so it leaves no backlog: every failed Slack or email attempt is
    audited as ``notification.failed``, an append-only log, and the counter counts those events (index
    audit_verb_seq). Webhook attempts have no such counter: their log is pruned after the retention period,
    and a failing webhook is always retried, so the gauges see it.
    """
    channel = Case(
        When(kind=OutboxMessage.Kind.WEBHOOK, then=Value("webhook")),
        When(payload__channel__startswith="slack:", then=Value("slack")),
        When(payload__channel__startswith="email:", then=Value("email")),
        default=Value("other"),
        output_field=CharField(),
    )
    failing = {
        row["channel"]: row
        for row in OutboxMessage.objects.filter(
            delivered_at__isnull=True,  # the partial index outbox_undelivered
            kind__in=[OutboxMessage.Kind.WEBHOOK, OutboxMessage.Kind.NOTIFY],
            attempts__gt=0,
        )
        .annotate(channel=channel)
        .values("channel")
        .annotate(n=Count("id"), oldest=Min("created_at"))
    }
    count = GaugeMetricFamily(
        "countersign_deliveries_failing",
        "Webhooks, Slack messages and emails not delivered yet whose last attempt failed (being retried).",
        labels=["channel"],
    )
    age = GaugeMetricFamily(
        "countersign_deliveries_failing_oldest_seconds",
        "Age of the oldest failing delivery per channel; 0 when none is failing.",
        labels=["channel"],
    )
    for name in DELIVERY_CHANNELS:
        row = failing.get(name)
        count.add_metric([name], row["n"] if row else 0)
        age.add_metric([name], _age(now, row["oldest"] if row else None))
    yield count
    yield age

    notification_channel = Case(
        When(data__channel__startswith="slack:", then=Value("slack")),
        When(data__channel__startswith="email:", then=Value("email")),
        default=Value("other"),
        output_field=CharField(),
    )
    audited = dict(
        AuditEvent.objects.filter(verb="notification.failed")
        .annotate(channel=notification_channel)
        .values("channel")
        .annotate(n=Count("seq"))
        .values_list("channel", "n")
    )
    failures = CounterMetricFamily(
        "countersign_notification_failures",
        "Failed Slack and email notification attempts (audited as notification.failed), retried or given up.",
        labels=["channel"],
    )
    for name in ("slack", "email"):
        failures.add_metric([name], audited.get(name, 0))
    yield failures


# --- dependencies ------------------------------------------------------------------------------------------


def dependencies_up() -> dict[str, bool]:
    """Database, Redis, broker (and beat where its heartbeat file is visible): up now or not, each answered within
    COUNTERSIGN_HEALTH_TIMEOUT_MS (approvals.ops.health), so a dependency that swallows packets cannot stall the scrape.
    """
    statuses = health.check([health.DATABASE, health.REDIS, health.BROKER, health.BEAT])
    return {name: status.up for name, status in statuses.items() if status.up is not None}


def _age(now: datetime, oldest: datetime | None) -> float:
    return max(0.0, (now - oldest).total_seconds()) if oldest else 0.0


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
