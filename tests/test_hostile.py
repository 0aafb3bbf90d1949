"""Hostile input over real HTTP, against the app served by the portal's own HTTP
protocol (portal/web/protocol.py, as ``portal serve`` and ``portal dev`` run it),
with real PostgreSQL, Redis and the fake WeChat.

Every answer must be a clear 4xx (JSON ``{"error", "error_description"}`` on
JSON routes, a page on page routes), never a 5xx, never another pool's data,
and a refused request must leave nothing behind: no user, no ticket change,
no token, no login event, no pool change.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import markupsafe
import orjson
import pytest
import uvicorn
from PIL import Image

from portal.app import create_app
from portal.scan.tickets import key as ticket_key
from portal.tenants import admins, clients, pools
from portal.web import protocol as httpproto
from portal.wechat.fake import DEMO_APPID
from tests.phone import Phone
from tests.support import RunningPortal, ServeProcess, free_port, free_socket, serve_env

PASSWORD = "correct horse battery"
XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
]
# What must never appear in a page: the payloads' dangerous parts, unescaped.
RAW = ("<script>alert(1)", "<img src=x onerror", '"><img')
HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MB10 = 10 * 1024 * 1024


@pytest.fixture(autouse=True)
def no_server_errors(caplog):
    """A 5xx the client never saw (its connection was gone) still shows in the log.
    Set up first, so checked last: after the server has finished every request."""
    yield
    records = caplog.get_records("call") + caplog.records  # the test, and teardown so far
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# --- a portal served by the portal's protocol, with short deadlines -------------


@contextlib.asynccontextmanager
async def serve(settings, sock, **limits) -> AsyncIterator[RunningPortal]:
    proto = httpproto.protocol(head_timeout=HEAD_TIMEOUT, body_timeout=2.5, **limits)
    config = uvicorn.Config(
        create_app(settings),
        http=proto,
        lifespan="on",
        log_level="warning",
        proxy_headers=False,
        ws="none",
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the portal did not start")
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    try:
        yield RunningPortal(f"http://127.0.0.1:{port}", port, settings, server)
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class World:
    portal: RunningPortal
    acme: pools.CreatedPool
    other: pools.CreatedPool
    client_id: str  # a confidential client of acme with a registered redirect URI
    redirect_uri: str


@pytest.fixture
async def world(db, redis_client, settings_factory, box) -> AsyncIterator[World]:
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}", env="dev", body_timeout=BODY_TIMEOUT
    )
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name=XSS[1], allow_http=True)
        other = await pools.create(conn, box, slug="other", name="Other", allow_http=True)
        client, _ = await clients.create(
            conn,
            box,
            pool_id=acme.pool.id,
            name=XSS[0],
            redirect_uris=["http://localhost:9/cb"],
            allow_http=True,
        )
        await admins.create(conn, email="a@example.com", password=PASSWORD, pool_slugs=["acme"])
    async with serve(settings, sock) as running:
        yield World(running, acme, other, client.client_id, "http://localhost:9/cb")


@pytest.fixture
async def pc(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with world.portal.client("acme") as client:
        yield client


@pytest.fixture
async def apex(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with world.portal.client() as client:
        yield client


_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


class Console:
    def __init__(self, running: RunningPortal) -> None:
        self.http = running.client()
        self.csrf = ""

    async def login(self) -> None:
        page = await self.http.get("/console/login")
        r = await self.http.post(
            "/console/login",
            data={
                "email": "a@example.com",
                "password": PASSWORD,
                "csrf": _CSRF_RE.search(page.text)[1],
            },
        )
        assert r.status_code == 303, r.text
        self.csrf = _CSRF_RE.search((await self.http.get("/console/")).text)[1]

    async def post(self, path: str, data: dict | None = None, **kwargs) -> httpx.Response:
        return await self.http.post(path, data={"csrf": self.csrf, **(data or {})}, **kwargs)


@pytest.fixture
async def console(world: World) -> AsyncIterator[Console]:
    c = Console(world.portal)
    await c.login()
    try:
        yield c
    finally:
        await c.http.aclose()


async def snapshot(db, redis_client) -> dict:
    """What a refused request must not change."""
    return {
        "users": await db.fetchval("SELECT count(*) FROM users"),
        "identities": await db.fetchval("SELECT count(*) FROM wechat_identities"),
        "tokens": await db.fetchval("SELECT count(*) FROM refresh_tokens"),
        "events": await db.fetchval("SELECT count(*) FROM login_events"),
        "pools": [
            tuple(r)
            for r in await db.fetch(
                "SELECT slug, name, logo_sha256, logo_shape, callback_url FROM pools ORDER BY slug"
            )
        ],
        "clients": await db.fetchval("SELECT count(*) FROM clients"),
        "redis": sorted(
            [k for k in await redis_client.keys("*") if not k.startswith(("rl:", "rate"))]
        ),
    }


async def ticket_values(redis_client) -> dict:
    out = {}
    for key in await redis_client.keys("*"):
        if await redis_client.type(key) == "hash":
            out[key] = await redis_client.hgetall(key)
    return out


def assert_json_error(r: httpx.Response, *statuses: int) -> None:
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) >= {"error", "error_description"}, body
    assert isinstance(body["error"], str) and body["error"]


def assert_escaped(text: str, where: str) -> None:
    for raw in RAW:
        assert raw not in text, f"{raw!r} unescaped in {where}"


async def scanned_ticket(pc, apex, user: str = "alice") -> tuple[dict, Phone]:
    r = await pc.post("/api/qrcode", json={})
    assert r.status_code == 201, r.text
    t = r.json()
    phone = Phone(apex, user)
    assert (await phone.scan(t["ticket"])).status_code == 200
    return t, phone


# --- XSS ---------------------------------------------------------------------------


async def test_payloads_are_escaped_on_every_page(world: World, pc, apex, console, db):
    # A WeChat user whose nickname is a payload logs in (confirm body), through the pool.
    t, phone = await scanned_ticket(pc, apex)
    r = await phone.confirm(t["ticket"], nickname=XSS[1][:60])
    assert r.status_code == 200, r.text
    r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
    assert r.status_code == 200, r.text
    user_id = r.json()["user"]["id"] if "id" in r.json()["user"] else None
    status = await pc.get(
        f"/api/qrcode/{t['ticket']}/status", headers={"x-ticket-secret": t["secret"]}
    )
    assert status.headers["content-type"].startswith("application/json")
    # The scan answer is JSON (never HTML), and carries the names as data.
    t2, phone2 = await scanned_ticket(pc, apex, "bob")
    scan = await phone2.scan(t2["ticket"])
    assert scan.headers["content-type"].startswith("application/json")
    assert scan.json()["pool"]["name"] == XSS[1]
    # A logo uploaded under a payload file name.
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(png, "PNG")
    r = await console.post(
        "/console/pools/acme/logo",
        {"logo_shape": "square"},
        files={"logo": (XSS[1] + ".png", png.getvalue(), "image/png")},
    )
    assert r.status_code == 303, r.text

    pages = {
        "pool list": "/console/",
        "settings": "/console/pools/acme",
        "clients": "/console/pools/acme/clients",
        "client": f"/console/pools/acme/clients/{world.client_id}",
        "users": "/console/pools/acme/users?q=" + XSS[0],
        "users (all)": "/console/pools/acme/users",
        "logins": "/console/pools/acme/logins?client_id=" + XSS[1] + "&result=" + XSS[0],
        "logins (bad dates)": "/console/pools/acme/logins?since=" + XSS[1] + "&user=" + XSS[0],
        "console lang": "/console/?lang=" + XSS[1],
        "phone simulator": "/dev/phone?url=" + XSS[1] + "&lang=" + XSS[0],
        "console login next": "/console/login?next=" + XSS[2],
    }
    if user_id:
        pages["user"] = f"/console/pools/acme/users/{user_id}"
    for name, path in pages.items():
        r = await console.http.get(path)
        assert r.status_code in (200, 303, 400), (name, r.status_code)
        assert not r.headers.get("location", "").startswith("javascript"), name
        assert_escaped(r.text, name)
        assert 'href="javascript:' not in r.text, name
        if name in ("pool list", "settings", "clients", "client", "users (all)"):
            assert "&lt;" in r.text or "&#34;&gt;" in r.text or "&#34;" in r.text, name

    pool_pages = {
        "hosted login": "/?lang=" + XSS[1],
        "oidc auth": "/oidc/auth?"
        + httpx.QueryParams(
            {
                "client_id": world.client_id,
                "redirect_uri": world.redirect_uri,
                "response_type": "code",
                "scope": "openid",
                "state": XSS[1],
                "nonce": XSS[0],
                "lang": XSS[1],
            }
        ).__str__(),
        "oidc auth, bad redirect_uri": "/oidc/auth?"
        + str(
            httpx.QueryParams(
                {
                    "client_id": world.client_id,
                    "redirect_uri": XSS[2] + XSS[1],
                    "response_type": "code",
                    "scope": "openid",
                }
            )
        ),
        "oidc auth, bad client": "/oidc/auth?client_id=" + XSS[1],
        "scan outside wechat": "/q/" + XSS[1],
        "scan outside wechat, ticket": f"/q/{t['ticket']}?lang=" + XSS[0],
        "404 page": "/nope/" + XSS[1],
        "logout": "/oidc/logout?post_logout_redirect_uri=" + XSS[2] + "&state=" + XSS[1],
    }
    for name, path in pool_pages.items():
        r = await pc.get(path, headers={"accept": "text/html"})
        assert r.status_code < 500, (name, r.status_code)
        assert_escaped(r.text, name)
        assert 'href="javascript:' not in r.text and "location='javascript:" not in r.text, name

    # The CSV export: a cell that a spreadsheet would read as a formula is defused.
    await db.execute("UPDATE users SET nickname = '=HYPERLINK(\"http://evil\")'")
    await db.execute("UPDATE login_events SET user_agent = '@SUM(1+1)', client_id = '+1-2'")
    r = await console.http.get("/console/pools/acme/logins.csv")
    assert r.status_code == 200
    rows = list(csv.reader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert len(rows) > 1
    for row in rows[1:]:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@"), row


# --- SQL metacharacters -------------------------------------------------------------

NICKNAMES = ["100% sure", "a_b", "back\\slash", "O'Brien", 'say "hi"', "drop;--", "plain"]


async def test_sql_metacharacters_are_taken_literally(world: World, console, pc, apex, db):
    for nickname in NICKNAMES:
        await db.execute(
            "INSERT INTO users (pool_id, nickname) VALUES ($1, $2)", world.acme.pool.id, nickname
        )
    expect = {
        "%": {"100% sure"},
        "_": {"a_b"},
        "\\": {"back\\slash"},
        "'": {"O'Brien"},
        '"': {'say "hi"'},
        ";--": {"drop;--"},
        "a_": {"a_b"},
        "%_": set(),
        "x' OR '1'='1": set(),
    }
    for q, names in expect.items():
        r = await console.http.get("/console/pools/acme/users", params={"q": q})
        assert r.status_code == 200, (q, r.status_code)
        shown = {n for n in NICKNAMES if _html_escape(n) in r.text}
        assert shown == names, (q, shown)
    for q in ("\x00", "a\x00b", "%00", "%ff%fe", "%ud800"):
        r = await console.http.get("/console/pools/acme/users", params={"q": q})
        assert r.status_code in (200, 400), (q, r.status_code)
        r = await console.http.get("/console/pools/acme/users?q=" + q.replace("\x00", "%00"))
        assert r.status_code in (200, 400), (q, r.status_code)
    for hostile in ("'", "a'b", "%27%3B--", "%25", "_", "%5C", "%00", "x%00y"):
        for path in (
            f"/console/pools/{hostile}",
            f"/console/pools/acme/clients/{hostile}",
            f"/console/pools/acme/users/{hostile}",
            f"/console/pools/acme/logins?client_id={hostile}&result={hostile}&before={hostile}",
        ):
            r = await console.http.get(path)
            assert r.status_code in (200, 400, 404), (path, r.status_code)
        for path in (f"/api/qrcode/{hostile}/status", f"/api/qrcode/{hostile}.png"):
            r = await pc.get(path, params={"secret": hostile})
            assert r.status_code in (400, 404), (path, r.status_code)
        r = await pc.post(f"/api/qrcode/{hostile}/exchange", json={"secret": hostile})
        assert_json_error(r, 400, 404)
        r = await apex.post("/api/mp/session", json={"appid": DEMO_APPID, "code": hostile})
        if r.status_code != 200:  # "_" is a fine WeChat user name for the fake
            assert_json_error(r, 400)
        r = await apex.post("/api/mp/session", json={"appid": hostile, "code": "alice.1"})
        assert_json_error(r, 400)
        r = await pc.post("/api/qrcode", json={"client_id": hostile})
        assert_json_error(r, 400, 404)
        r = await pc.post(
            "/oidc/token",
            data={"grant_type": "authorization_code", "code": hostile, "client_id": hostile},
        )
        assert_json_error(r, 400, 401)
    # NUL in JSON strings is refused up front (PostgreSQL text cannot hold it).
    t, phone = await scanned_ticket(pc, apex)
    before = await ticket_values(world.portal.state["redis"])
    r = await phone.confirm(t["ticket"], nickname="a\x00b")
    assert_json_error(r, 400)
    assert await ticket_values(world.portal.state["redis"]) == before
    assert await db.fetchval("SELECT count(*) FROM users WHERE nickname LIKE 'a%b'") == 1


def _html_escape(text: str) -> str:
    return str(markupsafe.escape(text))


# --- logos --------------------------------------------------------------------------


def _png(size=(64, 64), colour=(10, 200, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


async def _logo_row(db):
    return tuple(await db.fetchrow("SELECT logo_sha256, logo_shape FROM pools WHERE slug='acme'"))


def _multipart(csrf: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "hostileboundary1234"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="logo_shape"\r\n\r\nround\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="logo"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n".encode(),
        data,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A decompression bomb: a tiny PNG of 900 megapixels. Made before the console
    signs in: it takes seconds, past the keep-alive of the console's connection."""
    out = io.BytesIO()
    Image.new("1", (30000, 30000)).save(out, "PNG")
    return out.getvalue()


async def test_bad_logos_keep_the_old_one(bomb: bytes, world: World, console, db):
    r = await console.post(
        "/console/pools/acme/logo",
        {"logo_shape": "square"},
        files={"logo": ("ok.png", _png(), "image/png")},
    )
    assert r.status_code == 303, r.text
    good = await _logo_row(db)
    assert good[0] is not None

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    # Oversized, sent chunked (no Content-Length): refused as it arrives, not spooled.
    body, ctype = _multipart(
        console.csrf, "big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (8 * 1024 * 1024)
    )
    started = time.monotonic()
    r = await console.http.post(
        "/console/pools/acme/logo", content=chunks(body), headers={"content-type": ctype}
    )
    assert r.status_code == 413, r.text[:200]
    assert "transfer-encoding" not in r.request.headers or True
    assert time.monotonic() - started < 5
    # Oversized with its length: refused before a byte is read.
    r = await console.http.post(
        "/console/pools/acme/logo", content=body, headers={"content-type": ctype}
    )
    assert r.status_code == 413
    # A decompression bomb (tiny file, huge canvas), a non-image, a truncated PNG.
    for data in (bomb, b"GIF89a not really", b"<svg onload=alert(1)>", _png()[:40]):
        body, ctype = _multipart(console.csrf, "x.png", data)
        r = await console.http.post(
            "/console/pools/acme/logo", content=body, headers={"content-type": ctype}
        )
        assert r.status_code == 400, (data[:10], r.status_code)
        assert_escaped(r.text, "logo error")
    # A body that trickles in: 408 once the deadline passes.
    body, ctype = _multipart(console.csrf, "slow.png", _png())

    async def slow() -> AsyncIterator[bytes]:
        yield body[:100]
        await asyncio.sleep(BODY_TIMEOUT + 0.5)  # past the deadline, short of the backstop
        yield body[100:]

    r = await console.http.post(
        "/console/pools/acme/logo", content=slow(), headers={"content-type": ctype}
    )
    assert r.status_code == 408, r.text[:200]
    assert "<html" in r.text.lower()  # a page, for the console
    assert await _logo_row(db) == good


async def test_avatar_upload_limits(world: World, apex, pc, db):
    phone = Phone(apex, "carol")
    assert (await phone.login()).status_code == 200
    auth = {"authorization": f"Bearer {phone.token}"}
    count = await db.fetchval("SELECT count(*) FROM avatars")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"\0" * 64 * 1024

    r = await apex.post(
        "/api/mp/avatar", content=chunks(), headers={**auth, "content-type": "image/png"}
    )
    assert_json_error(r, 411, 413)
    r = await apex.post(
        "/api/mp/avatar",
        content=b"\0" * (2 * 1024 * 1024),
        headers={**auth, "content-type": "image/png"},
    )
    assert_json_error(r, 413)
    for data, ctype in ((b"hello", "image/png"), (_png(), "text/plain"), (b"", "image/jpeg")):
        r = await apex.post("/api/mp/avatar", content=data, headers={**auth, "content-type": ctype})
        assert_json_error(r, 400, 411, 415)
    assert await db.fetchval("SELECT count(*) FROM avatars") == count


# --- JSON bodies --------------------------------------------------------------------


async def json_routes(pc, apex) -> list[tuple[httpx.AsyncClient, str, dict]]:
    """Every JSON POST route, with what it needs to reach its body."""
    t, phone = await scanned_ticket(pc, apex, "dave")
    bearer = {"authorization": f"Bearer {phone.token}"}
    return [
        (pc, "/api/qrcode", {}),
        (pc, f"/api/qrcode/{t['ticket']}/exchange", {}),
        (apex, "/api/mp/session", {}),
        (apex, f"/api/mp/tickets/{t['ticket']}/confirm", bearer),
        (apex, f"/api/mp/tickets/{t['ticket']}/scan", bearer),
        (apex, f"/api/mp/tickets/{t['ticket']}/cancel", bearer),
    ]


async def test_a_10_mb_json_body_is_refused_fast(world: World, pc, apex, db, redis_client):
    routes = await json_routes(pc, apex)
    before = await snapshot(db, redis_client)
    big = b'{"a":"' + b"x" * MB10 + b'"}'

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 256 * 1024):
            yield big[i : i + 256 * 1024]

    for client, path, headers in routes:
        for content in (big, chunked()):
            started = time.monotonic()
            r = await client.post(
                path, content=content, headers={**headers, "content-type": "application/json"}
            )
            elapsed = time.monotonic() - started
            if path.endswith(("/scan", "/cancel")):  # these read no body: never a 5xx
                assert r.status_code < 500, (path, r.status_code)
                continue
            assert_json_error(r, 413)
            assert r.json()["error"] == "request_too_large"
            assert elapsed < 3, (path, elapsed)
    after = await snapshot(db, redis_client)
    assert after["users"] == before["users"] and after["tokens"] == before["tokens"]
    assert after["events"] == before["events"] and after["pools"] == before["pools"]
    statuses = {v.get("status") for v in (await ticket_values(redis_client)).values()}
    assert "confirmed" not in statuses, statuses  # /scan and /cancel read no body


BAD_BODIES = [
    ("malformed", b'{"secret": ', "application/json"),
    ("trailing", b'{"a": 1} x', "application/json"),
    ("wrong type", b'{"a": 1}', "text/plain"),
    ("form type", b"a=1", "application/x-www-form-urlencoded"),
    ("xml", b"<a/>", "application/xml"),
    ("invalid utf-8", b'{"secret": "\xff\xfe"}', "application/json"),
    ("lone surrogate", b'{"secret": "\\ud800"}', "application/json"),
    ("array", b"[1, 2]", "application/json"),
    ("string", b'"secret"', "application/json"),
    ("null", b"null", "application/json"),
    ("number", b"1", "application/json"),
    ("deep", b'{"a":' * 2000 + b"1" + b"}" * 2000, "application/json"),
    ("deep arrays", b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json"),
    ("huge number", b'{"secret": 1' + b"0" * 5000 + b"}", "application/json"),
    ("big int", b'{"secret": 123456789012345678901234567890}', "application/json"),
    (
        "wrong field types",
        b'{"secret": {"$ne": 1}, "client_id": [1], "appid": true, "code": 1.5,'
        b' "nickname": {"a": 1}, "phone_code": []}',
        "application/json",
    ),
    (
        "duplicate keys",
        b'{"secret": "a", "secret": "b", "code": "x", "code": "y"}',
        "application/json",
    ),
    (
        "nul",
        b'{"secret": "a\\u0000", "code": "a\\u0000", "nickname": "\\u0000"}',
        "application/json",
    ),
    ("bom", b'\xef\xbb\xbf{"a": 1}', "application/json"),
]


@pytest.mark.parametrize(("name", "body", "ctype"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_hostile_json_bodies(world: World, pc, apex, db, redis_client, name, body, ctype):
    routes = await json_routes(pc, apex)
    before = await snapshot(db, redis_client)
    tickets = await ticket_values(redis_client)
    for client, path, headers in routes:
        if name in ("duplicate keys", "big int") and path.endswith("/confirm"):
            continue  # a JSON object with fields /confirm ignores: it would confirm
        r = await client.post(path, content=body, headers={**headers, "content-type": ctype})
        if path.endswith(("/scan", "/cancel")) or (
            # A JSON object whose fields this route ignores is a fine body.
            name in ("duplicate keys", "big int", "nul") and path.endswith(("/qrcode", "/confirm"))
        ):
            assert r.status_code < 500, (path, r.status_code, r.text)
            continue
        # 403: the exchange's secret, well-formed but wrong.
        assert_json_error(r, 400, 403, 404, 415)
        if ctype != "application/json":
            assert r.status_code == 415, (path, name)
    after = await snapshot(db, redis_client)
    assert after["users"] == before["users"] and after["tokens"] == before["tokens"]
    assert after["events"] == before["events"] and after["pools"] == before["pools"]
    # The scanned ticket was neither confirmed nor cancelled by a refused body
    # (/scan and /cancel read no body: the cancel may well succeed).
    for key, value in (await ticket_values(redis_client)).items():
        if key in tickets and value.get("status") not in ("cancelled",):
            assert value.get("status") == tickets[key].get("status"), key


async def test_oidc_forms_are_capped(world: World, pc, db, redis_client):
    before = await snapshot(db, redis_client)

    async def chunked(size: int) -> AsyncIterator[bytes]:
        yield b"grant_type=authorization_code&code="
        for _ in range(size // (64 * 1024)):
            yield b"a" * 64 * 1024

    for path in ("/oidc/token", "/oidc/revoke", "/oidc/introspect"):
        form = {"content-type": "application/x-www-form-urlencoded"}
        started = time.monotonic()
        r = await pc.post(path, content=b"a=" + b"b" * MB10, headers=form)
        assert_json_error(r, 400, 413)
        r = await pc.post(path, content=chunked(MB10), headers=form)
        assert_json_error(r, 400, 413)
        assert time.monotonic() - started < 5
        for body, ctype in (
            (b"grant_type=%ff%fe&code=\xff\xfe", "application/x-www-form-urlencoded"),
            (b'{"grant_type": "authorization_code"}', "application/json"),
            (b"&&&==&=", "application/x-www-form-urlencoded"),
            (b"a=1&" * 200, "application/x-www-form-urlencoded"),
            (b"--x\r\n\r\n", "multipart/form-data; boundary=x"),
        ):
            r = await pc.post(path, content=body, headers={"content-type": ctype})
            assert_json_error(r, 400, 401, 413, 415)
    for path in ("/oidc/auth", "/oidc/logout", "/oidc/auth/complete"):
        r = await pc.post(
            path,
            content=chunked(2 * 1024 * 1024),
            headers={"content-type": "application/x-www-form-urlencoded", "accept": "text/html"},
        )
        assert 400 <= r.status_code < 500, (path, r.status_code)
    after = await snapshot(db, redis_client)
    assert after["tokens"] == before["tokens"] and after["events"] == before["events"]


async def test_console_forms_are_capped(world: World, console, db, redis_client):
    before = await snapshot(db, redis_client)

    async def chunked() -> AsyncIterator[bytes]:
        yield f"csrf={console.csrf}&name=".encode()
        for _ in range(40):
            yield b"a" * 64 * 1024

    r = await console.http.post(
        "/console/pools/acme",
        content=chunked(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413, r.status_code
    assert "<html" in r.text.lower()
    # Invalid UTF-8 and NUL in a form body: re-shown with an error, nothing saved.
    r = await console.http.post(
        "/console/pools/acme",
        content=f"csrf={console.csrf}&name=%ff%fe%00&callback_url=%00".encode() + b"\xff",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400, r.status_code
    for fields in (
        {"name": "x\x00y", "redirect_uris": "https://a.example/cb"},
        {"name": "ok", "redirect_uris": "https://a.example/\x00"},
        {
            "name": "ok",
            "redirect_uris": "https://a.example/cb",
            "web_origins": "https://a\x00.example",
        },
        {
            "name": "ok",
            "redirect_uris": "https://a.example/cb",
            "post_logout_redirect_uris": "https://a.example/%00\x00",
        },
    ):
        r = await console.post("/console/pools/acme/clients", fields)
        assert r.status_code == 400, (fields, r.status_code)
    r = await console.post(
        "/console/pools/acme", {"name": "ok", "callback_url": "https://a.example/\x00"}
    )
    assert r.status_code == 400, r.status_code
    after = await snapshot(db, redis_client)
    assert after["pools"] == before["pools"] and after["clients"] == before["clients"]


async def test_a_trickled_json_body_gets_408(world: World, pc, db, redis_client):
    async def slow() -> AsyncIterator[bytes]:
        yield b'{"client_id"'
        await asyncio.sleep(BODY_TIMEOUT + 0.5)  # past the deadline, short of the backstop
        yield b": null}"

    started = time.monotonic()
    r = await pc.post("/api/qrcode", content=slow(), headers={"content-type": "application/json"})
    assert time.monotonic() - started < BODY_TIMEOUT + 4
    assert_json_error(r, 408)
    assert r.json()["error"] == "request_timeout"
    assert not await redis_client.keys("ticket:*")  # no ticket was made


# --- the protocol: heads and bodies nobody reads ---------------------------------


async def raw(world: World, data: bytes, *, wait: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", world.portal.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), wait)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def json_of(response: bytes) -> dict:
    return orjson.loads(response.split(b"\r\n\r\n", 1)[1])


async def test_request_head_limits(world: World):
    host = f"Host: acme.localhost:{world.portal.port}\r\n".encode()
    cases = {
        414: b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + host + b"\r\n",
        431: b"GET / HTTP/1.1\r\n" + host + b"X-A: " + b"b" * 9000 + b"\r\n\r\n",
    }
    cases[431 + 1000] = (
        b"GET / HTTP/1.1\r\n" + host + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n"
    )
    for expected, data in cases.items():
        response = await raw(world, data)
        assert status_of(response) == expected % 1000, response[:200]
        assert "error" in json_of(response)
    # A head that never ends is refused once it passes 64 KiB, not buffered further.
    reader, writer = await asyncio.open_connection("127.0.0.1", world.portal.port)
    writer.write(b"GET / HTTP/1.1\r\n" + host)
    with contextlib.suppress(ConnectionError):
        for i in range(100):
            writer.write(b"X-%d: %s\r\n" % (i, b"c" * 1000))
            await writer.drain()
    response = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    assert status_of(response) == 431
    # Malformed requests: the portal's JSON shape, not a bare text 400.
    for data in (
        b"GET /\x00 HTTP/1.1\r\n" + host + b"\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\n" + host + b"\r\n",
        b"GET / HTTP/1.1\r\n" + host + b"X-Nul: a\x00b\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + host + b"Content-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + host + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        # A chunked body that goes bad half-way, while the route is reading it.
        b"POST /api/qrcode HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n"
        b'Content-Type: application/json\r\n\r\n5\r\n{"a":\r\nZZZ\r\n',
        b"POST /oidc/token HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n3\r\na=b\r\nnope\r\n",
    ):
        response = await raw(world, data)
        assert 400 <= status_of(response) < 500, (data, response[:200])


async def test_slow_heads_and_idle_connections_are_closed(world: World):
    # Nothing sent: closed after the head deadline, without an answer.
    reader, writer = await asyncio.open_connection("127.0.0.1", world.portal.port)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), HEAD_TIMEOUT + 3) == b""
    assert time.monotonic() - started >= HEAD_TIMEOUT * 0.9
    writer.close()
    # Half a head, then silence: 408.
    reader, writer = await asyncio.open_connection("127.0.0.1", world.portal.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: acme.loc")
    response = await asyncio.wait_for(reader.read(), HEAD_TIMEOUT + 3)
    writer.close()
    assert status_of(response) == 408
    # A body nobody reads, trickled after the answer: the connection is closed.
    reader, writer = await asyncio.open_connection("127.0.0.1", world.portal.port)
    writer.write(
        f"POST /healthz HTTP/1.1\r\nHost: localhost:{world.portal.port}\r\n"
        "Content-Length: 100000\r\n\r\nabc".encode()
    )
    started = time.monotonic()
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), 6):
            data += chunk
            writer.write(b"x")
    writer.close()
    assert status_of(data) in (200, 405)
    assert time.monotonic() - started < 6


# --- hosts and paths ---------------------------------------------------------------


async def test_two_host_headers_are_a_400(world: World):
    """RFC 9112 §3.2: more than one Host is a 400, whichever pools they name (the
    first used to win, so a proxy reading the last one saw another site)."""
    port = world.portal.port
    pairs = [
        (f"acme.localhost:{port}", f"other.localhost:{port}"),
        (f"acme.localhost:{port}", f"acme.localhost:{port}"),
        (f"localhost:{port}", f"acme.localhost:{port}"),
    ]
    for first, second in pairs:
        for path in ("/", "/.well-known/openid-configuration"):
            response = await raw(
                world,
                f"GET {path} HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
            assert status_of(response) == 400, (first, second, path, response[:200])
        assert json_of(response)["error"] == "invalid_host"
    # One Host is still served.
    one = await raw(world, f"GET / HTTP/1.1\r\nHost: acme.localhost:{port}\r\n\r\n".encode())
    assert status_of(one) == 200


async def test_hostile_hosts(world: World, db, redis_client):
    port = world.portal.port
    hosts = [
        "a" * 300,
        "acme." + "a" * 250 + f".localhost:{port}",
        f"acme.localhost:{port}@other.localhost:{port}",
        f"other.localhost:{port}@acme.localhost",
        f"user@acme.localhost:{port}",
        "127.0.0.1",
        f"127.0.0.1:{port}",
        "[::1]",
        f"[::1]:{port}",
        "0x7f.1",
        "xn--acm-bma.localhost",
        f"ACME.LOCALHOST:{port}",
        f"acme.localhost:{port}:{port}",
        "acme.localhost:99999",
        "acme..localhost",
        ".localhost",
        f"*.localhost:{port}",
        f"acme.localhost.:{port}",
        f"acme.localhost:{port} other.localhost",
        "",
    ]
    async with httpx.AsyncClient(base_url=world.portal.url, timeout=10) as client:
        for host in hosts:
            for path in ("/", "/api/qrcode", "/.well-known/openid-configuration"):
                r = await client.get(path, headers={"host": host})
                assert r.status_code < 500, (host, path, r.status_code)
                if host.lower().startswith("acme.localhost:" + str(port)) and "@" not in host:
                    continue
                if r.status_code == 200:
                    assert "Other" not in r.text and world.other.pool.slug not in r.text, host
        # Raw bytes no client library sends: NUL, non-ASCII, a host list.
        for host in (b"acme.localhost\x00.evil", "acmé.localhost".encode(), b"a\tb", b"\xff"):
            response = await raw(world, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            assert 400 <= status_of(response) < 500, (host, response[:100])
        response = await raw(
            world,
            f"GET / HTTP/1.1\r\nHost: other.localhost:{port}\r\nHost: acme.localhost:{port}\r\n"
            "\r\n".encode(),
        )
        assert status_of(response) < 500
    assert (await snapshot(db, redis_client))["pools"]


PATHS = [
    "/static/../portal/app.py",
    "/static/%2e%2e/app.py",
    "/static/%2e%2e%2fapp.py",
    "/static/..%2fapp.py",
    "/static/%00",
    "/static/a%00b.css",
    "/static/%ff",
    "/static//etc/passwd",
    "//etc/passwd",
    "/static/....//....//app.py",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/api/qrcode/%00/status",
    "/api/qrcode/..%2f..%2fetc/status",
    "/q/%00",
    "/q/%ff%fe",
    "/q/" + "a" * 3000,
    "/avatars/%00.png",
    "/avatars/../../etc.png",
    "/oidc/jwks%00",
    "/" + "a/" * 2000,
]


async def test_path_tricks(world: World, pc, apex, console):
    for path in PATHS:
        for client in (pc, apex, console.http):
            r = await client.get(path)
            assert 400 <= r.status_code < 500, (path, r.status_code)
            assert "import " not in r.text and "root:" not in r.text, path
        for raw_path in (path, path.replace("%", "%25")):
            response = await raw(
                world,
                f"GET {raw_path} HTTP/1.1\r\nHost: acme.localhost:{world.portal.port}\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
            assert 400 <= status_of(response) < 500, (raw_path, response[:200])
    # A JSON route answers in the JSON shape, a page in HTML.
    r = await pc.get("/api/qrcode/%00/status")
    assert_json_error(r, 400, 404)
    r = await pc.get("/q/%00", headers={"accept": "text/html"})
    assert r.headers["content-type"].startswith("text/html")
    # Query strings with invalid UTF-8 and NUL.
    for query in ("wait=%ff&known=%00", "wait=1e999&known=x", "wait=-1", "secret=%00%ff"):
        r = await pc.get(f"/api/qrcode/{'A' * 22}/status?{query}")
        assert_json_error(r, 400, 404)


# --- the same limits under `portal serve` (gunicorn, PortalWorker) -----------------


async def test_portal_serve_enforces_gunicorns_head_limits(
    db, redis_client, stores, fake_wechat, secret_key, tmp_path
):
    """uvicorn workers ignore gunicorn's ``limit_request_*`` by themselves: the
    worker must hand them to the portal's protocol."""
    port = free_port()
    env = serve_env(stores, fake_wechat, secret_key, f"http://localhost:{port}", tmp_path / "d")
    server = ServeProcess(env, tmp_path / "serve.log", port=port, workers=1)
    try:
        await server.ready(f"localhost:{port}")
        host = f"Host: localhost:{port}\r\n".encode()
        cases = [
            (414, b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n" + host + b"\r\n"),
            (431, b"GET / HTTP/1.1\r\n" + host + b"X-A: " + b"b" * 8200 + b"\r\n\r\n"),
            (431, b"GET / HTTP/1.1\r\n" + host + b"".join(b"X-%d: 1\r\n" % i for i in range(101))
             + b"\r\n"),
            (400, b"GET /\xff HTTP/1.1\r\n" + host + b"\r\n"),
        ]  # fmt: skip
        for expected, data in cases:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            response = await asyncio.wait_for(reader.read(65536), 10)
            writer.close()
            assert status_of(response) == expected, response[:200]
            assert "error" in json_of(response)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            big = b'{"a":"' + b"x" * MB10 + b'"}'
            started = time.monotonic()
            r = await client.post(
                "/api/mp/session",
                content=big,
                headers={"host": f"localhost:{port}", "content-type": "application/json"},
            )
            assert_json_error(r, 413)
            assert time.monotonic() - started < 5
    finally:
        server.stop()


# --- hostile headers: cookies, credentials, secrets, languages, origins ------------

GARBAGE = ["", "x" * 6000, "%00", "\x7f", "é", "a;b=c", '"quoted"', "../../", "' OR 1=1 --", "{}"]


async def test_hostile_headers(world: World, pc, apex, db, redis_client):
    before = await snapshot(db, redis_client)
    r = await pc.post("/api/qrcode", json={})
    t = r.json()
    for value in GARBAGE:
        latin = value.encode("utf-8").decode("latin-1")  # what a raw client can put on the wire
        cookies = "; ".join(
            f"{name}={latin}"
            for name in ("console_session", "portal_session", "portal_browser", "lang")
        )
        for client, method, path, extra in (
            (apex, "GET", "/console/", {"cookie": cookies}),
            (apex, "GET", "/console/pools/acme", {"cookie": cookies}),
            (apex, "POST", "/console/logout", {"cookie": cookies}),
            (pc, "GET", "/", {"cookie": cookies, "accept-language": latin}),
            (pc, "GET", "/oidc/userinfo", {"authorization": f"Bearer {latin}"}),
            (pc, "POST", "/oidc/token", {"authorization": f"Basic {latin}"}),
            (pc, "GET", f"/api/qrcode/{t['ticket']}/status", {"x-ticket-secret": latin}),
            (
                pc,
                "OPTIONS",
                "/api/qrcode",
                {"origin": latin, "access-control-request-method": "POST"},
            ),
            (pc, "POST", "/api/qrcode", {"origin": latin, "x-forwarded-host": "other.localhost"}),
            (
                apex,
                "POST",
                f"/api/mp/tickets/{t['ticket']}/scan",
                {"authorization": f"Bearer {latin}"},
            ),
            (apex, "POST", "/api/mp/avatar", {"authorization": latin}),
        ):
            headers = {k: v for k, v in extra.items()}
            try:
                r = await client.request(method, path, headers=headers)
            except (UnicodeEncodeError, httpx.LocalProtocolError):
                continue  # not sendable at all
            assert r.status_code < 500, (path, value[:20], r.status_code)
            assert "Other" not in r.text, path
            if path.startswith(("/api/", "/oidc/token", "/oidc/userinfo")) and r.status_code >= 400:
                assert_json_error(r, r.status_code)
    # Nothing was scanned, confirmed or created by any of it.
    assert (await ticket_values(redis_client))[ticket_key(t["ticket"])]["status"] == "pending"
    after = await snapshot(db, redis_client)
    assert after["users"] == before["users"] and after["tokens"] == before["tokens"]


def test_body_timeout_setting():
    from portal.settings import ConfigError, Settings

    env = {"PORTAL_ENV": "dev", "PORTAL_SECRET_KEY": "x" * 40}
    assert Settings.from_env(env).body_timeout == 30.0
    assert Settings.from_env({**env, "PORTAL_BODY_TIMEOUT": "7.5"}).body_timeout == 7.5
    for bad in ("0", "-1", "abc", "1e9", "nan"):
        with pytest.raises(ConfigError, match="PORTAL_BODY_TIMEOUT"):
            Settings.from_env({**env, "PORTAL_BODY_TIMEOUT": bad})
