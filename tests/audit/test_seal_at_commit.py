"""Events are linked into the chain by their transaction's commit (PostgreSQL, migration audit 0002).

- What the database writes is what Python's verifier recomputes: the same body, byte for byte, whatever the event
  says (any character, a time with or without microseconds), and the same hash.
- A transaction that recorded events and is still open holds no lock: another writer's commit does not wait for it.
- A rollback, of the transaction or of a savepoint inside it, leaves nothing in the chain and nothing unsealed.
- Time never runs backwards along the chain, whatever the writer's clock says.
"""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction

from audit import chain
from audit.canonical import canonical_json
from audit.chain import Actor, event_body, link_hash, record_event, verify_log
from audit.models import AuditEvent, UnsealedEvent
from config.request_id import bind_request_id, reset_request_id

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="SQLite links events in Python"),
]

AWKWARD = [
    {},
    {"text": "é ü ß 漢字 🙂", "quote": '"', "backslash": "\\"},
    # The markers' own characters, as text an agent could send: JSON escapes them, so they cannot collide.
    {"control": "\x01\x02\x1f", "escaped": "\\u0001", "line": "a\u2028b"},
    {"nested": {"b": [1, 2.5, None, True, False], "a": {"z": 0.5, "y": 10**20}}, "": "empty key"},
]


def recorded(data: dict, *, action_id=None, request_id: str = "") -> AuditEvent:
    token = bind_request_id(request_id) if request_id else None
    try:
        with transaction.atomic():
            event = record_event(
                actor=Actor("agent", "ägent \u2603", "api"),
                verb="test.sealed",
                object_type="t",
                object_id="1",
                action_id=action_id,
                data=data,
            )
    finally:
        if token is not None:
            reset_request_id(token)
    assert event.seq is None  # linked on by the commit, not before
    return AuditEvent.objects.order_by("-seq").first()


@pytest.mark.parametrize("data", AWKWARD)
def test_the_database_writes_the_body_and_hash_the_verifier_recomputes(data):
    import uuid

    for stored in (recorded(data), recorded(data, action_id=uuid.uuid4(), request_id="req-42")):
        assert stored.body == canonical_json(event_body(stored))
        assert stored.hash == link_hash(stored.prev_hash, stored.body)
    assert not UnsealedEvent.objects.exists()
    result = verify_log()
    assert (result.checked, result.broken) == (2, None)


@pytest.mark.parametrize("microsecond", [0, 1, 999_999])
def test_a_time_is_written_as_python_writes_it(monkeypatch, microsecond):
    """``isoformat()`` leaves out the microseconds when there are none; the database must do the same."""
    at = datetime(2026, 12, 6, 2, 30, 5, microsecond, tzinfo=UTC)
    monkeypatch.setattr(chain.timezone, "now", lambda: at)
    stored = recorded({"n": microsecond})
    assert stored.at == at
    assert f'"at":"{at.isoformat()}"' in stored.body
    assert verify_log().broken is None


def test_time_never_runs_backwards_along_the_chain(monkeypatch):
    later = recorded({"n": 1})
    monkeypatch.setattr(chain.timezone, "now", lambda: later.at - timedelta(hours=1))  # a clock stepped back
    earlier_clock = recorded({"n": 2})
    assert earlier_clock.at == later.at
    assert verify_log().broken is None


def test_a_rollback_leaves_nothing_in_the_chain_or_unsealed():
    kept = recorded({"n": 1})

    class Refused(Exception):
        pass

    with pytest.raises(Refused), transaction.atomic():
        record_event(actor=Actor.system("test"), verb="test.rolled_back", object_type="t", object_id="2")
        raise Refused

    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint that rolls back takes its event with it
                record_event(actor=Actor.system("test"), verb="test.rolled_back", object_type="t", object_id="3")
                raise Refused
        except Refused:
            pass
        record_event(actor=Actor.system("test"), verb="test.kept", object_type="t", object_id="4")

    assert list(AuditEvent.objects.order_by("seq").values_list("verb", flat=True)) == ["test.sealed", "test.kept"]
    assert AuditEvent.objects.get(verb="test.kept").prev_hash == kept.hash
    assert not UnsealedEvent.objects.exists()
    assert verify_log().broken is None


def test_an_open_transaction_with_events_does_not_hold_up_other_writers():
    """The point of sealing at commit: a writer that recorded its events and is still busy (a slow statement, a
    wait for the GIL) holds no lock, so the next writer's commit goes ahead, and the slow one is linked on after."""
    recorded_it, release, done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                record_event(actor=Actor.system("test"), verb="test.slow", object_type="t", object_id="1")
                recorded_it.set()
                assert release.wait(timeout=30)
        except BaseException as exc:
            errors.append(exc)
            recorded_it.set()
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    try:
        assert recorded_it.wait(timeout=30)
        fast = threading.Thread(target=lambda: (recorded({"n": "fast"}), connection.close()))
        fast.start()
        fast.join(timeout=10)
        assert not fast.is_alive(), "a writer's commit waited for another transaction that had recorded an event"
    finally:
        release.set()
        thread.join(timeout=30)
    assert done.is_set() and not errors, errors
    assert list(AuditEvent.objects.order_by("seq").values_list("verb", flat=True)) == ["test.sealed", "test.slow"]
    assert verify_log().broken is None


def test_a_block_nested_in_a_longer_transaction_sees_its_seqs_at_once():
    with transaction.atomic():
        with transaction.atomic():
            first = record_event(actor=Actor.system("test"), verb="test.first", object_type="t", object_id="1")
        assert first.seq == 1 and AuditEvent.objects.get(seq=1).hash == first.hash
        record_event(actor=Actor.system("test"), verb="test.second", object_type="t", object_id="2")
    assert AuditEvent.objects.get(verb="test.second").prev_hash == first.hash
    assert verify_log().checked == 2


def test_an_event_the_commit_cannot_link_rolls_back_the_change_it_records():
    """Fail closed at commit too: if linking the event fails there, the transaction and its change roll back."""
    from django.db import IntegrityError

    with connection.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE {AuditEvent._meta.db_table} ADD CONSTRAINT test_refuse_at_commit "
            "CHECK (verb <> 'test.refused_at_commit') NOT VALID"
        )
    try:
        with pytest.raises(IntegrityError, match="test_refuse_at_commit"), transaction.atomic():
            Group.objects.create(name="made-by-the-refused-change")
            record_event(actor=Actor.system("test"), verb="test.refused_at_commit", object_type="t", object_id="1")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {AuditEvent._meta.db_table} DROP CONSTRAINT test_refuse_at_commit")
    assert not Group.objects.filter(name="made-by-the-refused-change").exists()
    assert not AuditEvent.objects.exists() and not UnsealedEvent.objects.exists()


def test_several_events_of_one_commit_are_linked_in_the_order_they_happened():
    """Each event's own call links it at the commit (migration 0003): in the order they were recorded, each after
    the one before, whether the transaction recorded them in one statement or several."""
    with transaction.atomic():
        for n in range(3):
            record_event(actor=Actor.system("test"), verb=f"test.{n}", object_type="t", object_id=str(n))
        Group.objects.create(name="a statement between the events")
        record_event(actor=Actor.system("test"), verb="test.3", object_type="t", object_id="3")
    events = list(AuditEvent.objects.order_by("seq"))
    assert [(e.seq, e.verb) for e in events] == [(n + 1, f"test.{n}") for n in range(4)]
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(events))
    assert verify_log().checked == 4 and not UnsealedEvent.objects.exists()


def test_a_chain_sealed_before_migration_0003_goes_on_after_it_and_back():
    """An installation that upgrades: events the old seal linked and events the new one links are one chain, which
    still verifies if the migration is reversed and more are linked by the old seal again."""
    from django.db.migrations.executor import MigrationExecutor

    def migrate_audit_to(name: str) -> None:
        executor = MigrationExecutor(connection)
        executor.migrate([("audit", name)])

    def recorded_once(verb: str) -> None:
        with transaction.atomic():
            record_event(actor=Actor.system("test"), verb=verb, object_type="t", object_id=verb)

    migrate_audit_to("0002_seal_at_commit")
    try:
        recorded_once("test.sealed_by_0002")
    finally:
        migrate_audit_to("0003_seal_each_event_at_commit")
    recorded_once("test.sealed_by_0003")
    migrate_audit_to("0002_seal_at_commit")
    try:
        recorded_once("test.sealed_by_0002_again")
    finally:
        migrate_audit_to("0003_seal_each_event_at_commit")
    assert list(AuditEvent.objects.order_by("seq").values_list("verb", flat=True)) == [
        "test.sealed_by_0002",
        "test.sealed_by_0003",
        "test.sealed_by_0002_again",
    ]
    assert verify_log().broken is None and verify_log().checked == 3
