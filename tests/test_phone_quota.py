"""Phone numbers as WeChat sells them (issue 17, item 4): when the mini program's
getPhoneNumber quota is spent, the button gives errno 1400001 and no code. The fake
enforces a per-AppID quota; the portal counts every call per pool and day, answers
a pool that needs a number with 503 ``phone_quota_exhausted`` (nothing written, the
ticket still scanned), lets any other pool's login go on without one, and the
console shows the calls per day, to that pool's admin only."""

from __future__ import annotations

import html
import re

import httpx
import pytest

from portal.tenants import admins, pools
from portal.wechat import fake
from portal.wechat.errors import PHONE_QUOTA_ERRNO
from tests.phone import Phone
from tests.test_console import Console

PASSWORD = "correct horse battery staple"


async def fake_post(fake_url: str, path: str, body: dict) -> dict:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{fake_url}{path}", json=body)
        r.raise_for_status()
        return r.json()


async def press_phone_button(fake_url: str, phone: str, openid: str) -> dict:
    """The getPhoneNumber button's event detail, as WeChat mints it (the fake's)."""
    return await fake_post(
        fake_url, "/_fake/phonecode", {"appid": fake.DEMO_APPID, "phone": phone, "openid": openid}
    )


async def calls(db, slug: str) -> dict[str, int]:
    rows = await db.fetch(
        """SELECT c.outcome, sum(c.calls) AS n FROM phone_calls c JOIN pools p ON p.id = c.pool_id
           WHERE p.slug = $1 GROUP BY c.outcome""",
        slug,
    )
    return {r["outcome"]: int(r["n"]) for r in rows}


@pytest.fixture
async def setup(portal, db, box, fresh_fake):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="phoneco", name="PhoneCo")
        await pools.create(conn, box, slug="plain", name="Plain")
        await conn.execute("UPDATE pools SET phone_required = true WHERE slug = 'phoneco'")
    return portal


async def ticket_of(portal, slug: str) -> dict:
    async with portal.client(slug) as pc:
        return (await pc.post("/api/qrcode")).json()


async def status_of(portal, slug: str, t: dict) -> str:
    async with portal.client(slug) as pc:
        r = await pc.get(
            f"/api/qrcode/{t['ticket']}/status", headers={"x-ticket-secret": t["secret"]}
        )
        return r.json()["status"]


async def test_the_fake_enforces_a_per_app_phone_quota(setup, fresh_fake, apex):
    openid = fake.openid_for(fake.DEMO_APPID, "alice")
    given = await fake_post(
        fresh_fake.url, "/_fake/phonequota", {"appid": fake.DEMO_APPID, "quota": 1}
    )
    assert given["quota"] == 1
    first = await press_phone_button(fresh_fake.url, "13800138000", openid)
    assert "code" in first
    t = await ticket_of(setup, "phoneco")
    phone = Phone(apex, "alice")
    assert (await phone.scan(t["ticket"])).status_code == 200
    r = await apex.post(
        f"/api/mp/tickets/{t['ticket']}/confirm",
        json={"phone_code": first["code"]},
        headers={"authorization": f"Bearer {phone.token}"},
    )
    assert r.status_code == 200, r.text
    spent = await press_phone_button(fresh_fake.url, "13800138001", openid)
    assert spent == {"errno": PHONE_QUOTA_ERRNO, "errMsg": fake.PHONE_QUOTA_ERRMSG}
    await fake_post(fresh_fake.url, "/_fake/phonequota", {"appid": fake.DEMO_APPID, "quota": None})
    assert "code" in await press_phone_button(fresh_fake.url, "13800138001", openid)


async def test_a_pool_that_needs_a_number_answers_a_clear_error(setup, db, apex, fresh_fake):
    await fake_post(fresh_fake.url, "/_fake/phonequota", {"appid": fake.DEMO_APPID, "quota": 0})
    openid = fake.openid_for(fake.DEMO_APPID, "alice")
    event = await press_phone_button(fresh_fake.url, "13800138000", openid)
    assert event["errno"] == PHONE_QUOTA_ERRNO
    t = await ticket_of(setup, "phoneco")
    phone = Phone(apex, "alice")
    scanned = await phone.scan(t["ticket"])
    assert scanned.json()["phone_required"] is True
    r = await apex.post(
        f"/api/mp/tickets/{t['ticket']}/confirm",
        json={"phone_errno": event["errno"]},
        headers={"authorization": f"Bearer {phone.token}"},
    )
    assert r.status_code == 503
    assert r.json()["error"] == "phone_quota_exhausted"
    assert "right now" in r.json()["error_description"]
    # nothing half-written: no user, the ticket still scanned (the person may retry)
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await status_of(setup, "phoneco", t) == "scanned"
    assert await calls(db, "phoneco") == {"quota": 1}
    bad = await apex.post(
        f"/api/mp/tickets/{t['ticket']}/confirm",
        json={"phone_errno": "1400001"},
        headers={"authorization": f"Bearer {phone.token}"},
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"


async def test_a_pool_that_allows_it_logs_in_without_a_number(setup, db, apex):
    t = await ticket_of(setup, "plain")
    phone = Phone(apex, "bob")
    assert (await phone.scan(t["ticket"])).status_code == 200
    r = await apex.post(
        f"/api/mp/tickets/{t['ticket']}/confirm",
        json={"phone_errno": PHONE_QUOTA_ERRNO},
        headers={"authorization": f"Bearer {phone.token}"},
    )
    assert r.status_code == 200, r.text
    assert await status_of(setup, "plain", t) == "confirmed"
    assert await db.fetchval("SELECT phone_number FROM users") is None
    assert await calls(db, "plain") == {"quota": 1}


async def test_paid_and_refused_calls_are_counted_per_pool(setup, db, apex):
    t = await ticket_of(setup, "phoneco")
    phone = Phone(apex, "carol")
    assert (await phone.scan(t["ticket"])).status_code == 200
    r = await phone.confirm(t["ticket"], phone="invalid")  # not a code the fake knows
    assert r.status_code == 400 and r.json()["error"] == "invalid_phone_code"
    assert (await phone.confirm(t["ticket"], phone="13800138000")).status_code == 200
    assert await calls(db, "phoneco") == {"refused": 1, "ok": 1}
    assert await calls(db, "plain") == {}


async def test_the_console_shows_phone_calls_per_day_to_the_pools_admin_only(setup, db, apex):
    async with db.acquire() as conn:
        await admins.create(conn, email="p@example.com", password=PASSWORD, pool_slugs=["phoneco"])
        await admins.create(conn, email="q@example.com", password=PASSWORD, pool_slugs=["plain"])
    t = await ticket_of(setup, "phoneco")
    phone = Phone(apex, "dave")
    await phone.scan(t["ticket"])
    assert (await phone.confirm(t["ticket"], phone="13800138000")).status_code == 200
    await apex.post(  # a second login attempt of another user hits the quota
        f"/api/mp/tickets/{(t2 := await ticket_of(setup, 'phoneco'))['ticket']}/scan",
        headers={"authorization": f"Bearer {(await _session(apex, 'erin'))}"},
    )
    await apex.post(
        f"/api/mp/tickets/{t2['ticket']}/confirm",
        json={"phone_errno": PHONE_QUOTA_ERRNO},
        headers={"authorization": f"Bearer {await _session(apex, 'erin')}"},
    )
    console = Console(setup)
    try:
        assert (await console.login("p@example.com", PASSWORD)).status_code == 303
        page = await console.get("/console/pools/phoneco/logins")
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert "每日手机号调用次数" in text or "Phone-number calls per day" in text
        row = re.search(r'id="phone-calls".*?<tbody>(.*?)</tbody>', page.text, re.S)
        assert row and "<td>1</td><td>0</td><td>1</td>" in row.group(1)
        assert (await console.get("/console/pools/plain/logins")).status_code == 404
    finally:
        await console.aclose()


async def _session(apex, user: str) -> str:
    phone = Phone(apex, user)
    (await phone.login()).raise_for_status()
    return phone.token  # type: ignore[return-value]
