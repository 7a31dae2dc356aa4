"""The one writer of audit events, and the chain verifier.

``hash = SHA-256(prev_hash || canonical JSON of the event)``. Appends take a
database-wide lock (a PostgreSQL transaction advisory lock; SQLite already
serialises writers) so the chain stays linear under concurrent writers. The
event is written in the caller's transaction: if it cannot be written, the
change it records is rolled back with it (fail closed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from approvals.canonical import canonical_json
from approvals.models import AuditEvent
from config.request_id import get_request_id

GENESIS_HASH = "0" * 64
_CHAIN_LOCK_ID = 0x436F756E7465  # arbitrary constant: "Counte"


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
    body = {
        "seq": event.seq,
        "at": event.at.isoformat(),
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


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


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
    """Append one event to the chain, inside the caller's transaction.

    ``at`` never goes backwards along the chain (a clock stepping back gets the previous event's time),
    so a time range is also a seq range: the audit page and export filter on it through the ``at`` index.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit events are written inside the transaction of the change they record")
    _lock_chain()
    last = _chain_head()
    prev_seq, prev_hash, prev_at = last if last else (0, GENESIS_HASH, None)
    now = timezone.now()
    event = AuditEvent(
        seq=prev_seq + 1,
        at=max(now, prev_at) if prev_at else now,
        actor_type=actor.type,
        actor=actor.name[:150],
        via=actor.via,
        verb=verb,
        object_type=object_type,
        object_id=str(object_id),
        action_id=action_id,
        agent_name=agent_name,
        data=data or {},
        request_id=get_request_id(),
        prev_hash=prev_hash,
    )
    event.hash = chain_hash(prev_hash, event_body(event))
    event.save(force_insert=True)
    return event


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_ID])


def _chain_head() -> tuple[int, str, Any] | None:
    """(seq, hash, at) of the newest event. Read after taking the lock, in a statement of its own (so its
    snapshot sees whatever the previous holder committed)."""
    if connection.vendor == "postgresql":
        # The same query as below, written out: every proposal and decision runs it while holding the chain
        # lock, and building it through the ORM cost more than running it (docs/BENCHMARKS.md, "Audit").
        with connection.cursor() as cursor:
            cursor.execute(_HEAD_SQL.format(table=connection.ops.quote_name(AuditEvent._meta.db_table)))
            return cursor.fetchone()
    return AuditEvent.objects.order_by("-seq").values_list("seq", "hash", "at").first()


_HEAD_SQL = "SELECT seq, hash, at FROM {table} ORDER BY seq DESC LIMIT 1"


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    reason: str


def verify_chain(
    events: Iterable[AuditEvent], *, start_seq: int = 1, start_hash: str = GENESIS_HASH
) -> tuple[int, ChainBreak | None]:
    """Walk events in seq order; return (events checked, first break or None)."""
    expected_seq, prev_hash, checked = start_seq, start_hash, 0
    for event in events:
        if event.seq != expected_seq:
            return checked, ChainBreak(
                expected_seq, f"expected event #{expected_seq}, found #{event.seq} (removed or inserted rows)"
            )
        if event.prev_hash != prev_hash:
            return checked, ChainBreak(
                event.seq, "prev_hash does not match the previous event's hash (row inserted, replaced or reordered)"
            )
        if chain_hash(prev_hash, event_body(event)) != event.hash:
            return checked, ChainBreak(event.seq, "content does not match its hash (row changed or moved)")
        prev_hash = event.hash
        expected_seq += 1
        checked += 1
    return checked, None


def iter_events(batch: int = 5000, *, after: int = 0) -> Iterator[AuditEvent]:
    last = after
    while True:
        rows = list(AuditEvent.objects.filter(seq__gt=last).order_by("seq")[:batch])
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


class ChainRow:
    """An event's stored fields as ``verify_chain`` and ``event_body`` read them, without a model instance."""

    __slots__ = (
        "action_id",
        "actor",
        "actor_type",
        "agent_name",
        "at",
        "data",
        "hash",
        "object_id",
        "object_type",
        "prev_hash",
        "request_id",
        "seq",
        "verb",
        "via",
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ``at`` as microseconds since the epoch and ``action_id`` as text: loading a timestamptz through the
# driver's Python parser cost more than hashing the event. Both come back exactly as event_body needs them
# (``at`` is UTC everywhere an event is written; str() of the UUID is PostgreSQL's text form).
_CHAIN_SQL = (
    "SELECT seq, (EXTRACT(EPOCH FROM at) * 1000000)::bigint, actor_type, actor, via, verb, object_type, object_id, "
    "action_id::text, agent_name, data::text, request_id, prev_hash, hash FROM {table} "
    "WHERE seq > %s ORDER BY seq LIMIT %s"
)


def iter_chain_rows(batch: int = 5000, *, after: int = 0) -> Iterator[ChainRow | AuditEvent]:
    """The events of ``iter_events`` in seq order, as plain values, for verifying (several times faster)."""
    if connection.vendor != "postgresql":
        yield from iter_events(batch, after=after)
        return
    sql = _CHAIN_SQL.format(table=connection.ops.quote_name(AuditEvent._meta.db_table))
    last = after
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, [last, batch])
            rows = cursor.fetchall()
        if not rows:
            return
        for values in rows:
            row = ChainRow()
            (row.seq, at_us, row.actor_type, row.actor, row.via, row.verb, row.object_type, row.object_id) = values[:8]
            (row.action_id, row.agent_name, data, row.request_id, row.prev_hash, row.hash) = values[8:]
            row.at = _EPOCH + timedelta(microseconds=at_us)
            row.data = json.loads(data)
            yield row
        last = rows[-1][0]
