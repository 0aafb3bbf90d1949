"""Two `portal serve` instances (gunicorn, production mode) sharing one
PostgreSQL and one Redis, behind a small load balancer, as on two machines;
each test runs on one Redis server and on a Redis Cluster (three masters with
a replica each, started here; skipped where redis-server is missing).

A ticket made by one instance is awaited on the other and confirmed through
the first; then, in a real browser, the instance holding the hosted page's
event stream is killed mid-wait, and the page finishes its login through the
other without being reloaded."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from playwright.async_api import expect

from portal.tenants import pools
from portal.web import i18n
from tests import rediscluster
from tests.phone import Phone
from tests.support import ServeProcess, TcpProxy, serve_env

ZH = i18n.translator("zh-CN")


class Balancer:
    """Sends each new connection to the first backend that accepts it, as a
    load balancer with health checks does once a machine has gone."""

    def __init__(self) -> None:
        self.backends: list[int] = []
        self.served: list[int] = []  # the backend port of each connection
        self.proxy = TcpProxy("http://127.0.0.1:{port}", self._open)

    @property
    def port(self) -> int:
        return self.proxy.port

    async def _open(self):
        for port in self.backends:
            try:
                connection = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.served.append(port)
            return connection
        raise ConnectionRefusedError("no backend accepts connections")


@pytest.fixture(params=["redis", "redis-cluster"])
async def cluster(request, db, redis_client, box, stores, fake_wechat, secret_key, tmp_path):
    extra = {}
    if request.param == "redis-cluster":
        if rediscluster.MISSING:
            pytest.skip(rediscluster.MISSING)
        redis_cluster = await rediscluster.Cluster(tmp_path / "redis").start()
        request.addfinalizer(redis_cluster.stop)
        extra["REDIS_URL"] = redis_cluster.url
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme Shop")
    balancer = Balancer()
    await balancer.proxy.start()
    env = serve_env(
        stores, fake_wechat, secret_key, f"http://localhost:{balancer.port}", tmp_path / "data",
        **extra,
    )  # fmt: skip
    instances = [ServeProcess(env, tmp_path / "a.log"), ServeProcess(env, tmp_path / "b.log")]
    try:
        host = f"acme.localhost:{balancer.port}"
        await asyncio.gather(*(i.ready(host) for i in instances))
        balancer.backends = [i.port for i in instances]
        yield balancer, instances, host
    finally:
        for i in instances:
            i.stop()
        await balancer.proxy.stop()


def _client(instance: ServeProcess, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{instance.port}", headers={"host": host}, timeout=30
    )


async def test_a_ticket_made_on_one_instance_is_awaited_and_confirmed_across_them(cluster):
    _, (a, b), host = cluster
    apex = host.removeprefix("acme.")
    async with _client(a, host) as on_a, _client(b, host) as on_b, _client(a, apex) as phone_a:
        t = (await on_a.post("/api/qrcode", json={})).json()
        seen: list[dict] = []

        async def follow_on_b() -> None:
            url = f"/api/qrcode/{t['ticket']}/events"
            async with on_b.stream("GET", url, params={"secret": t["secret"]}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        seen.append(json.loads(line[5:]))

        stream = asyncio.ensure_future(follow_on_b())
        poll = asyncio.ensure_future(
            on_b.get(
                f"/api/qrcode/{t['ticket']}/status",
                params={"secret": t["secret"], "wait": 20, "known": "pending"},
            )
        )
        await asyncio.sleep(0.5)
        phone = Phone(phone_a, "across_amy")
        await phone.login()
        assert (await phone.scan(t["ticket"])).status_code == 200
        assert (await poll).json()["status"] == "scanned"  # the long poll on B woke
        assert (await phone.confirm(t["ticket"], nickname="Amy")).status_code == 200
        await asyncio.wait_for(stream, 10)  # ends after the final status
        assert [e["status"] for e in seen] == ["pending", "scanned", "confirmed"]
        assert seen[-1]["scanned_by"]["nickname"] == "Amy"
        r = await on_b.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
        assert r.status_code == 200 and r.json()["user"]["nickname"] == "Amy"


async def test_the_browser_finishes_through_the_other_instance_when_its_own_dies(
    cluster, page, console
):
    balancer, (a, b), host = cluster
    # The dead instance's connections fail in the page's console; that is the point.
    console.allowed = (re.compile(r"ERR_|EventSource|Failed to load resource", re.I),)
    await page.goto(f"http://{host}/")
    login = page.locator("#login")
    await expect(login).to_have_attribute("data-ticket", re.compile(r"^[A-Za-z0-9_-]{22,32}$"))
    ticket = await login.get_attribute("data-ticket")
    assert set(balancer.served) == {a.port}  # everything so far went to A
    apex = host.removeprefix("acme.")
    async with _client(b, apex) as phone_b:
        phone = Phone(phone_b, "survivor_sam")
        await phone.login()
        assert (await phone.scan(ticket)).status_code == 200
        await expect(page.locator("#status-text")).to_have_text(ZH("login.scanned"))

        a.kill()  # mid-wait: the page's event stream was on A
        assert (await phone.confirm(ticket, nickname="Sam")).status_code == 200
        # No reload: the page reconnects (through the balancer, now to B) and logs in.
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            ZH("oidc.logged_in.title"), timeout=20_000
        )
        await expect(page.get_by_text(ZH("oidc.logged_in.text", name="Sam"))).to_be_visible()
    assert b.port in balancer.served
