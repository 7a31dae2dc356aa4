"""A push its writer delivered is marked delivered by a thread, with the others of a short while (approvals/outbox/marks.py).

Meanwhile the row stays claimed by its writer, so nothing delivers it again; should the writer die before the mark,
the sweep sends it again once the lease has passed, as the outbox always did (at least once).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import ActionRequest, OutboxMessage
from approvals.outbox import dispatcher, marks
from tests.conftest import propose_body
from tests.support.servers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch):
    """Every push the dispatcher publishes, by message id."""
    sent: list[int] = []
    monkeypatch.setattr(dispatcher, "send_to_groups", lambda groups, event: sent.append(event["event"]["seq"]))
    return sent


@pytest.fixture
def no_notes_left():
    yield
    marks.delivered_marks.flush()


def _push_of(answer) -> OutboxMessage:
    assert answer.status_code == 201, answer.content
    return OutboxMessage.objects.get(action_id=answer.json()["id"], kind=OutboxMessage.Kind.PUSH)


@override_settings(COUNTERSIGN_PUSH_MARK_MS=300)
def test_a_push_is_marked_delivered_by_the_thread_at_the_time_it_went_out(agent_api, published, no_notes_left):
    before = timezone.now()
    message = _push_of(agent_api.post("/api/v1/actions", propose_body(), format="json"))
    after = timezone.now()
    assert published == [message.id]
    # Answered before the mark: the row is still its writer's, which nobody else takes.
    assert message.delivered_at is None and message.claimed_until > timezone.now() + timedelta(seconds=10)
    assert dispatcher.sweep() == 0 and published == [message.id]

    wait_until(lambda: OutboxMessage.objects.get(id=message.id).delivered_at is not None, timeout=5)
    message.refresh_from_db()
    assert before <= message.delivered_at <= after  # when it went out, not when it was marked
    assert (message.attempts, message.claimed_until, message.last_error) == (1, None, "")
    assert published == [message.id]  # once


@override_settings(COUNTERSIGN_PUSH_MARK_MS=5000)
def test_the_pushes_of_a_while_are_marked_in_one_statement_each_with_its_own_time(agent_api, published, no_notes_left):
    messages = [_push_of(agent_api.post("/api/v1/actions", propose_body(), format="json")) for _ in range(4)]
    with CaptureQueriesContext(connection) as queries:
        assert marks.delivered_marks.flush() == 4
    assert len([q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]) == 1
    times = [OutboxMessage.objects.get(id=m.id).delivered_at for m in messages]
    assert None not in times and times == sorted(times) and len(set(times)) == 4
    assert sorted(published) == [m.id for m in messages]


@override_settings(COUNTERSIGN_PUSH_MARK_MS=5000)
def test_a_writer_that_dies_before_the_mark_leaves_the_push_to_the_sweep_once_its_lease_ends(
    agent_api, published, no_notes_left
):
    message = _push_of(agent_api.post("/api/v1/actions", propose_body(), format="json"))
    marks.delivered_marks._start_empty()  # the process is gone, and its notes with it
    assert dispatcher.sweep() == 0  # still under the writer's lease

    OutboxMessage.objects.filter(id=message.id).update(
        claimed_until=timezone.now() - timedelta(seconds=1), created_at=timezone.now() - timedelta(seconds=10)
    )
    assert dispatcher.sweep() == 1
    message.refresh_from_db()
    assert message.delivered_at is not None and message.attempts == 1
    assert published == [message.id, message.id]  # at least once: a live event is idempotent on the page


@override_settings(COUNTERSIGN_PUSH_MARK_MS=50)
def test_a_mark_that_fails_is_logged_and_the_thread_goes_on_marking(agent_api, published, monkeypatch, caplog):
    failures = []
    real = marks.mark_delivered

    def fails_once(pending):
        if not failures:
            failures.append(pending)
            raise RuntimeError("database gone")
        real(pending)

    monkeypatch.setattr(marks, "mark_delivered", fails_once)
    first = _push_of(agent_api.post("/api/v1/actions", propose_body(), format="json"))
    wait_until(lambda: failures, timeout=5)
    second = _push_of(agent_api.post("/api/v1/actions", propose_body(), format="json"))
    wait_until(lambda: OutboxMessage.objects.get(id=second.id).delivered_at is not None, timeout=5)
    assert "could not mark 1 delivered pushes" in caplog.text
    first.refresh_from_db()
    assert first.delivered_at is None and first.claimed_until is not None  # the sweep's, once the lease ends


def test_with_no_delay_a_push_is_marked_in_the_request_that_delivered_it(agent_api, published):
    answer = agent_api.post("/api/v1/actions", propose_body(), format="json")
    assert _push_of(answer).delivered_at is not None
    assert ActionRequest.objects.filter(id=answer.json()["id"]).exists()
