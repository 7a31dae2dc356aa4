"""Django's PostgreSQL backend, loading timestamptz with psycopg's compiled loader.

Django registers a pure-Python subclass of psycopg's timestamptz loader, to give times in its zone: 8.7 µs a value
on the benchmark machine against 0.3 µs for psycopg's own (docs/BENCHMARKS.md, section 9), and every row of an
action carries five to eight of them. When Django keeps its connections in UTC (USE_TZ with no TIME_ZONE of the
database's own: its default, and ours), psycopg's loader gives the very same values, aware datetimes in
``datetime.timezone.utc``; any other setting keeps Django's loader.
"""

from __future__ import annotations

import datetime

from django.db.backends.postgresql import base
from psycopg import adapt, postgres, pq

_TIMESTAMPTZ = postgres.types["timestamptz"].oid
# The global map's text loader for timestamptz is psycopg's compiled one when the C extension is there.
_COMPILED = postgres.adapters.get_loader(_TIMESTAMPTZ, pq.Format.TEXT)


class UtcTimestamptzLoader(adapt.Loader):
    """psycopg's own loader (not subclassable: compiled), with the ``timezone`` Django's ``create_cursor`` compares
    before it registers a loader of its own on each cursor."""

    timezone = datetime.UTC

    def __init__(self, oid: int, context: adapt.AdaptContext | None = None):
        super().__init__(oid, context)
        self._compiled = _COMPILED(oid, context)

    def load(self, data: adapt.Buffer) -> datetime.datetime:
        return self._compiled.load(data)


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict:
        params = super().get_connection_params()
        # The session's zone is timezone_name (Django sets it on connect); psycopg's loader gives times in it.
        if self.timezone is datetime.UTC and self.timezone_name == "UTC":
            params["context"].register_loader(_TIMESTAMPTZ, UtcTimestamptzLoader)
        return params
