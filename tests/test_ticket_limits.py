"""Every path that makes a ticket or a mini-program code is limited, and one
address cannot hold the process's waiters (issue 16, finding 3), over real HTTP
on the real stores and the fake WeChat."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from portal.settings import Limit
from portal.tenants import clients, pools
from tests.support import TRUST_LOCALHOST, forwarded_for, free_socket, run_portal

REDIRECT = "https://rp.example.com/cb"


@pytest.fixture
async def setup(db, redis_client, box, settings_factory, fresh_fake):
    """Two pools (acme has a client with a redirect URI) behind a trusted proxy."""
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme")
        await pools.create(conn, box, slug="bolt", name="Bolt")
        rp, _ = await clients.create(
            conn, box, pool_id=acme.pool.id, name="RP", redirect_uris=[REDIRECT]
        )
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}",
        trusted_proxies=TRUST_LOCALHOST,
        rate_qr=Limit(6, 3600),  # one window for the whole test, however slow the machine
    )
    async with run_portal(settings, sock=sock) as running:
        yield running, rp


def _auth_params(client_id: str) -> dict[str, str]:
    return {
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid",
        "code_challenge": create_s256_code_challenge(secrets.token_urlsafe(48)),
        "code_challenge_method": "S256",
    }


async def test_page_loads_and_the_api_share_one_ticket_limit(setup, redis_client):
    """The hosted page, the pool's own page and the QR API, in parallel from one
    address: together they make at most the QR API's limit of tickets."""
    running, rp = setup
    ip = forwarded_for("203.0.113.7")
    async with running.client("acme") as acme:

        def hosted(lang: str):
            params = {**_auth_params(rp.client_id), "lang": lang}
            return acme.get("/oidc/auth", params=params, headers=ip)

        answers = await asyncio.gather(
            *(hosted("en") for _ in range(4)),
            *(hosted("zh-CN") for _ in range(4)),
            *(acme.get("/", headers=ip) for _ in range(4)),
            *(acme.post("/api/qrcode", json={}, headers=ip) for _ in range(4)),
        )
        codes = Counter(r.status_code for r in answers)
        assert codes[429] == 10 and codes[200] + codes[201] == 6, codes
        for r in answers:
            if r.status_code == 429 and r.request.url.path != "/api/qrcode":
                # A person's page load: a readable page in their language, not JSON.
                assert r.headers["content-type"].startswith("text/html")
                assert 1 <= int(r.headers["retry-after"]) <= 3600
                if r.request.url.params.get("lang") == "en":
                    assert "Too many requests" in r.text
                else:  # Simplified Chinese, the default
                    assert "请求过多" in r.text
        # The API's refusal stays JSON.
        api = [r for r in answers if r.request.url.path == "/api/qrcode" and r.status_code == 429]
        for r in api:
            assert r.json()["error"] == "rate_limited"
        # Another address has its own budget; so has the same address on another pool.
        assert (await acme.get("/", headers=forwarded_for("203.0.113.8"))).status_code == 200
    async with running.client("bolt") as bolt:
        assert (await bolt.get("/", headers=ip)).status_code == 200
    assert len(await redis_client.keys("ticket:*")) == 8  # refusals made nothing


async def test_a_pool_has_a_limit_over_all_addresses(
    db, redis_client, box, settings_factory, fresh_fake
):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme")
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}",
        trusted_proxies=TRUST_LOCALHOST,
        rate_qr_pool=Limit(5, 3600),
    )
    async with run_portal(settings, sock=sock) as running, running.client("acme") as acme:
        answers = await asyncio.gather(
            *(acme.get("/", headers=forwarded_for(f"198.51.100.{i}")) for i in range(1, 9))
        )
    assert sorted(r.status_code for r in answers) == [200] * 5 + [429] * 3


async def test_one_address_cannot_hold_more_than_its_share_of_waiters(setup):
    """SSE streams and long polls of many tickets, all at once from one address:
    at most PORTAL_WAITERS_PER_IP (100) in a process; other addresses are unaffected."""
    running, _ = setup
    waiters = running.state["waiters"]
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
    async with running.client("acme", limits=limits) as acme:
        acme.timeout = httpx.Timeout(30)
        tickets = []
        for i in range(15):  # from three addresses: the QR limit here is 6 each
            r = await acme.post(
                "/api/qrcode", json={}, headers=forwarded_for(f"192.0.2.{i // 5 + 1}")
            )
            assert r.status_code == 201, r.text
            tickets.append(r.json())
        spare = tickets.pop()
        refused: list[str] = []
        release = asyncio.Event()
        attacker = forwarded_for("203.0.113.50")

        async def stream(t: dict) -> None:
            url = f"/api/qrcode/{t['ticket']}/events"
            async with acme.stream(
                "GET", url, params={"secret": t["secret"]}, headers=attacker
            ) as r:
                if r.status_code == 429:
                    await r.aread()
                    refused.append(r.json()["error"])
                else:
                    assert r.status_code == 200
                    await release.wait()

        async def long_poll(t: dict) -> None:
            r = await acme.get(
                f"/api/qrcode/{t['ticket']}/status",
                params={"secret": t["secret"], "wait": 6, "known": "pending"},
                headers=attacker,
            )
            if r.status_code == 429:
                refused.append(r.json()["error"])
            else:
                assert r.status_code == 200

        # 7 streams and 1 long poll on each of 14 tickets: 112 waiters (8 per ticket,
        # the per-ticket cap) from one address.
        tasks = [asyncio.create_task(stream(t)) for t in tickets for _ in range(7)]
        tasks += [asyncio.create_task(long_poll(t)) for t in tickets]
        for _ in range(200):
            if len(waiters) + len(refused) >= 112:
                break
            await asyncio.sleep(0.05)
        assert (len(waiters), len(refused)) == (100, 12)
        assert set(refused) == {"rate_limited"}
        # Another address still gets its stream.
        url = f"/api/qrcode/{spare['ticket']}/events"
        params = {"secret": spare["secret"]}
        async with acme.stream(
            "GET", url, params=params, headers=forwarded_for("203.0.113.51")
        ) as r:
            assert r.status_code == 200
        release.set()
        await asyncio.gather(*tasks)
        # Once they are gone, the address may wait again.
        async with acme.stream("GET", url, params=params, headers=attacker) as r:
            assert r.status_code == 200


# --- mini-program codes: one pool cannot spend another's WeChat quota -----------------


@pytest.fixture
async def two_wxacode_pools(db, redis_client, box, settings_factory, fresh_fake):
    """Two pools showing mini-program codes of the platform's one AppID."""
    async with db.acquire() as conn:
        for slug in ("acme", "bolt"):
            await pools.create(conn, box, slug=slug, name=slug.title(), qr_type="wxacode")

    async def start(**overrides):
        sock = free_socket()
        settings = settings_factory(
            base_url=f"http://localhost:{sock.getsockname()[1]}",
            trusted_proxies=TRUST_LOCALHOST,
            **overrides,
        )
        return run_portal(settings, sock=sock)

    async with httpx.AsyncClient(base_url=fresh_fake.url) as control:
        yield start, control


async def _wxacode_calls(control) -> int:
    stats = (await control.get("/_fake/stats")).json()
    return stats["calls"].get("/wxa/getwxacodeunlimit", 0)


async def _image(client, ip: str) -> httpx.Response:
    t = (await client.post("/api/qrcode", json={}, headers=forwarded_for(ip))).json()
    return await client.get(f"/api/qrcode/{t['ticket']}.png", headers=forwarded_for(ip))


async def test_wechats_45009_pauses_only_the_pool_that_got_it(two_wxacode_pools):
    start, control = two_wxacode_pools
    async with await start() as running:
        async with running.client("acme") as acme, running.client("bolt") as bolt:
            # WeChat refuses acme's code: over the AppID's minute quota.
            fault = {"path": "/wxa/getwxacodeunlimit", "errcode": 45009, "times": 1}
            (await control.post("/_fake/faults", json=fault)).raise_for_status()
            r = await _image(acme, "198.51.100.1")
            assert r.status_code == 200 and "x-qr-type" not in r.headers  # the link QR
            r = await _image(acme, "198.51.100.2")
            assert "x-qr-type" not in r.headers  # acme waits out the minute
            assert await _wxacode_calls(control) == 1
            # bolt, on the same AppID, is not paused by acme's refusal.
            r = await _image(bolt, "198.51.100.3")
            assert r.status_code == 200 and r.headers["x-qr-type"] == "wxacode"


async def test_a_pool_spends_at_most_its_share_of_the_appids_codes(two_wxacode_pools):
    """Page loads from many addresses at once on one pool: WeChat is asked for at
    most PORTAL_RATE_WXACODE codes of that pool; the other pool still gets its own."""
    start, control = two_wxacode_pools
    (await control.post("/_fake/wxacode", json={"minute_quota": 6})).raise_for_status()
    async with await start(rate_wxacode=Limit(4, 3600)) as running:
        async with running.client("acme") as acme, running.client("bolt") as bolt:
            answers = await asyncio.gather(*(_image(acme, f"198.51.100.{i}") for i in range(1, 13)))
            kinds = Counter(r.headers.get("x-qr-type", "link") for r in answers)
            assert {r.status_code for r in answers} == {200}
            assert kinds == {"wxacode": 4, "link": 8}  # the rest fell back to the link QR
            assert await _wxacode_calls(control) == 4
            r = await _image(bolt, "198.51.100.99")
            assert r.headers["x-qr-type"] == "wxacode"


async def test_an_address_renders_a_limited_number_of_mini_program_codes(two_wxacode_pools):
    start, control = two_wxacode_pools
    async with await start(rate_qr_image=Limit(3, 3600)) as running:
        async with running.client("acme") as acme:
            tickets = [
                (
                    await acme.post("/api/qrcode", json={}, headers=forwarded_for(f"192.0.2.{i}"))
                ).json()
                for i in range(5)
            ]
            answers = await asyncio.gather(
                *(
                    acme.get(f"/api/qrcode/{t['ticket']}.png", headers=forwarded_for("203.0.113.9"))
                    for t in tickets
                )
            )
            assert sorted(r.status_code for r in answers) == [200] * 3 + [429] * 2
            assert await _wxacode_calls(control) == 3
