"""The audit log can't be quietly rewritten.

- Someone with superuser access who switches the trigger off and changes,
  removes, inserts or reorders rows is caught by ``verify_audit``, which names
  the first broken event; cutting the tail off or recomputing every hash after
  a change is caught against a signed checkpoint.
- Each event stores the text it was hashed over (``body``): changing it breaks
  the chain, and changing only the columns shown (``actor``, ``data``...) while
  leaving body and hash alone is caught by the columns check.
- On an ordinary connection the database itself refuses UPDATE, DELETE and
  TRUNCATE on the audit table.
- Concurrent writers leave one unbroken chain; the head is read after the
  chain lock is granted.
- If the audit event can't be written, the change it records doesn't happen.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import os
import re
import threading
import types
import uuid
from collections import Counter
from contextlib import contextmanager

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test import Client, override_settings
from django.utils import timezone

from approvals import services
from approvals.models import ActionRequest, ActionStatus, ExecutionGrant, OutboxMessage, Review
from audit.canonical import canonical_json
from audit.chain import (
    _CHAIN_LOCK_ID,
    EDITED,
    GENESIS_HASH,
    MISSING,
    Actor,
    ChainBreak,
    event_body,
    iter_events,
    link_hash,
    record_event,
    seal,
    verify_chain,
)
from audit.checkpoints import make_checkpoint
from audit.models import AuditEvent
from tests.conftest import propose_body
from tests.factories import propose
from tests.support.servers import wait_until

TABLE = AuditEvent._meta.db_table
EDITED_RE = r"columns do not match the hashed content \(row edited\)"


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def history(agent, reviewer, second_reviewer) -> list[AuditEvent]:
    """A few real actions: proposed, approved, rejected, approved."""
    for verdict in ("approve", "reject", "approve"):
        action = propose(agent)
        if verdict == "approve":
            services.approve_action(action_id=action.id, reviewer=reviewer, via="api")
        else:
            services.reject_action(action_id=action.id, reviewer=second_reviewer, via="api", reason="not today")
    events = list(AuditEvent.objects.order_by("seq"))
    assert len(events) >= 12
    return events


def tamper(*statements: tuple[str, list]) -> None:
    """Change audit rows as a database superuser could: with the append-only trigger disabled."""
    quoted = connection.ops.quote_name(TABLE)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {quoted} DISABLE TRIGGER USER")
        for sql, params in statements:
            cursor.execute(sql.format(table=quoted), params)
        cursor.execute(f"ALTER TABLE {quoted} ENABLE TRIGGER USER")


def recompute_chain_from(seq: int, **changes) -> None:
    """The careful forger: change event ``seq`` and recompute every hash after it, so the chain verifies."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        prev = AuditEvent.objects.filter(seq=seq - 1).values_list("hash", flat=True).first() or GENESIS_HASH
        for event in AuditEvent.objects.filter(seq__gte=seq).order_by("seq"):
            if event.seq == seq:
                for field, value in changes.items():
                    setattr(event, field, value)
            event.prev_hash = prev
            seal(event)  # body and hash, both recomputed
            event.save()
            prev = event.hash


def verify(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def write_checkpoint(tmp_path) -> tuple[str, dict]:
    from io import StringIO

    out = StringIO()
    call_command("audit_checkpoint", stdout=out)
    path = tmp_path / "checkpoint.json"
    path.write_text(out.getvalue())
    return str(path), json.loads(out.getvalue())


def normal_connection(**kwargs) -> psycopg.Connection:
    """A connection as production opens one: no maintenance switch."""
    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"],
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=kwargs.pop("user", settings["USER"]),
        autocommit=True,
        **kwargs,
    )


# --- tampering is detected and located -------------------------------------------------------------


@pytest.mark.django_db
def test_an_honest_log_verifies(history):
    assert f"audit chain intact: {len(history)} events verified" in verify()


@pytest.mark.django_db
def test_a_changed_row_is_named(history):
    victim = next(e for e in history if e.verb == "action.rejected")
    tamper(
        ("UPDATE {table} SET data = %s::jsonb WHERE seq = %s", ['{"from": "pending", "to": "approved"}', victim.seq])
    )
    with pytest.raises(CommandError, match=rf"broken at event #{victim.seq}: {EDITED_RE}"):
        verify()


@pytest.mark.django_db
def test_a_changed_actor_is_named(history):
    victim = next(e for e in history if e.verb == "action.reviewed")
    tamper(("UPDATE {table} SET actor = 'mallory' WHERE seq = %s", [victim.seq]))
    with pytest.raises(CommandError, match=rf"broken at event #{victim.seq}:"):
        verify()


@pytest.mark.django_db
def test_a_deleted_row_is_named(history):
    victim = history[len(history) // 2]
    tamper(("DELETE FROM {table} WHERE seq = %s", [victim.seq]))
    with pytest.raises(
        CommandError, match=rf"broken at event #{victim.seq}: expected event #{victim.seq}, found #{victim.seq + 1}"
    ):
        verify()


@pytest.mark.django_db
def test_an_inserted_row_is_named(history):
    """A forged event slipped in after #k, later rows renumbered; the forger even computes its hashes right."""
    k = len(history) // 2
    before = history[k - 1]
    tamper(
        ("UPDATE {table} SET seq = -seq WHERE seq > %s", [k]),
        ("UPDATE {table} SET seq = -seq + 1 WHERE seq < 0", []),
    )
    forged = AuditEvent(
        seq=k + 1,
        at=before.at,
        actor_type="user",
        actor="rita",
        via="web",
        verb="action.approved",
        object_type="action",
        object_id=before.object_id,
        action_id=before.action_id,
        agent_name=before.agent_name,
        data={"from": "pending", "to": "approved"},
        prev_hash=before.hash,
    )
    seal(forged)
    forged.save(force_insert=True)  # INSERT is not refused: appending is what the log is for
    # The forged row links correctly to #k; the row after it no longer does.
    with pytest.raises(CommandError, match=rf"broken at event #{k + 2}: .*\({k + 1} events verified before it\)"):
        verify()


@pytest.mark.django_db
def test_reordered_rows_are_named(history):
    k = len(history) // 2
    tamper(
        ("UPDATE {table} SET seq = -1 WHERE seq = %s", [k]),
        ("UPDATE {table} SET seq = %s WHERE seq = %s", [k, k + 1]),
        ("UPDATE {table} SET seq = %s WHERE seq = -1", [k + 1]),
    )
    with pytest.raises(CommandError, match=rf"broken at event #{k}: prev_hash does not match"):
        verify()


@pytest.mark.django_db
def test_a_request_id_added_afterwards_is_named(history):
    """The request id is hashed too: pinning an event on another request is a change."""
    victim = history[4]
    tamper(("UPDATE {table} SET request_id = 'someone-elses-request' WHERE seq = %s", [victim.seq]))
    with pytest.raises(CommandError, match=rf"broken at event #{victim.seq}: {EDITED_RE}"):
        verify()


@pytest.mark.django_db
def test_session_replication_role_is_no_way_around_it_either(history):
    victim = history[3]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(f"UPDATE {TABLE} SET verb = 'action.cancelled' WHERE seq = %s", [victim.seq])
    with pytest.raises(CommandError, match=rf"broken at event #{victim.seq}:"):
        verify()


# --- the stored body and the columns shown ---------------------------------------------------------


def recompute_chain_over_bodies(seq: int, change) -> None:
    """A forger who rewrites the hashed text of event ``seq`` (not its columns) and recomputes every hash after it."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(f"ALTER TABLE {connection.ops.quote_name(TABLE)} ALTER COLUMN body DROP NOT NULL")
        prev = AuditEvent.objects.filter(seq=seq - 1).values_list("hash", flat=True).first() or GENESIS_HASH
        for event in AuditEvent.objects.filter(seq__gte=seq).order_by("seq"):
            if event.seq == seq:
                event.body = change(event.body)
            event.prev_hash = prev
            event.hash = link_hash(prev, event.body or "")
            event.save(update_fields=["body", "prev_hash", "hash"])
            prev = event.hash


def proposed_event(history) -> AuditEvent:
    """An event with every column set: agent, action, data."""
    return next(e for e in history if e.verb == "action.proposed" and e.seq > 3)


@pytest.mark.django_db
def test_each_event_stores_the_text_it_was_hashed_over(history):
    for event in history:
        assert event.body == canonical_json(event_body(event))
        assert event.hash == hashlib.sha256((event.prev_hash + event.body).encode()).hexdigest()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "'mallory'"),
        ("actor_type", "'system'"),
        ("verb", "'action.cancelled'"),
        ("data", """'{"action_type": "decision.only"}'::jsonb"""),
        ("data", "data || '{\"note\": 1}'::jsonb"),
        ("at", "at + interval '1 microsecond'"),
        ("action_id", "gen_random_uuid()"),
        ("action_id", "NULL"),
        ("agent_name", "''"),
        ("object_id", "'42'"),
        ("request_id", "'someone-elses-request'"),
    ],
)
def test_a_column_changed_under_an_intact_body_and_hash_is_named(history, column, value):
    """What the page and the export show is checked against what was hashed, not only the hash chain."""
    victim = proposed_event(history)
    value = value.replace("{", "{{").replace("}", "}}")  # tamper() formats the table name in
    tamper((f"UPDATE {{table}} SET {column} = {value} WHERE seq = %s", [victim.seq]))
    row = AuditEvent.objects.get(seq=victim.seq)
    assert (row.body, row.hash, row.prev_hash) == (victim.body, victim.hash, victim.prev_hash)
    assert getattr(row, column) != getattr(victim, column)
    with pytest.raises(
        CommandError,
        match=rf"broken at event #{victim.seq}: {EDITED_RE} \({victim.seq - 1} events verified before it\)",
    ):
        verify()
    # The model-level verifier agrees.
    assert verify_chain(AuditEvent.objects.order_by("seq")) == (victim.seq - 1, ChainBreak(victim.seq, EDITED))


@pytest.mark.django_db
def test_a_changed_body_is_named(history):
    victim = proposed_event(history)
    body = canonical_json({**json.loads(victim.body), "actor": "mallory"})
    tamper(("UPDATE {table} SET body = %s WHERE seq = %s", [body, victim.seq]))
    with pytest.raises(CommandError, match=rf"broken at event #{victim.seq}: content does not match its hash"):
        verify()


@pytest.mark.django_db
def test_a_cleared_body_is_named(history):
    victim = proposed_event(history)
    tamper(
        ("ALTER TABLE {table} ALTER COLUMN body DROP NOT NULL", []),
        ("UPDATE {table} SET body = NULL WHERE seq = %s", [victim.seq]),
    )
    with pytest.raises(CommandError, match=rf"broken at event #{victim.seq}: {re.escape(MISSING)}"):
        verify()


@pytest.mark.django_db
def test_the_body_cannot_be_left_out():
    with pytest.raises(DatabaseError, match="body"), transaction.atomic():
        AuditEvent.objects.bulk_create([AuditEvent(seq=1, at=timezone.now(), body=None, prev_hash="0", hash="1")])


@pytest.mark.django_db
@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda b: canonical_json({**json.loads(b), "note": "signed off by the CFO"}), id="extra-key"),
        pytest.param(lambda b: canonical_json({**json.loads(b), "request_id": "r-1"}), id="request-id-only-in-body"),
        pytest.param(lambda b: canonical_json({**json.loads(b), "request_id": ""}), id="empty-request-id-in-body"),
        pytest.param(
            lambda b: canonical_json({k: v for k, v in json.loads(b).items() if k != "action_id"}), id="key-left-out"
        ),
        pytest.param(lambda b: canonical_json({**json.loads(b), "actor": "mallory"}), id="other-actor"),
        pytest.param(lambda b: canonical_json({**json.loads(b), "data": {}}), id="other-data"),
        pytest.param(lambda b: canonical_json({**json.loads(b), "seq": json.loads(b)["seq"] + 1}), id="other-seq"),
        pytest.param(lambda b: canonical_json({**json.loads(b), "at": "2001-01-01T00:00:00+00:00"}), id="other-at"),
        pytest.param(lambda b: canonical_json({**json.loads(b), "at": "yesterday-ish"}), id="at-not-a-time"),
        pytest.param(lambda b: canonical_json({**json.loads(b), "seq": "one"}), id="seq-not-a-number"),
        pytest.param(lambda b: b[:-1], id="not-json"),
        pytest.param(lambda b: "[]", id="not-an-object"),
    ],
)
def test_a_recomputed_chain_over_a_rewritten_body_is_named(history, rewrite):
    """The careful forger rewrites the hashed text and every hash after it, leaving the columns: the chain
    verifies, the columns check does not."""
    victim = proposed_event(history)
    recompute_chain_over_bodies(victim.seq, rewrite)
    assert verify_chain(iter_events())[1] == ChainBreak(victim.seq, EDITED)
    with pytest.raises(CommandError, match=rf"broken at event #{victim.seq}: {EDITED_RE}"):
        verify()


@pytest.mark.django_db
def test_the_migration_fills_in_the_bodies_of_older_events_exactly_as_they_were_hashed(history):
    """Migration 0010 rebuilds each older event's body from its columns, through the append-only trigger's
    maintenance switch (set for its own transaction), and the chain verifies over the stored bodies."""
    from django.db.migrations.loader import MigrationLoader

    # The models as migration 0010 saw them (the audit log belonged to the approvals app then).
    apps = MigrationLoader(connection).project_state(("approvals", "0010_audit_body")).apps
    backfill = importlib.import_module("approvals.migrations.0010_audit_body").backfill_bodies
    tamper(
        ("ALTER TABLE {table} ALTER COLUMN body DROP NOT NULL", []),
        ("UPDATE {table} SET body = NULL", []),
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL countersign.audit_maintenance = 'off'")  # as a production session has it
        backfill(apps, types.SimpleNamespace(connection=connection))
        cursor.execute("SELECT current_setting('countersign.audit_maintenance')")
        assert cursor.fetchone()[0] == "off"  # switched on for the backfill only
    assert list(AuditEvent.objects.order_by("seq").values_list("body", flat=True)) == [e.body for e in history]
    assert f"audit chain intact: {len(history)} events verified" in verify()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["column", "body-not-json"])
def test_the_two_checks_run_side_by_side_outside_a_transaction(history, how):
    """verify_audit as an operator runs it (autocommit): the columns check on its own connection and thread."""
    assert f"audit chain intact: {len(history)} events verified" in verify()
    victim = proposed_event(history)
    if how == "column":
        tamper(("UPDATE {table} SET actor = 'mallory' WHERE seq = %s", [victim.seq]))
    else:
        recompute_chain_over_bodies(victim.seq, lambda b: b[:-1])
    with pytest.raises(CommandError, match=rf"broken at event #{victim.seq}: {EDITED_RE}"):
        verify()


# --- checkpoints: the tail and the recomputed chain ------------------------------------------------


@pytest.mark.django_db
def test_a_truncated_tail_passes_the_chain_but_not_the_checkpoint(history, tmp_path):
    path, checkpoint = write_checkpoint(tmp_path)
    head = history[-1].seq
    assert checkpoint["seq"] == head and checkpoint["hash"] == history[-1].hash

    assert "checkpoints: 1 valid" in verify("--from-checkpoint", path)

    tamper(("DELETE FROM {table} WHERE seq > %s", [head - 2]))
    assert "audit chain intact" in verify()  # what is left is a perfectly good chain...
    with pytest.raises(
        CommandError, match=rf"truncated: the chain ends at event #{head - 2}.*#{head - 1}\.\.#{head} are missing"
    ):
        verify("--from-checkpoint", path)  # ...but not the one that was signed


@pytest.mark.django_db
def test_a_truncated_tail_with_new_events_after_it_is_caught(history, agent, tmp_path):
    path, _ = write_checkpoint(tmp_path)
    head = history[-1].seq
    tamper(("DELETE FROM {table} WHERE seq > %s", [head - 2]))
    for _ in range(3):
        propose(agent)  # the log moves on past the old head: #head exists again, with other content
    assert AuditEvent.objects.order_by("-seq").first().seq > head
    with pytest.raises(CommandError, match=rf"rewritten: event #{head} does not match the checkpoint"):
        verify("--from-checkpoint", path)


@pytest.mark.django_db
def test_a_recomputed_chain_passes_alone_but_not_against_the_checkpoint(history, tmp_path):
    path, _ = write_checkpoint(tmp_path)
    victim = next(e for e in history if e.verb == "action.rejected")
    recompute_chain_from(victim.seq, data={"from": "pending", "to": "approved"})
    assert "audit chain intact" in verify()
    with pytest.raises(CommandError, match=rf"rewritten: event #{history[-1].seq} does not match"):
        verify("--from-checkpoint", path)


@pytest.mark.django_db
def test_a_forged_checkpoint_is_refused(history, tmp_path):
    _, checkpoint = write_checkpoint(tmp_path)
    # Pretend the log was shorter when signed, to hide a truncation.
    forged = {**checkpoint, "seq": checkpoint["seq"] - 2, "hash": history[-3].hash}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    with pytest.raises(CommandError, match=r"is not valid: signature does not match"):
        verify("--from-checkpoint", str(tmp_path / "forged.json"))


@pytest.mark.django_db
def test_a_checkpoint_signed_with_another_key_is_refused(history, tmp_path):
    with override_settings(COUNTERSIGN_AUDIT_CHECKPOINT_KEYS=["somebody-elses-key"]):
        path, _ = write_checkpoint(tmp_path)
    with pytest.raises(CommandError, match=r"which this installation does not have"):
        verify("--from-checkpoint", path)
    # A rotated key still verifies old checkpoints while it is listed after the new one.
    with override_settings(COUNTERSIGN_AUDIT_CHECKPOINT_KEYS=["the-new-key", "somebody-elses-key"]):
        assert "checkpoints: 1 valid" in verify("--from-checkpoint", path)


@pytest.mark.django_db
def test_a_file_without_a_checkpoint_is_an_error(history, tmp_path):
    (tmp_path / "empty.log").write_text('{"message": "hello"}\nnot json\n')
    with pytest.raises(CommandError, match="no audit checkpoint found"):
        verify("--from-checkpoint", str(tmp_path / "empty.log"))


@pytest.mark.django_db
def test_checkpoints_need_a_key(history):
    with override_settings(COUNTERSIGN_AUDIT_CHECKPOINT_KEYS=[]), pytest.raises(CommandError, match="not set"):
        call_command("audit_checkpoint")


@pytest.mark.django_db
def test_the_beat_task_appends_to_the_checkpoint_file_and_complains_without_a_key(history, tmp_path, caplog):
    from approvals.tasks import audit_checkpoint

    target = tmp_path / "offsite" / "checkpoints.jsonl"
    with override_settings(COUNTERSIGN_AUDIT_CHECKPOINT_FILE=str(target)):
        assert audit_checkpoint() == history[-1].seq
        assert audit_checkpoint() == history[-1].seq
    assert len(target.read_text().splitlines()) == 2
    assert "checkpoints: 2 valid" in verify("--from-checkpoint", str(target))

    with override_settings(COUNTERSIGN_AUDIT_CHECKPOINT_KEYS=[]), caplog.at_level("ERROR"):
        assert audit_checkpoint() == -1
    assert "no audit checkpoint: COUNTERSIGN_AUDIT_CHECKPOINT_KEY is not set" in caplog.text


@pytest.mark.django_db
def test_a_checkpoint_of_an_empty_log_signs_the_genesis():
    checkpoint = make_checkpoint()
    assert (checkpoint.seq, checkpoint.hash) == (0, GENESIS_HASH)


# --- the database refuses changes on an ordinary connection ----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_trigger_refuses_update_delete_and_truncate(history):
    seq = history[2].seq
    with normal_connection() as conn:
        for sql in (
            f"UPDATE {TABLE} SET actor = 'mallory' WHERE seq = {seq}",
            f"DELETE FROM {TABLE} WHERE seq = {seq}",
            f"DELETE FROM {TABLE}",
            f"TRUNCATE {TABLE}",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="audit events are append-only"):
                conn.execute(sql)
        # Appending is what the log is for.
        assert conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == len(history)
    assert AuditEvent.objects.get(seq=seq).actor == history[2].actor
    assert "audit chain intact" in verify()


@pytest.mark.django_db
def test_the_orm_is_refused_too_without_the_maintenance_switch(history):
    for change in (
        lambda: AuditEvent.objects.filter(seq=history[0].seq).update(actor="mallory"),
        lambda: AuditEvent.objects.filter(seq=history[0].seq).delete(),
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL countersign.audit_maintenance = 'off'")
            change()
    assert AuditEvent.objects.get(seq=history[0].seq).actor == history[0].actor


@pytest.mark.django_db(transaction=True)
def test_the_maintenance_switch_is_no_way_around_it_for_a_role_that_may_only_write_rows(history):
    """The switch is honoured only for the table's owner, who could disable the trigger anyway."""
    role = f"countersign_dml_{os.getpid()}"
    with normal_connection() as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        try:
            admin.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {TABLE} TO {role}")
            with normal_connection(user=role, options="-c countersign.audit_maintenance=on") as app:
                for sql in (f"UPDATE {TABLE} SET actor = 'mallory'", f"DELETE FROM {TABLE}", f"TRUNCATE {TABLE}"):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                        app.execute(sql)
        finally:
            admin.execute(f"REVOKE ALL ON {TABLE} FROM {role}")
            admin.execute(f"DROP ROLE {role}")
    assert AuditEvent.objects.count() == len(history)


# --- concurrent writers ----------------------------------------------------------------------------


def all_at_once(work, threads_n: int, *, timeout: float) -> None:
    """``work(n)`` in ``threads_n`` threads released together, each on its own connection; every one must
    finish in time and without an error."""
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            work(n)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_writers_leave_one_unbroken_chain():
    threads_n, per_thread = 8, 500

    def writer(n: int) -> None:
        for i in range(per_thread):
            with transaction.atomic():
                record_event(
                    actor=Actor("system", f"writer-{n}", "test"),
                    verb="test.event",
                    object_type="test",
                    object_id=f"{n}-{i}",
                    data={"i": i},
                )

    all_at_once(writer, threads_n, timeout=240)

    total = threads_n * per_thread
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, total + 1))
    assert Counter(AuditEvent.objects.values_list("actor", flat=True)) == {
        f"writer-{n}": per_thread for n in range(threads_n)
    }
    times = list(AuditEvent.objects.order_by("seq").values_list("at", flat=True))
    assert times == sorted(times)  # time never runs backwards along the chain
    assert f"audit chain intact: {total} events verified" in verify()


def waiting_for_an_advisory_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return bool(cursor.fetchone()[0])


def contend_with_a_lock_holder(second) -> tuple[AuditEvent, object]:
    """A writer appends an event, has it linked on at once (a block nested in its transaction: it holds the chain
    lock from then on) and keeps its transaction open; ``second`` runs on another connection; once PostgreSQL shows
    it waiting for the lock, the first commits. Returns the first writer's event and what ``second`` returned."""
    holds, release = threading.Event(), threading.Event()
    result: dict[str, object] = {}

    def first() -> None:
        try:
            with transaction.atomic(), transaction.atomic():
                result["first"] = record_event(
                    actor=Actor.system("test"), verb="test.first", object_type="t", object_id=1
                )
                holds.set()
                assert release.wait(timeout=30)
        except BaseException as exc:
            result["first_error"] = exc
            holds.set()
        finally:
            connection.close()

    def run_second() -> None:
        try:
            result["second"] = second()
        except BaseException as exc:
            result["second_error"] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert holds.wait(timeout=30)
    threads.append(threading.Thread(target=run_second))
    threads[1].start()
    try:
        wait_until(
            waiting_for_an_advisory_lock,
            timeout=30,
            interval=0.01,
            message="the second writer to wait for the chain lock",
        )
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=30)
    assert "first_error" not in result and "second_error" not in result, result
    return result["first"], result["second"]


@pytest.mark.django_db(transaction=True)
def test_the_head_is_read_after_the_lock_is_granted():
    """The claim the chain rests on (countersign_audit_seal, migration audit 0002): each statement of a VOLATILE
    PL/pgSQL function takes a new snapshot, so the head read after the lock is granted sees the previous holder's
    commit, though the commit that waited for it began before."""
    with transaction.atomic():
        record_event(actor=Actor.system("test"), verb="test.zero", object_type="t", object_id=0)

    def append():
        with transaction.atomic():
            record_event(actor=Actor.system("test"), verb="test.second", object_type="t", object_id=2)

    first, _ = contend_with_a_lock_holder(append)
    second = AuditEvent.objects.get(verb="test.second")  # linked on by its commit, which waited for the lock
    assert (second.seq, second.prev_hash) == (first.seq + 1, first.hash)
    assert second.at >= first.at
    assert "audit chain intact: 3 events verified" in verify()


@pytest.mark.django_db(transaction=True)
def test_one_statement_that_locks_and_reads_would_fork_the_chain():
    """The control for the test above: lock and head in ONE statement read a snapshot taken before the wait,
    so the waiter sees the head from before the previous holder's commit (two events would get one seq)."""
    with transaction.atomic():
        record_event(actor=Actor.system("test"), verb="test.zero", object_type="t", object_id=0)
    zero = AuditEvent.objects.get(verb="test.zero")

    def lock_and_read_in_one_statement():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT pg_advisory_xact_lock(%s), (SELECT seq FROM {TABLE} ORDER BY seq DESC LIMIT 1)",
                [_CHAIN_LOCK_ID],
            )
            return cursor.fetchone()[1]

    first, seen = contend_with_a_lock_holder(lock_and_read_in_one_statement)
    assert first.seq == zero.seq + 1
    assert seen == zero.seq  # stale: what record_event must never build on


@pytest.mark.django_db(transaction=True)
def test_concurrent_proposals_leave_one_linear_chain(agent):
    """Proposals from several threads at once (the path agents use): one event per seq, each linked to the
    previous, all verified."""
    threads_n, per_thread = 6, 15

    def proposer(n: int) -> None:
        for i in range(per_thread):
            propose(agent, summary=f"proposal {n}-{i}")

    all_at_once(proposer, threads_n, timeout=120)
    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(e.verb == "action.proposed" for e in events) == threads_n * per_thread
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert f"audit chain intact: {len(events)} events verified" in verify()


@pytest.mark.django_db
def test_record_event_returns_the_event_as_stored():
    action_id = uuid.uuid4()
    with transaction.atomic():
        event = record_event(
            actor=Actor("user", "rita", "web"),
            verb="test.returned",
            object_type="test",
            object_id=7,
            action_id=str(action_id).upper(),  # any spelling of the UUID: the body says what the column says
            data={"é": "ü", "list": [1, 2.5, None, True], "nested": {"b": 1, "a": "\u2028"}},
        )
    assert not event._state.adding
    stored = AuditEvent.objects.get(seq=event.seq)
    for f in AuditEvent._meta.concrete_fields:
        assert getattr(stored, f.attname) == getattr(event, f.attname), f.attname
    assert stored.action_id == action_id
    assert "audit chain intact: 1 events verified" in verify()


# --- fail closed ----------------------------------------------------------------------------------


@contextmanager
def audit_insert_fails(verb: str):
    """From here on, the database refuses to store audit events with this verb (say, a full disk)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION test_refuse_audit_insert() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit store unavailable'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER test_refuse_audit_insert BEFORE INSERT ON {TABLE} FOR EACH ROW "
            f"WHEN (NEW.verb = '{verb}') EXECUTE FUNCTION test_refuse_audit_insert()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER test_refuse_audit_insert ON {TABLE}")


@pytest.mark.django_db
def test_an_approval_whose_audit_event_cannot_be_written_does_not_happen(agent, reviewer):
    action = propose(agent)
    outbox_before = OutboxMessage.objects.count()
    events_before = AuditEvent.objects.count()
    with audit_insert_fails("action.reviewed"), pytest.raises(DatabaseError, match="audit store unavailable"):
        services.approve_action(action_id=action.id, reviewer=reviewer, via="api", comment="go")

    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING
    assert not Review.objects.filter(action=action).exists()
    assert not ExecutionGrant.objects.filter(action=action).exists()
    assert OutboxMessage.objects.count() == outbox_before
    assert AuditEvent.objects.count() == events_before

    # Once the audit store is back, the same approval goes through.
    services.approve_action(action_id=action.id, reviewer=reviewer, via="api", comment="go")
    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED


@pytest.mark.django_db
def test_a_web_approval_whose_decision_cannot_be_audited_shows_an_error_and_changes_nothing(agent, reviewer):
    action = propose(agent)
    client = Client(raise_request_exception=False)
    client.force_login(reviewer)
    with audit_insert_fails("action.approved"):
        response = client.post(f"/actions/{action.id}/approve", {"comment": "ok"})
    assert response.status_code == 500
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING
    assert not Review.objects.filter(action=action).exists()
    assert not AuditEvent.objects.filter(action_id=action.id, verb="action.reviewed").exists()


@pytest.mark.django_db
def test_a_proposal_whose_audit_event_cannot_be_written_is_not_created(agent_api):
    agent_api.raise_request_exception = False
    outbox_before = OutboxMessage.objects.count()
    with audit_insert_fails("action.proposed"):
        response = agent_api.post("/api/v1/actions", propose_body(), format="json")
    assert response.status_code == 500
    assert ActionRequest.objects.count() == 0
    assert OutboxMessage.objects.count() == outbox_before


@pytest.mark.django_db
def test_a_log_in_that_cannot_be_audited_does_not_sign_anyone_in(reviewer):
    client = Client(raise_request_exception=False)
    with audit_insert_fails("user.logged_in"):
        response = client.post("/accounts/login/", {"username": "rita", "password": "pw-rita"})
    assert response.status_code == 500
    page = client.get("/")
    assert page.status_code == 302 and "/accounts/login/" in page["Location"]
    assert not AuditEvent.objects.filter(verb="user.logged_in").exists()


@pytest.mark.django_db
def test_agent_and_credential_changes_that_cannot_be_audited_do_not_happen(owner):
    from agents.models import Agent
    from agents.services import create_agent
    from approvals.models import Credential
    from approvals.services.credentials import create_credential

    actor = Actor("user", "tests", "cli")
    with audit_insert_fails("agent.created"), pytest.raises(DatabaseError):
        create_agent(name="ghost-bot", owner=owner, actor=actor, allow=["decision.only"])
    assert not Agent.objects.filter(name="ghost-bot").exists()
    with audit_insert_fails("credential.created"), pytest.raises(DatabaseError):
        create_credential(name="ghost", kind="http_bearer", secret="x", scope={"base_url": "http://x"}, actor=actor)
    assert not Credential.objects.filter(name="ghost").exists()
