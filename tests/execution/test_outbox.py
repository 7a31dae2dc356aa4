"""The outbox's lease (approvals/outbox/dispatcher.py): a message goes to whoever claims it, when it is due, once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from approvals.models import OutboxMessage
from approvals.outbox import dispatcher as outbox
from approvals.outbox.transport import TransportError


def push_message(**fields) -> OutboxMessage:
    event = {"action_id": "0" * 32, "status": "pending", "approvals": 0, "required_approvals": 1}
    return OutboxMessage.objects.create(
        kind=OutboxMessage.Kind.PUSH, payload={**event, "reviewer_group_id": None}, **fields
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"next_attempt_at_in": 60}, id="not yet due (backing off)"),
        pytest.param({"claimed_until_in": 30}, id="held by another deliverer"),
        pytest.param({"delivered_at_in": -5}, id="already delivered"),
    ],
)
def test_a_message_that_is_not_free_is_left_alone(fields):
    now = timezone.now()
    message = push_message(**{name[: -len("_in")]: now + timedelta(seconds=s) for name, s in fields.items()})
    before = OutboxMessage.objects.filter(id=message.id).values().get()
    assert outbox.deliver(message.id) is False
    assert OutboxMessage.objects.filter(id=message.id).values().get() == before


@pytest.mark.django_db
def test_a_lease_that_ran_out_is_taken_over_and_the_message_marked_delivered():
    message = push_message(claimed_until=timezone.now() - timedelta(seconds=1), attempts=2, last_error="boom")
    assert outbox.deliver(message.id) is True
    message.refresh_from_db()
    assert (message.attempts, message.claimed_until, message.last_error) == (3, None, "")
    assert message.delivered_at is not None
    assert outbox.deliver(message.id) is False  # once


@pytest.mark.django_db(transaction=True)
def test_two_deliverers_at_once_deliver_it_once():
    message = push_message()
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def deliver() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(outbox.deliver(message.id))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False, True]
    assert OutboxMessage.objects.get(id=message.id).attempts == 1


# --- the transport contract (approvals/outbox/transport.py) ----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("error", "at_least", "at_most"),
    [
        pytest.param(RuntimeError("boom"), 2, 3, id="any exception: backoff"),
        pytest.param(TransportError("down"), 2, 3, id="transient: backoff"),
        pytest.param(TransportError("slow down", retry_after=120), 120, 121, id="retry_after: not sooner"),
        pytest.param(TransportError("slow down", retry_after=10**9), 3600, 3601, id="retry_after: capped"),
    ],
)
def test_a_failed_delivery_is_retried_with_backoff_never_sooner_than_retry_after(error, at_least, at_most, monkeypatch):
    def fail(message):
        raise error

    monkeypatch.setitem(outbox._HANDLERS, OutboxMessage.Kind.PUSH, fail)
    message = push_message()
    started = timezone.now()
    assert outbox.deliver(message.id) is False
    message.refresh_from_db()
    assert message.delivered_at is None and message.attempts == 1 and message.claimed_until is None
    assert message.last_error == f"{type(error).__name__}: {error}"
    wait = (message.next_attempt_at - started).total_seconds()
    assert at_least <= wait <= at_most, wait


@pytest.mark.django_db
def test_a_permanent_failure_is_not_retried(monkeypatch):
    def refuse(message):
        raise TransportError("channel_not_found", permanent=True)

    monkeypatch.setitem(outbox._HANDLERS, OutboxMessage.Kind.PUSH, refuse)
    message = push_message()
    assert outbox.deliver(message.id) is False
    message.refresh_from_db()
    assert message.delivered_at is not None and message.attempts == 1
    assert message.last_error == "TransportError: channel_not_found"
    assert outbox.sweep() == 0 and outbox.deliver(message.id) is False


# --- the newest push, which pages are drawn with --------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_page_is_drawn_with_the_newest_committed_push():
    from django.db import transaction

    from approvals.live.events import newest_push_seq

    first = push_message()
    assert newest_push_seq() == first.id
    with transaction.atomic():
        second = outbox.enqueue(OutboxMessage.Kind.PUSH, payload=dict(first.payload))
        assert newest_push_seq() == second.id  # this transaction sees its own
    assert newest_push_seq() == second.id
