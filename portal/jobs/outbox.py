"""Work written in the caller's transaction: events (the outbox) and deferred tasks.

Both take the caller's asyncpg connection and run ONE statement on it, so they
belong to whatever transaction the caller has open: committed with the change
that caused them, or rolled back with it. Neither opens a connection, a
transaction or a network call of its own, and nothing happens until commit:
procrastinate's insert trigger notifies the workers then (``NOTIFY`` is
transactional), and a worker picks the job up within milliseconds.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import asyncpg
import orjson

DEFAULT_QUEUE = "default"

_EVENT_TYPE_RE = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")
_TASK_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$")

_EMIT = "INSERT INTO events (pool_id, type, data) VALUES ($1, $2, $3::text::jsonb)"

# procrastinate's own SQL function (sql/0007, procrastinate_defer_jobs_v1): the row a
# worker fetches, written by us in the caller's transaction. A queueing lock already
# taken by a job still to do makes the INSERT fail (unique violation); defer() turns
# that into False under a savepoint so the caller's transaction survives it.
_DEFER = """
SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(
    $1::varchar, $2::varchar, $3::integer, $4::text, $5::text, $6::text::jsonb, $7::timestamptz
)::procrastinate_job_to_defer_v1])
"""


async def emit(conn: asyncpg.Connection, pool_id: int, type: str, data: dict[str, Any]) -> None:
    """Record that ``type`` happened in pool ``pool_id``, in the caller's transaction.

    One INSERT into ``events``; the consumers of events (webhook deliveries,
    sql/0008) are created by that same statement, so the event and everything it
    causes commit or roll back together. ``data`` must be JSON-serialisable and
    hold identifiers, not personal data (docs/webhooks.md lists each event's)."""
    if not _EVENT_TYPE_RE.match(type):
        raise ValueError(f"an event type is dotted lower case (user.created), got {type!r}")
    await conn.execute(_EMIT, pool_id, type, orjson.dumps(data).decode())


async def defer(
    conn: asyncpg.Connection,
    task: str,
    *,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    lock: str | None = None,
    queueing_lock: str | None = None,
    at: datetime | None = None,
    **args: Any,
) -> int | None:
    """Queue task ``task`` (its registered name, e.g. ``"oidc.backchannel_logout"``)
    with keyword arguments ``args``, in the caller's transaction.

    ``at`` (timezone-aware) schedules it for later. ``lock``: jobs sharing it run one
    at a time, in order. ``queueing_lock``: at most one such job waits to be done;
    deferring a second one returns None instead of the job's id (and, inside a
    transaction, leaves the transaction usable)."""
    if not _TASK_NAME_RE.match(task):
        raise ValueError(f"a task name is dotted lower case (feature.task), got {task!r}")
    values = (queue, task, priority, lock, queueing_lock, orjson.dumps(args).decode(), at)
    if queueing_lock is None:
        ids = await conn.fetchval(_DEFER, *values)
        return ids[0]
    try:
        async with conn.transaction():  # a savepoint when the caller has a transaction open
            ids = await conn.fetchval(_DEFER, *values)
    except asyncpg.UniqueViolationError:
        return None
    return ids[0]
