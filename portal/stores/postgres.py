"""The asyncpg pool."""

from __future__ import annotations

import json

import asyncpg

from portal.settings import Settings
from portal.stores import migrations


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _reset(conn: asyncpg.Connection) -> None:
    # The portal keeps no session state on pooled connections (no SET, LISTEN,
    # cursors or session-level advisory locks: only transaction-level ones), so
    # the default reset query (RESET ALL, UNLISTEN, ...) would be a wasted round
    # trip on every release. A transaction left open by a failed request is
    # still rolled back.
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class DatabaseUnreachable(ConnectionError):
    """The database could not be reached (a request then gets 503)."""


async def _connect(*args, **kwargs) -> asyncpg.Connection:
    # A server that is down or restarting shows as whatever the socket says (a
    # missing Unix socket is FileNotFoundError): one kind of error for all of it.
    try:
        return await asyncpg.connect(*args, **kwargs)
    except OSError as exc:
        if isinstance(exc, ConnectionError):
            raise
        raise DatabaseUnreachable(f"cannot reach the database: {exc}") from exc


async def create_pool(settings: Settings) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.database_url,
        connect=_connect,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        init=_init_connection,
        reset=_reset,
        # Fail fast: a request should not hang for minutes on a dead database.
        timeout=10,
        command_timeout=30,
    )


async def connect(settings: Settings) -> asyncpg.Connection:
    conn = await asyncpg.connect(settings.database_url, timeout=10)
    await _init_connection(conn)
    return conn


class SchemaNotCurrent(RuntimeError):
    pass


async def check_schema(pool: asyncpg.Pool) -> None:
    """Refuse to serve against a database whose migrations are not all applied."""
    async with pool.acquire() as conn:
        try:
            todo = await migrations.pending(conn)
        except migrations.MigrationError as exc:
            raise SchemaNotCurrent(str(exc)) from None
    if todo:
        names = ", ".join(m.name for m in todo)
        raise SchemaNotCurrent(
            f"database schema is not current (pending: {names}); run `portal migrate`"
        )
