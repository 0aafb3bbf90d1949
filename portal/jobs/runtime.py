"""The worker's side of background work: tasks, the procrastinate app, resources.

A feature declares its tasks on a :class:`Tasks` of its own (``tasks = Tasks()``
in its ``tasks.py``) and ``portal/worker.py`` hands every feature's set to
:func:`create_app`. Tasks are plain async functions taking keyword arguments
(JSON values); what they need (settings, the asyncpg pool) comes from
:func:`resources`, which the worker sets before it starts.

procrastinate talks to PostgreSQL through psycopg (its own small pool, in the
worker only); the portal's own queries stay on asyncpg. The web processes never
open a procrastinate app: they write jobs with ``outbox.defer`` in their own
transactions.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import procrastinate
import psycopg_pool
from procrastinate import BaseRetryStrategy, JobContext

from portal.settings import Settings

log = logging.getLogger("portal.jobs")

# A worker beats every HEARTBEAT seconds; a worker silent for STALLED_AFTER seconds
# is taken for dead (killed, its machine lost) and its running jobs are run again.
HEARTBEAT = 10.0
STALLED_AFTER = 60.0
# Jobs that ended in failure are kept this long for inspection, then removed.
KEEP_FAILED_HOURS = 7 * 24


@dataclass(frozen=True)
class _Spec:
    name: str
    fn: Callable[..., Any]
    options: dict[str, Any]
    cron: str | None = None
    periodic_id: str = ""


class Tasks:
    """One feature's tasks. ``@tasks.task("feature.name", retry=...)`` declares one;
    ``@tasks.periodic("feature.name", cron="17 3 * * *")`` declares one that the
    worker defers itself on that schedule (it receives ``timestamp``: the scheduled
    time, in Unix seconds)."""

    def __init__(self) -> None:
        self.specs: list[_Spec] = []

    def task(
        self,
        name: str,
        *,
        retry: bool | int | BaseRetryStrategy = False,
        queue: str = "default",
        pass_context: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            options = {"retry": retry, "queue": queue, "pass_context": pass_context}
            self.specs.append(_Spec(name, fn, options))
            return fn

        return register

    def periodic(
        self, name: str, *, cron: str, periodic_id: str = "", pass_context: bool = False
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            # One scheduled run waits at a time: a worker that was down does not
            # come back to a pile of them.
            options = {"queue": "periodic", "pass_context": pass_context, "queueing_lock": name}
            self.specs.append(_Spec(name, fn, options, cron=cron, periodic_id=periodic_id))
            return fn

        return register


# A pooled connection idle longer than this is checked (one round trip) before use;
# one used a moment ago is not: the fetch loop takes one per job.
_CHECK_IDLE_AFTER = 5.0
_returned: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def _note_return(conn) -> None:
    _returned[conn] = time.monotonic()


async def _check_if_idle(conn) -> None:
    if time.monotonic() - _returned.get(conn, 0.0) > _CHECK_IDLE_AFTER:
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)


def _pool_factory(**kwargs: Any) -> psycopg_pool.AsyncConnectionPool:
    """procrastinate's pool, checking only connections that sat idle (a server
    restart is still noticed) rather than every one it hands out."""
    return psycopg_pool.AsyncConnectionPool(
        **{**kwargs, "check": _check_if_idle, "reset": _note_return}
    )


def create_app(settings: Settings, *task_sets: Tasks, pool_size: int = 10) -> procrastinate.App:
    """A procrastinate app knowing the portal's own tasks and those of ``task_sets``.
    Open it with ``async with app.open_async():``."""
    connector = procrastinate.PsycopgConnector(
        conninfo=settings.database_url, min_size=1, max_size=pool_size, pool_factory=_pool_factory
    )
    app = procrastinate.App(connector=connector)
    for task_set in (builtin, *task_sets):
        for spec in task_set.specs:
            task = app.task(name=spec.name, **spec.options)(spec.fn)
            if spec.cron:
                app.periodic(cron=spec.cron, periodic_id=spec.periodic_id)(task)
    return app


def exponential(
    *, first: float, factor: float, cap: float, give_up_after: float
) -> BaseRetryStrategy:
    """Retry after ``first`` seconds, then ``factor`` times longer each time (at most
    ``cap``), until the attempts together span ``give_up_after`` seconds."""
    waits, total = 0, 0.0
    while total < give_up_after:
        total += min(cap, first * factor**waits)
        waits += 1
    return _Exponential(first=first, factor=factor, cap=cap, max_attempts=waits + 1)


@dataclass(frozen=True)
class _Exponential(BaseRetryStrategy):
    first: float
    factor: float
    cap: float
    max_attempts: int

    def wait_after(self, attempts: int) -> float:
        """Seconds before the next try, after ``attempts + 1`` tries."""
        return min(self.cap, self.first * self.factor**attempts)

    def get_retry_decision(self, *, exception: BaseException, job: procrastinate.jobs.Job):
        # 0 on the first run; a job taking over from tries made elsewhere (a
        # dispatcher's first attempt) says how many in its ``prior_attempts`` argument.
        kwargs = getattr(job, "task_kwargs", None) or {}
        attempts = job.attempts + int(kwargs.get("prior_attempts", 0))
        if attempts + 1 >= self.max_attempts:
            return None
        return procrastinate.RetryDecision(retry_in={"seconds": self.wait_after(attempts)})


@dataclass
class Resources:
    """What tasks share in one worker process."""

    settings: Settings
    db: asyncpg.Pool


_resources: Resources | None = None


def set_resources(res: Resources | None) -> None:
    global _resources
    _resources = res


def resources() -> Resources:
    if _resources is None:
        raise RuntimeError("no worker resources: tasks run inside `portal worker`")
    return _resources


# The portal's own upkeep, in every worker.
builtin = Tasks()


@builtin.periodic("jobs.retry_stalled", cron="* * * * *", pass_context=True)
async def retry_stalled(context: JobContext, timestamp: int) -> None:
    """Run again the jobs a dead worker was running (at-least-once: a task may see
    the same job twice and must be idempotent or record what it did)."""
    await retry_stalled_jobs(context.app)


async def retry_stalled_jobs(app: procrastinate.App, after: float = STALLED_AFTER) -> int:
    manager = app.job_manager
    stalled = list(await manager.get_stalled_jobs(seconds_since_heartbeat=after))
    for job in stalled:
        log.warning("retrying job %s (%s): its worker stopped", job.id, job.task_name)
        await manager.retry_job(job)
    return len(stalled)


@builtin.periodic("jobs.remove_old", cron="23 * * * *", pass_context=True)
async def remove_old(context: JobContext, timestamp: int) -> None:
    await context.app.job_manager.delete_old_jobs(
        nb_hours=KEEP_FAILED_HOURS, include_failed=True, include_cancelled=True
    )
