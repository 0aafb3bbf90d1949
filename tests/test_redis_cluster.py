"""The portal on a Redis Cluster (three masters with a replica each, started
here from the machine's redis-server): the URL form, logins, the OIDC code
flow, rate limits and event pushes across processes, the connections a process
holds, and a master killed mid-login (503 temporarily_unavailable with
Retry-After during the failover, then service again by itself, with no
confirmed login lost and none used twice).

The whole suite also runs on a cluster: ``make test-cluster``
(``PORTAL_TEST_REDIS=cluster``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from portal.scan import tickets as ticketsmod
from portal.settings import Limit, Settings
from portal.stores import hashtags
from portal.stores.events import POOLS_CHANNEL
from portal.stores.redis import BadRedisURL, parse_cluster_url
from portal.tenants import clients, pools
from tests import rediscluster
from tests.phone import Phone
from tests.support import LoopbackTransport, free_socket, run_portal

needs_cluster = pytest.mark.skipif(bool(rediscluster.MISSING), reason=rediscluster.MISSING)
REDIRECT = "https://rp.example.com/callback"


def test_cluster_urls_name_seed_nodes_and_credentials():
    cfg = parse_cluster_url("redis+cluster://:s3cret@10.0.0.1,10.0.0.2:7001?ssl=true")
    assert cfg.nodes == [("10.0.0.1", 6379), ("10.0.0.2", 7001)]
    assert (cfg.username, cfg.password, cfg.ssl) == (None, "s3cret", True)
    assert parse_cluster_url("redis+cluster://u:p@h:7000").username == "u"
    for bad in ("redis+cluster://h:port", "redis+cluster://h:7000/0", "redis://h:7000"):
        with pytest.raises(BadRedisURL):
            parse_cluster_url(bad)


def test_a_tickets_keys_and_channel_share_its_pools_slot():
    from redis.crc import key_slot

    tag = hashtags.pool_tag(42)
    assert len(tag) == 4 and tag == hashtags.pool_tag(42) != hashtags.pool_tag(43)
    ticket = tag + "x" * 28
    slot = key_slot(ticketsmod.key(ticket).encode())
    names = [hashtags.ticket_channel(ticket), *hashtags.qr_limit_keys(42, "203.0.113.9")]
    assert {key_slot(n.encode()) for n in names} == {slot}
    # Another pool's tickets are (almost always) elsewhere: pools spread over masters.
    assert (
        len({key_slot(ticketsmod.key(hashtags.pool_tag(p) + "x").encode()) for p in range(50)}) > 40
    )


@pytest.fixture(scope="module")
def redis_cluster():
    if rediscluster.MISSING:
        pytest.skip(rediscluster.MISSING)
    with rediscluster.running() as cluster:
        yield cluster


@pytest.fixture
async def on_cluster(redis_cluster, db, settings_factory, box):
    """A portal on the cluster, emptied, with the pools acme and beta."""
    await redis_cluster.flushall()
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
        beta = await pools.create(conn, box, slug="beta", name="Beta", allow_http=True)
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}",
        redis_url=redis_cluster.url,
        rate_qr=Limit(6, 3600),
    )
    async with run_portal(settings, sock=sock) as running:
        yield running, acme.pool, beta.pool


async def _sse(client: httpx.AsyncClient, t: dict, seen: list[str]) -> None:
    url = f"/api/qrcode/{t['ticket']}/events"
    async with client.stream("GET", url, params={"secret": t["secret"]}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:])["status"])


async def _login(running, pc, apex, user: str, *, other=None) -> dict:
    """Create on ``pc``, follow over SSE and a long poll on ``other`` (another
    process), scan and confirm, exchange; returns the exchange's JSON."""
    t = (await pc.post("/api/qrcode", json={})).json()
    seen: list[str] = []
    follower = other or pc
    stream = asyncio.ensure_future(_sse(follower, t, seen))
    poll = asyncio.ensure_future(
        follower.get(
            f"/api/qrcode/{t['ticket']}/status",
            params={"secret": t["secret"], "wait": 10, "known": "pending"},
        )
    )
    await asyncio.sleep(0.3)
    phone = Phone(apex, user)
    assert (await phone.scan(t["ticket"])).status_code == 200
    assert (await asyncio.wait_for(poll, 5)).json()["status"] == "scanned"
    assert (await phone.confirm(t["ticket"], nickname=user)).status_code == 200
    await asyncio.wait_for(stream, 5)
    assert seen == ["pending", "scanned", "confirmed"]
    r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
    assert r.status_code == 200, r.text
    return {"ticket": t["ticket"], **r.json()}


@needs_cluster
async def test_logins_across_two_processes_on_the_cluster(on_cluster, redis_cluster):
    running, acme, beta = on_cluster
    async with run_portal(running.settings) as other:
        async with (
            running.client("acme") as pc,
            other.client("acme") as pc_other,
            running.client() as apex,
            running.client("beta") as beta_pc,
            other.client("beta") as beta_other,
        ):
            a = await _login(running, pc, apex, "cluster_ann", other=pc_other)
            b = await _login(running, beta_pc, apex, "cluster_ben", other=beta_other)
            assert a["user"]["nickname"] == "cluster_ann" and b["id_token"]
            # Each ticket lives on its pool's master (and a second exchange fails there).
            for pool, done in ((acme, a), (beta, b)):
                assert done["ticket"].startswith(hashtags.pool_tag(pool.id))
                node = await redis_cluster.master_of(ticketsmod.key(done["ticket"]))
                async with aioredis.Redis(port=node.port, decode_responses=True) as r:
                    assert await r.hget(ticketsmod.key(done["ticket"]), "status") == "confirmed"
            again = await pc.post(f"/api/qrcode/{a['ticket']}/exchange", json={"secret": "x" * 43})
            assert again.status_code in (400, 403)
        # Bounded connections: per master at most one shared connection, one for the
        # writes that wait for a replica (confirm, exchange) and one subscriber.
        masters = len(await redis_cluster.masters())
        for process in (running, other):
            hub, mux = process.state["hub"], process.state["mux"]
            assert 1 <= hub.connections <= masters
            shared = [node for node, durable in mux._muxes if not durable]
            durable = [node for node, durable in mux._muxes if durable]
            assert 1 <= len(set(shared)) == len(shared) <= masters
            assert len(set(durable)) == len(durable) <= masters
            assert hub.channels == 3  # portal:pools and the two pools' ticket channels


@needs_cluster
async def test_a_pool_change_announced_on_one_process_reaches_the_other(on_cluster):
    running, _, _ = on_cluster
    async with run_portal(running.settings) as other:
        heard: list[dict] = []
        other.state["hub"].on(POOLS_CHANNEL, heard.append)
        await running.state["hub"].publish(POOLS_CHANNEL, {"slug": "acme"})
        for _ in range(50):
            if heard:
                break
            await asyncio.sleep(0.05)
        assert heard == [{"slug": "acme"}]


@needs_cluster
async def test_the_oidc_code_flow_on_the_cluster(on_cluster, db, box):
    from tests.test_oidc import scan_login

    running, acme, _ = on_cluster
    async with db.acquire() as conn:
        rp, rp_secret = await clients.create(
            conn, box, pool_id=acme.id, name="RP", redirect_uris=[REDIRECT]
        )
    issuer = f"http://acme.localhost:{running.port}"
    async with (
        httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as browser,
        running.client() as apex,
    ):
        auth = (
            f"{issuer}/oidc/auth?client_id={rp.client_id}&response_type=code&scope=openid"
            f"&redirect_uri={REDIRECT}&state=s1&nonce=n1"
        )
        done = await scan_login(browser, apex, auth, user="cluster_oidc")
        assert done.status_code == 303, done.text
        code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        token = await browser.post(
            f"{issuer}/oidc/token", data=form, auth=(rp.client_id, rp_secret)
        )
        assert token.status_code == 200, token.text
        assert token.json()["id_token"]
        replay = await browser.post(
            f"{issuer}/oidc/token", data=form, auth=(rp.client_id, rp_secret)
        )
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


@needs_cluster
async def test_qr_creation_limits_hold_across_processes_on_the_cluster(on_cluster):
    running, _, _ = on_cluster
    async with run_portal(running.settings) as other:
        async with running.client("acme") as a, other.client("acme") as b:
            answers = await asyncio.gather(*(c.post("/api/qrcode", json={}) for c in [a, b] * 10))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(201) == 6 and codes.count(429) == 14  # PORTAL_RATE_QR 6 per address
    assert all(r.headers.get("retry-after") for r in answers if r.status_code == 429)


@needs_cluster
async def test_a_pools_slot_moved_to_another_master_while_a_page_waits(on_cluster, redis_cluster):
    """A resharding moves the pool's slot, tickets and all: the shared connection
    follows MOVED, the other process's subscription moves to the new master (the
    old one unsubscribes it), and the waiting page still hears the login."""
    from redis.crc import key_slot

    running, _, _ = on_cluster
    async with (
        run_portal(running.settings) as other,
        running.client("acme") as pc,
        running.client() as apex,
    ):
        page = httpx.AsyncClient(
            base_url=other.url, headers={"host": other.host("acme")}, timeout=30
        )
        t = (await pc.post("/api/qrcode", json={})).json()
        seen: list[str] = []
        stream = asyncio.ensure_future(_sse(page, t, seen))
        try:
            await asyncio.sleep(0.3)
            key = ticketsmod.key(t["ticket"])
            src = await redis_cluster.master_of(key)
            dst = next(m for m in await redis_cluster.masters() if m is not src)
            await rediscluster.move_slot(redis_cluster, key_slot(key.encode()), dst)
            assert await redis_cluster.master_of(key) is dst

            phone = Phone(apex, "slot_mover")
            assert (await phone.scan(t["ticket"])).status_code == 200
            assert (await phone.confirm(t["ticket"], nickname="Mo")).status_code == 200
            await asyncio.wait_for(stream, 10)
            assert seen[0] == "pending" and seen[-1] == "confirmed"
            channel = hashtags.ticket_channel(t["ticket"])
            assert other.state["hub"]._placed[channel].node.port == dst.port
            r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
            assert r.status_code == 200 and r.json()["user"]["nickname"] == "Mo"
        finally:
            stream.cancel()
            await page.aclose()


@needs_cluster
async def test_durable_writes_are_on_the_replica_when_they_answer_one_wait_per_batch(
    redis_cluster,
):
    from portal.stores import redis as redisconn
    from portal.stores.redismux import ClusterMultiplexer

    await redis_cluster.flushall()
    client = redisconn.connect(redis_cluster.url, max_connections=4, decode_responses=True)
    mux = ClusterMultiplexer(client)
    try:
        script = client.register_script("redis.call('SET', KEYS[1], ARGV[1]) return 1")
        master = await redis_cluster.master_of("{durable}")
        replica = None
        for node in redis_cluster.nodes:
            async with aioredis.Redis(port=node.port, decode_responses=True) as r:
                info = await r.info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == master.port:
                    replica = node
        async with aioredis.Redis(port=master.port, decode_responses=True) as r:
            await mux.evalsha(script, ["{durable}warm"], [0])  # connected, script loaded
            await r.config_resetstat()
            answers = await asyncio.gather(
                *(mux.evalsha(script, [f"{{durable}}{i}"], [i], durable=True) for i in range(50))
            )
            waits = (await r.info("commandstats")).get("cmdstat_wait", {}).get("calls", 0)
        assert answers == [1] * 50
        assert 1 <= waits < 10  # one WAIT per batch written, not one per write
        async with aioredis.Redis(port=replica.port, decode_responses=True) as r:
            await r.execute_command("READONLY")
            assert await r.get("{durable}49") == "49"  # already there when it answered
    finally:
        await mux.aclose()
        await client.aclose()


# --- a master lost mid-login ---------------------------------------------------------


@pytest.fixture
async def failing_cluster(tmp_path, db, settings_factory, box):
    if rediscluster.MISSING:
        pytest.skip(rediscluster.MISSING)
    cluster = rediscluster.Cluster(tmp_path / "redis", node_timeout_ms=1000)
    try:
        await cluster.start()
        async with db.acquire() as conn:
            acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
        sock = free_socket()
        settings: Settings = settings_factory(
            base_url=f"http://localhost:{sock.getsockname()[1]}", redis_url=cluster.url
        )
        async with run_portal(settings, sock=sock) as running:
            yield cluster, running, acme.pool
    finally:
        cluster.stop()


class Unavailable(Exception):
    pass


def _check(r: httpx.Response, log: list[httpx.Response], *ok: int) -> httpx.Response:
    log.append(r)
    if r.status_code == 503:
        raise Unavailable()
    assert r.status_code in ok, (r.request.url, r.status_code, r.text)
    return r


@needs_cluster
async def test_a_master_killed_mid_login(failing_cluster, db):
    cluster, running, _ = failing_cluster
    responses: list[httpx.Response] = []
    confirmed: dict[str, dict] = {}  # ticket -> its creation (confirm answered 200)
    exchanged: dict[str, int] = {}  # ticket -> successful exchanges
    stop = asyncio.Event()
    n = 0

    async with running.client("acme") as pc, running.client() as apex:

        async def one_login(user: str) -> bool:
            """One login as far as it goes; False where the portal answered 503."""
            try:
                t = _check(await pc.post("/api/qrcode", json={}), responses, 201).json()
                phone = Phone(apex, user)
                _check(await phone.login(), responses, 200)
                _check(await phone.scan(t["ticket"]), responses, 200)
                _check(await phone.confirm(t["ticket"]), responses, 200)
                confirmed[t["ticket"]] = t
                r = _check(
                    await pc.post(
                        f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]}
                    ),
                    responses,
                    200,
                )
                exchanged[t["ticket"]] = exchanged.get(t["ticket"], 0) + 1
                assert r.json()["id_token"]
                return True
            except (Unavailable, httpx.TransportError):
                return False

        async def worker(w: int) -> None:
            nonlocal n
            while not stop.is_set():
                n += 1
                await one_login(f"w{w}_{n}")

        # A login mid-way: scanned, and a page waiting on it over SSE.
        victim = (await pc.post("/api/qrcode", json={})).json()
        seen: list[str] = []
        page = httpx.AsyncClient(base_url=running.url, headers=pc.headers, timeout=60)
        stream = asyncio.ensure_future(_sse(page, victim, seen))
        phone = Phone(apex, "victim")
        assert (await phone.scan(victim["ticket"])).status_code == 200
        # One confirmed just before the master goes: it must survive it.
        just_before = (await pc.post("/api/qrcode", json={})).json()
        late = Phone(apex, "just_before")
        assert (await late.scan(just_before["ticket"])).status_code == 200
        assert (await late.confirm(just_before["ticket"])).status_code == 200

        workers = [asyncio.ensure_future(worker(w)) for w in range(4)]
        try:
            resumed_after, during = await _fail_over_mid_login(
                cluster, victim, phone, stream, seen, one_login
            )
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
            stream.cancel()
            await page.aclose()
        unavailable = [r for r in responses + during if r.status_code == 503]
        assert unavailable, "no request met the failover"
        for r in unavailable:
            assert r.json()["error"] == "temporarily_unavailable"
            assert int(r.headers["retry-after"]) > 0

        # No confirmed login lost, none used twice.
        for t in [victim, just_before, *confirmed.values()]:
            r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
            if exchanged.get(t["ticket"]):
                assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
            else:  # confirmed, not yet exchanged (or its exchange met the failover)
                assert r.status_code in (200, 400), r.text
                if r.status_code == 400:
                    assert "already exchanged" in r.json()["error_description"]
            status = await pc.get(
                f"/api/qrcode/{t['ticket']}/status", params={"secret": t["secret"]}
            )
            assert status.json()["status"] == "confirmed"
    # Every user logged in once (each login is a new user): no ticket was confirmed twice.
    most = await db.fetchval(
        """SELECT max(n) FROM (SELECT count(*) AS n FROM login_events
           WHERE result IN ('signup', 'success') GROUP BY user_id) AS per_user"""
    )
    assert most == 1
    print(
        f"failover: {len(unavailable)} requests answered 503; the victim's confirmation "
        f"went through {resumed_after:.1f} s after the kill; {len(confirmed)} logins confirmed"
    )
    with contextlib.suppress(Exception):
        await cluster.wait_healthy(timeout=1)


async def _fail_over_mid_login(cluster, victim, phone, stream, seen, one_login):
    """Kill the master of the victim's ticket, confirm it through the failover."""
    await asyncio.sleep(0.5)
    master = await cluster.master_of(ticketsmod.key(victim["ticket"]))
    master.kill()
    killed_at = time.monotonic()

    # The victim's confirmation: 503 while the slot has no master, then it goes through.
    during: list[httpx.Response] = []
    while True:
        r = await phone.confirm(victim["ticket"])
        during.append(r)
        if r.status_code != 503:
            break
        assert time.monotonic() - killed_at < 30, "the cluster did not fail over"
        await asyncio.sleep(0.2)
    assert r.status_code == 200, r.text
    resumed_after = time.monotonic() - killed_at
    await asyncio.wait_for(stream, 15)  # the page heard it, from the promoted replica
    assert seen[-1] == "confirmed"

    # Service goes on by itself: fresh logins succeed.
    assert await one_login("after_1") and await one_login("after_2")

    return resumed_after, during
