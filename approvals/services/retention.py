"""Retention: delete the bookkeeping of side effects that are done, once it is older than the retention period.

Pruned, after COUNTERSIGN_RETENTION_DAYS (0 keeps everything):

- outbox messages that were delivered (an undelivered one is still work, whatever its age);
- the log of webhook delivery attempts;
- notification rows (where a Slack message or email announced an action) of actions that finished, i.e. that
  will never change again, so no message needs updating.

Never pruned: audit events (append-only and hash-chained; the database refuses to delete them), actions, reviews,
grants. Deletes go in bounded batches, each its own short transaction, so a first run on a large backlog neither
holds long locks nor builds one huge transaction; what a run leaves (more than ``max_batches``) the next one takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from approvals.models import Notification, OutboxMessage, WebhookDelivery
from approvals.models.action import TERMINAL

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
MAX_BATCHES = 50  # per kind and run: 50,000 rows; beat runs this hourly


@dataclass(frozen=True)
class Pruned:
    outbox: int = 0
    webhook_deliveries: int = 0
    notifications: int = 0

    @property
    def total(self) -> int:
        return self.outbox + self.webhook_deliveries + self.notifications


def retention_cutoff(now: datetime | None = None) -> datetime | None:
    """Rows older than this may go; None when retention is off (COUNTERSIGN_RETENTION_DAYS=0)."""
    days = settings.COUNTERSIGN_RETENTION_DAYS
    if days <= 0:
        return None
    return (now or timezone.now()) - timedelta(days=days)


def prune_expired_records(
    now: datetime | None = None, *, batch_size: int = BATCH_SIZE, max_batches: int = MAX_BATCHES
) -> Pruned:
    cutoff = retention_cutoff(now)
    if cutoff is None:
        return Pruned()
    pruned = Pruned(
        outbox=_delete_in_batches(
            OutboxMessage.objects.filter(delivered_at__isnull=False, delivered_at__lt=cutoff), batch_size, max_batches
        ),
        webhook_deliveries=_delete_in_batches(WebhookDelivery.objects.filter(at__lt=cutoff), batch_size, max_batches),
        notifications=_delete_in_batches(
            Notification.objects.filter(action__status__in=list(TERMINAL), action__finished_at__lt=cutoff),
            batch_size,
            max_batches,
        ),
    )
    if pruned.total:
        log.info(
            "retention: pruned %d outbox messages, %d webhook deliveries, %d notifications older than %s",
            pruned.outbox,
            pruned.webhook_deliveries,
            pruned.notifications,
            cutoff.isoformat(),
        )
    return pruned


def _delete_in_batches(queryset: QuerySet, batch_size: int, max_batches: int) -> int:
    deleted = 0
    for _ in range(max_batches):
        # Ids first, then a delete by primary key: a bounded statement on every database (no DELETE ... LIMIT).
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        count, _ = queryset.model.objects.filter(pk__in=ids).delete()
        deleted += count
        if len(ids) < batch_size:
            break
    return deleted
