import asyncio
import secrets

from portal.tenants import pools
from tests.support import run_portal


async def wait_for(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await predicate():
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)


async def test_a_pool_edit_reaches_another_process_through_pubsub(
    db, redis_client, settings_factory, box
):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme Old", allow_http=True)
    settings = settings_factory()
    async with run_portal(settings) as a, run_portal(settings) as b:
        async with b.client("acme") as client:
            assert "Acme Old" in (await client.get("/")).text
            # The name changes in the database, as a console edit on process A would do it.
            await db.execute("UPDATE pools SET name = 'Acme New' WHERE slug = 'acme'")
            # Without a message, B keeps its cached copy (no query per request)...
            assert "Acme Old" in (await client.get("/")).text
            # ...until A announces the change on the shared channel.
            await pools.announce_change(a.state["hub"], "acme")

            async def sees_new() -> bool:
                return "Acme New" in (await client.get("/")).text

            assert await wait_for(sees_new)


async def test_a_cached_miss_is_dropped_when_the_pool_is_created(
    db, redis_client, settings_factory, box
):
    async with run_portal(settings_factory()) as running, running.client("late") as client:
        assert (await client.get("/")).status_code == 404  # the miss is cached now
        async with db.acquire() as conn:
            await pools.create(conn, box, slug="late", name="Late Pool", allow_http=True)
        await pools.announce_change(running.state["hub"], "late")

        async def found() -> bool:
            return (await client.get("/")).status_code == 200

        assert await wait_for(found)


async def test_cache_makes_one_query_per_slug_under_concurrency(db, box):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
    cache = pools.PoolCache(db)
    results = await asyncio.gather(
        *(cache.get("acme") for _ in range(50)), *(cache.get("ghost") for _ in range(50))
    )
    assert {p.slug for p in results[:50]} == {"acme"}
    assert results[50:] == [None] * 50
    # One query for the set of slugs, one for acme; none for the name no pool has.
    assert (cache.scans, cache.loads) == (1, 1)
    await cache.get("acme")
    assert cache.loads == 1
    cache.invalidate("acme")
    await cache.get("acme")
    assert cache.loads == 2


async def test_random_subdomains_cost_no_query_each_and_no_memory(db, settings_factory, box):
    """A flood of requests for names no pool has (``<random>.apex``): every one is a
    404, the database is asked about the set of slugs a few times (not once per
    name), and nothing is kept per name, however many there are."""
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
    async with run_portal(settings_factory()) as running:
        cache = running.state["pools"]
        async with running.client("acme") as client:
            assert (await client.get("/")).status_code == 200

            async def one(i: int) -> int:
                r = await client.get("/", headers={"host": running.host(secrets.token_hex(8))})
                return r.status_code

            statuses = []
            for _ in range(6):  # 600 names, 100 at a time
                statuses += await asyncio.gather(*(one(i) for i in range(100)))
        assert set(statuses) == {404}
        assert cache.loads == 1  # acme's, and none for the 600 names
        assert cache.scans <= 10  # a top-up per second at most
        assert len(cache._entries) == 1  # acme; the misses take no room


async def test_a_pool_created_elsewhere_is_found_within_a_second(db, settings_factory, box):
    """Created by another process that did not (or could not) announce it: found
    once the slugs are topped up, not after a cached miss runs out."""
    async with run_portal(settings_factory()) as running, running.client("quiet") as client:
        assert (await client.get("/")).status_code == 404
        async with db.acquire() as conn:
            await pools.create(conn, box, slug="quiet", name="Quiet", allow_http=True)

        async def found() -> bool:
            return (await client.get("/")).status_code == 200

        assert await wait_for(found, timeout=3.0)
