"""A private mini program belongs to one pool (issue 16, finding 1), and the
fake WeChat's access log in ``portal dev`` shows no AppSecret or code (finding 12).

Over real HTTP against real PostgreSQL, Redis and the fake WeChat: a tenant
admin names another pool's AppID in the console, two pools claim one AppID at
the same moment, the CLI does what the console does, and a wrong AppSecret
cannot borrow the mini program's cached access token.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time

import httpx
import pytest

from portal.tenants import admins, pools
from portal.wechat import fake
from portal.wechat.client import WeChatClient, WeChatError
from tests import leakcheck
from tests.phone import Phone
from tests.support import free_port
from tests.test_console import PASSWORD, Console

CAROL_APPID = "wx00000000000000b2"  # the fake's second mini program (conftest)
CAROL_SECRET = "secretofthesecondapp000000000000"
WRONG_SECRET = "notthesecretofthesecondapp000000"


async def add_fake_app(fake_wechat: fake.RunningFake, appid: str) -> str:
    secret = secrets.token_hex(16)
    leakcheck.register(secret)
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{fake_wechat.url}/_fake/apps", json={"appid": appid, "secret": secret}
        )
        r.raise_for_status()
    return secret


async def console_of(portal, email: str) -> Console:
    console = Console(portal)
    assert (await console.login(email)).status_code == 303
    return console


async def mp_of(db, slug: str) -> str | None:
    return await db.fetchval("SELECT mp_appid FROM pools WHERE slug = $1", slug)


async def test_a_tenant_cannot_take_over_another_pools_mini_program(portal, db, box, fresh_fake):
    # Bravo is the older pool (lower id): before the fix, its secret was the one used for
    # the AppID, so naming Carol's AppID broke every login through Carol's mini program.
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="bravo", name="Bravo", allow_http=True)
        await pools.create(conn, box, slug="carol", name="Carol", allow_http=True,
                           mp_appid=CAROL_APPID, mp_secret=CAROL_SECRET)  # fmt: skip
        await admins.create(conn, email="b@example.com", password=PASSWORD, pool_slugs=["bravo"])
    as_b = await console_of(portal, "b@example.com")
    try:
        # Carol's AppID with a made-up secret: WeChat's 40125, nothing saved.
        r = await as_b.post("/console/pools/bravo/mini-program",
                            {"mode": "private", "appid": CAROL_APPID, "secret": WRONG_SECRET})  # fmt: skip
        assert r.status_code == 400 and "微信不接受这个 AppSecret（错误码 40125）" in r.text
        assert f'value="{CAROL_APPID}"' in r.text and WRONG_SECRET not in r.text
        assert await mp_of(db, "bravo") is None
        # Even with Carol's real secret (leaked, or a second pool of the same company),
        # the AppID stays Carol's: one pool per private mini program.
        r = await as_b.post("/console/pools/bravo/mini-program",
                            {"mode": "private", "appid": CAROL_APPID, "secret": CAROL_SECRET},
                            headers={"accept-language": "en"})  # fmt: skip
        assert r.status_code == 409
        assert "Not saved: this AppID is already another pool" in r.text
        assert "A private mini program serves one pool only." in r.text
        r = await as_b.post("/console/pools/bravo/mini-program",
                            {"mode": "private", "appid": CAROL_APPID, "secret": CAROL_SECRET})  # fmt: skip
        assert r.status_code == 409 and "已是另一个用户池的私有小程序" in r.text
        # The platform's default AppID is never a private one, even with its secret.
        r = await as_b.post("/console/pools/bravo/mini-program",
                            {"mode": "private", "appid": fake.DEMO_APPID, "secret": fake.DEMO_SECRET})  # fmt: skip
        assert r.status_code == 400 and "这是平台默认小程序的 AppID" in r.text
        r = await as_b.post("/console/pools/bravo/mini-program",
                            {"mode": "private", "appid": fake.DEMO_APPID, "secret": fake.DEMO_SECRET},
                            headers={"accept-language": "en"})  # fmt: skip
        assert r.status_code == 400 and "default mini program; it cannot be a private one" in r.text
        assert await mp_of(db, "bravo") is None
        assert await mp_of(db, "carol") == CAROL_APPID
    finally:
        await as_b.aclose()
    # Carol's users still log in through Carol's mini program, phone number included
    # (the access token is Carol's).
    async with portal.client("carol") as pc, portal.client() as apex:
        r = await pc.post("/api/qrcode", json={})
        assert r.status_code == 201, r.text
        ticket = r.json()
        phone = Phone(apex, "zhang", appid=CAROL_APPID)
        assert (await phone.login()).status_code == 200
        r = await phone.scan_and_confirm(ticket["ticket"], phone="13800138000")
        assert r.status_code == 200, r.text
        r = await pc.post(f"/api/qrcode/{ticket['ticket']}/exchange",
                          json={"secret": ticket["secret"]})  # fmt: skip
        assert r.status_code == 200, r.text


async def test_two_pools_claiming_one_appid_at_once_one_wins(
    portal, db, box, fake_wechat, fresh_fake
):
    appid = "wx0000000000race01"
    secret = await add_fake_app(fake_wechat, appid)
    async with db.acquire() as conn:
        for slug in ("alpha", "bravo"):
            await pools.create(conn, box, slug=slug, name=slug.title(), allow_http=True)
            await admins.create(conn, email=f"{slug}@example.com", password=PASSWORD,
                                pool_slugs=[slug])  # fmt: skip
    consoles = [await console_of(portal, f"{slug}@example.com") for slug in ("alpha", "bravo")]
    try:
        # WeChat answers both proofs slowly, so both saves reach the database together.
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{fake_wechat.url}/_fake/faults",
                                  json={"path": "/cgi-bin/stable_token", "delay": 0.3, "times": 2})  # fmt: skip
            r.raise_for_status()
        form = {"mode": "private", "appid": appid, "secret": secret}
        answers = await asyncio.gather(
            consoles[0].post("/console/pools/alpha/mini-program", form),
            consoles[1].post("/console/pools/bravo/mini-program", form),
        )
    finally:
        for console in consoles:
            await console.aclose()
    assert sorted(r.status_code for r in answers) == [303, 409]
    owners = await db.fetch("SELECT slug FROM pools WHERE mp_appid = $1", appid)
    assert len(owners) == 1
    loser = "bravo" if owners[0]["slug"] == "alpha" else "alpha"
    assert await mp_of(db, loser) is None


async def test_a_wrong_secret_never_borrows_the_cached_access_token(redis_client, fresh_fake):
    redis = redis_client
    wechat = WeChatClient(fresh_fake.url, redis, retry_backoff=())
    try:
        token = await wechat.access_token(CAROL_APPID, CAROL_SECRET)
        # The cache (per AppID) has Carol's token: a wrong secret gets WeChat's 40125.
        with pytest.raises(WeChatError) as caught:
            await wechat.access_token(CAROL_APPID, WRONG_SECRET)
        assert caught.value.errcode == 40125
        with pytest.raises(WeChatError):
            await wechat.wxacode_unlimited(CAROL_APPID, WRONG_SECRET, "abc", "")
        assert await wechat.access_token(CAROL_APPID, CAROL_SECRET) == token
    finally:
        await wechat.aclose()


# --- the CLI follows the same rules -------------------------------------------------------


@pytest.fixture
def cli(portal_cli):
    def run(slug: str, appid: str, secret: str) -> subprocess.CompletedProcess:
        return portal_cli(
            "pool", "create", slug, "--name", slug, "--mp-appid", appid, "--mp-secret-stdin",
            stdin=secret + "\n",
        )  # fmt: skip

    return run


async def test_the_cli_claims_a_mini_program_only_as_the_console_does(cli, db, box, fresh_fake):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="carol", name="Carol", allow_http=True,
                           mp_appid=CAROL_APPID, mp_secret=CAROL_SECRET)  # fmt: skip
    cases = [
        (CAROL_APPID, WRONG_SECRET, "portal: error: mp_secret_refused: WeChat did not accept "
         "this AppID and AppSecret: the AppSecret is wrong (errcode 40125)."),
        ("wx00000000unknown1", WRONG_SECRET, "portal: error: mp_secret_refused: WeChat did not "
         "accept this AppID and AppSecret: the AppID is not valid (errcode 40013)."),
        (CAROL_APPID, CAROL_SECRET, "portal: error: mp_appid_taken: This AppID is already the "
         "mini program of another pool"),
        (fake.DEMO_APPID, fake.DEMO_SECRET, "portal: error: mp_appid_reserved: This AppID is "
         "the platform's default mini program"),
    ]  # fmt: skip
    for appid, secret, message in cases:
        r = cli("bravo", appid, secret)
        assert r.returncode == 2 and r.stderr.startswith(message), r.stderr
        assert secret not in r.stderr and r.stdout == ""
        assert await db.fetchval("SELECT count(*) FROM pools WHERE slug = 'bravo'") == 0
    assert await mp_of(db, "carol") == CAROL_APPID


# --- finding 12: the dev server's log --------------------------------------------------------


async def test_portal_dev_log_shows_no_app_secret_code_or_token(db, redis_client, stores, tmp_path):
    """``portal dev`` runs the fake WeChat in its own process and logs every request
    of both: the fake's access lines (jscode2session takes the AppSecret and the
    wx.login code in its query, the phone-number call the access token) show
    ``secret=***``."""
    port, wechat_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "PORTAL_DATA_DIR": str(tmp_path / "data"),
    }
    for name in ("WECHAT_API_BASE", "PORTAL_DEFAULT_MP_APPID", "PORTAL_DEFAULT_MP_SECRET"):
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portal", "dev", "--port", str(port),
        "--wechat-port", str(wechat_port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    js_code = f"alice.{secrets.token_hex(8)}"
    try:
        async with (
            httpx.AsyncClient(base_url=base, headers={"host": f"demo.localhost:{port}"}) as pc,
            httpx.AsyncClient(base_url=base, headers={"host": f"localhost:{port}"}) as apex,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{wechat_port}") as wx,
        ):
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await apex.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.returncode is None and time.monotonic() < deadline, "no start"
                await asyncio.sleep(0.2)
            r = await pc.post("/api/qrcode", json={})
            assert r.status_code == 201, r.text
            ticket = r.json()
            r = await apex.post("/api/mp/session", json={"appid": fake.DEMO_APPID, "code": js_code})
            assert r.status_code == 200, r.text
            phone = Phone(apex, "alice")
            phone.token = r.json()["session_token"]
            r = await phone.scan_and_confirm(ticket["ticket"], phone="13800138000")
            assert r.status_code == 200, r.text
            # The token the portal used (the stable token does not change when asked again).
            r = await wx.post("/cgi-bin/stable_token", json={"grant_type": "client_credential",
                              "appid": fake.DEMO_APPID, "secret": fake.DEMO_SECRET})  # fmt: skip
            access_token = r.json()["access_token"]
            leakcheck.register(access_token)
            # And WeChat's other API that takes the AppSecret in its query.
            r = await wx.get("/cgi-bin/token", params={"grant_type": "client_credential",
                             "appid": fake.DEMO_APPID, "secret": fake.DEMO_SECRET})  # fmt: skip
            assert r.status_code == 200 and "access_token" in r.json()
    finally:
        proc.terminate()
        raw, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    out = raw.decode(errors="replace")
    # The fake's access lines are there...
    assert "/sns/jscode2session?" in out and "/wxa/business/getuserphonenumber?" in out
    assert "/cgi-bin/token?" in out and "secret=***" in out and "js_code=***" in out
    # ...without what would let a reader act as a tenant's mini program or its users.
    for value in (fake.DEMO_SECRET, js_code, access_token):
        assert value not in out
