"""Rate limits on the public endpoints (portal/stores/ratelimit.py), over real HTTP,
counted in the real Redis and therefore shared by every process."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import pytest

from portal.settings import ConfigError, Limit, Settings
from portal.tenants import pools
from portal.wechat.fake import DEMO_APPID
from tests.phone import Phone
from tests.support import free_socket, run_portal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_limits_are_read_from_the_environment():
    env = {"PORTAL_SECRET_KEY": "k" * 40, "PORTAL_RATE_QR": "5/10", "PORTAL_RATE_TOKEN": "0"}
    settings = Settings.from_env(env)
    assert settings.rate_qr == Limit(5, 10)
    assert settings.rate_token.off
    assert Settings.from_env({"PORTAL_SECRET_KEY": "k" * 40}).rate_mp_session == Limit(60, 60)
    for bad in ("many", "5/0", "-1", "5/x"):
        with pytest.raises(ConfigError, match="PORTAL_RATE_QR"):
            Settings.from_env({"PORTAL_SECRET_KEY": "k" * 40, "PORTAL_RATE_QR": bad})


@pytest.fixture
async def limited(db, redis_client, box, settings_factory):
    """A portal with small limits behind a trusted proxy (so tests can be many IPs)."""
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme")
        await pools.create(conn, box, slug="bolt", name="Bolt")
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}",
        trusted_proxies=Settings.from_env(
            {"PORTAL_TRUSTED_PROXIES": "127.0.0.1/32", "PORTAL_SECRET_KEY": "k" * 40}
        ).trusted_proxies,
        rate_qr=Limit(5, 3600),  # one window for the whole test, however slow the machine
        rate_mp_session=Limit(3, 60),
        rate_token=Limit(4, 60),
    )
    async with run_portal(settings, sock=sock) as running:
        yield running, acme


def _from(ip: str) -> dict[str, str]:
    return {"x-forwarded-for": ip}


async def test_qr_creation_is_limited_per_ip_and_pool(limited, redis_client):
    running, _ = limited
    async with running.client("acme") as acme, running.client("bolt") as bolt:
        codes = [
            (await acme.post("/api/qrcode", json={}, headers=_from("203.0.113.7"))).status_code
            for _ in range(6)
        ]
        assert codes == [201] * 5 + [429]
        refused = await acme.post("/api/qrcode", json={}, headers=_from("203.0.113.7"))
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
        # Another address, and the same address on another pool, have their own budget.
        other_ip = await acme.post("/api/qrcode", json={}, headers=_from("203.0.113.8"))
        assert other_ip.status_code == 201
        other_pool = await bolt.post("/api/qrcode", json={}, headers=_from("203.0.113.7"))
        assert other_pool.status_code == 201
    # A refused request created nothing.
    assert len(await redis_client.keys("ticket:*")) == 7


async def test_ten_thousand_parallel_creations_from_one_ip(limited, redis_client):
    running, _ = limited
    # A lean keep-alive client (the benchmarks'): 10,000 requests through httpx
    # would take minutes of this machine's CPU.
    from loadclient import ConnectionPool

    conns = ConnectionPool("127.0.0.1", running.port, running.host("acme"), size=100)
    try:

        async def create() -> int:
            r = await conns.request(
                "POST", "/api/qrcode", json_body={}, headers=_from("198.51.100.1")
            )
            return r.status

        codes = Counter(await asyncio.gather(*(create() for _ in range(10_000))))
    finally:
        conns.close()
    assert codes == Counter({201: 5, 429: 9_995})  # no 5xx, and exactly the budget served
    assert len(await redis_client.keys("ticket:*")) == 5


async def test_mini_program_sessions_are_limited_per_ip_and_appid(limited, fresh_fake):
    running, _ = limited
    async with running.client() as apex:
        codes = []
        for i in range(4):
            r = await apex.post(
                "/api/mp/session",
                json={"appid": DEMO_APPID, "code": Phone.code(f"limited{i}")},
                headers=_from("192.0.2.44"),
            )
            codes.append(r.status_code)
        assert codes == [200, 200, 200, 429]
        assert r.json()["error"] == "rate_limited" and "retry-after" in r.headers
        r = await apex.post(
            "/api/mp/session",
            json={"appid": DEMO_APPID, "code": Phone.code("limited9")},
            headers=_from("192.0.2.45"),
        )
        assert r.status_code == 200
    # The refused request never reached WeChat: its code is still good.
    stats = await fresh_fake_stats(fresh_fake)
    assert stats["calls"].get("/sns/jscode2session") == 4


async def fresh_fake_stats(fake) -> dict:
    import httpx

    async with httpx.AsyncClient() as client:
        return (await client.get(f"{fake.url}/_fake/stats")).json()


async def test_token_endpoint_is_limited_per_client_and_ip(limited):
    running, acme = limited
    client_id = acme.default_client.client_id
    async with running.client("acme") as rp:
        codes = []
        for _ in range(5):  # wrong secrets count too
            r = await rp.post(
                "/oidc/token",
                data={"grant_type": "refresh_token", "refresh_token": "x"},
                auth=(client_id, "wrong"),
                headers=_from("198.51.100.20"),
            )
            codes.append(r.status_code)
        assert codes == [401] * 4 + [429]
        assert r.json()["error"] == "rate_limited"
        r = await rp.post(
            "/oidc/token",
            data={"grant_type": "refresh_token", "refresh_token": "x"},
            auth=(client_id, acme.default_client_secret),
            headers=_from("198.51.100.21"),
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
