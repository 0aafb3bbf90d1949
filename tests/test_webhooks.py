"""Webhooks (issue 19, part 3): what a receiver gets, signed per the Standard
Webhooks specification (checked with its own library), delivered at least once
through failures, a killed worker and replays, never to a non-public address,
and only for changes that committed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from portal import jobs, worker
from portal.errors import NotFound, ValidationError
from portal.stores.crypto import SecretBox
from portal.webhooks import dispatch, store
from tests.support import free_socket, serve_asgi


@dataclass
class Receiver:
    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_next: int = 0
    hang: asyncio.Event | None = None
    got_one: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        async def hook(request: Request):
            body = await request.body()
            self.received.append((dict(request.headers), body))
            self.got_one.set()
            if self.hang is not None:
                await self.hang.wait()
            if self.fail_next > 0:
                self.fail_next -= 1
                return PlainTextResponse("down for maintenance", status_code=503)
            return PlainTextResponse("thanks")

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver over real HTTP on loopback, recording what it gets."""
    rec = Receiver()
    sock = free_socket()
    rec.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    async with serve_asgi(rec.app(), sock, name="the receiver", lifespan="off"):
        try:
            yield rec
        finally:
            if rec.hang is not None:
                rec.hang.set()


@pytest.fixture
async def receiver():
    async with running_receiver() as rec:
        yield rec


@pytest.fixture
async def wh_db(db):
    await db.execute("TRUNCATE procrastinate_jobs, procrastinate_workers RESTART IDENTITY CASCADE")
    return db


@pytest.fixture
async def pools(wh_db) -> tuple[int, int]:
    a = await wh_db.fetchval("INSERT INTO pools (slug, name) VALUES ('acme', 'Acme') RETURNING id")
    b = await wh_db.fetchval("INSERT INTO pools (slug, name) VALUES ('beta', 'Beta') RETURNING id")
    return a, b


@pytest.fixture
def settings(settings_factory):
    return settings_factory(webhooks_allow_loopback=True)


async def run_worker(settings) -> None:
    await worker.run_async(settings, concurrency=4, install_signal_handlers=False, wait=False)


async def due_now(db) -> None:
    """Fast-forward: retries scheduled for later are due now."""
    await db.execute(
        "UPDATE procrastinate_jobs SET scheduled_at = now() "
        "WHERE status = 'todo' AND task_name = 'webhooks.deliver'"
    )


async def emit(db, pool_id: int, type_: str, data: dict) -> None:
    async with db.acquire() as conn, conn.transaction():
        await jobs.emit(conn, pool_id, type_, data)


async def make_endpoint(db, settings, pool_id, url, events=("user.created",)):
    async with db.acquire() as conn:
        return await store.create_endpoint(
            conn, settings, SecretBox(settings.secret_key), pool_id, url=url, events=list(events)
        )


async def test_a_committed_event_reaches_the_receiver_signed(wh_db, pools, receiver, settings):
    acme, beta = pools
    endpoint, secret = await make_endpoint(wh_db, settings, acme, receiver.url)
    assert secret.startswith("whsec_")
    await emit(wh_db, acme, "user.created", {"user_id": "u-1"})
    await emit(wh_db, acme, "user.blocked", {"user_id": "u-1"})  # not subscribed
    await emit(wh_db, beta, "user.created", {"user_id": "u-2"})  # another pool
    await run_worker(settings)

    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    payload = Webhook(secret).verify(body, headers)  # the library of the receiving side
    assert payload["type"] == "user.created"
    assert payload["data"] == {"user_id": "u-1"}
    assert payload["timestamp"].endswith("Z")
    with pytest.raises(Exception):  # noqa: B017 (any verification error)
        Webhook(store.new_secret()).verify(body, headers)
    log = await store.list_deliveries(wh_db, acme, endpoint["id"])
    assert [(d["status"], d["attempts"], d["event_type"]) for d in log] == [
        ("succeeded", 1, "user.created")
    ]
    assert headers["webhook-id"] == log[0]["event_id"]
    detail = await store.get_delivery(wh_db, acme, log[0]["id"])
    [attempt] = detail["attempts_log"]
    assert attempt["status_code"] == 200 and attempt["response_excerpt"] == "thanks"
    assert attempt["latency_ms"] >= 0 and attempt["error"] is None


async def test_workers_side_by_side_send_each_delivery_once(wh_db, pools, receiver, settings):
    """Two workers' dispatchers claim from the same deliveries: each is sent once,
    recorded once (SKIP LOCKED and the claim's lease keep them apart)."""
    acme, _ = pools
    await make_endpoint(wh_db, settings, acme, receiver.url)
    async with wh_db.acquire() as conn, conn.transaction():
        for i in range(120):
            await jobs.emit(conn, acme, "user.created", {"user_id": f"u-{i}"})
    await asyncio.gather(run_worker(settings), run_worker(settings))
    ids = [h["webhook-id"] for h, _ in receiver.received]
    assert len(ids) == len(set(ids)) == 120
    assert await wh_db.fetchval("SELECT count(*) FROM webhook_attempts") == 120
    assert (
        await wh_db.fetchval(
            "SELECT count(*) FROM webhook_deliveries "
            "WHERE status = 'succeeded' AND attempts = 1 AND NOT dispatch"
        )
        == 120
    )


async def test_a_failed_first_attempt_continues_the_retry_schedule(
    wh_db, pools, receiver, settings
):
    """The dispatcher's failed first attempt becomes a webhooks.deliver job due 5 s
    later that counts it: the job's own failure waits 15 s, not 5 s again."""
    acme, _ = pools
    await make_endpoint(wh_db, settings, acme, receiver.url)
    receiver.fail_next = 1
    await emit(wh_db, acme, "user.created", {"user_id": "u-1"})
    await run_worker(settings)
    job = await wh_db.fetchrow(
        "SELECT args, scheduled_at - now() AS wait FROM procrastinate_jobs "
        "WHERE task_name = 'webhooks.deliver' AND status = 'todo'"
    )
    assert job["args"]["prior_attempts"] == 1
    assert 3 < job["wait"].total_seconds() <= 5
    from portal.webhooks.tasks import RETRY

    decision = RETRY.get_retry_decision(exception=Exception(), job=_Job(0, dict(job["args"])))
    assert 10 < (decision.retry_at - datetime.now(UTC)).total_seconds() <= 15


async def test_a_rolled_back_change_sends_nothing(wh_db, pools, receiver, settings):
    acme, _ = pools
    await make_endpoint(wh_db, settings, acme, receiver.url)
    with pytest.raises(RuntimeError):
        async with wh_db.acquire() as conn, conn.transaction():
            await jobs.emit(conn, acme, "user.created", {"user_id": "u-1"})
            raise RuntimeError("the change failed")
    await run_worker(settings)
    assert receiver.received == []
    assert await wh_db.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
    assert (
        await wh_db.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'webhooks.deliver'"
        )
        == 0
    )


async def test_a_receiver_that_fails_then_recovers_gets_everything(
    wh_db, pools, receiver, settings
):
    acme, _ = pools
    endpoint, secret = await make_endpoint(wh_db, settings, acme, receiver.url)
    for i in range(3):
        await emit(wh_db, acme, "user.created", {"user_id": f"u-{i}"})
    receiver.fail_next = 5  # the 3 first attempts and 2 retries fail
    await run_worker(settings)
    assert len(receiver.received) == 3
    # Retries wait (5 s, then 15 s...): nothing is attempted before its time.
    await run_worker(settings)
    assert len(receiver.received) == 3
    for _ in range(3):
        await due_now(wh_db)
        await run_worker(settings)

    by_id: dict[str, list[dict]] = {}
    for headers, body in receiver.received:
        by_id.setdefault(headers["webhook-id"], []).append(Webhook(secret).verify(body, headers))
    assert len(by_id) == 3  # every event, under a stable id
    assert sorted(p[0]["data"]["user_id"] for p in by_id.values()) == ["u-0", "u-1", "u-2"]
    assert all(p == [p[0]] * len(p) for p in by_id.values())  # the same payload each time
    assert len(receiver.received) == 5 + 3  # nothing sent again once received
    log = await store.list_deliveries(wh_db, acme, endpoint["id"])
    assert {d["status"] for d in log} == {"succeeded"}
    assert sum(d["attempts"] for d in log) == 8
    failed = await wh_db.fetch(
        "SELECT status_code, error FROM webhook_attempts WHERE status_code <> 200"
    )
    assert {(r["status_code"], r["error"]) for r in failed} == {(503, "HTTP 503")}
    row = await wh_db.fetchrow("SELECT enabled, failing_since FROM webhook_endpoints")
    assert row["enabled"] and row["failing_since"] is None  # recovered


async def test_retries_end_after_a_day_and_a_failing_endpoint_is_disabled(
    wh_db, pools, receiver, settings
):
    acme, _ = pools
    endpoint, _ = await make_endpoint(wh_db, settings, acme, receiver.url)
    receiver.fail_next = 10**6
    await emit(wh_db, acme, "user.created", {"user_id": "u-1"})
    await run_worker(settings)
    # The schedule spans 24 h: the job is retried until then, then given up.
    from portal.webhooks.tasks import RETRY

    waits = [RETRY.get_retry_decision(exception=Exception(), job=_Job(n)) for n in range(40)]
    spans = [w.retry_at for w in waits if w is not None]
    assert len(spans) == RETRY.max_attempts - 1
    total = sum(min(4 * 3600, 5 * 3**n) for n in range(len(spans)))
    assert 24 * 3600 <= total < 30 * 3600
    # Days of failures: the next failure disables the endpoint (the console says so).
    await wh_db.execute("UPDATE webhook_endpoints SET failing_since = now() - interval '6 days'")
    await due_now(wh_db)
    await run_worker(settings)
    row = await wh_db.fetchrow("SELECT enabled, disabled_reason FROM webhook_endpoints")
    assert (row["enabled"], row["disabled_reason"]) == (False, "failing")
    assert [e["id"] for e in await store.failing_endpoints(wh_db, acme)] == [endpoint["id"]]
    sent = len(receiver.received)
    await emit(wh_db, acme, "user.created", {"user_id": "u-2"})  # a disabled endpoint gets none
    await due_now(wh_db)
    await run_worker(settings)
    assert len(receiver.received) == sent
    assert (
        await wh_db.fetchval(
            "SELECT count(*) FROM procrastinate_jobs "
            "WHERE status = 'todo' AND task_name = 'webhooks.deliver'"
        )
        == 0
    )
    # The receiver is fixed: a replay (the admin's explicit try) goes out even while
    # the endpoint is disabled; the endpoint stays disabled until enabled.
    receiver.fail_next = 0
    first = (await store.list_deliveries(wh_db, acme, endpoint["id"]))[-1]
    async with wh_db.acquire() as conn:
        await store.replay(conn, acme, first["id"])
    await run_worker(settings)
    assert receiver.received[-1][0]["webhook-id"] == first["event_id"]
    assert (await store.get_delivery(wh_db, acme, first["id"]))["status"] == "succeeded"
    assert not (await store.get_endpoint(wh_db, acme, endpoint["id"]))["enabled"]
    async with wh_db.acquire() as conn:  # enabled again, it is no longer failing
        again = await store.update_endpoint(conn, settings, acme, endpoint["id"], enabled=True)
    assert again["enabled"] and again["failing_since"] is None


@dataclass
class _Job:
    attempts: int
    task_kwargs: dict = field(default_factory=dict)


async def test_replay_sends_the_same_message_again(wh_db, pools, receiver, settings):
    acme, beta = pools
    endpoint, secret = await make_endpoint(wh_db, settings, acme, receiver.url)
    await emit(wh_db, acme, "user.created", {"user_id": "u-1"})
    await run_worker(settings)
    [delivery] = await store.list_deliveries(wh_db, acme, endpoint["id"])
    async with wh_db.acquire() as conn:
        with pytest.raises(NotFound):  # another pool's delivery is not found
            await store.replay(conn, beta, delivery["id"])
        await store.replay(conn, acme, delivery["id"])
        await store.replay(conn, acme, delivery["id"])  # a replay waiting is not doubled
    await run_worker(settings)
    assert len(receiver.received) == 2
    (h1, b1), (h2, b2) = receiver.received
    assert h1["webhook-id"] == h2["webhook-id"] and b1 == b2
    Webhook(secret).verify(b2, h2)
    detail = await store.get_delivery(wh_db, acme, delivery["id"])
    assert [a["replay"] for a in detail["attempts_log"]] == [False, True]


async def test_no_delivery_to_a_non_public_address(wh_db, pools, receiver, settings_factory):
    """In production an endpoint on loopback (or private, link-local) is refused when
    registered, and, should its name resolve there later, when connecting."""
    acme, _ = pools
    prod = settings_factory()  # webhooks_allow_loopback=False
    for url in (
        receiver.url,
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://localhost/hook",
    ):
        with pytest.raises(ValidationError):
            await make_endpoint(wh_db, prod, acme, url)
    # A public-looking name that resolves to loopback (as a rebinding DNS would):
    # "localtest.me"-style names are not needed, the resolver is asked at connect time.
    endpoint, _ = await make_endpoint(
        wh_db, settings_factory(webhooks_allow_loopback=True), acme, receiver.url
    )
    await emit(wh_db, acme, "user.created", {"user_id": "u-1"})
    await run_worker(prod)
    assert receiver.received == []
    [delivery] = await store.list_deliveries(wh_db, acme, endpoint["id"])
    detail = await store.get_delivery(wh_db, acme, delivery["id"])
    [attempt] = detail["attempts_log"]
    assert attempt["status_code"] is None and attempt["error"].startswith("address not allowed")
    # Retries and replays (webhooks.deliver, over httpx) are held to the same check.
    async with wh_db.acquire() as conn:
        await store.replay(conn, acme, delivery["id"])
    await run_worker(prod)
    assert receiver.received == []
    detail = await store.get_delivery(wh_db, acme, delivery["id"])
    assert [(a["replay"], a["error"][:19]) for a in detail["attempts_log"]] == [
        (False, "address not allowed"),
        (True, "address not allowed"),
    ]


async def test_endpoints_are_the_pools_own(wh_db, pools, receiver, settings):
    acme, beta = pools
    endpoint, _ = await make_endpoint(wh_db, settings, acme, receiver.url)
    async with wh_db.acquire() as conn:
        box = SecretBox(settings.secret_key)
        for call in (
            store.get_endpoint(conn, beta, endpoint["id"]),
            store.update_endpoint(conn, settings, beta, endpoint["id"], url=receiver.url),
            store.rotate_secret(conn, box, beta, endpoint["id"]),
            store.delete_endpoint(conn, beta, endpoint["id"]),
            store.list_deliveries(conn, beta, endpoint["id"]),
        ):
            with pytest.raises(NotFound):
                await call
        assert await store.list_endpoints(conn, beta) == []
        assert len(await store.list_endpoints(conn, acme)) == 1
        row = await conn.fetchrow("SELECT secret_enc FROM webhook_endpoints")
        assert b"whsec_" not in row["secret_enc"]  # sealed at rest


async def test_a_worker_killed_mid_delivery_leaves_it_to_be_retried(
    wh_db, pools, receiver, settings, stores, secret_key
):
    acme, _ = pools
    _, secret = await make_endpoint(wh_db, settings, acme, receiver.url)
    hang = receiver.hang = asyncio.Event()  # the first request never gets its answer
    env = {
        **os.environ,
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "PORTAL_SECRET_KEY": secret_key,
        "PORTAL_ENV": "prod",
        "PORTAL_WEBHOOKS_ALLOW_LOOPBACK": "1",
        "PORTAL_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, killed below)
        [sys.executable, "-m", "portal", "worker", "--concurrency", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await emit(wh_db, acme, "user.created", {"user_id": "u-1"})
        await asyncio.wait_for(receiver.got_one.wait(), timeout=30)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    receiver.hang = None
    hang.set()  # the killed worker's connection: let the receiver close it
    # Claimed by the dead worker (its first attempt, portal/webhooks/dispatch.py):
    # no other worker takes it while the claim's lease runs...
    assert await wh_db.fetchval("SELECT claimed_at IS NOT NULL FROM webhook_deliveries")
    await run_worker(settings)
    assert len(receiver.received) == 1
    # ... and once it lapsed (here: fast-forwarded), the next worker delivers it.
    await wh_db.execute(
        "UPDATE webhook_deliveries SET claimed_at = now() - make_interval(secs => $1)",
        dispatch.LEASE + 1,
    )
    await run_worker(settings)
    assert len(receiver.received) == 2
    (h1, _), (h2, b2) = receiver.received
    assert h1["webhook-id"] == h2["webhook-id"]
    Webhook(secret).verify(b2, h2)
    assert await wh_db.fetchval("SELECT status FROM webhook_deliveries") == "succeeded"


async def test_a_stopped_worker_finishes_the_delivery_it_is_making(
    wh_db, pools, receiver, settings, stores, secret_key
):
    """SIGTERM (systemctl stop, a deploy): no new job, the running one finishes and
    is recorded, the worker leaves with status 0."""
    acme, _ = pools
    await make_endpoint(wh_db, settings, acme, receiver.url)
    hang = receiver.hang = asyncio.Event()
    env = {
        **os.environ,
        "DATABASE_URL": stores.database_url,
        "PORTAL_SECRET_KEY": secret_key,
        "PORTAL_ENV": "prod",
        "PORTAL_WEBHOOKS_ALLOW_LOOPBACK": "1",
        "PORTAL_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, waited for below)
        [sys.executable, "-m", "portal", "worker", "--concurrency", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await emit(wh_db, acme, "user.created", {"user_id": "u-1"})
        await asyncio.wait_for(receiver.got_one.wait(), timeout=30)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert proc.poll() is None  # still finishing the delivery
        hang.set()  # the receiver answers
        status = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert status == 0
    assert len(receiver.received) == 1
    assert await wh_db.fetchval("SELECT status FROM webhook_deliveries") == "succeeded"
    assert await wh_db.fetchval("SELECT count(*) FROM procrastinate_workers") == 0


async def test_a_receiver_dripping_its_answer_is_cut_off(wh_db, pools, settings, monkeypatch):
    """The whole attempt has a deadline, not only each read: a receiver sending a byte
    now and then does not hold a worker's slot (before: up to 4096 reads of 10 s)."""
    from portal.webhooks import tasks as webhook_tasks

    monkeypatch.setattr(webhook_tasks, "TIMEOUT", 1.0)

    async def drip(request: Request):
        async def body():
            for _ in range(100):
                yield b"."
                await asyncio.sleep(0.2)

        return StreamingResponse(body())

    acme, _ = pools
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    app = Starlette(routes=[Route("/hook", drip, methods=["POST"])])
    async with serve_asgi(app, sock, name="the drip", lifespan="off") as server:
        endpoint, _ = await make_endpoint(wh_db, settings, acme, url)
        await emit(wh_db, acme, "user.created", {"user_id": "u-1"})
        await run_worker(settings)
        server.force_exit = True
    [delivery] = await store.list_deliveries(wh_db, acme, endpoint["id"])
    [attempt] = (await store.get_delivery(wh_db, acme, delivery["id"]))["attempts_log"]
    assert attempt["error"].startswith("timeout") and attempt["latency_ms"] < 3000
    assert delivery["status"] == "pending"  # to be retried


async def test_the_endpoint_cap_holds_under_parallel_creation(wh_db, pools, settings, stores):
    acme, _ = pools
    box = SecretBox(settings.secret_key)
    # 19 exist: 30 creations at once, on 30 connections, may add one.
    for i in range(store.MAX_ENDPOINTS_PER_POOL - 1):
        async with wh_db.acquire() as conn:
            await store.create_endpoint(
                conn, settings, box, acme, url=f"https://e{i}.example.com/", events=["user.created"]
            )
    many = await asyncpg.create_pool(stores.database_url, min_size=30, max_size=30)

    async def create(i: int):
        async with many.acquire() as conn:
            return await store.create_endpoint(
                conn, settings, box, acme, url=f"https://h{i}.example.com/", events=["user.created"]
            )

    try:
        results = await asyncio.gather(*(create(i) for i in range(30)), return_exceptions=True)
    finally:
        await many.close()
    refused = [r for r in results if isinstance(r, ValidationError)]
    assert len(refused) == 29, results
    assert {r.error for r in refused} == {"too_many_endpoints"}
    assert len(await store.list_endpoints(wh_db, acme)) == store.MAX_ENDPOINTS_PER_POOL
