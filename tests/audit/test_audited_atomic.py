"""A service's transaction appends its audit events together, at its end (audit.chain.audited_atomic).

The chain's lock is then held for one append and the commit; the guarantees stay: the chain is linear and
unbroken under concurrent writers, events keep the order they happened in, and an event never outlives the change
it records.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from approvals.models import ActionRequest, OutboxMessage
from approvals.services import proposals
from audit.chain import Actor, audited_atomic, insert_with_events, record_event, update_with_events, verify_log
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
        assert first.id is None  # held
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


@pytest.mark.django_db
def test_a_statement_inside_the_block_sees_the_rows_held_before_it_and_the_events_still_wait():
    with audited_atomic():
        _event("test.event")
        insert_with_events(first := _message("first"))
        assert first.id is None
        assert _notes_by_id() == ["first"]  # the read made the block write what it held first
        assert first.id == OutboxMessage.objects.get().id
        assert not AuditEvent.objects.filter(verb="test.event").exists()  # events are never read back: the end
    assert AuditEvent.objects.filter(verb="test.event").count() == 1
    assert verify_log().broken is None


@pytest.mark.django_db
def test_a_second_write_of_a_held_row_is_written_after_the_first():
    """PostgreSQL writes a row once per statement, and the statements of one WITH do not see each other's rows: the
    update of a row still held would be lost if both went out together."""
    with audited_atomic():
        _event("test.event")
        insert_with_events(message := _message("first"))
        message.payload, message.attempts = {"note": "changed"}, 3
        update_with_events(message)
        message.attempts = 4
        update_with_events(message)
    assert OutboxMessage.objects.values_list("payload", "attempts").get() == ({"note": "changed"}, 4)


@pytest.mark.django_db
def test_two_copies_of_one_row_written_in_one_block_both_count():
    """The same row through two instances (a read, then a locked re-read): the second write waits for the first."""
    from config.prepared import concrete_columns, from_row

    OutboxMessage.objects.create(kind=OutboxMessage.Kind.PUSH, payload={"note": "row"})
    columns = concrete_columns(OutboxMessage)
    row = OutboxMessage.objects.values_list(*columns).get()
    first, second = (from_row(OutboxMessage, columns, row) for _ in range(2))
    with audited_atomic():
        _event("test.event")
        first.attempts = 3
        update_with_events(first)
        second.last_error = "seen"
        update_with_events(second)
    assert OutboxMessage.objects.values_list("attempts", "last_error").get() == (3, "seen")


@contextmanager
def _frontend_messages() -> Iterator[list[str]]:
    """What this connection sends PostgreSQL meanwhile, one protocol message a line (libpq's trace)."""
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    sent: list[str] = []
    with tempfile.TemporaryFile() as trace:
        pgconn.trace(trace.fileno())
        try:
            yield sent
        finally:
            pgconn.untrace()
            trace.seek(0)
            sent += [line.split("\t", 2)[2] for line in trace.read().decode().splitlines() if "\tF\t" in line]


@pytest.mark.django_db(transaction=True)
def test_a_proposal_is_one_statement_that_is_its_own_transaction_without_begin_or_commit(agent_api):
    agent_api.post("/api/v1/actions", propose_body(), format="json")  # the first makes the rule's reviewer group
    with _frontend_messages() as sent:
        answer = agent_api.post("/api/v1/actions", propose_body(), format="json")
    assert answer.status_code == 201, answer.content
    assert not [m for m in sent if '"BEGIN' in m or '"COMMIT' in m], "\n".join(m[:100] for m in sent)
    (written,) = [m for m in sent if "Parse" in m and "INSERT" in m]
    assert (
        "approvals_actionrequest" in written
        and "audit_unsealedevent" in written
        and "approvals_outboxmessage" in (written)
    )
    # Committed, linked onto the chain by the statement's own commit, and its push delivered after it.
    action = ActionRequest.objects.get(id=answer.json()["id"])
    assert list(AuditEvent.objects.filter(action_id=action.id).values_list("verb", flat=True)) == ["action.proposed"]
    assert OutboxMessage.objects.get(action_id=action.id, kind=OutboxMessage.Kind.PUSH).delivered_at is not None
    assert verify_log().broken is None
    assert connection.get_autocommit() and connection.connection.autocommit  # Django's and psycopg's state agree


@pytest.mark.django_db(transaction=True)
def test_a_proposal_whose_one_statement_fails_leaves_nothing_and_the_connection_works(agent_api, monkeypatch):
    """The race on an idempotency key: both requests find no action and write; the loser's one statement breaks the
    unique key, writes nothing at all (no action, event or message), and the loser answers with the winner's action."""
    body = propose_body(idempotency_key="once")
    first = agent_api.post("/api/v1/actions", body, format="json").json()
    events, messages = AuditEvent.objects.count(), OutboxMessage.objects.count()
    original, calls = proposals._existing_for_key, []

    def the_winner_not_yet_committed(*args):  # the loser's first look finds nothing; the second, the winner's action
        calls.append(args)
        return None if len(calls) == 1 else original(*args)

    monkeypatch.setattr(proposals, "_existing_for_key", the_winner_not_yet_committed)
    with _frontend_messages() as sent:
        again = agent_api.post("/api/v1/actions", body, format="json")
    assert again.status_code == 200 and again.json()["id"] == first["id"], again.content
    assert any("approvals_actionrequest" in m and "INSERT" in m for m in sent)  # it did try
    assert ActionRequest.objects.count() == 1
    assert (AuditEvent.objects.count(), OutboxMessage.objects.count()) == (events, messages)
    assert verify_log().broken is None
    assert agent_api.post("/api/v1/actions", propose_body(), format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_a_block_inside_a_longer_transaction_is_not_committed_on_its_own():
    with pytest.raises(RuntimeError), transaction.atomic():
        with audited_atomic():
            _event("test.inner")
            insert_with_events(_message("inner"))
        raise RuntimeError("the longer transaction fails after the block")
    assert not OutboxMessage.objects.exists() and not AuditEvent.objects.filter(verb="test.inner").exists()


@pytest.mark.django_db(transaction=True)
def test_a_block_in_a_transaction_opened_by_hand_is_committed_or_rolled_back_by_its_caller():
    transaction.set_autocommit(False)
    try:
        with audited_atomic():
            _event("test.by-hand")
            insert_with_events(_message("by hand"))
        transaction.rollback()
    finally:
        transaction.set_autocommit(True)
    assert not OutboxMessage.objects.exists() and not AuditEvent.objects.filter(verb="test.by-hand").exists()


@pytest.mark.django_db(transaction=True)
def test_a_block_marked_for_rollback_writes_nothing():
    with audited_atomic():
        _event("test.marked")
        insert_with_events(_message("marked"))
        transaction.set_rollback(True)
    assert not OutboxMessage.objects.exists() and not AuditEvent.objects.filter(verb="test.marked").exists()


@pytest.mark.django_db(transaction=True)
def test_a_one_statement_block_whose_connection_dies_raises_and_the_next_block_works():
    """The server goes away (a restart, a failover) just before the block's one statement, run in autocommit: the
    block fails with the database's error, nothing of it is written, and the next block gets a working connection."""
    from django.db import DatabaseError, connections

    connection.ensure_connection()
    doomed = connection.connection.info.backend_pid
    with pytest.raises(DatabaseError), audited_atomic():
        _event("test.lost")
        insert_with_events(_message("lost"))
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [doomed])
        finally:
            other.close()
    connection.close_if_unusable_or_obsolete()
    with audited_atomic():
        _event("test.after")
        insert_with_events(_message("after"))
    assert _notes_by_id() == ["after"]
    assert not AuditEvent.objects.filter(verb="test.lost").exists()
    assert AuditEvent.objects.filter(verb="test.after").count() == 1 and verify_log().broken is None
