"""Django's PostgreSQL backend, loading timestamptz with psycopg's compiled loader, its pool checking connections
without a round trip where the socket can tell.

Django registers a pure-Python subclass of psycopg's timestamptz loader, to give times in its zone: 8.7 µs a value
on the benchmark machine against 0.3 µs for psycopg's own (docs/BENCHMARKS.md, section 9), and every row of an
action carries five to eight of them. When Django keeps its connections in UTC (USE_TZ with no TIME_ZONE of the
database's own: its default, and ours), psycopg's loader gives the very same values, aware datetimes in
``datetime.timezone.utc``; any other setting keeps Django's loader.

The compiled loader itself is registered, not a Python class around it: psycopg calls a compiled loader from C for
each value of a row, a Python one through a method call (about 1 µs more a value, a fifth of a page of fifty actions
on the agent's shortcut, which makes its connections with these parameters). So ``create_cursor`` knows the compiled
loader's zone, which Django asks each loader for by a ``timezone`` attribute the compiled class cannot carry.
"""

from __future__ import annotations

import datetime
import functools
import select
import time

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg import Connection, postgres, pq
from psycopg._queries import PostgresQuery, _query2pg_nocache
from psycopg_pool import ConnectionPool

_TIMESTAMPTZ = postgres.types["timestamptz"].oid
# The global map's text loader for timestamptz is psycopg's compiled one when the C extension is there.
COMPILED_TIMESTAMPTZ_LOADER = postgres.adapters.get_loader(_TIMESTAMPTZ, pq.Format.TEXT)


def loader_zone(loader: type) -> datetime.tzinfo | None:
    """The zone ``loader``'s times come in: UTC for psycopg's own in a session in UTC (the only sessions it is
    registered for), else the ``timezone`` Django's loaders carry."""
    return datetime.UTC if loader is COMPILED_TIMESTAMPTZ_LOADER else loader.timezone


# How long a pooled connection may have sat idle and still be handed out on the word of its socket alone: far below the
# idle timeouts of the NAT gateways and load balancers that can stand between the web and the database (minutes),
# which drop a connection without a word to either end.
QUIET_CHECK_SECONDS = 30.0
_RETURNED_AT = "_countersign_returned_at"


def note_returned(conn: Connection) -> None:
    """The pool's ``reset``: when the connection came back."""
    setattr(conn, _RETURNED_AT, time.monotonic())


def check_pooled_connection(conn: Connection) -> None:
    """The pool's check of a connection it is about to hand out (CONN_HEALTH_CHECKS): raises if it is dead.

    psycopg's own check, an empty query, is a round trip on every checkout, so on every API request: 0.07 ms of the
    request's CPU and the network's latency (docs/BENCHMARKS.md, section 9). A connection the server has closed (a
    restart, ``pg_terminate_backend``, an idle session timeout) has something to read: the server's last message,
    then the end of the stream. So a connection idle in the pool, back less than QUIET_CHECK_SECONDS ago, whose
    socket has nothing to read, is handed out as it is; any other gets the round trip, and a dead one is replaced.
    """
    returned_at = getattr(conn, _RETURNED_AT, None)
    if (
        returned_at is not None
        and time.monotonic() - returned_at < QUIET_CHECK_SECONDS
        and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        and not _has_something_to_read(conn)
    ):
        return
    ConnectionPool.check_connection(conn)


def _has_something_to_read(conn: Connection) -> bool:
    poller = select.poll()  # not select(): it refuses a descriptor above 1023
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        # Django 5.2's pool, but for its check and reset (check_pooled_connection); keep it in step when Django changes.
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            if pool_options is True:
                pool_options = {}
            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True  # Django sets it as it wants later
            checks = self.settings_dict["CONN_HEALTH_CHECKS"]
            pool = ConnectionPool(
                kwargs=connect_kwargs,
                open=False,  # opened by the first connection, not at start
                configure=self._configure_connection,
                check=check_pooled_connection if checks else None,
                reset=note_returned if checks else None,
                **pool_options,
            )
            # setdefault: threads making pools at once agree on one (none is open yet).
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]

    def get_connection_params(self) -> dict:
        params = super().get_connection_params()
        if params.get("cursor_factory") is base.ServerBindingCursor:
            params["cursor_factory"] = ServerBindingCursor
        # The session's zone is timezone_name (Django sets it on connect); psycopg's loader gives times in it.
        if self.timezone is datetime.UTC and self.timezone_name == "UTC":
            params["context"].register_loader(_TIMESTAMPTZ, COMPILED_TIMESTAMPTZ_LOADER)
        return params

    @base.async_unsafe
    def create_cursor(self, name=None):
        # Django 5.2's create_cursor, but for the zone of the connection's loader (loader_zone); keep it in step when
        # Django changes.
        if name:
            if self.settings_dict["OPTIONS"].get("server_side_binding") is not True:
                cursor = base.ServerSideCursor(
                    self.connection, name=name, scrollable=False, withhold=self.connection.autocommit
                )
            else:
                cursor = self.connection.cursor(name, scrollable=False, withhold=self.connection.autocommit)
        else:
            cursor = self.connection.cursor()
        # A cursor gets a loader of its own only when the connection's gives times in another zone (USE_TZ changed
        # since the connection was made, say): registering one copies the adapters map.
        if self.timezone != loader_zone(self.connection.adapters.get_loader(_TIMESTAMPTZ, pq.Format.TEXT)):
            register_tzloader(self.timezone, cursor)
        return cursor


# psycopg turns a statement's %s into $1, $2... with a regular expression, and keeps the result for the next time only
# for statements up to 4,096 bytes and 50 parameters (its guard against ORMs' bulk INSERTs of ever-changing length).
# A proposal or decision writes its rows and events in one statement of a few kilobytes and 60 to 100 parameters
# (audit.chain's held writes), the same text every time: converted anew, it cost a quarter of a millisecond of every
# write (docs/BENCHMARKS.md, section 9). Statements up to CONVERTED_ONCE_BYTES are kept, in a bounded cache.
CONVERTED_ONCE_BYTES = 32_768
_converted = functools.lru_cache(maxsize=256)(_query2pg_nocache)


class QueryConvertedOnce(PostgresQuery):
    """psycopg's server-side query (``PostgresQuery``, private API: psycopg is pinned in requirements.txt), its
    conversion kept for statements of any number of parameters up to ``CONVERTED_ONCE_BYTES``."""

    __slots__ = ()

    def convert(self, query, vars) -> None:
        if vars is None or not isinstance(query, str) or len(query) > CONVERTED_ONCE_BYTES:
            super().convert(query, vars)
            return
        self.query, self._want_formats, self._order, self._parts = _converted(
            query.encode(self._tx.encoding), self._tx.encoding
        )
        self.dump(vars)


class ServerBindingCursor(base.ServerBindingCursor):
    _query_cls = QueryConvertedOnce
