"""PostgreSQL connections of the event loop, for the reads answered there without a thread: an agent's polling reads
(approvals.api.agent_reads) and a ``wait``'s reads after each change of its action (approvals.api.wait).

Made with the parameters and adapters of Django's own connection; up to AGENT_READS_CONNECTIONS per process, shared
by both (``shared``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from django.conf import settings
from django.db import connections


def usable() -> bool:
    """PostgreSQL as Django connects to it (the embedded default's SQLite has no async driver here), and connections
    to spare for the loop (AGENT_READS_CONNECTIONS above 0)."""
    database = settings.DATABASES.get("default", {})
    return (
        settings.AGENT_READS_CONNECTIONS > 0
        and database.get("ENGINE") == settings.POSTGRESQL_ENGINE
        and "assume_role" not in database.get("OPTIONS", {})  # a role Django sets per connection: not done here
    )


class LoopConnections:
    """Up to ``size`` psycopg async connections, kept for the next request, of the running event loop.

    A server process has one loop for its life. Tests and profiles drive the application with ``asyncio.run``, a new
    loop each time, whose connections cannot be used (nor closed by awaiting) once it has ended: those are closed by
    libpq directly when another loop asks. (psycopg_pool's pool is bound to the loop that opened it, for the same
    reason.)"""

    def __init__(self, size: int) -> None:
        self.size = size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._idle: list[psycopg.AsyncConnection] = []
        self._kwargs: dict[str, Any] | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.discard()
            self._loop, self._slots = loop, asyncio.Semaphore(self.size)
        async with self._slots:
            aconnection = None
            try:
                if self._idle:
                    aconnection = self._idle.pop()
                else:
                    self._kwargs = self._kwargs or _connection_kwargs()
                    aconnection = await psycopg.AsyncConnection.connect(**self._kwargs)
                yield aconnection
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self.discard()  # the server is out of reach or was restarted: the idle ones are as dead as this one
                raise
            finally:
                if aconnection is not None:
                    await self._put_back(aconnection)

    async def _put_back(self, aconnection: psycopg.AsyncConnection) -> None:
        if aconnection.closed or aconnection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            await aconnection.close()  # broken by an error: not for the next request
        else:
            self._idle.append(aconnection)

    def discard(self) -> None:
        """Close the idle connections (without a loop: libpq's own close)."""
        idle, self._idle = self._idle, []
        for aconnection in idle:
            aconnection.pgconn.finish()


def _connection_kwargs() -> dict[str, Any]:
    """Django's parameters for its PostgreSQL connection (database, credentials, options, the adapters that load
    JSON as text and times in UTC, DB_PREPARE_THRESHOLD), for an async one: its cursors bind on the server as
    Django's do with ``server_side_binding``, or on the client as Django's default cursor does."""
    params = connections["default"].get_connection_params()
    cursor = params.pop("cursor_factory")
    params["cursor_factory"] = (
        psycopg.AsyncClientCursor if issubclass(cursor, psycopg.ClientCursor) else psycopg.AsyncCursor
    )
    params["autocommit"] = True
    # Times load in UTC, with psycopg's compiled loader (config/postgresql/base.py), in a session in UTC: Django sets
    # the zone on its own connections when it connects, and these are not Django's.
    params["options"] = f"{params.get('options', '')} -c TimeZone=UTC".strip()
    return params


shared = LoopConnections(settings.AGENT_READS_CONNECTIONS)
