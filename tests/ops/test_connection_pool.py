"""The web's connection pool (DB_POOL) hands out only live connections, and a live one without a round trip.

config/postgresql/base.py: a connection the server ended has something to read (its last message, then the end of
the stream); a pooled connection is checked by its socket when it came back recently, by an empty query otherwise.
"""

from __future__ import annotations

import select

import pytest
from django.db import connection, connections
from psycopg_pool import ConnectionPool

from config.postgresql import base as backend

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pooled():
    """A second database wrapper on the test database with the settings production gives the web (DB_POOL)."""
    settings_dict = {
        **connections["default"].settings_dict,
        "OPTIONS": {**connections["default"].settings_dict["OPTIONS"], "pool": {"min_size": 1, "max_size": 1}},
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
    }
    wrapper = backend.DatabaseWrapper(settings_dict, alias="pooled-for-test")
    yield wrapper
    wrapper.close()
    wrapper.close_pool()


@pytest.fixture
def round_trips(monkeypatch):
    """How many times psycopg's own check (an empty query) ran."""
    calls = []
    check = ConnectionPool.check_connection
    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(lambda conn: calls.append(1) or check(conn)))
    return calls


def _backend_pid(wrapper) -> int:
    wrapper.ensure_connection()
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    wrapper.close()  # back to the pool
    return pid


def test_a_connection_the_server_ended_is_replaced_before_anyone_uses_it(pooled):
    first = _backend_pid(pooled)
    with connection.cursor() as cursor:  # as a restart of PostgreSQL ends every session
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [first])
        assert cursor.fetchone()[0] is True
    second = _backend_pid(pooled)  # would raise "the connection is closed" had the dead one been handed out
    assert second != first


def test_a_quiet_connection_back_a_moment_ago_is_handed_out_without_a_round_trip(pooled, round_trips):
    first = _backend_pid(pooled)  # a new connection: checked by the empty query
    checked = len(round_trips)
    assert [_backend_pid(pooled) for _ in range(3)] == [first] * 3
    assert len(round_trips) == checked


def test_a_connection_idle_longer_than_the_quiet_period_gets_the_round_trip(pooled, round_trips, monkeypatch):
    _backend_pid(pooled)
    checked = len(round_trips)
    monkeypatch.setattr(backend, "QUIET_CHECK_SECONDS", 0.0)  # as if it had sat in the pool for longer
    _backend_pid(pooled)
    assert len(round_trips) == checked + 1


def test_a_live_connection_with_something_to_read_gets_the_round_trip_and_is_kept(pooled, round_trips):
    """Not everything readable is a goodbye: a notification the server sent an idle connection is read by the empty
    query, and the connection stays."""
    pooled.ensure_connection()
    with pooled.cursor() as cursor:
        cursor.execute("LISTEN countersign_pool_test")
        cursor.execute("SELECT pg_backend_pid()")
        first = cursor.fetchone()[0]
    idle = pooled.connection
    pooled.close()
    checked = len(round_trips)
    with connection.cursor() as cursor:
        cursor.execute("NOTIFY countersign_pool_test")
    # The notification reaches the idle connection's socket a moment after NOTIFY returns: checked before, the socket
    # would have had nothing to read yet.
    readable, _, _ = select.select([idle.fileno()], [], [], 10)
    assert readable, "the notification never reached the idle connection"
    assert _backend_pid(pooled) == first
    assert len(round_trips) == checked + 1
