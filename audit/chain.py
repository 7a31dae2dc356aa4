"""The one writer of audit events, and the chain verifier.

``hash = SHA-256(prev_hash || body)``, where ``body`` is the canonical JSON of the event (``event_body``),
stored with the row exactly as it was hashed. Linking an event on takes a database-wide lock (a PostgreSQL
transaction advisory lock; SQLite already serialises writers) so the chain stays linear under concurrent writers;
on PostgreSQL the commit of the event's transaction does it (``_append``, migration audit 0002), so the lock is
held by commits only. The event is written in the caller's transaction: if it cannot be written or linked, the
change it records is rolled back with it (fail closed).

Verifying is two checks, both required: the chain (each stored body hashes, with the previous hash, to
the stored hash; seqs are contiguous and each row links to the previous one) and the columns (each row's
columns say what its hashed body says; otherwise the page and exports could show an edited ``actor`` or
``data`` over an intact chain). ``verify_log`` runs them concurrently; ``verify_chain`` does both in Python
over model instances.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DataError, connection, connections, transaction
from django.utils import timezone
from psycopg.pq import TransactionStatus

from audit.canonical import canonical_json
from audit.models import AuditEvent, RefusalTally, UnsealedEvent
from config.prepared import insert, insert_statement, inserted, update, update_statement
from config.request_id import get_request_id

GENESIS_HASH = "0" * 64
_CHAIN_LOCK_ID = 0x436F756E7465  # arbitrary constant: "Counte"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Actor:
    type: str  # user | agent | system | policy
    name: str
    via: str = ""

    @classmethod
    def user(cls, user, via: str) -> Actor:
        return cls("user", user.get_username(), via)

    @classmethod
    def agent(cls, agent, via: str = "api") -> Actor:
        return cls("agent", agent.name, via)

    @classmethod
    def system(cls, via: str) -> Actor:
        return cls("system", "countersign", via)


def event_body(event: AuditEvent) -> dict[str, Any]:
    """The hashed content of an event: every field except the hashes themselves.

    ``request_id`` joined later: it is hashed when set, so events written before it existed still verify.
    """
    return {"seq": event.seq, "at": event.at.isoformat(), **_content(event)}


def _content(event: AuditEvent) -> dict[str, Any]:
    """``event_body`` but for ``seq`` and ``at``, which the chain gives an event when it links it on."""
    body = {
        "actor_type": event.actor_type,
        "actor": event.actor,
        "via": event.via,
        "verb": event.verb,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "action_id": str(event.action_id) if event.action_id else None,
        "agent_name": event.agent_name,
        "data": event.data,
    }
    if event.request_id:
        body["request_id"] = event.request_id
    return body


def link_hash(prev_hash: str, body: str) -> str:
    """The chain's formula over a stored body: what the verifier recomputes for every event."""
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def seal(event: AuditEvent) -> AuditEvent:
    """Fill ``body`` and ``hash`` of an event whose other fields, ``prev_hash`` included, are set."""
    event.body = canonical_json(event_body(event))
    event.hash = link_hash(event.prev_hash, event.body)
    return event


def record_event(
    *,
    actor: Actor,
    verb: str,
    object_type: str,
    object_id: str,
    action_id=None,
    agent_name: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction: at once, or, directly inside an audited block
    (``audited_atomic``), with the block's other events at its end (the event returned gets its seq and hash then).

    ``at`` never goes backwards along the chain (a clock stepping back gets the previous event's time),
    so a time range is also a seq range: the audit page and export filter on it through the ``at`` index.

    On PostgreSQL an append is one INSERT, and the commit links the events on (``_append``): the event returned has
    its seq and hash once the transaction has committed, unless it was written in a block nested in a longer one.
    """
    conn = transaction.get_connection()
    if not conn.in_atomic_block:
        raise RuntimeError("audit events are written inside the transaction of the change they record")
    if action_id and not isinstance(action_id, uuid.UUID):
        action_id = uuid.UUID(str(action_id))  # the column's text form is what the body must say
    event = AuditEvent(
        actor_type=actor.type,
        actor=actor.name[:150],
        via=actor.via,
        verb=verb,
        object_type=object_type,
        object_id=str(object_id),
        action_id=action_id or None,
        agent_name=agent_name,
        data=data or {},
        request_id=get_request_id(),
    )
    batch: _Batch | None = getattr(conn, _BATCH, None)
    if batch is not None and batch.depth == len(conn.atomic_blocks):
        batch.events.append(
            event
        )  # appended with the rest of its transaction's events, at the end (``audited_atomic``)
        return event
    if batch is not None:  # in a block nested in an audited one, without a savepoint: keep the order of events
        _write_held(batch)
    _append([event])
    return event


@dataclass
class _HeldWrite:
    """A row's INSERT or UPDATE, prepared when it was asked for and run with the block's other writes."""

    sql: str
    params: list[Any]
    instance: Any
    returns: bool  # an INSERT that gives back the id the database makes


@dataclass
class _Batch:
    depth: int  # the audited block's place among the connection's atomic blocks
    events: list[AuditEvent] = field(default_factory=list)
    writes: list[_HeldWrite] = field(default_factory=list)  # insert_with_events, update_with_events


def insert_with_events(instance: Any) -> Any:
    """``config.prepared.insert(instance)``; directly inside an audited block on PostgreSQL, held and written with
    the block's other writes: by the statement that writes its events at its end, or just before the next statement
    the block runs, whichever comes first (``audited_atomic``). A proposal's or decision's rows then cost no round
    trip of their own. The instance is saved as of now; an id the database makes is there once the row is written:
    for rows whose database-made id nothing in the block reads before its next statement."""
    batch = _holding_block()
    if batch is None:
        return insert(instance)
    _write_held_row_first(batch, instance)
    sql, params, returns = insert_statement(instance)
    batch.writes.append(_HeldWrite(sql, params, instance, returns))
    inserted(instance, None)  # saved: a second save of it in the block is an UPDATE (the id comes with the write)
    return instance


def update_with_events(instance: Any) -> None:
    """``config.prepared.update(instance)``, held like ``insert_with_events``: the row's values as of now."""
    batch = _holding_block()
    if batch is None or instance.get_deferred_fields():
        update(instance)
        return
    _write_held_row_first(batch, instance)
    statement = update_statement(instance)
    if statement is not None:
        batch.writes.append(_HeldWrite(*statement, instance, returns=False))


def _holding_block() -> _Batch | None:
    """The audited block the caller is directly inside, on PostgreSQL; None where rows are written at once."""
    conn = transaction.get_connection()
    batch: _Batch | None = getattr(conn, _BATCH, None)
    if batch is None or conn.vendor != "postgresql":
        return None
    if batch.depth == len(conn.atomic_blocks):
        return batch
    _write_held(batch)  # in a block nested in an audited one, without a savepoint: after those held so far
    return None


def _write_held_row_first(batch: _Batch, instance: Any) -> None:
    """Write what the block holds if it holds a write of ``instance``'s row: PostgreSQL writes a row at most once per
    statement, and a WITH's statements do not see each other's rows, so a second write of a held row waits for the
    first (which also gives a row inserted with a database-made id the id its UPDATE needs)."""
    model, pk = type(instance), instance.pk
    if any(w.instance is instance or (pk is not None and type(w.instance) is model and w.instance.pk == pk)
           for w in batch.writes):  # fmt: skip
        _write_held(batch, events=False)


# The audited block open on a connection, kept on the connection itself (each belongs to one thread).
_BATCH = "countersign_audit_batch"


@contextmanager
def audited_atomic() -> Iterator[None]:
    """``transaction.atomic()`` whose audit events are appended to the chain together, at the end of the block.

    The events are written as the block's last statement, one INSERT for all of them, instead of one each as they
    happen; on PostgreSQL the commit then links them into the chain under its lock (``_append``), and on SQLite the
    lock is the write transaction's, held from that INSERT to the commit. Events recorded inside a block nested in
    this one are written at once, after those collected so far, which are written before the nested block's
    savepoint is made: a savepoint that rolls back takes its own events with it and no other, and the chain keeps the
    order they happened in. Any error inside rolls back the events with the rest.

    Rows held for the block (``insert_with_events``, ``update_with_events``) are written just before any other
    statement it runs, which may read them, and otherwise with its events. A block that runs no statement of its
    own, only held writes (a proposal), is then one statement, which on PostgreSQL is its own transaction: run
    without BEGIN and COMMIT, two round trips less (``_one_statement``).
    """
    with transaction.atomic():
        conn = transaction.get_connection()
        if getattr(conn, _BATCH, None) is not None:  # inside an audited block: this one is an ordinary savepoint
            yield
            return
        batch = _Batch(depth=len(conn.atomic_blocks))
        setattr(conn, _BATCH, batch)
        try:
            with conn.execute_wrapper(_write_held_first(batch)):
                yield
            if conn.needs_rollback:  # marked to roll back (transaction.set_rollback): nothing to write
                return
            if _one_statement(conn, batch):
                with _autocommit(conn):
                    _write_held(batch)
            else:
                _write_held(batch)
        finally:
            setattr(conn, _BATCH, None)


def _write_held(batch: _Batch, *, events: bool = True) -> None:
    held_events = batch.events if events else []
    if not held_events and not batch.writes:
        return
    writes = batch.writes
    if events:
        batch.events = []
    batch.writes = []
    _append(held_events, writes=writes)


def _write_held_first(batch: _Batch) -> Callable[..., Any]:
    """An execute wrapper writing what the block holds before another statement runs in it. The rows, before any
    statement: it may read or change them. The events too, before a savepoint: written after it, they would be rolled
    back with it, and the block's change would commit without its events."""

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if sql.startswith("SAVEPOINT "):
            _write_held(batch)
        elif batch.writes:
            _write_held(batch, events=False)
        return execute(sql, params, many, context)

    return wrapper


def _one_statement(conn: Any, batch: _Batch) -> bool:
    """Whether what ``batch`` holds is all its transaction writes: on PostgreSQL, nothing sent since the transaction
    began. Only a block that is the whole transaction gets there: inside a longer one, or one opened by hand
    (autocommit off), Django has sent its SAVEPOINT at least, and the transaction is committed, or rolled back, by
    someone else later."""
    if conn.vendor != "postgresql" or not (batch.events or batch.writes):
        return False
    return conn.connection is not None and conn.connection.info.transaction_status == TransactionStatus.IDLE


@contextmanager
def _autocommit(conn: Any) -> Iterator[None]:
    """The psycopg connection in autocommit for one statement, which commits by itself. Django's state is left as
    it is: its commit at the block's end finds no transaction open, and sends nothing; the on-commit hooks run after
    it as usual. The audit seal and the foreign keys, deferred to the commit, are checked at the statement's end."""
    raw = conn.connection
    raw.autocommit = True
    try:
        yield
    finally:
        if not raw.closed:  # a connection lost meanwhile is Django's to discard
            raw.autocommit = False


def _append(events: list[AuditEvent], *, writes: Sequence[_HeldWrite] = ()) -> None:
    """Chain ``events`` on after the head, in the caller's transaction; ``writes`` (PostgreSQL only: held rows) are
    run by the same statement.

    PostgreSQL: they are written unsealed, and the transaction's commit links them on (migration audit 0002), so the
    chain's lock is held only inside the commit. A block nested in a longer transaction (which may read its events
    back, or go on for a while) has them sealed at once instead, and holds the lock to its end. SQLite, which
    serialises writers anyway: sealed here, under the lock of its write transaction.
    """
    if connection.vendor != "postgresql":
        _seal_here(events)
        return
    params: list[Any] = [param for write in writes for param in write.params]
    # Each write an INSERT or UPDATE of its own in the WITH (run once, whatever reads it); an id the database makes
    # comes back on the statement's first row.
    ctes = ", ".join(f"row{i} AS ({write.sql})" for i, write in enumerate(writes))
    returned = [f"(SELECT * FROM row{i})" for i, write in enumerate(writes) if write.returns]  # noqa: S608
    if events:
        now = timezone.now()
        for event in events:
            event.at = now
            params += [
                now,
                event.actor_type,
                event.actor,
                event.via,
                event.verb,
                event.object_type,
                event.object_id,
                event.action_id,
                event.agent_name,
                canonical_json(event.data),
                event.request_id,
                body_template(event),
            ]
        table = connection.ops.quote_name(UnsealedEvent._meta.db_table)
        main = (
            _UNSEALED_SQL.format(table=table)
            + ", ".join([_UNSEALED_ROW] * len(events))
            + " RETURNING "
            + ", ".join(["id", *returned])
        )
    else:
        main = "SELECT " + ", ".join(returned or ["1"])
    with connection.cursor() as cursor:
        cursor.execute((f"WITH {ctes} " if ctes else "") + main, params)
        fetched = cursor.fetchall()
        made = iter(fetched[0][1 if events else 0 :])
        for write in writes:
            if write.returns:
                inserted(write.instance, next(made))
        if not events or len(connection.atomic_blocks) == 1:  # this block is the transaction: its commit seals them
            return
        cursor.execute(_SEAL_SQL, [[row[0] for row in fetched]])
        sealed = {row[0]: row[1:] for row in cursor.fetchall()}
    for event, (pending_id, *_) in zip(events, fetched, strict=True):
        event.seq, event.at, event.prev_hash, event.hash, event.body = sealed[pending_id]
        event._state.adding = False
        event._state.db = connection.alias


_UNSEALED_SQL = (
    "INSERT INTO {table} (at, actor_type, actor, via, verb, object_type, object_id, action_id, agent_name, data, "
    "request_id, body) VALUES "
)
_UNSEALED_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s)"
_SEAL_SQL = (
    "SELECT sealed_id, sealed_seq, sealed_at, sealed_prev_hash, sealed_hash, sealed_body "
    "FROM countersign_audit_seal(%s::bigint[])"
)

# Where the database writes an unsealed event's time and seq into its body (neither character can occur in
# canonical JSON otherwise: it escapes every control character).
AT_MARK, SEQ_MARK = "\x01", "\x02"


def body_template(event: AuditEvent) -> str:
    """``canonical_json(event_body(event))`` with the values of ``at`` and ``seq`` left as ``AT_MARK`` and
    ``SEQ_MARK``, for the commit to fill in (migration audit 0002): the same text, built item by item the way the
    canonical encoder joins a flat object's sorted items."""
    items = {key: canonical_json(key) + ":" + canonical_json(value) for key, value in _content(event).items()}
    items["at"] = '"at":' + AT_MARK
    items["seq"] = '"seq":' + SEQ_MARK
    return "{" + ",".join(items[key] for key in sorted(items)) + "}"


def _seal_here(events: list[AuditEvent]) -> None:
    head = _lock_and_read_head()
    prev_seq, prev_hash, prev_at = head if head else (0, GENESIS_HASH, None)
    now = timezone.now()
    at = max(now, prev_at) if prev_at else now
    for event in events:
        prev_seq += 1
        event.seq, event.at, event.prev_hash = prev_seq, at, prev_hash
        seal(event)
        prev_hash = event.hash
    AuditEvent.objects.bulk_create(events)


def _lock_and_read_head() -> tuple[int, str, datetime] | None:
    """Take the chain lock, then read (seq, hash, at) of the newest event.

    The head must be read by a statement that starts after the lock is granted, so that its snapshot
    (READ COMMITTED) sees whatever the previous holder committed. On PostgreSQL both happen in one call of
    a VOLATILE PL/pgSQL function, whose statements each take a new snapshot (tests/audit/test_audit.py,
    ``test_the_head_is_read_after_the_lock_is_granted``).
    """
    if connection.vendor != "postgresql":  # SQLite: BEGIN IMMEDIATE already serialises writers
        return AuditEvent.objects.order_by("-seq").values_list("seq", "hash", "at").first()
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq, hash, at_us FROM countersign_audit_lock_head(%s)", [_CHAIN_LOCK_ID])
        seq, head_hash, at_us = cursor.fetchone()
    if seq is None:
        return None
    # ``at`` as microseconds since the epoch: the driver's timestamptz parser costs more than this.
    return seq, head_hash, _EPOCH + timedelta(microseconds=at_us)


# --- refusals ----------------------------------------------------------------------------------------

REFUSALS_COUNTED = "refusals.counted"


def _refusal_minute() -> datetime:
    """The minute a refusal is counted in (a function, so tests can hold the clock at one minute)."""
    return timezone.now().replace(second=0, microsecond=0)


def refusal_key(actor: Actor, verb: str, kind: str) -> str:
    return hashlib.sha256(canonical_json([verb, actor.type, actor.name, actor.via, kind]).encode()).hexdigest()


def record_refusal(
    *,
    actor: Actor,
    verb: str,
    reason: str,
    kind: str = "",
    object_type: str = "",
    object_id: str = "",
    action_id=None,
    agent_name: str = "",
    data: dict[str, Any] | None = None,
) -> bool:
    """Record a refused attempt: the first of its kind by this actor in a minute is an event, later ones a count.

    ``kind`` groups refusals (default: the reason); the event says who (``actor``), what (``action_id`` or
    ``object_type``/``object_id``) and why (``data.reason``). Further refusals of the same kind by the same
    actor in that minute only raise a counter (``RefusalTally``), written once the minute is over as one
    ``refusals.counted`` event (``report_refusal_counts``, from beat and from the next refusal of the kind),
    so a flood of attempts costs one row update each and cannot fill the log.

    Call it where the refusal is final and outside any transaction that rolls back because of it (the
    refused change's own ``atomic`` block): it commits on its own. Returns True when an event was written.
    """
    from django.db import IntegrityError
    from django.db.models import F

    kind = (kind or reason)[:200]
    minute = _refusal_minute()
    key = refusal_key(actor, verb, kind)
    with transaction.atomic():
        if RefusalTally.objects.filter(key=key, minute=minute).update(count=F("count") + 1):
            return False
        try:
            with transaction.atomic():
                RefusalTally.objects.create(
                    key=key,
                    minute=minute,
                    verb=verb,
                    actor_type=actor.type,
                    actor=actor.name[:150],
                    via=actor.via,
                    kind=kind,
                    agent_name=agent_name,
                )
        except IntegrityError:  # another process wrote this minute's first one meanwhile
            RefusalTally.objects.filter(key=key, minute=minute).update(count=F("count") + 1)
            return False
        # Earlier minutes' counts of this kind first, so the log reads in order.
        _report_counts(RefusalTally.objects.filter(key=key, minute__lt=minute))
        record_event(
            actor=actor,
            verb=verb,
            object_type=object_type or "refusal",
            object_id=object_id or kind[:64],
            action_id=action_id,
            agent_name=agent_name,
            data={"reason": reason, **(data or {})},
        )
    return True


def report_refusal_counts(*, now: datetime | None = None) -> int:
    """Write ``refusals.counted`` for every minute that is over and counted more than its first refusal.

    Returns the number of counts written. Run by beat every minute; safe beside another run (rows are
    claimed with SKIP LOCKED and deleted once reported).
    """

    minute = (now or timezone.now()).replace(second=0, microsecond=0)
    with transaction.atomic():
        return _report_counts(RefusalTally.objects.filter(minute__lt=minute))


def _report_counts(tallies) -> int:
    written = 0
    rows = list(tallies.select_for_update(skip_locked=True).order_by("minute", "id")[:1000])
    for tally in rows:
        if tally.count > 1:
            record_event(
                actor=Actor(tally.actor_type, tally.actor, tally.via),
                verb=REFUSALS_COUNTED,
                object_type="refusal",
                object_id=tally.verb,
                agent_name=tally.agent_name,
                data={
                    "verb": tally.verb,
                    "kind": tally.kind,
                    "minute": tally.minute.isoformat(),
                    "refusals": tally.count,
                    # The first was written as its own event; these were only counted.
                    "counted": tally.count - 1,
                },
            )
            written += 1
    if rows:
        type(rows[0]).objects.filter(pk__in=[t.pk for t in rows]).delete()
    return written


# --- verifying -------------------------------------------------------------------------------------

# Why a chain breaks, one wording each, whichever verifier finds it.
RELINKED = "prev_hash does not match the previous event's hash (row inserted, replaced or reordered)"
REHASHED = "content does not match its hash (row changed or moved)"
EDITED = "columns do not match the hashed content (row edited)"
MISSING = "the hashed content is missing (body cleared)"


def _gap(expected: int, found: int | None) -> str:
    if found is None:
        return f"expected event #{expected}, found none (removed rows)"
    return f"expected event #{expected}, found #{found} (removed or inserted rows)"


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    reason: str


@dataclass
class Verification:
    """What ``verify_log`` found: events verified before the first break (all of them if none: the chain is
    intact up to event #checked) and the hashes of the watched seqs among them (for checkpoints)."""

    checked: int
    broken: ChainBreak | None
    hashes: dict[int, str] = field(default_factory=dict)


def verify_chain(
    events: Iterable[AuditEvent], *, start_seq: int = 1, start_hash: str = GENESIS_HASH
) -> tuple[int, ChainBreak | None]:
    """Walk events (model instances) in seq order, both checks in Python; return (events checked, first break
    or None). ``verify_log`` is the fast way over the whole table; this one takes any sequence of events."""
    expected_seq, prev_hash, checked = start_seq, start_hash, 0
    for event in events:
        if event.seq != expected_seq:
            return checked, ChainBreak(expected_seq, _gap(expected_seq, event.seq))
        if event.prev_hash != prev_hash:
            return checked, ChainBreak(event.seq, RELINKED)
        if event.body is None:
            return checked, ChainBreak(event.seq, MISSING)
        if link_hash(prev_hash, event.body) != event.hash:
            return checked, ChainBreak(event.seq, REHASHED)
        if canonical_json(event_body(event)) != event.body:
            return checked, ChainBreak(event.seq, EDITED)
        prev_hash = event.hash
        expected_seq += 1
        checked += 1
    return checked, None


def iter_events(batch: int = 5000, *, after: int = 0, upto: int | None = None) -> Iterator[AuditEvent]:
    last = after
    while True:
        page = AuditEvent.objects.filter(seq__gt=last).order_by("seq")
        if upto is not None:
            page = page.filter(seq__lte=upto)
        rows = list(page[:batch])
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def verify_log(*, watch: Collection[int] = (), batch: int = 20_000) -> Verification:
    """Verify the whole log as it stands now (up to the newest event when called); both checks, concurrently
    on PostgreSQL: the chain in this thread (``_verify_links``), the columns in one query on a second
    connection (``_first_edited_row``). Inside a transaction both run on this connection, one after the
    other, so they see what the transaction sees. SQLite: ``verify_chain`` over the model."""
    with connection.cursor() as cursor:
        cursor.execute(_MAX_SQL.format(table=connection.ops.quote_name(AuditEvent._meta.db_table)))
        head = cursor.fetchone()[0]
    if head is None:
        return Verification(0, None)
    if connection.vendor != "postgresql":
        return _verify_in_python(head, watch)

    if connection.in_atomic_block:
        edited = _first_edited_row(head)
        links = _verify_links(head, watch, batch)
    else:
        found: dict[str, Any] = {}

        def columns() -> None:
            try:
                found["seq"] = _first_edited_row(head)
            except BaseException as exc:  # handed to the caller below
                found["error"] = exc
            finally:
                connections.close_all()  # this thread's connection

        thread = threading.Thread(target=columns, name="verify-audit-columns", daemon=True)
        thread.start()
        try:
            links = _verify_links(head, watch, batch)
        finally:
            thread.join()
        if "error" in found:
            raise found["error"]
        edited = found["seq"]
    if edited is not None and (links.broken is None or edited < links.broken.seq):
        # Every event before it passed the chain check (the chain reached further), and the columns check.
        return Verification(edited - 1, ChainBreak(edited, EDITED), links.hashes)
    return links


_MAX_SQL = "SELECT max(seq) FROM {table} WHERE seq > 0"
_LINKS_SQL = "SELECT seq, prev_hash, hash, body FROM {table} WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s"


def _verify_links(head: int, watch: Collection[int], batch: int) -> Verification:
    """The chain over the stored bodies: seq continuity, prev_hash linkage, sha256(prev_hash + body) == hash.

    Four columns in seq order, keyset pages of ``batch`` rows: per event one tuple, two string comparisons
    and one SHA-256; no JSON (docs/BENCHMARKS.md, "Audit")."""
    sql = _LINKS_SQL.format(table=connection.ops.quote_name(AuditEvent._meta.db_table))
    sha256 = hashlib.sha256
    watched = sorted(set(watch))
    hashes: dict[int, str] = {}
    expected, prev_hash = 1, GENESIS_HASH
    with connection.cursor() as cursor:
        while expected <= head:
            cursor.execute(sql, [expected - 1, head, batch])
            rows = cursor.fetchall()
            if not rows:
                break
            for seq, prev, digest, body in rows:
                if seq != expected:
                    return Verification(expected - 1, ChainBreak(expected, _gap(expected, seq)), hashes)
                if prev != prev_hash:
                    return Verification(expected - 1, ChainBreak(seq, RELINKED), hashes)
                if body is None:
                    return Verification(expected - 1, ChainBreak(seq, MISSING), hashes)
                if sha256((prev + body).encode()).hexdigest() != digest:
                    return Verification(expected - 1, ChainBreak(seq, REHASHED), hashes)
                prev_hash = digest
                expected += 1
            # The page is contiguous (checked above), so a watched seq in it is at a known index.
            first = rows[0][0]
            for seq in watched:
                if first <= seq < expected:
                    hashes[seq] = rows[seq - first][2]
    if expected <= head:  # the newest event seen at the start has gone since
        return Verification(expected - 1, ChainBreak(expected, _gap(expected, None)), hashes)
    return Verification(expected - 1, None, hashes)


# The columns against the hashed body, in PostgreSQL, typed: each column must equal the body's value read as
# the column's type (``at`` is the isoformat of a UTC time in the body, compared as a timestamptz; ``data`` as
# jsonb; ``action_id`` as text, null when unset), ``request_id`` is in the body exactly when it is set, and the
# body has no other keys. A missing body fails every comparison (NULL IS NOT TRUE). Parsing the body is most of
# the cost (about 3 of 5 µs per event), which is why this runs beside the chain check, not after it.
# min(seq) rather than ORDER BY seq LIMIT 1: on an honest log every row is read either way, and an aggregate
# lets PostgreSQL share the scan among parallel workers. ``unnest(ARRAY[...])`` parses each body once (a plain
# subquery would be inlined into every comparison, parsing it again for each).
_EDITED_SQL = """
SELECT min(e.seq) FROM {table} e CROSS JOIN LATERAL unnest(ARRAY[e.body::jsonb]) AS b
WHERE e.seq > 0 AND e.seq <= %s AND (
        (b ->> 'seq')::bigint = e.seq
    AND (b ->> 'at')::timestamptz = e.at
    AND b ->> 'actor_type' = e.actor_type
    AND b ->> 'actor' = e.actor
    AND b ->> 'via' = e.via
    AND b ->> 'verb' = e.verb
    AND b ->> 'object_type' = e.object_type
    AND b ->> 'object_id' = e.object_id
    AND b ? 'action_id' AND b ->> 'action_id' IS NOT DISTINCT FROM e.action_id::text
    AND b ->> 'agent_name' = e.agent_name
    AND b -> 'data' = e.data
    AND (b ? 'request_id') = (e.request_id <> '') AND coalesce(b ->> 'request_id', '') = e.request_id
    AND b - ARRAY['seq', 'at', 'actor_type', 'actor', 'via', 'verb', 'object_type', 'object_id', 'action_id',
                  'agent_name', 'data', 'request_id'] = '{{}}'::jsonb
) IS NOT TRUE
"""


def _first_edited_row(head: int) -> int | None:
    """The first seq <= head whose columns differ from its hashed body, or None (this thread's connection)."""
    sql = _EDITED_SQL.format(table=connection.ops.quote_name(AuditEvent._meta.db_table))
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [head])
            return cursor.fetchone()[0]
    except DataError:
        # A body that is not JSON, or whose seq or at is not one: the query cannot compare it. Rare (the chain
        # check reports such a row too, unless its hashes were recomputed), so find it the slow way.
        return _first_edited_row_in_python(head)


def _first_edited_row_in_python(head: int) -> int | None:
    for event in iter_events(upto=head):
        if event.body is None or canonical_json(event_body(event)) != event.body:
            return event.seq
    return None


def _verify_in_python(head: int, watch: Collection[int]) -> Verification:
    watched = set(watch)
    hashes: dict[int, str] = {}

    def noting(events: Iterable[AuditEvent]) -> Iterator[AuditEvent]:
        for event in events:
            if event.seq in watched:
                hashes[event.seq] = event.hash
            yield event

    checked, broken = verify_chain(noting(iter_events(upto=head)))
    if broken is None and checked < head:
        broken = ChainBreak(checked + 1, _gap(checked + 1, None))
    return Verification(checked, broken, hashes)
