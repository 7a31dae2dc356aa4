"""Retention: done side-effect bookkeeping goes after COUNTERSIGN_RETENTION_DAYS; audit events and live work stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from approvals.models import ActionRequest, Notification, OutboxMessage, WebhookDelivery
from approvals.services.retention import prune_expired_records
from approvals.tasks import prune_expired_records as prune_task
from audit.models import AuditEvent
from tests.factories import api_propose

pytestmark = pytest.mark.django_db


def _propose(agent_api, summary: str) -> ActionRequest:
    return ActionRequest.objects.get(pk=api_propose(agent_api, summary=summary)["id"])


def _delivery(action: ActionRequest, at) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        action=action, delivery=1, event="action.pending", url="https://agent.example/hook", attempt=1,
        status_code=200, duration_ms=5, at=at,
    )  # fmt: skip


@override_settings(COUNTERSIGN_RETENTION_DAYS=30)
def test_only_finished_bookkeeping_older_than_the_retention_goes_and_audit_events_stay(agent_api, reviewer_api):
    now = timezone.now()
    old, recent = now - timedelta(days=31), now - timedelta(days=29)

    finished_long_ago = _propose(agent_api, "finished long ago")
    finished_recently = _propose(agent_api, "finished recently")
    for action in (finished_long_ago, finished_recently):
        assert (
            reviewer_api.post(f"/api/v1/actions/{action.id}/reject", {"reason": "no"}, format="json").status_code == 200
        )
    ActionRequest.objects.filter(pk=finished_long_ago.pk).update(finished_at=old)
    ActionRequest.objects.filter(pk=finished_recently.pk).update(finished_at=recent)
    # Still pending although proposed long ago: its messages may still need updating.
    still_pending = _propose(agent_api, "still pending")
    ActionRequest.objects.filter(pk=still_pending.pk).update(created_at=old)

    notes = {
        a.pk: Notification.objects.create(action=a, channel="email:ops@example.com", created_at=old, updated_at=old)
        for a in (finished_long_ago, finished_recently, still_pending)
    }
    OutboxMessage.objects.all().delete()  # only the rows below, so the counts are exact
    delivered_old = OutboxMessage.objects.create(kind="push", created_at=old, delivered_at=old)
    delivered_recent = OutboxMessage.objects.create(kind="push", created_at=recent, delivered_at=recent)
    undelivered_old = OutboxMessage.objects.create(kind="webhook", created_at=old, attempts=9)
    delivery_old = _delivery(finished_recently, old)
    delivery_recent = _delivery(finished_recently, recent)
    audit_before = AuditEvent.objects.count()

    pruned = prune_expired_records(batch_size=1)  # batches of one: the loop, not one big delete, does the work

    assert (pruned.outbox, pruned.webhook_deliveries, pruned.notifications) == (1, 1, 1)
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {delivered_recent.pk, undelivered_old.pk}
    assert not OutboxMessage.objects.filter(pk=delivered_old.pk).exists()
    assert list(WebhookDelivery.objects.values_list("pk", flat=True)) == [delivery_recent.pk]
    assert not WebhookDelivery.objects.filter(pk=delivery_old.pk).exists()
    assert set(Notification.objects.values_list("pk", flat=True)) == {
        notes[finished_recently.pk].pk,
        notes[still_pending.pk].pk,
    }
    # The actions themselves and every audit event stay.
    assert ActionRequest.objects.count() == 3
    assert AuditEvent.objects.count() == audit_before


@override_settings(COUNTERSIGN_RETENTION_DAYS=30)
def test_a_run_deletes_at_most_its_batches_and_the_next_run_goes_on():
    old = timezone.now() - timedelta(days=40)
    OutboxMessage.objects.all().delete()
    OutboxMessage.objects.bulk_create(OutboxMessage(kind="push", created_at=old, delivered_at=old) for _ in range(5))

    assert prune_expired_records(batch_size=2, max_batches=2).outbox == 4
    assert OutboxMessage.objects.count() == 1
    assert prune_task() == 1  # the beat task: the rest
    assert OutboxMessage.objects.count() == 0


@override_settings(COUNTERSIGN_RETENTION_DAYS=0)
def test_retention_zero_keeps_everything():
    old = timezone.now() - timedelta(days=4000)
    OutboxMessage.objects.create(kind="push", created_at=old, delivered_at=old)
    assert prune_expired_records().total == 0
    assert OutboxMessage.objects.filter(delivered_at=old).exists()


def test_beat_prunes_hourly():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["prune-expired-records"]
    assert entry["task"] == "approvals.prune_expired_records" and entry["schedule"] <= 3600
