"""REDIS_URL through Redis Sentinel: the URL form, and a whole login against a
master found by a real sentinel (redis-server processes started here), which
goes on working after the sentinel fails the master over to its replica."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
import redis.asyncio as aioredis

from portal.stores import redis as redisconn
from portal.stores.redis import BadRedisURL, parse_sentinel_url
from portal.tenants import pools
from tests.phone import Phone
from tests.support import RedisProcess, free_socket, run_portal


def test_sentinel_urls_name_the_sentinels_the_service_the_db_and_credentials():
    cfg = parse_sentinel_url(
        "redis+sentinel://:s3cret@10.0.0.1,10.0.0.2:26380/mymaster/3?sentinel_password=sp"
    )
    assert cfg.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert (cfg.service, cfg.db, cfg.username, cfg.password) == ("mymaster", 3, None, "s3cret")
    assert cfg.sentinel_kwargs == {"password": "sp"}
    assert parse_sentinel_url("redis+sentinel://h/m").db == 0
    for bad in (
        "redis+sentinel://h:26379/",  # no service
        "redis+sentinel://h:port/m",
        "redis+sentinel://h/m/x",
        "redis+sentinel://h/m/0/extra",
        "redis://h/0",
    ):
        with pytest.raises(BadRedisURL):
            parse_sentinel_url(bad)


@pytest.fixture
async def sentinel_setup(tmp_path):
    started: list[RedisProcess] = []
    try:
        master = RedisProcess(tmp_path, "master", [])
        started.append(master)
        await master.ready()
        replica = RedisProcess(tmp_path, "replica", ["--replicaof", "127.0.0.1", str(master.port)])
        started.append(replica)
        await replica.ready()
        sentinel = RedisProcess(
            tmp_path,
            "sentinel",
            [],
            config=(
                f"sentinel monitor portal 127.0.0.1 {master.port} 1\n"
                "sentinel down-after-milliseconds portal 1000\n"
                "sentinel failover-timeout portal 5000\n"
            ),
        )
        started.append(sentinel)
        await sentinel.ready()
        async with aioredis.Redis(port=replica.port) as r:  # replication up before we start
            for _ in range(200):
                info = await r.info("replication")
                if info.get("master_link_status") == "up":
                    break
                await asyncio.sleep(0.05)
        yield master, replica, sentinel
    finally:
        for p in reversed(started):
            p.stop()


async def _master_port(sentinel_port: int) -> int:
    async with aioredis.Redis(port=sentinel_port, decode_responses=True) as s:
        _, port = await s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "portal")
        return int(port)


async def _login_once(running, ticket_user: str) -> None:
    async with running.client("acme") as pc, running.client() as apex:
        t = (await pc.post("/api/qrcode", json={})).json()
        secret = t["secret"]
        waiting = asyncio.ensure_future(
            pc.get(
                f"/api/qrcode/{t['ticket']}/status",
                params={"secret": secret, "wait": 10, "known": "pending"},
            )
        )
        await asyncio.sleep(0.2)
        phone = Phone(apex, ticket_user)
        await phone.login()
        assert (await phone.scan_and_confirm(t["ticket"])).status_code == 200
        seen = (await waiting).json()["status"]
        assert seen in ("scanned", "confirmed")
        r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": secret})
        assert r.status_code == 200, r.text
        assert r.json()["id_token"]


async def test_a_login_through_sentinel_and_after_a_failover(
    sentinel_setup, db, settings_factory, box, fresh_fake
):
    master, replica, sentinel = sentinel_setup
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme")
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}",
        redis_url=f"redis+sentinel://127.0.0.1:{sentinel.port}/portal/0",
    )
    async with run_portal(settings, sock=sock) as running:
        await _login_once(running, "sentinel_alice")
        async with aioredis.Redis(port=master.port) as r:
            assert await r.dbsize() > 0  # the tickets went to the master it named

        async with aioredis.Redis(port=sentinel.port) as s:
            await s.execute_command("SENTINEL", "FAILOVER", "portal")
        for _ in range(200):
            if await _master_port(sentinel.port) == replica.port:
                break
            await asyncio.sleep(0.05)
        assert await _master_port(sentinel.port) == replica.port

        # The old master is now a replica (read-only): the portal must follow the
        # sentinel to the new one. The first attempts may meet the switch.
        deadline = time.monotonic() + 20
        while True:
            try:
                await _login_once(running, f"sentinel_bob{int(time.monotonic() * 1000)}")
                break
            except (AssertionError, httpx.HTTPError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        async with aioredis.Redis(port=replica.port) as r:
            info = await r.info("replication")
            assert info["role"] == "master"


async def test_a_cli_announcement_reaches_running_processes_through_sentinel(sentinel_setup):
    _, _, sentinel = sentinel_setup
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/portal/0"
    client = redisconn.connect(url, max_connections=4, decode_responses=True)
    try:
        pubsub = client.pubsub()
        await pubsub.subscribe("portal:pools")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pubsub.get_message(timeout=1), 2)
        await client.publish("portal:pools", '{"slug":"x"}')
        for _ in range(20):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message:
                break
        assert message["data"] == '{"slug":"x"}'
        await pubsub.aclose()
    finally:
        await client.aclose()


async def test_the_shared_connection_leaves_a_server_that_turned_replica(sentinel_setup):
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError

    from portal.stores.redismux import Multiplexer

    master, replica, _ = sentinel_setup
    client = aioredis.Redis(port=master.port, decode_responses=True)
    mux = Multiplexer(client)
    try:
        assert await mux.execute("SET", "k", "1") == "OK"
        first = await mux.execute("CLIENT", "ID")
        async with aioredis.Redis(port=master.port) as admin:
            await admin.execute_command("REPLICAOF", "127.0.0.1", str(replica.port))
        with pytest.raises((ResponseError, RedisConnectionError)) as info:
            await mux.execute("SET", "k", "2")
        assert "READONLY" in str(info.value) or isinstance(info.value, RedisConnectionError)
        # The next command goes out on a new connection (here to the same server,
        # through Sentinel it would be the new master).
        assert await mux.execute("GET", "k") in ("1", None)
        assert await mux.execute("CLIENT", "ID") != first
    finally:
        await mux.aclose()
        await client.aclose()
