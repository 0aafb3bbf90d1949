"""The shared, pipelined Redis connection of the hot path (portal/stores/redismux.py),
against the suite's real Redis, directly and through a TCP proxy that can
freeze or cut the traffic the way a hung or restarting Redis would."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from portal.stores.redismux import Multiplexer, pack
from tests.support import TcpProxy, free_socket, run_portal


@pytest.fixture
async def proxy(stores):
    p = await TcpProxy.for_redis(stores.redis_url).start()
    try:
        yield p
    finally:
        await p.stop()


@contextlib.asynccontextmanager
async def multiplexer(url: str, **kwargs):
    redis = aioredis.from_url(url, decode_responses=True)
    mux = Multiplexer(redis, **kwargs)
    try:
        yield mux
    finally:
        await mux.aclose()
        await redis.aclose()


def test_commands_are_packed_as_resp_bulk_strings():
    assert (
        pack(["SET", "k", 5, b"\x00v"])
        == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$2\r\n\x00v\r\n"
    )
    with pytest.raises(TypeError):
        pack(["SET", "k", None])


async def test_concurrent_commands_each_get_their_own_reply_and_share_writes(stores, redis_client):
    async with multiplexer(stores.redis_url) as mux:
        keys = [f"mux:{i}" for i in range(500)]
        assert (
            await asyncio.gather(*(mux.execute("SET", k, k.upper()) for k in keys)) == ["OK"] * 500
        )
        assert await asyncio.gather(*(mux.execute("GET", k) for k in keys)) == [
            k.upper() for k in keys
        ]
        # 1,000 commands from concurrent callers went out in a handful of writes.
        assert mux.writes < 20
        assert await redis_client.get("mux:7") == "MUX:7"


async def test_an_error_reply_fails_only_its_own_command(stores, redis_client):
    await redis_client.hset("mux:hash", "f", "v")
    async with multiplexer(stores.redis_url) as mux:
        results = await asyncio.gather(
            mux.execute("INCR", "mux:n"),
            mux.execute("INCR", "mux:hash"),  # WRONGTYPE
            mux.execute("INCR", "mux:n"),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])


async def test_scripts_run_by_sha_and_are_loaded_again_after_a_flush(stores, redis_client):
    script = redis_client.register_script("return {KEYS[1], ARGV[1]}")
    async with multiplexer(stores.redis_url) as mux:
        await redis_client.script_flush()
        assert await mux.evalsha(script, ["k"], ["a"]) == ["k", "a"]  # NOSCRIPT → EVAL
        assert await redis_client.script_exists(script.sha) == [True]
        assert await mux.evalsha(script, ["k2"], [7]) == ["k2", "7"]


async def test_a_killed_connection_fails_what_was_in_flight_and_the_next_command_reconnects(
    stores, redis_client
):
    async with multiplexer(stores.redis_url) as mux:
        first_id = await mux.execute("CLIENT", "ID")
        await redis_client.client_kill_filter(_id=first_id)
        for _ in range(50):  # the reader notices the close
            try:
                await mux.execute("PING")
                break
            except RedisConnectionError:
                await asyncio.sleep(0.02)
        assert await mux.execute("PING") == "PONG"
        assert await mux.execute("CLIENT", "ID") != first_id


async def test_a_hung_redis_fails_commands_after_the_timeout_then_service_resumes(proxy):
    async with multiplexer(proxy.url, timeout=0.3) as mux:
        assert await mux.execute("PING") == "PONG"
        proxy.freeze()
        started = time.monotonic()
        results = await asyncio.gather(
            *(mux.execute("PING") for _ in range(5)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        assert all(isinstance(r, RedisTimeoutError) for r in results)
        assert 0.25 <= elapsed < 2
        proxy.thaw()
        assert await mux.execute("PING") == "PONG"  # a fresh connection


async def test_an_unreachable_redis_is_a_clear_connection_error(proxy):
    async with multiplexer(proxy.url, timeout=0.5) as mux:
        assert await mux.execute("PING") == "PONG"
        await proxy.stop()
        with pytest.raises(RedisError) as info:
            for _ in range(50):
                await mux.execute("PING")
                await asyncio.sleep(0.02)
        assert isinstance(info.value, RedisConnectionError | RedisTimeoutError)


async def test_the_qr_api_answers_503_while_redis_is_away_and_recovers(
    proxy, db, redis_client, settings_factory, box
):
    from portal.tenants import pools

    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme")
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}", redis_url=proxy.url
    )
    async with run_portal(settings, sock=sock) as running, running.client("acme") as pc:
        assert (await pc.post("/api/qrcode", json={})).status_code == 201
        proxy.cut()
        proxy.freeze()  # new connections get no answer either
        r = await pc.post("/api/qrcode", json={})
        assert r.status_code == 503
        assert r.json()["error"] == "temporarily_unavailable"
        assert r.headers["retry-after"] == "5"
        proxy.thaw()
        for _ in range(50):
            r = await pc.post("/api/qrcode", json={})
            if r.status_code == 201:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 201
        t = r.json()
        status = await pc.get(f"/api/qrcode/{t['ticket']}/status?secret={t['secret']}")
        assert status.json()["status"] == "pending"
