"""Background work (portal/jobs, issue 19 part 1): the outbox and in-transaction
deferral commit or roll back with the caller's transaction, and a worker runs
what was committed, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portal import jobs

ran: list[dict] = []
demo = jobs.Tasks()


@demo.task("demo.record")
async def record(**args) -> None:
    ran.append(args)


@pytest.fixture
async def jobs_db(db):
    await db.execute("TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE")
    ran.clear()
    return db


@pytest.fixture
async def pool_id(jobs_db) -> int:
    """A pool with a webhook endpoint subscribed to user.*: an event no one consumes
    is not kept (sql/0008)."""
    pool = await jobs_db.fetchval(
        "INSERT INTO pools (slug, name) VALUES ('jobs', 'Jobs') RETURNING id"
    )
    await jobs_db.execute(
        "INSERT INTO webhook_endpoints (pool_id, url, events, secret_enc) "
        "VALUES ($1, 'https://example.com/hook', $2, '\\x00')",
        pool,
        ["user.created", "user.updated"],
    )
    return pool


async def run_worker(settings) -> None:
    app = jobs.create_app(settings, demo, pool_size=2)
    async with app.open_async():
        await app.run_worker_async(wait=False, install_signal_handlers=False, listen_notify=False)


async def test_emit_commits_and_rolls_back_with_the_change(jobs_db, pool_id):
    async with jobs_db.acquire() as conn:
        async with conn.transaction():
            await jobs.emit(conn, pool_id, "user.created", {"user_id": "u1"})
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await jobs.emit(conn, pool_id, "user.created", {"user_id": "u2"})
                raise RuntimeError("the change failed")
    rows = await jobs_db.fetch("SELECT type, data FROM events ORDER BY created_at")
    assert [(r["type"], r["data"]) for r in rows] == [("user.created", {"user_id": "u1"})]
    # What it causes (a webhook delivery, waiting for the worker's dispatcher)
    # commits or rolls back with it.
    assert await jobs_db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE dispatch") == 1


async def test_an_event_no_one_consumes_is_not_kept(jobs_db, pool_id):
    async with jobs_db.acquire() as conn:
        await jobs.emit(conn, pool_id, "login.succeeded", {"user_id": "u1"})
    assert await jobs_db.fetchval("SELECT count(*) FROM events") == 0


async def test_emit_refuses_a_malformed_type(jobs_db, pool_id):
    async with jobs_db.acquire() as conn:
        with pytest.raises(ValueError):
            await jobs.emit(conn, pool_id, "User Created", {})


async def test_a_deferred_task_runs_once_after_commit_and_never_after_rollback(
    jobs_db, settings_factory
):
    async with jobs_db.acquire() as conn:
        async with conn.transaction():
            job_id = await jobs.defer(conn, "demo.record", n=1, who="committed")
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await jobs.defer(conn, "demo.record", n=2, who="rolled back")
                raise RuntimeError("the change failed")
    assert isinstance(job_id, int)
    await run_worker(settings_factory())
    assert ran == [{"n": 1, "who": "committed"}]
    await run_worker(settings_factory())  # nothing left to do
    assert ran == [{"n": 1, "who": "committed"}]


async def test_a_task_scheduled_for_later_waits(jobs_db, settings_factory):
    async with jobs_db.acquire() as conn:
        await jobs.defer(conn, "demo.record", at=datetime.now(UTC) + timedelta(hours=1), n=3)
    await run_worker(settings_factory())
    assert ran == []


async def test_a_queueing_lock_keeps_one_waiting_and_the_transaction_usable(jobs_db, pool_id):
    async with jobs_db.acquire() as conn:
        async with conn.transaction():
            first = await jobs.defer(conn, "demo.record", queueing_lock="one", n=1)
            second = await jobs.defer(conn, "demo.record", queueing_lock="one", n=2)
            await jobs.emit(conn, pool_id, "user.updated", {"user_id": "u"})  # still usable
    assert first is not None and second is None
    assert (
        await jobs_db.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'demo.record'"
        )
        == 1
    )
    assert await jobs_db.fetchval("SELECT count(*) FROM events") == 1


async def test_a_stalled_job_of_a_dead_worker_is_run_again(jobs_db, settings_factory):
    """A worker that stopped beating (killed) leaves its job in 'doing': the
    periodic jobs.retry_stalled puts it back, and the next worker runs it."""
    async with jobs_db.acquire() as conn:
        job_id = await jobs.defer(conn, "demo.record", n=7)
        worker = await conn.fetchval(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '5 minutes') RETURNING id"
        )
        await conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = $2, attempts = 0 "
            "WHERE id = $1",
            job_id,
            worker,
        )
    settings = settings_factory()
    app = jobs.create_app(settings, demo, pool_size=2)
    async with app.open_async():
        assert await jobs.retry_stalled_jobs(app) == 1
        await app.run_worker_async(wait=False, install_signal_handlers=False, listen_notify=False)
    assert ran == [{"n": 7}]
