"""``portal worker``: runs the background work of every feature (portal/jobs).

Any number of workers may run, on any machines, against the same PostgreSQL:
each job is taken by one of them. A worker stopped with SIGTERM or SIGINT
finishes what it is running (up to ``SHUTDOWN_GRACE`` seconds) and leaves; one
killed outright leaves its jobs to be run again by the others (``jobs.retry_stalled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from portal import jobs
from portal.settings import Settings
from portal.stores import postgres as dbmod
from portal.webhooks.dispatch import Dispatcher

log = logging.getLogger("portal.worker")

DEFAULT_CONCURRENCY = 20
FETCHERS = 4  # fetch loops at most in one worker process
SHUTDOWN_GRACE = 30.0


def task_sets() -> tuple[jobs.Tasks, ...]:
    """Every feature's tasks. A feature with background work adds its ``tasks.py`` here."""
    from portal.oidc import tasks as oidc_tasks
    from portal.privacy import tasks as privacy_tasks
    from portal.webhooks import tasks as webhook_tasks

    return (webhook_tasks.tasks, privacy_tasks.tasks, oidc_tasks.tasks)


def fetchers_for(concurrency: int) -> int:
    """procrastinate's worker fetches one job at a time (one round trip each): a few
    fetch loops side by side (SKIP LOCKED keeps them apart) let short jobs such as
    webhook deliveries keep many slots busy."""
    return max(1, min(FETCHERS, concurrency // 4))


def create_app(settings: Settings, concurrency: int = DEFAULT_CONCURRENCY):
    # A connection per fetch loop's fetch, listener and job finishing, one beating.
    fetchers = fetchers_for(concurrency)
    return jobs.create_app(
        settings, *task_sets(), pool_size=min(concurrency, 20) + 3 * fetchers + 1
    )


async def run_async(
    settings: Settings,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    install_signal_handlers: bool = True,
    wait: bool = True,
) -> None:
    """Run the worker until stopped (SIGTERM, SIGINT, or cancelled; ``wait=False``:
    until no job is left to do). Jobs running then may finish for SHUTDOWN_GRACE s."""
    db_max = max(settings.db_pool_max, min(concurrency, 40))
    db = await dbmod.create_pool(settings.replace(db_pool_max=db_max))
    try:
        await dbmod.check_schema(db)
        jobs.set_resources(jobs.Resources(settings=settings, db=db))
        app = create_app(settings, concurrency)
        fetchers = fetchers_for(concurrency)
        async with app.open_async():
            workers = [
                app._worker(
                    concurrency=max(1, concurrency // fetchers),
                    wait=wait,
                    install_signal_handlers=False,
                    delete_jobs="successful",
                    shutdown_graceful_timeout=SHUTDOWN_GRACE,
                    update_heartbeat_interval=jobs.runtime.HEARTBEAT,
                )
                for _ in range(fetchers)
            ]
            # First attempts of webhooks, in batches (no procrastinate job each).
            dispatcher = Dispatcher(settings, db, concurrency=concurrency, wait=wait)

            def stop() -> None:
                dispatcher.stop()
                for w in workers:
                    w.stop()

            loop = asyncio.get_running_loop()
            signals = (signal.SIGTERM, signal.SIGINT) if install_signal_handlers else ()
            for sig in signals:
                loop.add_signal_handler(sig, stop)
            try:
                await asyncio.gather(
                    dispatcher.run(grace=SHUTDOWN_GRACE), *(w.run() for w in workers)
                )
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)
    finally:
        from portal.webhooks import tasks as webhook_tasks

        await webhook_tasks.close_clients()
        jobs.set_resources(None)
        await db.close()


def run(settings: Settings, *, concurrency: int = DEFAULT_CONCURRENCY) -> int:
    # procrastinate logs two lines per job at INFO (hundreds a second when webhooks
    # flow): its own lines from WARNING up, unless the whole worker logs DEBUG.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
    log.info("worker starting (concurrency %d)", concurrency)
    asyncio.run(run_async(settings, concurrency=concurrency))
    return 0


@contextlib.contextmanager
def in_thread(settings: Settings, *, concurrency: int = 4) -> Iterator[None]:
    """A worker on its own event loop in a thread, for ``portal dev``; stopped on exit."""
    loop = asyncio.new_event_loop()
    task: asyncio.Task | None = None
    started = threading.Event()

    def main() -> None:
        nonlocal task
        asyncio.set_event_loop(loop)
        task = loop.create_task(
            run_async(settings, concurrency=concurrency, install_signal_handlers=False)
        )
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        loop.close()

    thread = threading.Thread(target=main, name="portal-worker", daemon=True)
    thread.start()
    started.wait()
    try:
        yield
    finally:
        if task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own
                loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=SHUTDOWN_GRACE + 5)
