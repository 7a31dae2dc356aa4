"""A service's transaction appends its audit events together, at its end (audit.chain.audited_atomic).

The chain's lock is then held for one append and the commit; the guarantees stay: the chain is linear and
unbroken under concurrent writers, events keep the order they happened in, and an event never outlives the change
it records.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from approvals.models import OutboxMessage
from audit.chain import Actor, audited_atomic, insert_with_events, record_event, verify_log
from audit.models import AuditEvent
from tests.conftest import propose_body

ACTOR = Actor.system("test")
DAY = timedelta(days=1)


def _event(verb: str) -> AuditEvent:
    return record_event(actor=ACTOR, verb=verb, object_type="t", object_id="1")


@pytest.mark.django_db
def test_events_appear_at_the_end_of_the_block_in_the_order_recorded():
    with audited_atomic():
        first, second = _event("test.first"), _event("test.second")
        assert first.seq is None and not AuditEvent.objects.filter(verb__startswith="test.").exists()
    assert (first.seq, second.seq) == (second.seq - 1, second.seq)
    assert second.prev_hash == first.hash
    assert list(AuditEvent.objects.filter(verb__startswith="test.").order_by("seq").values_list("verb", flat=True)) == [
        "test.first",
        "test.second",
    ]
    assert verify_log().broken is None


@pytest.mark.django_db
def test_a_block_that_fails_leaves_no_event():
    with pytest.raises(RuntimeError), audited_atomic():
        _event("test.lost")
        raise RuntimeError("the change failed")
    assert not AuditEvent.objects.filter(verb="test.lost").exists()


@pytest.mark.django_db
def test_a_nested_savepoint_keeps_the_order_and_takes_its_own_events_when_it_rolls_back():
    with audited_atomic():
        _event("test.before")
        with transaction.atomic():
            _event("test.kept")
        try:
            with transaction.atomic():
                _event("test.rolled-back")
                raise ValueError
        except ValueError:
            pass
        _event("test.after")
    verbs = list(AuditEvent.objects.filter(verb__startswith="test.").order_by("seq").values_list("verb", flat=True))
    assert verbs == ["test.before", "test.kept", "test.after"]
    assert verify_log().broken is None


@pytest.mark.django_db
def test_the_events_held_when_a_savepoint_rolls_back_are_kept_with_the_change_they_record():
    """What the block held is written before a savepoint is made inside it: written inside, a savepoint that rolled
    back took it along, and the block's change committed without its event."""
    with audited_atomic():
        _event("test.outer")
        with pytest.raises(ValueError), transaction.atomic():
            _event("test.inner")
            raise ValueError
        _event("test.after")
    verbs = list(AuditEvent.objects.filter(verb__startswith="test.").order_by("seq").values_list("verb", flat=True))
    assert verbs == ["test.outer", "test.after"]
    assert verify_log().broken is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_proposals_and_decisions_keep_one_unbroken_chain(agent_key, reviewer):
    from tests.conftest import token_client

    errors: list[BaseException] = []
    ids: list[str] = []
    lock = threading.Lock()

    def agent_work() -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_key}")
            for _ in range(8):
                action_id = client.post("/api/v1/actions", propose_body(), format="json").json()["id"]
                with lock:
                    ids.append(action_id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=agent_work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(ids) == 32
    reviewer_api = token_client(reviewer)
    decided = [reviewer_api.post(f"/api/v1/actions/{i}/approve", {}, format="json").status_code for i in ids[:8]]
    assert decided == [200] * 8
    result = verify_log()
    assert result.broken is None and result.checked == AuditEvent.objects.count()
    for action_id in ids[:8]:  # each action's story in the order it happened
        verbs = list(AuditEvent.objects.filter(action_id=action_id).order_by("seq").values_list("verb", flat=True))
        assert verbs.index("action.proposed") < verbs.index("action.reviewed") < verbs.index("action.approved")


# --- rows written with the events (audit.chain.insert_with_events): the outbox message of every proposal ---------


def _message(note: str) -> OutboxMessage:
    # Held past any delivery: these rows are only written, never sent.
    return OutboxMessage(kind=OutboxMessage.Kind.PUSH, payload={"note": note}, claimed_until=timezone.now() + DAY)


def _notes_by_id() -> list[str]:
    return [payload["note"] for payload in OutboxMessage.objects.order_by("id").values_list("payload", flat=True)]


@pytest.mark.django_db(transaction=True)
def test_a_proposals_outbox_message_goes_out_with_its_events_in_one_statement_and_is_delivered(agent_api):
    with CaptureQueriesContext(connection) as queries:
        answer = agent_api.post("/api/v1/actions", propose_body(), format="json")
    assert answer.status_code == 201
    writes = [q["sql"] for q in queries if "approvals_outboxmessage" in q["sql"] and q["sql"].startswith("INSERT")]
    assert writes == [], "the message had a statement of its own"
    combined = [
        q["sql"] for q in queries if "approvals_outboxmessage" in q["sql"] and "audit_unsealedevent" in q["sql"]
    ]
    assert len(combined) == 1
    message = OutboxMessage.objects.get(action_id=answer.json()["id"], kind=OutboxMessage.Kind.PUSH)
    assert message.delivered_at is not None  # the hook after the commit read the id the statement gave it
    assert verify_log().broken is None


@pytest.mark.django_db
def test_rows_held_for_the_end_keep_their_order_when_a_nested_block_writes_one_at_once():
    with audited_atomic():
        _event("test.event")
        insert_with_events(first := _message("first"))
        assert first.id is None and not OutboxMessage.objects.exists()  # held for the end
        with transaction.atomic():  # a savepoint: its row is written at once, after those held so far
            insert_with_events(_message("second"))
        insert_with_events(last := _message("third"))
    assert _notes_by_id() == ["first", "second", "third"]
    assert last.id == OutboxMessage.objects.get(payload__note="third").id


@pytest.mark.django_db
def test_a_failed_block_writes_none_of_its_rows_and_a_rolled_back_savepoint_only_its_own():
    with pytest.raises(RuntimeError), audited_atomic():
        _event("test.event")
        insert_with_events(_message("lost"))
        raise RuntimeError("the change failed")
    assert not OutboxMessage.objects.exists()
    with audited_atomic():
        _event("test.event")
        insert_with_events(_message("kept"))
        with pytest.raises(ValueError), transaction.atomic():
            insert_with_events(_message("rolled back"))
            raise ValueError
    assert _notes_by_id() == ["kept"]
