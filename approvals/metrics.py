"""Prometheus metrics, read from the database at scrape time.

Counting from the tables (rather than in-process counters) gives the same
answer from every web process and survives restarts; each query uses an
index and the scrape stays cheap with millions of historic actions.
"""

from __future__ import annotations

import statistics
from datetime import timedelta

from django.db.models import Count, F, Min
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from approvals.models import ActionRequest, ActionStatus, OutboxMessage

OUTCOME_OF_STATUS = {
    ActionStatus.APPROVED: "approved",
    ActionStatus.EXECUTING: "approved",
    ActionStatus.SUCCEEDED: "approved",
    ActionStatus.FAILED: "approved",
    ActionStatus.REJECTED: "rejected",
    ActionStatus.EXPIRED: "expired",
    ActionStatus.CANCELLED: "cancelled",
}
RECENT = timedelta(hours=24)
MAX_SAMPLES = 20_000


class CountersignCollector(Collector):
    def collect(self):
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

        executions = CounterMetricFamily(
            "countersign_executions", "Executions finished, by outcome.", labels=["outcome"]
        )
        executions.add_metric(["succeeded"], by_status.get(ActionStatus.SUCCEEDED, 0))
        executions.add_metric(["failed"], by_status.get(ActionStatus.FAILED, 0))
        yield executions

        since = timezone.now() - RECENT
        waits = sorted(
            (decided - created).total_seconds()
            for created, decided in ActionRequest.objects.filter(decided_at__gte=since)
            .exclude(policy_effect="auto_approve")
            .exclude(policy_effect="deny")
            .order_by("-decided_at")
            .values_list("created_at", "decided_at")[:MAX_SAMPLES]
        )
        ttd = GaugeMetricFamily(
            "countersign_time_to_decision_seconds",
            "Time from proposal to human decision over the last 24 hours.",
            labels=["quantile"],
        )
        for q in (0.5, 0.9, 0.99):
            ttd.add_metric([str(q)], _quantile(waits, q))
        yield ttd

        backlog = GaugeMetricFamily("countersign_outbox_backlog", "Side effects not yet delivered.", labels=["kind"])
        undelivered = OutboxMessage.objects.filter(delivered_at__isnull=True)
        counts = dict(undelivered.values_list("kind").annotate(n=Count("id")).values_list("kind", "n"))
        for kind in OutboxMessage.Kind.values:
            backlog.add_metric([kind], counts.get(kind, 0))
        yield backlog

        oldest = undelivered.aggregate(at=Min(F("created_at")))["at"]
        age = GaugeMetricFamily(
            "countersign_outbox_oldest_undelivered_seconds", "Age of the oldest undelivered side effect."
        )
        age.add_metric([], (timezone.now() - oldest).total_seconds() if oldest else 0.0)
        yield age


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
