"""One link rule per mini program (issue 17, item 1): QR codes of every pool on the
default mini program under ``{PORTAL_QR_BASE}/q/``, a private mini program's own
prefix, the verification files WeChat checks, and the fake's rules (capped, one
owner per prefix, a scan opens the mini program only under a published rule)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from portal.errors import ValidationError
from portal.tenants import linkrules, mpsetup, pools
from portal.wechat import fake
from portal.wechat.errors import ErrCode, WeChatError
from tests.phone import Phone
from tests.support import free_socket, run_portal

B2_APPID = "wx00000000000000b2"
B2_SECRET = "secretofthesecondapp000000000000"


async def open_in_wechat(fake_url: str, content: str) -> httpx.Response:
    """What WeChat's scanner does with the QR content (the fake's rule check)."""
    async with httpx.AsyncClient() as client:
        return await client.post(f"{fake_url}/_fake/scan", json={"content": content})


async def publish_default(portal, db) -> mpsetup.MiniProgram:
    mp = await mpsetup.resolve(db, portal.settings, portal.state["box"], None)
    await mpsetup.publish_rule(db, portal.state["wechat"], mp)
    return mp


async def test_300_pools_on_the_default_mini_program_share_one_rule(portal, db, box, fresh_fake):
    async with db.acquire() as conn:
        for i in range(300):
            await pools.create(conn, box, slug=f"p{i}", name=f"Pool {i}")
    mp = await publish_default(portal, db)
    assert mp.prefix == f"{portal.settings.base_url}/q/"
    async with httpx.AsyncClient() as client:
        rules = (await client.post(f"{fresh_fake.url}/_fake/linkrules", json={})).json()
    assert [r["prefix"] for r in rules["rules"]] == [mp.prefix]  # one rule for all

    # New connections only: on a loaded machine a kept-alive one may sit idle past
    # uvicorn's keep-alive timeout and be closed under the next request.
    fresh = httpx.Limits(max_keepalive_connections=0)
    phone_http = portal.client(limits=fresh)
    phone = Phone(phone_http, "alice")
    (await phone.login()).raise_for_status()
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with gate, portal.client(f"p{i}", limits=fresh) as pc:
            created = (await pc.post("/api/qrcode")).json()
            ticket = created["ticket"]
            assert created["qrcode"]["content"] == mp.prefix + ticket
            opened = await open_in_wechat(fresh_fake.url, created["qrcode"]["content"])
            assert opened.status_code == 200, opened.text
            assert opened.json()["appid"] == fake.DEMO_APPID
            assert opened.json()["path"] == mpsetup.LOGIN_PAGE
            r = await phone.scan_and_confirm(ticket)
            assert r.status_code == 200, r.text
            status = await pc.get(f"/api/qrcode/{ticket}/status?secret={created['secret']}")
            assert status.json()["status"] == "confirmed"

    try:
        await asyncio.gather(*(one(i) for i in range(300)))
    finally:
        await phone_http.aclose()


async def test_the_apex_q_page_shows_any_pools_ticket(portal, db, box, apex):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme 演示")
    async with portal.client("acme") as pc:
        ticket = (await pc.post("/api/qrcode")).json()["ticket"]
    page = await apex.get(f"/q/{ticket}")
    assert page.status_code == 200
    assert "Acme 演示" in page.text
    assert f"acme.{portal.settings.apex_netloc}/logo" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert (await apex.get("/q/nosuchticketnosuchticket00")).status_code == 404


async def test_verification_files_are_served_where_wechat_looks(portal, db, box, apex):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme")
        await pools.create(
            conn, box, slug="own", name="Own", mp_appid=B2_APPID, mp_secret=B2_SECRET
        )
    await linkrules.set_file(db, fake.DEMO_APPID, "abc123.txt", "platformcontent")
    await linkrules.set_file(db, B2_APPID, "own456.txt", "privatecontent")
    for path in ("/q/abc123.txt", "/abc123.txt"):
        r = await apex.get(path)
        assert (r.status_code, r.text) == (200, "platformcontent")
        assert r.headers["content-type"].startswith("text/plain")
    async with portal.client("own") as own, portal.client("acme") as acme:
        for path in ("/q/own456.txt", "/own456.txt"):
            r = await own.get(path)
            assert (r.status_code, r.text) == (200, "privatecontent")
            # nowhere else: not on the apex, not on a pool of the default mini program
            assert (await apex.get(path)).status_code == 404
            assert (await acme.get(path)).status_code == 404
        assert (await own.get("/abc123.txt")).status_code == 404
        assert (await acme.get("/abc123.txt")).status_code == 404
    assert (await apex.get("/q/other.txt")).status_code == 404


async def test_a_private_mini_program_has_a_prefix_of_its_own(portal, db, box, apex, fresh_fake):
    async with httpx.AsyncClient() as client:
        await client.post(
            f"{fresh_fake.url}/_fake/apps", json={"appid": B2_APPID, "secret": B2_SECRET}
        )
    async with db.acquire() as conn:
        await pools.create(
            conn, box, slug="own", name="Own", mp_appid=B2_APPID, mp_secret=B2_SECRET
        )
        await pools.create(conn, box, slug="acme", name="Acme")
    await publish_default(portal, db)
    mp = await mpsetup.resolve(db, portal.settings, box, "own")
    assert mp.prefix == f"{portal.settings.pool_url('own')}/q/"
    result = await mpsetup.publish_rule(db, portal.state["wechat"], mp)
    assert result["published"] and result["verify_file"]

    async with portal.client("own") as pc:
        created = (await pc.post("/api/qrcode")).json()
    content = created["qrcode"]["content"]
    assert content == mp.prefix + created["ticket"]
    opened = (await open_in_wechat(fresh_fake.url, content)).json()
    assert opened["appid"] == B2_APPID  # the private one, not the platform's
    phone = Phone(apex, "bob", appid=B2_APPID)
    assert (await phone.scan_and_confirm(created["ticket"])).status_code == 200

    # the default mini program's prefix, or another pool's host, cannot be claimed
    own = await pools.get_by_slug(db, "own")
    for taken in (portal.settings.qr_prefix, f"{portal.settings.pool_url('acme')}/q/"):
        with pytest.raises(linkrules.PrefixTaken):
            await linkrules.set_prefix(db, portal.settings, own, taken.replace("http:", "https:"))


async def test_a_custom_prefix_is_unique_across_pools(portal, db, box):
    async with db.acquire() as conn:
        await pools.create(
            conn, box, slug="one", name="One", mp_appid=B2_APPID, mp_secret=B2_SECRET
        )
        await pools.create(
            conn, box, slug="two", name="Two", mp_appid="wx00000000000000b3", mp_secret="s" * 32
        )
    one = await pools.get_by_slug(db, "one")
    two = await pools.get_by_slug(db, "two")
    got = await linkrules.set_prefix(db, portal.settings, one, "https://login.one.example/q/")
    assert got == "https://login.one.example/q/"
    one = await pools.get_by_slug(db, "one")
    assert linkrules.content(portal.settings, one, "T") == "https://login.one.example/q/T"
    with pytest.raises(linkrules.PrefixTaken):
        await linkrules.set_prefix(db, portal.settings, two, "https://login.one.example/q/")
    with pytest.raises(ValidationError):
        await linkrules.set_prefix(db, portal.settings, two, "https://login.two.example/other/")


async def test_wechat_refuses_a_prefix_of_another_mini_program_and_a_full_list(
    portal, db, box, fresh_fake
):
    async with httpx.AsyncClient() as client:
        await client.post(
            f"{fresh_fake.url}/_fake/apps", json={"appid": B2_APPID, "secret": B2_SECRET}
        )
    await publish_default(portal, db)
    wechat = portal.state["wechat"]
    with pytest.raises(WeChatError) as info:
        await wechat.link_rule_add(
            B2_APPID, B2_SECRET, portal.settings.qr_prefix, "pages/login/index"
        )
    assert info.value.errcode == ErrCode.LINK_TAKEN == 85072
    async with httpx.AsyncClient() as client:
        await client.post(f"{fresh_fake.url}/_fake/linkrules", json={"max": 2})
    await wechat.link_rule_add(B2_APPID, B2_SECRET, "https://a.example/q/", "pages/login/index")
    await wechat.link_rule_add(B2_APPID, B2_SECRET, "https://b.example/q/", "pages/login/index")
    with pytest.raises(WeChatError) as info:
        await wechat.link_rule_add(B2_APPID, B2_SECRET, "https://c.example/q/", "pages/login/index")
    assert info.value.errcode == ErrCode.LINK_RULES_FULL == 85073
    # publishing needs the verification file under the prefix (nobody serves a.example)
    with pytest.raises(WeChatError) as info:
        await wechat.link_rule_publish(B2_APPID, B2_SECRET, "https://a.example/q/")
    assert info.value.errcode == ErrCode.LINK_VERIFY_FAILED


async def test_wechat_opens_the_mini_program_only_under_a_published_rule(portal, db, fresh_fake):
    content = f"{portal.settings.qr_prefix}abcdefghijklmnopqrstuv"
    r = await open_in_wechat(fresh_fake.url, content)
    assert r.status_code == 404
    assert r.json()["error"] == "no_rule"
    assert "web link" in r.json()["error_description"]
    async with httpx.AsyncClient() as client:
        await client.post(
            f"{fresh_fake.url}/_fake/linkrules",
            json={
                "appid": fake.DEMO_APPID,
                "prefix": portal.settings.qr_prefix,
                "published": False,
            },
        )
    r = await open_in_wechat(fresh_fake.url, content)
    assert r.status_code == 404 and "not published" in r.json()["error_description"]
    await publish_default(portal, db)  # the verification file is served: WeChat publishes
    r = await open_in_wechat(fresh_fake.url, content)
    assert r.status_code == 200 and r.json()["q"] == content


def test_cli_sets_the_verification_file_and_the_prefix(portal_cli, db):
    out = portal_cli("mp", "verify-file", "abc123.txt", "--content", "hello")
    assert out.returncode == 0, out.stderr
    assert '"verify_urls": ["https://login.example.com/q/abc123.txt", ' in out.stdout
    bad = portal_cli("mp", "verify-file", "../etc.txt", "--content", "x")
    assert bad.returncode == 2 and "invalid_verify_file" in bad.stderr
    created = portal_cli("pool", "create", "acme", "--name", "Acme")
    assert created.returncode == 0, created.stderr
    refused = portal_cli("mp", "prefix", "acme", "https://login.acme.example/q/")
    assert refused.returncode == 2 and "invalid_qr_prefix" in refused.stderr


async def test_the_phone_simulator_opens_only_under_a_published_rule(
    db, box, redis_client, settings_factory, fresh_fake
):
    """/dev/phone/open asks the fake WeChat's scanner, as the simulator's Scan does."""
    sock = free_socket()
    settings = settings_factory(env="dev", base_url=f"http://localhost:{sock.getsockname()[1]}")
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme")
    async with run_portal(settings, sock=sock) as running, running.client() as apex:
        async with running.client("acme") as pc:
            content = (await pc.post("/api/qrcode")).json()["qrcode"]["content"]
        r = await apex.post("/dev/phone/open", json={"content": content})
        assert r.status_code == 404
        assert r.json()["error"] == "no_link_rule"
        assert "web link" in r.json()["error_description"]
        await asyncio.to_thread(
            fake.publish_link_rule, fresh_fake.url, fake.DEMO_APPID, settings.qr_prefix
        )
        r = await apex.post("/dev/phone/open", json={"content": content})
        assert r.status_code == 200
        assert r.json()["appid"] == fake.DEMO_APPID
        # an older QR of the pool's own host: no mini program has that rule
        old = content.replace("//localhost", "//acme.localhost")
        r = await apex.post("/dev/phone/open", json={"content": old})
        assert r.status_code == 404


async def test_a_pool_admin_sets_the_prefix_and_file_in_the_console(portal, db, box, apex):
    from portal.tenants import admins
    from tests.test_console import Console

    password = "correct horse battery staple"
    async with db.acquire() as conn:
        await pools.create(
            conn, box, slug="own", name="Own", mp_appid=B2_APPID, mp_secret=B2_SECRET
        )
        await pools.create(conn, box, slug="acme", name="Acme")
        await admins.create(
            conn, email="o@example.com", password=password, pool_slugs=["own", "acme"]
        )
        await admins.create(conn, email="x@example.com", password=password, pool_slugs=["acme"])
    console = Console(portal)
    other = Console(portal)
    try:
        assert (await console.login("o@example.com", password)).status_code == 303
        page = await console.get("/console/pools/own")
        assert f"{portal.settings.pool_url('own')}/q/" in page.text
        r = await console.post(
            "/console/pools/own/link-rule",
            {"prefix": "", "file_name": "own456.txt", "file_content": "privatecontent"},
        )
        assert r.status_code == 303
        async with portal.client("own") as own:
            got = await own.get("/q/own456.txt")
            assert (got.status_code, got.text) == (200, "privatecontent")
        # the platform's prefix is not the pool's to take; a bad file name is refused
        await console.post(
            "/console/pools/own/link-rule",
            {"prefix": portal.settings.qr_prefix.replace("http:", "https:")},
        )
        await console.post(
            "/console/pools/own/link-rule", {"prefix": "", "file_name": "../x", "file_content": "y"}
        )
        assert await db.fetchval("SELECT mp_qr_prefix FROM pools WHERE slug = 'own'") is None
        assert await db.fetchval("SELECT name FROM mp_verify_files") == "own456.txt"
        r = await console.post(
            "/console/pools/own/link-rule", {"prefix": "https://login.own.example/q/"}
        )
        assert r.status_code == 303
        assert await db.fetchval("SELECT mp_qr_prefix FROM pools WHERE slug = 'own'") == (
            "https://login.own.example/q/"
        )
        # a pool on the default mini program has no rule of its own
        await console.post("/console/pools/acme/link-rule", {"prefix": "https://a.example/q/"})
        assert await db.fetchval("SELECT mp_qr_prefix FROM pools WHERE slug = 'acme'") is None
        # another pool's admin, and a post without the CSRF token, change nothing
        assert (await other.login("x@example.com", password)).status_code == 303
        r = await other.post("/console/pools/own/link-rule", {"prefix": ""})
        assert r.status_code == 404
        await console.http.post("/console/pools/own/link-rule", data={"prefix": ""})
        assert await db.fetchval("SELECT mp_qr_prefix FROM pools WHERE slug = 'own'") == (
            "https://login.own.example/q/"
        )
    finally:
        await console.aclose()
        await other.aclose()
