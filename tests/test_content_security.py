"""Content security for nicknames and avatars (issue 17, item 6): nicknames through
msgSecCheck v2 before the login is written, avatars through mediaCheckAsync v2 whose
result WeChat pushes later, signed, to /wechat/push/{appid}: hidden until it passes,
removed from every user when risky. The fake implements both, with a blocklist."""

from __future__ import annotations

import asyncio
import hashlib
import io
import secrets
import time

import httpx
import pytest
from PIL import Image

from portal.scan import contentsec, qrimage
from portal.scan.avatars import PLACEHOLDER
from portal.tenants import pools
from portal.wechat import fake
from tests.phone import Phone
from tests.support import free_socket, run_portal


def png_of(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 200), colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def secure(db, box, redis_client, settings_factory, fresh_fake):
    """A portal with content security on, and the pool acme."""
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme")
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}", content_security=True
    )
    async with run_portal(settings, sock=sock) as running:
        yield running


async def ticket_of(running, slug: str = "acme") -> dict:
    async with running.client(slug) as pc:
        return (await pc.post("/api/qrcode")).json()


async def fake_post(url: str, path: str, body: dict) -> dict:
    async with httpx.AsyncClient() as client:
        r = await client.post(url + path, json=body)
        r.raise_for_status()
        return r.json()


async def fake_stats(url: str) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{url}/_fake/stats")).json()


async def test_a_risky_nickname_is_refused_and_nothing_is_written(secure, db, fresh_fake):
    async with secure.client() as apex:
        t = await ticket_of(secure)
        phone = Phone(apex, "alice")
        assert (await phone.scan(t["ticket"])).status_code == 200
        r = await phone.confirm(t["ticket"], nickname="a risky name")
        assert r.status_code == 400
        assert r.json()["error"] == "nickname_refused"
        assert await db.fetchval("SELECT count(*) FROM users") == 0
        # the person picks another: the ticket was still theirs to confirm
        assert (await phone.confirm(t["ticket"], nickname="Alice")).status_code == 200
    assert await db.fetchval("SELECT nickname FROM users") == "Alice"
    assert (await fake_stats(fresh_fake.url))["calls"]["/wxa/msg_sec_check"] == 2


async def test_a_nickname_sent_to_review_is_left_out(secure, db, fresh_fake):
    await fake_post(fresh_fake.url, "/_fake/secblock", {"review": ["maybe"]})
    async with secure.client() as apex:
        t = await ticket_of(secure)
        phone = Phone(apex, "bob")
        assert (await phone.scan_and_confirm(t["ticket"], nickname="maybe bob")).status_code == 200
    assert await db.fetchval("SELECT nickname FROM users") is None


async def test_without_content_security_nothing_is_asked(portal, db, box, apex, fresh_fake):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme")
    t = await ticket_of(portal)
    phone = Phone(apex, "carol")
    assert (await phone.scan_and_confirm(t["ticket"], nickname="risky carol")).status_code == 200
    assert "/wxa/msg_sec_check" not in (await fake_stats(fresh_fake.url))["calls"]


async def upload(apex, phone: Phone, png: bytes) -> str:
    r = await apex.post(
        "/api/mp/avatar",
        files={"avatar": ("a.png", png, "image/png")},
        headers={"authorization": f"Bearer {phone.token}"},
    )
    assert r.status_code == 201, r.text
    return r.json()["avatar_url"]


async def test_an_avatar_is_hidden_until_wechat_pushes_pass(secure, fresh_fake):
    settings = secure.settings
    await fake_post(fresh_fake.url, "/_fake/push", {
        "appid": fake.DEMO_APPID,
        "url": contentsec.push_url(settings, fake.DEMO_APPID),
        "token": contentsec.push_token(settings, fake.DEMO_APPID),
    })  # fmt: skip
    async with secure.client() as apex:
        phone = Phone(apex, "dave")
        (await phone.login()).raise_for_status()
        url = await upload(apex, phone, png_of((10, 120, 200)))
        path = url.removeprefix(settings.base_url)
        for _ in range(100):  # the result comes later, pushed by WeChat
            pushed = (await fake_post(fresh_fake.url, "/_fake/secblock", {}))["pushed"]
            if pushed:
                break
            await asyncio.sleep(0.05)
        assert pushed[0]["status"] == 200 and pushed[0]["suggest"] == "pass"
        r = await apex.get(path)
        assert r.status_code == 200 and r.content != PLACEHOLDER.read_bytes()


async def test_a_risky_avatar_is_removed_from_its_users(secure, db, fresh_fake):
    settings = secure.settings
    async with secure.client() as apex:
        phone = Phone(apex, "erin")
        (await phone.login()).raise_for_status()
        url = await upload(apex, phone, png_of((200, 20, 20)))  # no push URL set: pending
        path = url.removeprefix(settings.base_url)
        r = await apex.get(path)
        assert r.status_code == 200 and r.content == PLACEHOLDER.read_bytes()
        assert r.headers["cache-control"] == "no-cache"
        t = await ticket_of(secure)
        assert (await phone.scan_and_confirm(t["ticket"], avatar_url=url)).status_code == 200
        assert await db.fetchval("SELECT avatar_url FROM users") == url
        trace_id = await db.fetchval("SELECT trace_id FROM avatar_checks")
        event = {"Event": "wxa_media_check", "appid": fake.DEMO_APPID, "trace_id": trace_id,
                 "version": 2, "result": {"suggest": "risky", "label": 20002}}  # fmt: skip
        token = contentsec.push_token(settings, fake.DEMO_APPID)
        ts, nonce = str(int(time.time())), secrets.token_hex(4)
        good = hashlib.sha1("".join(sorted([token, ts, nonce])).encode()).hexdigest()  # noqa: S324
        push = f"/wechat/push/{fake.DEMO_APPID}"
        # WeChat's signature is checked: a forged push changes nothing
        forged = await apex.post(
            push, params={"signature": "0" * 40, "timestamp": ts, "nonce": nonce}, json=event
        )
        assert forged.status_code == 403
        stale = str(int(time.time()) - 3600)
        old = hashlib.sha1("".join(sorted([token, stale, nonce])).encode()).hexdigest()  # noqa: S324
        assert (
            await apex.post(
                push, params={"signature": old, "timestamp": stale, "nonce": nonce}, json=event
            )
        ).status_code == 403
        assert await db.fetchval("SELECT avatar_url FROM users") == url
        # WeChat's URL check echoes echostr
        check = await apex.get(
            push, params={"signature": good, "timestamp": ts, "nonce": nonce, "echostr": "hi"}
        )
        assert (check.status_code, check.text) == (200, "hi")
        r = await apex.post(
            push, params={"signature": good, "timestamp": ts, "nonce": nonce}, json=event
        )
        assert (r.status_code, r.text) == (200, "success")
        assert await db.fetchval("SELECT avatar_url FROM users") is None
        assert (await apex.get(path)).status_code == 404
    sha = hashlib.sha256(
        qrimage.normalize_avatar(png_of((200, 20, 20)), max_bytes=10**6)
    ).hexdigest()
    assert path.endswith(sha + ".png")


async def test_the_fake_requires_v2_and_the_openid(fresh_fake, portal):
    wechat = portal.state["wechat"]
    from portal.wechat.errors import WeChatError

    with pytest.raises(WeChatError) as info:
        await wechat.msg_sec_check(fake.DEMO_APPID, fake.DEMO_SECRET, "", "hello")
    assert info.value.errcode == 40097
    result = await wechat.msg_sec_check(fake.DEMO_APPID, fake.DEMO_SECRET, "oX", "违规内容")
    assert result["result"]["suggest"] == "risky"
