"""Pushes marked delivered together, off the request that delivered them (approvals.outbox.dispatcher).

Every proposal and decision publishes a push right after its commit, and then marked it delivered with an UPDATE of
its own: a round trip, a commit with its WAL flush, a row version for vacuum, and 0.14-0.21 ms of the request's CPU
at 32 clients (docs/BENCHMARKS.md, section 9). Here its writer notes the delivery instead, and a thread of the
process writes the notes of the last ``COUNTERSIGN_PUSH_MARK_MS`` in one statement, each row with its own time.

Nothing can go out twice meanwhile that could not before: the row stays claimed by its writer (the outbox's writer
lease, 15 s), so the sweep leaves it alone; should the process die before the UPDATE, the sweep sends the push again
once the lease has passed, as it did when a process died between the push and its UPDATE (a live event is idempotent
on the page). 0 marks each push at once, in the request, as before.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections

from approvals.models import OutboxMessage

log = logging.getLogger(__name__)

_POSTGRESQL_SQL = (
    "UPDATE {table} SET delivered_at = marks.at, attempts = attempts + 1, claimed_until = NULL, last_error = '' "
    "FROM unnest(%s::bigint[], %s::timestamptz[]) AS marks(id, at) WHERE {table}.id = marks.id"
)
_ONE_SQL = (
    "UPDATE {table} SET delivered_at = %s, attempts = attempts + 1, claimed_until = NULL, last_error = '' WHERE id = %s"
)


def mark_delivered(deliveries: list[tuple[int, datetime]]) -> None:
    """Mark each ``(message id, delivery time)`` delivered, in one statement on PostgreSQL."""
    table = connection.ops.quote_name(OutboxMessage._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            ids, times = [m for m, _ in deliveries], [at for _, at in deliveries]
            cursor.execute(_POSTGRESQL_SQL.format(table=table), [ids, times])
        else:
            cursor.executemany(_ONE_SQL.format(table=table), [(at, m) for m, at in deliveries])


def batched() -> bool:
    """Whether pushes are marked by the thread (COUNTERSIGN_PUSH_MARK_MS above 0), not at once."""
    return settings.COUNTERSIGN_PUSH_MARK_MS > 0


class DeliveredMarks:
    """The process's deliveries waiting to be marked, and the thread that marks them every
    COUNTERSIGN_PUSH_MARK_MS."""

    def __init__(self) -> None:
        self._start_empty()
        # A Celery child: its own notes and thread. One that ends with notes left leaves them to the sweep.
        os.register_at_fork(after_in_child=self._start_empty)

    def _start_empty(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[int, datetime]] = []
        self._noted = threading.Event()
        self._thread: threading.Thread | None = None

    def note(self, message_id: int, at: datetime) -> None:
        """``message_id`` was delivered at ``at``: marked within COUNTERSIGN_PUSH_MARK_MS."""
        with self._lock:
            self._pending.append((message_id, at))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="outbox-marks", daemon=True)
                self._thread.start()
        self._noted.set()

    def flush(self) -> int:
        """Mark everything noted so far, now; how many."""
        with self._lock:
            deliveries, self._pending = self._pending, []
        if deliveries:
            try:
                mark_delivered(deliveries)
            except Exception:  # the rows stay claimed until the writer's lease ends; then the sweep sends them again
                log.exception("could not mark %d delivered pushes; the sweep will send them again", len(deliveries))
        return len(deliveries)

    def _run(self) -> None:
        while True:
            self._noted.wait()
            # What else is delivered meanwhile goes in the same statement.
            time.sleep(settings.COUNTERSIGN_PUSH_MARK_MS / 1000)
            self._noted.clear()  # before taking the notes: one noted after this wakes the next round
            try:
                self.flush()
            finally:
                connections.close_all()  # this thread's connection, back to the pool between rounds


delivered_marks = DeliveredMarks()


async def lifespan(scope, receive, send) -> None:
    """ASGI lifespan (config/asgi.py): a web process that stops marks what it noted, once its last request is
    answered. uvicorn ends a process by raising the signal it was stopped with again, which runs no atexit hook."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await sync_to_async(_flush_and_close, thread_sensitive=False)()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _flush_and_close() -> None:
    try:
        delivered_marks.flush()
    finally:
        connections.close_all()
