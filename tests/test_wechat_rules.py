"""WeChat's own rules, enforced by the fake as WeChat does, and the portal's
answers to them over real HTTP (issue 17: unionid only for bound mini programs,
wx.login and phone codes that expire and work once, phone codes that belong to
one user, a number on file not bought again, the IP whitelist's 40164)."""

import asyncio

import httpx
import pytest

from portal.tenants import pools
from portal.wechat.fake import DEMO_APPID, openid_for
from tests.phone import Phone
from tests.test_console import PASSWORD, Console
from tests.test_scan_flow import SECOND_APPID, change_pool, new_ticket, status

SECOND_SECRET = "secretofthesecondapp000000000000"
OPEN_PLATFORM = "wxopen0000000001"
PHONE_PATH = "/wxa/business/getuserphonenumber"


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)


@pytest.fixture
async def control(fresh_fake):
    async with httpx.AsyncClient(base_url=fresh_fake.url) as client:
        yield client
        await client.post("/_fake/reset")  # bindings and whitelists go back as they were


async def mint(control, path, **body) -> str:
    r = await control.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()["code"]


async def phone_calls(control) -> int:
    return (await control.get("/_fake/stats")).json()["calls"].get(PHONE_PATH, 0)


async def mp_sessions(redis_client) -> int:
    return len([key async for key in redis_client.scan_iter("mps:*")])


# -- wx.login codes: 5 minutes, once -------------------------------------------


async def test_an_expired_wx_login_code_is_a_clear_400(apex, control, redis_client):
    code = await mint(control, "/_fake/wxlogin", appid=DEMO_APPID, user="mia")
    await control.post("/_fake/clock", json={"advance": 301})
    r = await apex.post("/api/mp/session", json={"appid": DEMO_APPID, "code": code})
    assert r.status_code == 400 and r.json()["error"] == "invalid_code", r.text
    assert set(r.json()) == {"error", "error_description"}
    assert await mp_sessions(redis_client) == 0


async def test_a_wx_login_code_works_once_even_at_once(apex, control, redis_client):
    code = await mint(control, "/_fake/wxlogin", appid=DEMO_APPID, user="mia")
    body = {"appid": DEMO_APPID, "code": code}
    answers = await asyncio.gather(*(apex.post("/api/mp/session", json=body) for _ in range(4)))
    assert sorted(r.status_code for r in answers) == [200, 400, 400, 400]
    assert {r.json()["error"] for r in answers if r.status_code == 400} == {"code_used"}
    assert await mp_sessions(redis_client) == 1
    again = await apex.post("/api/mp/session", json=body)
    assert again.status_code == 400 and again.json()["error"] == "code_used"


# -- unionid: only from a mini program bound to an Open Platform account --------


async def move_acme_to_the_second_app(db, portal, box) -> None:
    sealed = box.encrypt(SECOND_SECRET, pools.mp_secret_context(1))
    await db.execute(
        "UPDATE pools SET mp_appid = $1, mp_secret_enc = $2 WHERE slug = 'acme'",
        SECOND_APPID,
        sealed,
    )
    await change_pool(db, portal, "mp_appid = mp_appid")


@pytest.mark.parametrize("bound", [True, False])
async def test_unionid_links_only_bound_mini_programs(
    portal, pc, apex, db, box, acme, control, bound
):
    if bound:
        for appid, secret in [(DEMO_APPID, None), (SECOND_APPID, SECOND_SECRET)]:
            secret = secret or portal.settings.default_mp_secret
            body = {"appid": appid, "secret": secret, "bound": OPEN_PLATFORM}
            (await control.post("/_fake/apps", json=body)).raise_for_status()
    t = await new_ticket(pc)
    assert (await Phone(apex, "kate").scan_and_confirm(t["ticket"])).status_code == 200
    # The pool moves to its own mini program: same person, another openid.
    await move_acme_to_the_second_app(db, portal, box)
    t = await new_ticket(pc)
    r = await Phone(apex, "kate", appid=SECOND_APPID).scan_and_confirm(t["ticket"])
    assert r.status_code == 200, r.text
    assert await db.fetchval("SELECT count(DISTINCT openid) FROM wechat_identities") == 2
    if bound:  # the same unionid: the same user
        assert await db.fetchval("SELECT count(*) FROM users") == 1
        assert await db.fetchval("SELECT count(DISTINCT unionid) FROM wechat_identities") == 1
    else:  # no unionid at all: nothing to link by, a second user
        assert await db.fetchval("SELECT count(*) FROM users") == 2
        assert await db.fetchval("SELECT count(unionid) FROM wechat_identities") == 0


# -- phone codes: 5 minutes, once, for one user; a number on file is not bought again --


async def confirm_with(apex, phone: Phone, ticket: str, phone_code: str) -> httpx.Response:
    return await apex.post(
        f"/api/mp/tickets/{ticket}/confirm",
        json={"phone_code": phone_code},
        headers={"authorization": f"Bearer {phone.token}"},
    )


async def test_a_phone_code_is_checked_against_the_scanner(portal, pc, apex, db, acme, control):
    await change_pool(db, portal, "phone_required = true")
    mia = Phone(apex, "mia")
    t = await new_ticket(pc)
    assert (await mia.scan(t["ticket"])).json()["phone_required"] is True
    # A code minted for someone else's openid (a code that leaked from another phone).
    ned = openid_for(DEMO_APPID, "ned")
    stolen = await mint(control, "/_fake/phonecode", appid=DEMO_APPID, phone="1370000", openid=ned)
    r = await confirm_with(apex, mia, t["ticket"], stolen)
    assert r.status_code == 400 and r.json()["error"] == "invalid_phone_code", r.text
    # An expired one of her own.
    own = openid_for(DEMO_APPID, "mia")
    old = await mint(control, "/_fake/phonecode", appid=DEMO_APPID, phone="1380000", openid=own)
    await control.post("/_fake/clock", json={"advance": 301})
    r = await confirm_with(apex, mia, t["ticket"], old)
    assert r.status_code == 400 and r.json()["error"] == "invalid_phone_code", r.text
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert (await status(pc, t))["status"] == "scanned"  # she may try again
    fresh = await mint(control, "/_fake/phonecode", appid=DEMO_APPID, phone="1390000", openid=own)
    r = await confirm_with(apex, mia, t["ticket"], fresh)
    assert r.status_code == 200, r.text
    assert await db.fetchval("SELECT phone_number FROM users") == "1390000"
    # Used: refused, whoever sends it (mia's number is on file: she is not asked again).
    t = await new_ticket(pc)
    ned_phone = Phone(apex, "ned")
    await ned_phone.scan(t["ticket"])
    r = await confirm_with(apex, ned_phone, t["ticket"], fresh)
    assert r.status_code == 400 and r.json()["error"] == "invalid_phone_code", r.text
    assert await db.fetchval("SELECT count(*) FROM users") == 1


async def test_a_number_on_file_is_not_asked_of_wechat_again(portal, pc, apex, db, acme, control):
    await change_pool(db, portal, "phone_required = true")
    mia = Phone(apex, "mia")
    t = await new_ticket(pc)
    assert (await mia.scan_and_confirm(t["ticket"], phone="13900000001")).status_code == 200
    assert await phone_calls(control) == 1
    t = await new_ticket(pc)
    r = await mia.scan(t["ticket"])
    assert r.json()["phone_required"] is False  # the mini program shows no phone button
    # A mini program that sends a code anyway: WeChat is not asked (nor paid).
    assert (await mia.confirm(t["ticket"], phone="13900000002")).status_code == 200
    assert await phone_calls(control) == 1
    assert await db.fetchval("SELECT phone_number FROM users") == "13900000001"
    # Someone without a number is still asked.
    t = await new_ticket(pc)
    r = await Phone(apex, "ned").scan(t["ticket"])
    assert r.json()["phone_required"] is True


# -- the IP whitelist (40164) ----------------------------------------------------


async def test_an_address_off_the_whitelist_is_a_clear_503(portal, pc, apex, db, acme, control):
    body = {"appid": DEMO_APPID, "ips": ["203.0.113.7"]}
    (await control.post("/_fake/ipwhitelist", json=body)).raise_for_status()
    mia = Phone(apex, "mia")
    t = await new_ticket(pc)
    assert (await mia.scan(t["ticket"])).status_code == 200  # code2Session needs no token
    r = await mia.confirm(t["ticket"], phone="13900000001")
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "wechat_ip_not_whitelisted"
    assert "203.0.113.7" not in r.text and "127.0.0.1" not in r.text  # nothing internal
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert (await status(pc, t))["status"] == "scanned"


async def test_console_test_connection_names_the_address_to_add(portal, db, box, control):
    from portal.tenants import admins

    async with db.acquire() as conn:
        await pools.create(conn, box, slug="alpha", name="Alpha", allow_http=True)
        await admins.create(conn, email="a@example.com", password=PASSWORD, pool_slugs=["alpha"])
    body = {"appid": SECOND_APPID, "ips": ["203.0.113.7"]}
    (await control.post("/_fake/ipwhitelist", json=body)).raise_for_status()
    console = Console(portal)
    try:
        assert (await console.login("a@example.com")).status_code == 303
        form = {"mode": "private", "appid": SECOND_APPID, "secret": SECOND_SECRET}
        r = await console.post("/console/pools/alpha/mini-program/test", form)
        assert r.status_code == 200
        # The address WeChat saw (the fake's errmsg names it, as WeChat's does).
        assert "出口地址 127.0.0.1 不在小程序的 IP 白名单中" in r.text and "40164" in r.text
        r = await console.post(
            "/console/pools/alpha/mini-program/test", form, headers={"accept-language": "en"}
        )
        assert "outgoing address 127.0.0.1 is not on the mini program" in r.text
        # Saving it says the same (not "the AppSecret is wrong"), and saves nothing.
        r = await console.post("/console/pools/alpha/mini-program", form)
        assert r.status_code == 400
        assert "出口地址 127.0.0.1 不在小程序的 IP 白名单中" in r.text
        assert "不接受这个 AppID 和 AppSecret" not in r.text
        assert await db.fetchval("SELECT mp_appid FROM pools WHERE slug = 'alpha'") is None
    finally:
        await console.aclose()


async def test_a_mini_program_code_off_the_whitelist_is_a_clear_503(portal, db, box, control):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="wxa", name="Wxa", allow_http=True, qr_type="wxacode")
    await db.execute("UPDATE pools SET qr_fallback = false WHERE slug = 'wxa'")
    body = {"appid": DEMO_APPID, "ips": ["203.0.113.7"]}
    (await control.post("/_fake/ipwhitelist", json=body)).raise_for_status()
    async with portal.client("wxa") as pc:
        t = await new_ticket(pc)
        r = await pc.get(f"/api/qrcode/{t['ticket']}.png")
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "wechat_ip_not_whitelisted"
