"""The scan login end to end over real HTTP: app, Redis, PostgreSQL and the fake WeChat."""

import asyncio
import json
import secrets
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from portal.scan.tickets import key as ticket_key
from portal.tenants import clients, pools
from portal.wechat.fake import DEMO_APPID
from tests.phone import Phone
from tests.support import run_portal

SECOND_APPID = "wx00000000000000b2"


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        created = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
    return created


async def change_pool(db, portal, assignment: str) -> None:
    """A pool setting changed as the console does it: written, then announced."""
    await db.execute(f"UPDATE pools SET {assignment} WHERE slug = 'acme'")
    await pools.announce_change(portal.state["hub"], "acme")
    for _ in range(100):  # the message comes back through Redis to this process
        if portal.state["pools"]._entries.get("acme") is None:
            return
        await asyncio.sleep(0.01)


async def new_ticket(pc, **body) -> dict:
    r = await pc.post("/api/qrcode", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def status(pc, t, **params) -> dict:
    r = await pc.get(
        f"/api/qrcode/{t['ticket']}/status", params=params, headers={"x-ticket-secret": t["secret"]}
    )
    assert r.status_code == 200, r.text
    return r.json()


async def sse_statuses(client, t, until=("confirmed", "cancelled", "expired")):
    """Read the SSE stream to its end; returns the status payloads seen."""
    seen = []
    async with client.stream(
        "GET", f"/api/qrcode/{t['ticket']}/events", params={"secret": t["secret"]}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["status"] in until:
                    break
    return seen


async def test_the_whole_flow(pc, apex, portal, db, acme):
    t = await new_ticket(pc)
    assert len(t["ticket"]) <= 32 and len(t["ticket"]) >= 22
    assert t["expires_in"] == 120
    # the default mini program's one link rule, on the apex (issue 17)
    assert t["qrcode"]["content"] == f"http://localhost:{portal.port}/q/{t['ticket']}"
    assert await status(pc, t) == {"status": "pending", "expires_in": 120, "scanned_by": None}

    stream = asyncio.create_task(sse_statuses(pc, t))
    await asyncio.sleep(0.1)
    alice = Phone(apex, "alice")
    r = await alice.scan(t["ticket"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "scanned" and r.json()["pool"]["name"] == "Acme"
    assert (await status(pc, t))["status"] == "scanned"
    r = await alice.confirm(
        t["ticket"], nickname="Alice 爱丽丝", avatar_url="https://img.example.com/a.png"
    )
    assert r.json() == {"status": "confirmed"}

    seen = await asyncio.wait_for(stream, 5)
    assert [s["status"] for s in seen] == ["pending", "scanned", "confirmed"]
    assert seen[-1]["scanned_by"] == {
        "nickname": "Alice 爱丽丝",
        "avatar_url": "https://img.example.com/a.png",
    }

    r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["token_type"] == "Bearer" and result["refresh_token"]
    assert result["user"]["nickname"] == "Alice 爱丽丝"

    # The ID token is signed by a key the pool publishes.
    jwks = (await pc.get("/oidc/jwks")).json()
    claims = jwt.decode(result["id_token"], KeySet.import_key_set(jwks)).claims
    assert claims["iss"] == f"http://acme.localhost:{portal.port}"
    assert claims["sub"] == result["user"]["id"]
    assert claims["aud"] == acme.default_client.client_id
    assert claims["amr"] == ["wechat_qr"] and claims["nickname"] == "Alice 爱丽丝"

    again = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    # First login registered alice; the next one logs the same user in.
    t2 = await new_ticket(pc)
    r = await Phone(apex, "alice").scan(t2["ticket"])
    assert (await status(pc, t2))["scanned_by"] is None  # not before she confirms (issue 16)
    assert (await Phone(apex, "alice").login()).status_code == 200
    alice2 = Phone(apex, "alice")
    await alice2.scan(t2["ticket"])
    assert (await alice2.confirm(t2["ticket"])).status_code == 200
    r = await pc.post(f"/api/qrcode/{t2['ticket']}/exchange", json={"secret": t2["secret"]})
    assert r.json()["user"]["id"] == result["user"]["id"]
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    events = await db.fetch("SELECT result FROM login_events ORDER BY id")
    assert [e["result"] for e in events] == ["signup", "success"]


async def test_the_qr_image_decodes_to_the_content(pc, db, portal):
    import io

    import zxingcpp
    from PIL import Image

    t = await new_ticket(pc)
    r = await pc.get(f"/api/qrcode/{t['ticket']}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert (
        zxingcpp.read_barcodes(Image.open(io.BytesIO(r.content)))[0].text == t["qrcode"]["content"]
    )
    r = await pc.get(f"/api/qrcode/{t['ticket']}.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.lstrip().startswith(("<?xml", "<svg"))
    assert (await pc.get("/api/qrcode/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.png")).status_code == 404

    # With the pool's logo in the centre (a busy one), it still decodes exactly.
    import hashlib
    import random

    from portal.scan import qrimage

    rng = random.Random(7)
    noisy = Image.frombytes("RGB", (200, 200), rng.randbytes(200 * 200 * 3))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    logo = qrimage.normalize_logo(buf.getvalue())
    await db.execute(
        "UPDATE pools SET logo_png = $1, logo_sha256 = $2, logo_shape = 'round'",
        logo,
        hashlib.sha256(logo).hexdigest(),
    )
    await pools.announce_change(portal.state["hub"], "acme")
    await asyncio.sleep(0.2)
    t = await new_ticket(pc)
    r = await pc.get(f"/api/qrcode/{t['ticket']}.png")
    with_logo = Image.open(io.BytesIO(r.content)).convert("RGB")
    assert len(with_logo.getcolors(maxcolors=1 << 20)) > 2  # the colourful logo is there
    assert zxingcpp.read_barcodes(with_logo)[0].text == t["qrcode"]["content"]
    r = await pc.get("/logo")  # the same logo, served from the same cache
    assert (
        r.status_code == 200
        and r.content == logo
        and r.headers["etag"] == f'"{hashlib.sha256(logo).hexdigest()}"'
    )


async def test_secret_and_pool_are_checked(pc, portal, db, box):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="beta", name="Beta", allow_http=True)
    t = await new_ticket(pc)
    r = await pc.get(f"/api/qrcode/{t['ticket']}/status")
    assert r.status_code == 403 and r.json()["error"] == "invalid_secret"
    r = await pc.get(f"/api/qrcode/{t['ticket']}/status", params={"secret": "wrong"})
    assert r.status_code == 403
    r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": "wrong"})
    assert r.status_code == 403
    # The stream answers before it begins: the same JSON errors.
    r = await pc.get(f"/api/qrcode/{t['ticket']}/events", params={"secret": "wrong"})
    assert r.status_code == 403 and r.json()["error"] == "invalid_secret"
    assert r.headers["content-type"] == "application/json"
    async with portal.client("beta") as beta:
        r = await beta.get(f"/api/qrcode/{t['ticket']}/events", params={"secret": t["secret"]})
        assert r.status_code == 404 and r.json()["error"] == "ticket_not_found"
        r = await beta.get(f"/api/qrcode/{t['ticket']}/status", params={"secret": t["secret"]})
        assert r.status_code == 404 and r.json()["error"] == "ticket_not_found"
        r = await beta.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
        assert r.status_code == 404
    r = await pc.get("/api/qrcode/nope-nope-nope-nope-nope/status", params={"secret": "x"})
    assert r.status_code == 404 and r.json()["error"] == "ticket_not_found"
    r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"  # not confirmed yet
    r = await pc.post("/api/qrcode", json={"client_id": "nope"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"


async def test_long_poll_returns_at_the_change(pc, apex):
    t = await new_ticket(pc)
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(status(pc, t, wait=10, known="pending"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await Phone(apex, "bob").scan(t["ticket"])
    result = await asyncio.wait_for(waiting, 5)
    assert result["status"] == "scanned"
    assert loop.time() - started < 3
    # A status other than the one known answers at once; wait is bounded.
    assert (await status(pc, t, wait=10, known="pending"))["status"] == "scanned"
    r = await pc.get(
        f"/api/qrcode/{t['ticket']}/status", params={"wait": 31, "secret": t["secret"]}
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def test_expiry_is_reported_with_no_one_watching_and_pushed_to_waiters(
    portal, pc, apex, acme
):
    tickets = portal.state["tickets"]
    created = await tickets.create(
        pool_id=acme.pool.id,
        client_id=acme.default_client.client_id,
        lifetime=1,
        address="127.0.0.1",
    )
    t = {"ticket": created.ticket, "secret": created.secret}
    seen = await asyncio.wait_for(sse_statuses(pc, t), 5)
    assert [s["status"] for s in seen] == ["pending", "expired"]
    assert seen[-1]["expires_in"] == 0
    created = await tickets.create(
        pool_id=acme.pool.id,
        client_id=acme.default_client.client_id,
        lifetime=1,
        address="127.0.0.1",
    )
    await asyncio.sleep(1.2)  # nobody watches this one
    t = {"ticket": created.ticket, "secret": created.secret}
    assert (await status(pc, t))["status"] == "expired"
    r = await Phone(apex, "carol").scan(created.ticket)
    assert r.status_code == 410 and r.json()["error"] == "ticket_expired"


async def test_cancel(pc, apex):
    t = await new_ticket(pc)
    stream = asyncio.create_task(sse_statuses(pc, t))
    dave = Phone(apex, "dave")
    await dave.scan(t["ticket"])
    r = await dave.cancel(t["ticket"])
    assert r.json() == {"status": "cancelled"}
    assert [s["status"] for s in await asyncio.wait_for(stream, 5)][-1] == "cancelled"
    assert (await dave.confirm(t["ticket"])).status_code == 410
    r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_only_the_scanner_may_confirm(pc, apex, db):
    t = await new_ticket(pc)
    erin, mallory = Phone(apex, "erin"), Phone(apex, "mallory")
    assert (await erin.scan(t["ticket"])).status_code == 200
    r = await mallory.scan(t["ticket"])
    assert r.status_code == 409 and r.json()["error"] == "ticket_taken"
    r = await mallory.confirm(t["ticket"])
    assert r.status_code == 403 and r.json()["error"] == "not_scanner"
    r = await mallory.cancel(t["ticket"])
    assert r.status_code == 403
    assert (await status(pc, t))["status"] == "scanned"
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert (await erin.confirm(t["ticket"])).status_code == 200


async def test_mini_program_session_errors(apex, fresh_fake):
    code = Phone.code("frank")
    r = await apex.post("/api/mp/session", json={"appid": DEMO_APPID, "code": code})
    assert r.status_code == 200 and r.json()["expires_in"] > 0
    r = await apex.post("/api/mp/session", json={"appid": DEMO_APPID, "code": code})
    assert r.status_code == 400 and r.json()["error"] == "code_used"
    r = await apex.post("/api/mp/session", json={"appid": DEMO_APPID, "code": "invalid-code"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_code"
    r = await apex.post("/api/mp/session", json={"appid": DEMO_APPID, "code": "risky_user.1"})
    assert r.status_code == 403 and r.json()["error"] == "wechat_risky_user"
    r = await apex.post("/api/mp/session", json={"appid": "wx0000000000000bad", "code": "x.1"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_appid"
    async with httpx.AsyncClient() as wx:
        await wx.post(
            f"{fresh_fake.url}/_fake/faults", json={"path": "/sns/jscode2session", "errcode": 45011}
        )
        r = await apex.post(
            "/api/mp/session", json={"appid": DEMO_APPID, "code": Phone.code("frank")}
        )
        assert r.status_code == 429 and r.json()["error"] == "wechat_rate_limited"
        await wx.post(
            f"{fresh_fake.url}/_fake/faults",
            json={"path": "/sns/jscode2session", "errcode": -1, "times": 5},
        )
        r = await apex.post(
            "/api/mp/session", json={"appid": DEMO_APPID, "code": Phone.code("frank")}
        )
        assert r.status_code == 502 and r.json()["error"] == "wechat_unavailable"
        await wx.post(f"{fresh_fake.url}/_fake/reset")
    for body in ({}, {"appid": DEMO_APPID}, {"appid": 5, "code": "x"}):
        r = await apex.post("/api/mp/session", json=body)
        assert r.status_code == 400 and set(r.json()) == {"error", "error_description"}
    r = await apex.post(
        "/api/mp/session", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = await apex.post("/api/mp/tickets/whatever-whatever-1/scan")
    assert r.status_code == 401 and r.json()["error"] == "invalid_session"
    r = await apex.post(
        "/api/mp/tickets/whatever-whatever-1/scan", headers={"authorization": "Bearer nope"}
    )
    assert r.status_code == 401


async def test_phone_required(pc, apex, db, portal):
    await change_pool(db, portal, "phone_required = true")
    t = await new_ticket(pc)
    grace = Phone(apex, "grace")
    await grace.scan(t["ticket"])
    r = await grace.confirm(t["ticket"])
    assert r.status_code == 400 and r.json()["error"] == "phone_required"
    assert await db.fetchval("SELECT count(*) FROM users") == 0  # nothing half-written
    r = await grace.confirm(t["ticket"], phone="13800138000")
    assert r.status_code == 200, r.text
    user = await db.fetchrow("SELECT phone_number, phone_country_code FROM users")
    assert tuple(user) == ("13800138000", "86")
    results = [r["result"] for r in await db.fetch("SELECT result FROM login_events ORDER BY id")]
    assert results == ["phone_required", "signup"]
    # Next time the phone is on file: no need to share it again.
    t = await new_ticket(pc)
    grace = Phone(apex, "grace")
    assert (await grace.scan_and_confirm(t["ticket"])).status_code == 200


async def test_login_only_refuses_unknown_users(pc, apex, db, portal):
    t = await new_ticket(pc)
    assert (await Phone(apex, "henry").scan_and_confirm(t["ticket"])).status_code == 200
    await change_pool(db, portal, "login_only = true")
    t = await new_ticket(pc)
    r = await Phone(apex, "ivan").scan_and_confirm(t["ticket"])
    assert r.status_code == 403 and r.json()["error"] == "signup_disabled"
    t = await new_ticket(pc)
    assert (await Phone(apex, "henry").scan_and_confirm(t["ticket"])).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert (
        await db.fetchval("SELECT count(*) FROM login_events WHERE result = 'signup_disabled'") == 1
    )


async def test_link_by_phone(pc, apex, db, portal):
    await change_pool(db, portal, "link_by_phone = true")
    t = await new_ticket(pc)
    assert (
        await Phone(apex, "judy").scan_and_confirm(t["ticket"], phone="13900001111")
    ).status_code == 200
    t = await new_ticket(pc)
    # Another WeChat account with the same verified phone number: the same user.
    assert (
        await Phone(apex, "judy_work").scan_and_confirm(t["ticket"], phone="13900001111")
    ).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await db.fetchval("SELECT count(*) FROM wechat_identities") == 2


async def test_unionid_links_the_pools_mini_programs(pc, apex, portal, db, box, fresh_fake):
    # WeChat gives a unionid only for mini programs bound to one Open Platform
    # account (unbound: tests/test_wechat_rules.py).
    async with httpx.AsyncClient(base_url=fresh_fake.url) as control:
        for appid, secret in fresh_fake.apps.items():
            body = {"appid": appid, "secret": secret, "bound": "wxopen0000000001"}
            (await control.post("/_fake/apps", json=body)).raise_for_status()
    t = await new_ticket(pc)
    assert (await Phone(apex, "kate").scan_and_confirm(t["ticket"])).status_code == 200
    # The pool moves to its own mini program: same person, new openid, same unionid.
    sealed = box.encrypt("secretofthesecondapp000000000000", pools.mp_secret_context(1))
    await db.execute(
        "UPDATE pools SET mp_appid = $1, mp_secret_enc = $2 WHERE slug = 'acme'",
        SECOND_APPID,
        sealed,
    )
    await pools.announce_change(portal.state["hub"], "acme")
    await asyncio.sleep(0.2)
    t = await new_ticket(pc)
    r = await Phone(apex, "kate").scan(t["ticket"])
    assert r.status_code == 403 and r.json()["error"] == "wrong_mini_program"
    r = await Phone(apex, "kate", appid=SECOND_APPID).scan_and_confirm(t["ticket"])
    assert r.status_code == 200, r.text
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await db.fetchval("SELECT count(DISTINCT openid) FROM wechat_identities") == 2
    async with httpx.AsyncClient(base_url=fresh_fake.url) as control:
        await control.post("/_fake/reset")  # the bindings the fake started with


async def test_blocked_user_is_refused(pc, apex, db):
    t = await new_ticket(pc)
    assert (await Phone(apex, "leo").scan_and_confirm(t["ticket"])).status_code == 200
    await db.execute("UPDATE users SET blocked = true")
    t = await new_ticket(pc)
    r = await Phone(apex, "leo").scan_and_confirm(t["ticket"])
    assert r.status_code == 403 and r.json()["error"] == "user_blocked"
    assert (await status(pc, t))["status"] == "scanned"
    assert await db.fetchval("SELECT count(*) FROM login_events WHERE result = 'user_blocked'") == 1


async def test_fifty_concurrent_confirms_and_exchanges_have_one_winner_each(pc, apex, db):
    t = await new_ticket(pc)
    phones = [Phone(apex, "mike") for _ in range(50)]
    await asyncio.gather(*(p.login() for p in phones))
    assert (await phones[0].scan(t["ticket"])).status_code == 200
    results = await asyncio.gather(*(p.confirm(t["ticket"]) for p in phones))
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 1, [r.text for r in results if r.status_code != 410]
    assert set(codes) == {200, 410}
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await db.fetchval("SELECT count(*) FROM wechat_identities") == 1

    results = await asyncio.gather(
        *(
            pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
            for _ in range(50)
        )
    )
    assert sorted(r.status_code for r in results) == [200] + [400] * 49
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == 1


async def test_the_user_exists_the_moment_the_browser_hears_confirmed(pc, apex, db):
    """The page exchanges the ticket as soon as its stream says "confirmed", and
    the exchange reads the user: a first login's new user must be committed
    before the ticket says so (it once was not, and a first login failed now
    and then)."""
    for i in range(15):
        t = await new_ticket(pc)
        phone = Phone(apex, f"first{i}")
        assert (await phone.scan(t["ticket"])).status_code == 200

        async def exchange_at_once(t: dict = t) -> httpx.Response:
            await sse_statuses(pc, t)
            return await pc.post(
                f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]}
            )

        exchange = asyncio.create_task(exchange_at_once())
        await asyncio.sleep(0.02)
        assert (await phone.confirm(t["ticket"], nickname=f"First {i}")).status_code == 200
        r = await asyncio.wait_for(exchange, 10)
        assert r.status_code == 200, r.text
        assert r.json()["user"]["nickname"] == f"First {i}"
    assert await db.fetchval("SELECT count(*) FROM login_events WHERE result = 'signup'") == 15


async def test_a_confirmation_is_claimed_before_the_user_is_written(portal, pc, apex, db):
    """The claim decides the one confirmation that may write; a ticket that ends
    between the claim and the confirm (its time, or a cancel) is not confirmed."""
    tickets = portal.state["tickets"]
    t = await new_ticket(pc)
    phone = Phone(apex, "claimer")
    assert (await phone.scan(t["ticket"])).status_code == 200
    appid, openid = await portal.state["redis"].hmget(ticket_key(t["ticket"]), "appid", "openid")
    claim, _ = await tickets.claim(t["ticket"], appid, openid)
    # While it is claimed, another confirmation (a second tap) is refused.
    r = await phone.confirm(t["ticket"])
    assert r.status_code == 410 and r.json()["error"] == "ticket_expired"
    # Released (the first one failed): the scanner can confirm.
    await tickets.release(t["ticket"], claim)
    claim, _ = await tickets.claim(t["ticket"], appid, openid)
    assert (await phone.cancel(t["ticket"])).status_code == 200  # the page gave up meanwhile
    with pytest.raises(Exception) as refused:
        await tickets.confirm(t["ticket"], appid, openid, claim=claim, user_id="u",
                              auth_time=0, nickname="", avatar_url="")  # fmt: skip
    assert getattr(refused.value, "error", None) == "ticket_expired"
    assert (await tickets.state(t["ticket"])).status == "cancelled"
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_a_claim_lost_with_its_master_only_fails_its_own_confirm(portal, pc, apex, db):
    """On a cluster a claim is not waited for on a replica (only the confirm and the
    exchange are): if its master is lost before the replica has it, the promoted
    replica holds the ticket scanned and unclaimed. Shown here by removing the
    claim as that replica would lack it: the confirm with the lost claim's token is
    refused, nothing is confirmed, and the scanner's next claim confirms once."""
    tickets = portal.state["tickets"]
    redis = portal.state["redis"]
    t = await new_ticket(pc)
    phone = Phone(apex, "lostclaim")
    assert (await phone.scan(t["ticket"])).status_code == 200
    appid, openid = await redis.hmget(ticket_key(t["ticket"]), "appid", "openid")
    lost, _ = await tickets.claim(t["ticket"], appid, openid)
    await redis.hdel(ticket_key(t["ticket"]), "claim", "claimexp")  # the replica's copy
    with pytest.raises(Exception) as refused:
        await tickets.confirm(t["ticket"], appid, openid, claim=lost, user_id="u",
                              auth_time=0, nickname="", avatar_url="")  # fmt: skip
    assert getattr(refused.value, "error", None) == "ticket_expired"
    assert (await tickets.state(t["ticket"])).status == "scanned"
    r = await phone.confirm(t["ticket"], nickname="Again")
    assert r.status_code == 200, r.text
    r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
    assert r.status_code == 200 and r.json()["user"]["nickname"] == "Again"
    assert await db.fetchval("SELECT count(*) FROM login_events") == 1


async def test_a_ticket_awaited_through_another_process(acme, portal, settings_factory):
    async with run_portal(portal.settings) as other:
        async with (
            portal.client("acme") as pc_a,
            other.client("acme") as pc_b,
            portal.client() as apex,
        ):
            t = await new_ticket(pc_a)
            stream = asyncio.create_task(sse_statuses(pc_b, t))
            poll = asyncio.create_task(status(pc_b, t, wait=10, known="pending"))
            await asyncio.sleep(0.2)
            nina = Phone(apex, "nina")
            await nina.scan(t["ticket"])
            assert (await asyncio.wait_for(poll, 5))["status"] == "scanned"
            await nina.confirm(t["ticket"])
            assert [s["status"] for s in await asyncio.wait_for(stream, 5)][-1] == "confirmed"
            r = await pc_b.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
            assert r.status_code == 200


async def test_waiters_of_gone_clients_are_cleaned_up(pc, portal):
    waiters = portal.state["waiters"]
    tickets = [await new_ticket(pc) for _ in range(5)]
    streams = []
    for t in tickets:
        cm = pc.stream("GET", f"/api/qrcode/{t['ticket']}/events", params={"secret": t["secret"]})
        lines = (await cm.__aenter__()).aiter_lines()
        await lines.__anext__()
        streams.append((cm, lines))  # keep the iterator: dropping it closes the stream
    polls = [asyncio.create_task(status(pc, t, wait=30, known="pending")) for t in tickets]
    await asyncio.sleep(0.3)
    assert len(waiters) == 10
    for cm, lines in streams:
        await lines.aclose()
        await cm.__aexit__(None, None, None)
    for p in polls:
        p.cancel()
    await asyncio.gather(*polls, return_exceptions=True)

    async def drained():
        for _ in range(100):
            if len(waiters) == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    assert await drained(), len(waiters)
    assert waiters.tickets == 0


async def test_a_private_mini_program_pool_accepts_only_its_own_sessions(portal, db, box, apex):
    async with db.acquire() as conn:
        await pools.create(
            conn, box, slug="priv", name="Private", mp_appid=SECOND_APPID,
            mp_secret="secretofthesecondapp000000000000", allow_http=True,
        )  # fmt: skip
    async with portal.client("priv") as pc:
        t = await new_ticket(pc)
        r = await Phone(apex, "olga").scan(t["ticket"])  # the platform's default mini program
        assert r.status_code == 403 and r.json()["error"] == "wrong_mini_program"
        olga = Phone(apex, "olga", appid=SECOND_APPID)
        assert (await olga.scan_and_confirm(t["ticket"])).status_code == 200
        r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
        assert r.status_code == 200
    assert await db.fetchval("SELECT appid FROM wechat_identities") == SECOND_APPID


async def test_status_reads_follow_changes_made_through_another_process(acme, portal, apex):
    """A process answers plain status reads from what it last heard; changes made
    through any process reach it on the tickets channel."""
    async with (
        run_portal(portal.settings) as other,
        other.client("acme") as pc_b,
        portal.client("acme") as pc_a,
    ):
        t = await new_ticket(pc_a)
        assert (await status(pc_a, t))["status"] == "pending"
        assert (await status(pc_b, t))["status"] == "pending"
        phone = Phone(apex, "quinn")
        await phone.scan(t["ticket"])
        for pc in (pc_a, pc_b):
            seen = None
            for _ in range(50):
                seen = (await status(pc, t))["status"]
                if seen == "scanned":
                    break
                await asyncio.sleep(0.02)
            assert seen == "scanned"
        await phone.confirm(t["ticket"], nickname="Quinn")
        for pc in (pc_a, pc_b):
            for _ in range(50):
                body = await status(pc, t)
                if body["status"] == "confirmed":
                    break
                await asyncio.sleep(0.02)
            assert body == {
                "status": "confirmed",
                "expires_in": 0,
                "scanned_by": {"nickname": "Quinn", "avatar_url": None},
            }


async def test_a_burst_larger_than_the_redis_pool_waits_instead_of_failing(acme, portal):
    small = portal.settings.replace(redis_pool_max=4)
    async with run_portal(small) as running, running.client("acme") as pc:
        results = await asyncio.gather(*(pc.post("/api/qrcode", json={}) for _ in range(60)))
        assert [r.status_code for r in results] == [201] * 60
        tickets = [r.json() for r in results]
        assert len({t["ticket"] for t in tickets}) == 60
        # Creations arriving together went to Redis together (pipelined on one connection).
        assert running.state["tickets"]._mux.writes < 60
        reads = await asyncio.gather(
            *(
                pc.get(
                    f"/api/qrcode/{t['ticket']}/status?secret={t['secret']}&wait=1&known=pending"
                )
                for t in tickets
            )
        )
        assert {r.status_code for r in reads} == {200}


async def test_a_returning_user_is_asked_for_a_phone_once_the_pool_requires_one(
    pc, apex, db, portal
):
    t = await new_ticket(pc)
    assert (await Phone(apex, "nina").scan_and_confirm(t["ticket"])).status_code == 200
    before = await db.fetchrow("SELECT last_login_at, updated_at FROM users")
    await change_pool(db, portal, "phone_required = true")
    t = await new_ticket(pc)
    nina = Phone(apex, "nina")
    r = await nina.scan_and_confirm(t["ticket"])
    assert r.status_code == 400 and r.json()["error"] == "phone_required"
    assert (await status(pc, t))["status"] == "scanned"  # she may confirm again, with it
    assert await db.fetchrow("SELECT last_login_at, updated_at FROM users") == before
    r = await nina.confirm(t["ticket"], phone="13700001234")
    assert r.status_code == 200, r.text
    assert await db.fetchval("SELECT phone_number FROM users") == "13700001234"
    results = [r["result"] for r in await db.fetch("SELECT result FROM login_events ORDER BY id")]
    assert results == ["signup", "phone_required", "success"]


@pytest.mark.parametrize("returning", [False, True], ids=["first login", "returning user"])
async def test_a_login_whose_ticket_ends_meanwhile_is_recorded_as_such(pc, apex, db, returning):
    """The user and the login's event are written before the ticket says
    "confirmed"; when the ticket ends in between (here the phone cancels while
    the database is slow), a user registered for it goes again and the event
    says how the login ended."""
    if returning:
        t = await new_ticket(pc)
        assert (await Phone(apex, "olga").scan_and_confirm(t["ticket"])).status_code == 200
    await db.execute(
        """CREATE FUNCTION pg_temp_slow_event() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;
           CREATE TRIGGER slow_event BEFORE INSERT ON login_events
           FOR EACH ROW EXECUTE FUNCTION pg_temp_slow_event()"""
    )
    try:
        t = await new_ticket(pc)
        olga = Phone(apex, "olga")
        assert (await olga.scan(t["ticket"])).status_code == 200
        confirming = asyncio.create_task(olga.confirm(t["ticket"]))
        await asyncio.sleep(0.2)
        assert (await olga.cancel(t["ticket"])).status_code == 200
        r = await confirming
    finally:
        await db.execute(
            "DROP TRIGGER slow_event ON login_events; DROP FUNCTION pg_temp_slow_event()"
        )
    assert r.status_code == 410 and r.json()["error"] == "ticket_expired"
    assert (await status(pc, t))["status"] == "cancelled"
    results = [r["result"] for r in await db.fetch("SELECT result FROM login_events ORDER BY id")]
    assert results == (["signup"] if returning else []) + ["ticket_expired"]
    assert await db.fetchval("SELECT count(*) FROM users") == (1 if returning else 0)


async def test_one_ticket_may_be_followed_by_a_few_connections_not_thousands(pc, portal):
    """Whoever has a ticket's secret could open stream after stream with it:
    each process holds at most MAX_PER_TICKET waiters (streams and long polls)
    of one ticket, and answers more with 429 until one goes."""
    import contextlib

    from portal.scan.waiters import MAX_PER_TICKET

    t = await new_ticket(pc)
    url = f"/api/qrcode/{t['ticket']}/events"
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(MAX_PER_TICKET):
            r = await streams.enter_async_context(
                pc.stream("GET", url, params={"secret": t["secret"]})
            )
            assert r.status_code == 200
        r = await pc.get(url, params={"secret": t["secret"]})
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert r.headers["retry-after"] == "5"
        r = await pc.get(
            f"/api/qrcode/{t['ticket']}/status",
            params={"secret": t["secret"], "wait": 5, "known": "pending"},
        )
        assert r.status_code == 429
        # Another ticket is not concerned; a plain status read neither.
        other = await new_ticket(pc)
        async with pc.stream("GET", f"/api/qrcode/{other['ticket']}/events",
                             params={"secret": other["secret"]}) as r:  # fmt: skip
            assert r.status_code == 200
        assert (await status(pc, t))["status"] == "pending"
    # The browsers went away: their waiters are gone, and a new stream is taken.
    for _ in range(100):
        if portal.state["waiters"].tickets == 0:
            break
        await asyncio.sleep(0.02)
    async with pc.stream("GET", url, params={"secret": t["secret"]}) as r:
        assert r.status_code == 200


async def test_the_exchange_grants_only_what_the_client_is_registered_for(
    pc, apex, portal, db, box, acme
):
    """Issue 16, finding 6: the QR exchange authenticates no client, so what it
    returns follows the client's registration. A public client gets no refresh
    token (one would work for 30 days without a secret), and a refresh token a
    public client holds from before is refused without being spent; a client
    registered without `phone` gets no phone number. The pool's default
    (confidential) client keeps its refresh token, usable only with its secret."""
    async with db.acquire() as conn, conn.transaction():
        spa, _ = await clients.create(conn, box, pool_id=acme.pool.id, name="SPA",
                                      redirect_uris=["https://spa.example.com/cb"], public=True)  # fmt: skip

    async def login(user: str, nickname: str | None = None, **body) -> dict:
        t = await new_ticket(pc, **body)
        profile = {"nickname": nickname} if nickname else {}
        r = await Phone(apex, user).scan_and_confirm(t["ticket"], phone="13800138000", **profile)
        assert r.status_code == 200, r.text
        r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
        assert r.status_code == 200, r.text
        return r.json()

    jwks = KeySet.import_key_set((await pc.get("/oidc/jwks")).json())
    public = await login("alice", client_id=spa.client_id)
    assert "refresh_token" not in public and public["scope"] == "openid profile phone"
    async with db.acquire() as conn, conn.transaction():
        narrow, _ = await clients.create(conn, box, pool_id=acme.pool.id, name="Narrow",
                                         redirect_uris=["https://n.example.com/cb"],
                                         scopes=["openid", "profile"])  # fmt: skip
    narrowed = await login("bob", nickname="Bob", client_id=narrow.client_id)
    assert "refresh_token" not in narrowed and narrowed["scope"] == "openid profile"
    phone_claims = {"phone_number", "phone_number_verified"}
    claims = jwt.decode(narrowed["id_token"], jwks).claims
    assert not phone_claims & set(claims) and claims["nickname"] == "Bob"
    r = await pc.get(
        "/oidc/userinfo", headers={"authorization": f"Bearer {narrowed['access_token']}"}
    )
    info = r.json()
    assert not phone_claims & set(info) and info["nickname"] == "Bob" and info["sub"]

    default = await login("carol")
    assert default["refresh_token"] and "offline_access" in default["scope"].split()
    refresh = {"grant_type": "refresh_token", "refresh_token": default["refresh_token"]}
    r = await pc.post("/oidc/token", data={**refresh, "client_id": acme.default_client.client_id})
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"
    r = await pc.post("/oidc/token", data=refresh,
                      auth=(acme.default_client.client_id, acme.default_client_secret))  # fmt: skip
    assert r.status_code == 200 and r.json()["refresh_token"], r.text

    # A refresh token a public client got before the fix: refused, and not spent.
    old = secrets.token_urlsafe(32)
    user_id = public["user"]["id"]
    await db.execute(
        """INSERT INTO refresh_tokens (pool_id, client_pk, user_id, token_hash, family_id, scope,
                                      auth_time, expires_at)
           VALUES ($1, $2, $3, $4, $5, 'openid profile phone', now(), now() + interval '30 days')""",
        acme.pool.id, spa.id, uuid.UUID(user_id), box.hash_secret(old), uuid.uuid4(),
    )  # fmt: skip
    r = await pc.post("/oidc/token", data={"grant_type": "refresh_token", "refresh_token": old,
                                           "client_id": spa.client_id})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client", r.text
