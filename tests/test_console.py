"""The tenant admin console over real HTTP against real PostgreSQL, Redis and the
fake WeChat: sign-in, isolation between pools (every route), CSRF, the
write-only AppSecret, settings seen by another process, logo, clients, users,
logins."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import zxingcpp
from PIL import Image
from starlette.routing import Route

from portal.app import Site
from portal.console import auth
from portal.tenants import admins, clients, pools
from portal.wechat import fake
from tests.phone import Phone
from tests.support import RunningPortal, free_socket, run_portal

PASSWORD = "correct horse battery"
SECOND_APPID = "wx00000000000000b2"
SECOND_SECRET = "secretofthesecondapp000000000000"
PNG_LOGO_COLOUR = (200, 30, 40)

_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF_RE.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


class Console:
    """An admin's browser, played with httpx (cookies kept, redirects not followed)."""

    def __init__(self, running: RunningPortal) -> None:
        self.running = running
        self.http = running.client()
        self.csrf = ""

    async def login(self, email: str, password: str = PASSWORD) -> httpx.Response:
        page = await self.http.get("/console/login")
        r = await self.http.post(
            "/console/login",
            data={"email": email, "password": password, "csrf": csrf_of(page.text)},
        )
        if r.status_code == 303:
            home = await self.http.get("/console/")
            assert home.status_code == 200, home.text
            self.csrf = csrf_of(home.text)
        return r

    async def get(self, path: str, **kwargs) -> httpx.Response:
        return await self.http.get(path, **kwargs)

    async def post(self, path: str, data: dict | None = None, **kwargs) -> httpx.Response:
        return await self.http.post(path, data={"csrf": self.csrf, **(data or {})}, **kwargs)

    async def aclose(self) -> None:
        await self.http.aclose()


@dataclass
class World:
    running: RunningPortal
    a: pools.CreatedPool
    b: pools.CreatedPool
    a_user: uuid.UUID
    b_user: uuid.UUID
    b_client: str  # a non-default client of B
    a_client: str
    b_family: uuid.UUID
    a_webhook: tuple[str, str] = ("", "")  # (endpoint id, delivery id)
    b_webhook: tuple[str, str] = ("", "")


async def make_webhook(conn, pool_id: int) -> tuple[str, str]:
    """A webhook endpoint and one delivery of it (the outbox's trigger makes it)."""
    endpoint = await conn.fetchval(
        """INSERT INTO webhook_endpoints (pool_id, url, events, secret_enc)
           VALUES ($1, 'https://hooks.example/in', '{user.created}', '\\x00') RETURNING id""",
        pool_id,
    )
    await conn.execute(
        "INSERT INTO events (pool_id, type, data) VALUES ($1, 'user.created', '{}')", pool_id
    )
    delivery = await conn.fetchval(
        "SELECT id FROM webhook_deliveries WHERE endpoint_id = $1", endpoint
    )
    return str(endpoint), str(delivery)


async def make_user(conn, pool_id: int, nickname: str, phone: str) -> uuid.UUID:
    return await conn.fetchval(
        """INSERT INTO users (pool_id, nickname, phone_number, phone_country_code)
           VALUES ($1, $2, $3, '86') RETURNING id""",
        pool_id,
        nickname,
        phone,
    )


async def make_refresh_token(conn, pool_id: int, client_pk: int, user_id) -> uuid.UUID:
    family = uuid.uuid4()
    await conn.execute(
        """INSERT INTO refresh_tokens (pool_id, client_pk, user_id, token_hash, family_id, scope,
                                       auth_time, expires_at)
           VALUES ($1, $2, $3, $4, $5, 'openid', now(), now() + interval '1 day')""",
        pool_id,
        client_pk,
        user_id,
        uuid.uuid4().hex,
        family,
    )
    return family


@pytest.fixture
async def world(portal, db, box) -> World:
    async with db.acquire() as conn:
        a = await pools.create(conn, box, slug="alpha", name="Alpha", allow_http=True)
        b = await pools.create(conn, box, slug="bravo", name="Bravo", allow_http=True)
        await admins.create(conn, email="a@example.com", password=PASSWORD, pool_slugs=["alpha"])
        await admins.create(conn, email="b@example.com", password=PASSWORD, pool_slugs=["bravo"])
        await admins.create(conn, email="root@example.com", password=PASSWORD, superadmin=True)
        a_user = await make_user(conn, a.pool.id, "Ann", "13800001111")
        b_user = await make_user(conn, b.pool.id, "Bob", "13900002222")
        b_client, _ = await clients.create(
            conn, box, pool_id=b.pool.id, name="B app", redirect_uris=["https://b.example/cb"]
        )
        a_client, _ = await clients.create(
            conn, box, pool_id=a.pool.id, name="A app", redirect_uris=["https://a.example/cb"]
        )
        family = await make_refresh_token(conn, b.pool.id, b_client.id, b_user)
        a_webhook = await make_webhook(conn, a.pool.id)
        b_webhook = await make_webhook(conn, b.pool.id)
    return World(
        portal,
        a,
        b,
        a_user,
        b_user,
        b_client.client_id,
        a_client.client_id,
        family,
        a_webhook,
        b_webhook,
    )


@pytest.fixture
async def as_a(world: World):
    console = Console(world.running)
    assert (await console.login("a@example.com")).status_code == 303
    yield console
    await console.aclose()


async def snapshot(db, pool_id: int) -> dict:
    """Everything of a pool the console can change."""
    return {
        "pool": dict(await db.fetchrow("SELECT * FROM pools WHERE id = $1", pool_id)),
        "clients": [
            dict(r)
            for r in await db.fetch("SELECT * FROM clients WHERE pool_id = $1 ORDER BY id", pool_id)
        ],
        "users": [
            dict(r)
            for r in await db.fetch("SELECT * FROM users WHERE pool_id = $1 ORDER BY id", pool_id)
        ],
        "keys": [
            dict(r)
            for r in await db.fetch(
                "SELECT * FROM signing_keys WHERE pool_id = $1 ORDER BY id", pool_id
            )
        ],
        "tokens": [
            dict(r)
            for r in await db.fetch(
                "SELECT * FROM refresh_tokens WHERE pool_id = $1 ORDER BY id", pool_id
            )
        ],
        "admins": [
            dict(r)
            for r in await db.fetch(
                "SELECT * FROM pool_admins WHERE pool_id = $1 ORDER BY admin_id", pool_id
            )
        ],
        "webhooks": [
            dict(r)
            for r in await db.fetch(
                "SELECT * FROM webhook_endpoints WHERE pool_id = $1 ORDER BY id", pool_id
            )
        ],
        "deliveries": [
            dict(r)
            for r in await db.fetch(
                "SELECT * FROM webhook_deliveries WHERE pool_id = $1 ORDER BY id", pool_id
            )
        ],
    }


def console_routes(running: RunningPortal) -> list[Route]:
    """The console's routes as the running app has them (not a list kept in the test)."""
    app = running.server.config.app
    apex = next(r for r in app.router.routes if isinstance(r, Site) and r.site == "apex")
    found = [
        r for r in apex.router.routes if isinstance(r, Route) and r.path.startswith("/console")
    ]
    assert len(found) > 20
    return found


def fill(path: str, slug: str, w: World, *, objects_of: str) -> str:
    """The path with its parameters: ``slug``, and object ids of pool ``objects_of``."""
    params = {
        "slug": slug,
        "client_id": w.b_client if objects_of == "b" else w.a_client,
        "user_id": str(w.b_user if objects_of == "b" else w.a_user),
        "admin_id": "2" if objects_of == "b" else "1",  # b@example.com is admin 2
        "endpoint_id": (w.b_webhook if objects_of == "b" else w.a_webhook)[0],
        "delivery_id": (w.b_webhook if objects_of == "b" else w.a_webhook)[1],
    }
    names = set(re.findall(r"{(\w+)}", path))
    unknown = names - params.keys()
    assert not unknown, f"the test does not know how to fill {unknown} in {path}: add it"
    for name in names:
        path = path.replace("{" + name + "}", params[name])
    return path


def pool_routes(running: RunningPortal) -> list[tuple[str, str]]:
    out = []
    for route in console_routes(running):
        if "{slug}" in route.path:
            out += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


# --- docs/design.md §6 routes and sign-in ---------------------------------------------------


async def test_design_routes_exist(world: World):
    paths = {r.path for r in console_routes(world.running)}
    for path in (
        "/console/login",
        "/console/logout",
        "/console/",
        "/console/pools/{slug}",
        "/console/pools/{slug}/clients",
        "/console/pools/{slug}/users",
        "/console/pools/{slug}/logins",
    ):
        assert path in paths


async def test_every_console_route_needs_a_session(world: World):
    async with world.running.client() as http:
        for route in console_routes(world.running):
            for method in sorted(route.methods or ()):
                if method == "HEAD" or route.path in ("/console/login", "/console"):
                    continue
                path = fill(route.path, "alpha", world, objects_of="a")
                r = await http.request(method, path)
                assert r.status_code == 303, (method, path)
                assert r.headers["location"].startswith("/console/login"), (method, path)


async def test_sign_in_cookie_and_sign_out(world: World, redis_client):
    console = Console(world.running)
    try:
        page = await console.get("/console/login")
        assert page.status_code == 200
        assert "content-security-policy" in page.headers
        # A session id planted before sign-in is not the one after (fixation).
        console.http.cookies.set("console_session", "planted-by-attacker", domain="127.0.0.1")
        r = await console.login("A@Example.com ")
        assert r.status_code == 303 and r.headers["location"] == "/console/"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("console_session=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
        assert "Domain" not in cookie and "domain" not in cookie  # host-only
        assert "Secure" not in cookie  # plain http here; see the https test
        session_id = console.http.cookies.get("console_session")
        assert session_id and session_id != "planted-by-attacker"
        keys = await redis_client.keys("console:session:*")
        assert len(keys) == 1 and session_id not in keys[0]  # stored under a hash
        assert 0 < await redis_client.ttl(keys[0]) <= auth.IDLE_SECONDS
        home = await console.get("/console/")
        assert "Alpha" in home.text and "Bravo" not in home.text
        r = await console.post("/console/logout")
        assert r.status_code == 303
        assert await redis_client.keys("console:session:*") == []
        # The old cookie is worth nothing now.
        async with world.running.client(cookies={"console_session": session_id}) as other:
            assert (await other.get("/console/")).status_code == 303
    finally:
        await console.aclose()


async def test_secure_cookie_in_production_https(db, redis_client, settings_factory, box):
    async with db.acquire() as conn:
        await admins.create(conn, email="s@example.com", password=PASSWORD)
    sock = free_socket()
    settings = settings_factory(base_url="https://localhost")
    async with run_portal(settings, sock=sock) as running:
        async with running.client(headers={"host": "localhost"}) as http:
            page = await http.get("/console/login")
            assert "Secure" in page.headers["set-cookie"]
            # httpx keeps no Secure cookie over plain http: hand it back as a browser would.
            http.cookies.set(auth.LOGIN_CSRF_COOKIE, page.cookies[auth.LOGIN_CSRF_COOKIE])
            r = await http.post(
                "/console/login",
                data={"email": "s@example.com", "password": PASSWORD, "csrf": csrf_of(page.text)},
            )
            assert r.status_code == 303
            cookie = r.headers["set-cookie"]
            assert cookie.startswith("__Host-console=")
            assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie


async def test_wrong_password_and_throttling(world: World):
    console = Console(world.running)
    try:
        for _ in range(auth.MAX_FAILS_ACCOUNT):
            r = await console.login("a@example.com", "wrong password!")
            assert r.status_code == 400
            assert "a@example.com" in r.text  # the entered email is kept
            assert "wrong password!" not in r.text
        # Now even the right password waits, with a clear message and Retry-After.
        r = await console.login("a@example.com")
        assert r.status_code == 429
        assert 0 < int(r.headers["retry-after"]) <= auth.FAIL_WINDOW
        assert "分钟后再试" in r.text
        # Another account from the same address is not locked by this one...
        r = await console.login("b@example.com")
        assert r.status_code == 303
    finally:
        await console.aclose()


async def test_failures_from_one_address_are_throttled(world: World):
    async with world.running.client() as http:
        page = await http.get("/console/login")
        token = csrf_of(page.text)
        for i in range(auth.MAX_FAILS_IP):
            r = await http.post(
                "/console/login",
                data={"email": f"nobody{i}@example.com", "password": "x" * 12, "csrf": token},
            )
            assert r.status_code == 400
        r = await http.post(
            "/console/login",
            data={"email": "root@example.com", "password": PASSWORD, "csrf": token},
        )
        assert r.status_code == 429 and "retry-after" in r.headers


async def test_login_form_needs_its_csrf_token(world: World):
    async with world.running.client() as http:
        await http.get("/console/login")
        r = await http.post(
            "/console/login",
            data={"email": "a@example.com", "password": PASSWORD, "csrf": "x" * 30},
        )
        assert r.status_code == 403
        assert "console_session" not in r.headers.get("set-cookie", "")


async def test_next_is_never_an_open_redirect(world: World):
    cases = [(e, "/console/") for e in ("https://evil.example/", "//evil.example/console/",
                                         "/console/\\evil", "/elsewhere")]  # fmt: skip
    for given, expected in [*cases, ("/console/pools/alpha/users", "/console/pools/alpha/users")]:
        async with world.running.client() as http:
            page = await http.get("/console/login", params={"next": given})
            r = await http.post(
                "/console/login",
                data={
                    "email": "a@example.com",
                    "password": PASSWORD,
                    "csrf": csrf_of(page.text),
                    "next": given,
                },
            )
            assert r.headers["location"] == expected


# --- isolation -------------------------------------------------------------------


async def test_every_route_of_another_pool_is_404(world: World, as_a: Console, db):
    """Admin of A against every console route of B (GET and POST, with a valid CSRF
    token and plausible data), and against A's routes with B's object ids."""
    await make_logo(as_a, "alpha")  # so A's own logo route has something to show
    before = await snapshot(db, world.b.pool.id)
    routes = pool_routes(world.running)
    assert len(routes) >= 20
    form = {
        "name": "Hacked",
        "callback_url": "https://evil.example/cb",
        "qr_lifetime": "60",
        "id_token_ttl": "600",
        "access_token_ttl": "600",
        "refresh_token_ttl": "7200",
        "id_token_alg": "ES256",
        "mode": "private",
        "appid": SECOND_APPID,
        "secret": SECOND_SECRET,
        "redirect_uris": "https://evil.example/cb",
        "email": "evil@example.com",
        "password": "long enough password",
        "logo_shape": "round",
    }
    checked = 0
    for method, path in routes:
        for slug, objects in (("bravo", "b"), ("alpha", "b"), ("no-such-pool", "b")):
            if slug == "alpha" and not re.search(r"{(client_id|user_id|admin_id)}", path):
                continue  # A's own pool with no object of B in the path: A may use it
            url = fill(path, slug, world, objects_of=objects)
            if method == "GET":
                r = await as_a.get(url)
            else:
                r = await as_a.post(url, form)
            assert r.status_code == 404, (method, url, r.status_code)
            assert "text/html" in r.headers["content-type"]
            assert "Bravo" not in r.text and "Traceback" not in r.text
            checked += 1
    assert checked >= 40
    assert await snapshot(db, world.b.pool.id) == before
    # The same GET routes answer for A's own pool (so the 404s above were not luck).
    for method, path in routes:
        if method == "GET":
            url = fill(path, "alpha", world, objects_of="a")
            r = await as_a.get(url)
            assert r.status_code == 200, (url, r.status_code)


async def test_superadmin_sees_every_pool(world: World):
    console = Console(world.running)
    try:
        assert (await console.login("root@example.com")).status_code == 303
        home = await console.get("/console/")
        assert "Alpha" in home.text and "Bravo" in home.text
        for slug in ("alpha", "bravo"):
            assert (await console.get(f"/console/pools/{slug}")).status_code == 200
    finally:
        await console.aclose()


# --- CSRF ------------------------------------------------------------------------


async def test_a_post_without_a_valid_csrf_token_changes_nothing(world: World, as_a: Console, db):
    before = await snapshot(db, world.a.pool.id)
    form = {"name": "Changed", "qr_lifetime": "60", "id_token_ttl": "600",
            "access_token_ttl": "600", "refresh_token_ttl": "7200", "id_token_alg": "RS256",
            "mode": "default", "redirect_uris": "https://a.example/x"}  # fmt: skip
    posts = [path for method, path in pool_routes(world.running) if method == "POST"]
    posts.append("/console/pools")
    for path in posts:
        url = fill(path, "alpha", world, objects_of="a")
        for token in (None, "", "forged-token-000000000000000000000"):
            data = dict(form) if token is None else {**form, "csrf": token}
            r = await as_a.http.post(url, data=data)
            assert r.status_code == 403, (url, token, r.status_code)
            assert "csrf_failed" in r.text
    # Sign-out without the token does not sign out either.
    assert (await as_a.http.post("/console/logout")).status_code == 403
    assert (await as_a.get("/console/")).status_code == 200
    assert await snapshot(db, world.a.pool.id) == before


# --- settings ----------------------------------------------------------------------


SETTINGS = {
    "name": "Alpha Two",
    "callback_url": "https://alpha.example/after-login",
    "phone_required": "on",
    "login_only": "on",
    "qr_lifetime": "90",
    "id_token_ttl": "1800",
    "access_token_ttl": "900",
    "refresh_token_ttl": "86400",
    "id_token_alg": "RS256",
    "qr_type": "link",
    "qr_fallback": "on",
    "scan_reveal": "none",
}


async def test_settings_are_saved_and_bad_input_is_reshown(world: World, as_a: Console, db):
    r = await as_a.post(
        "/console/pools/alpha", {**SETTINGS, "qr_lifetime": "5", "name": "Keep <me>"}
    )
    assert r.status_code == 400
    assert 'value="Keep &lt;me&gt;"' in r.text  # entered values kept, escaped
    assert "30" in r.text and "600" in r.text
    assert (await db.fetchval("SELECT name FROM pools WHERE slug = 'alpha'")) == "Alpha"
    r = await as_a.post("/console/pools/alpha", SETTINGS)
    assert r.status_code == 303 and r.headers["location"] == "/console/pools/alpha"
    page = await as_a.get("/console/pools/alpha")
    assert "已保存" in page.text or "Saved" in page.text
    row = await db.fetchrow("SELECT * FROM pools WHERE slug = 'alpha'")
    assert row["name"] == "Alpha Two" and row["phone_required"] and row["login_only"]
    assert not row["link_by_phone"] and row["qr_lifetime"] == 90
    assert row["callback_url"] == "https://alpha.example/after-login"
    assert row["qr_type"] == "link" and row["qr_fallback"]
    # The QR type: a mini-program code without fallback; an unknown type is refused.
    r = await as_a.post("/console/pools/alpha", {**SETTINGS, "qr_type": "hologram"})
    assert r.status_code == 400
    r = await as_a.post(
        "/console/pools/alpha", {**SETTINGS, "qr_type": "wxacode", "qr_fallback": ""}
    )
    assert r.status_code == 303
    row = await db.fetchrow("SELECT qr_type, qr_fallback FROM pools WHERE slug = 'alpha'")
    assert row["qr_type"] == "wxacode" and not row["qr_fallback"]
    # The hosted page sends the browser there, so the default client registers it.
    default = await clients.get_default(db, world.a.pool.id)
    assert "https://alpha.example/after-login" in default.redirect_uris
    # Another algorithm: a key of it is active at once, the old one still published.
    r = await as_a.post("/console/pools/alpha", {**SETTINGS, "id_token_alg": "ES256"})
    assert r.status_code == 303
    keys = await db.fetch(
        "SELECT alg, active FROM signing_keys WHERE pool_id = $1 ORDER BY id", world.a.pool.id
    )
    assert [(k["alg"], k["active"]) for k in keys] == [("RS256", False), ("ES256", True)]


async def test_what_a_scan_reveals_is_a_pool_setting(world: World, as_a: Console, db):
    """Issue 16: nothing about the scanner before confirmation, unless the pool says so."""
    page = await as_a.get("/console/pools/alpha")
    assert 'name="scan_reveal"' in page.text and 'value="none" selected' in page.text
    assert "扫码后、确认前网页可见的信息" in page.text or "Shown after a scan" in page.text
    r = await as_a.post("/console/pools/alpha", {**SETTINGS, "scan_reveal": "avatar"})
    assert r.status_code == 303
    assert await db.fetchval("SELECT scan_reveal FROM pools WHERE slug = 'alpha'") == "avatar"
    r = await as_a.post("/console/pools/alpha", {**SETTINGS, "scan_reveal": "everything"})
    assert r.status_code == 400
    assert await db.fetchval("SELECT scan_reveal FROM pools WHERE slug = 'alpha'") == "avatar"


async def test_key_rotation(world: World, as_a: Console, db):
    r = await as_a.post("/console/pools/alpha/keys/rotate")
    assert r.status_code == 303
    rows = await db.fetch("SELECT active FROM signing_keys WHERE pool_id = $1", world.a.pool.id)
    assert sorted(r["active"] for r in rows) == [False, True]
    async with world.running.client("alpha") as pool_host:
        jwks = (await pool_host.get("/oidc/jwks")).json()
    assert len(jwks["keys"]) == 2


async def test_a_settings_change_is_seen_by_another_process(
    world: World, as_a: Console, settings_factory
):
    other_sock = free_socket()
    other_settings = world.running.settings
    async with run_portal(other_settings, sock=other_sock) as other:
        cache = other.state["pools"]
        assert (await cache.get("alpha")).name == "Alpha"  # now cached there
        loads = cache.loads
        r = await as_a.post("/console/pools/alpha", SETTINGS)
        assert r.status_code == 303
        for _ in range(200):
            pool = await cache.get("alpha")
            if pool.name == "Alpha Two":
                break
            await asyncio.sleep(0.01)
        assert pool.name == "Alpha Two" and pool.login_only and pool.qr_lifetime == 90
        assert cache.loads == loads + 1  # invalidated by the message, not by a TTL
        # And what the other process serves shows it: a QR ticket lives 90 s now.
        async with other.client("alpha") as pool_host:
            r = await pool_host.post("/api/qrcode", json={})
            assert r.json()["expires_in"] == 90


# --- logo ----------------------------------------------------------------------------


def png_bytes(size=(300, 200), colour=PNG_LOGO_COLOUR, fmt="PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


async def make_logo(console: Console, slug: str, data: bytes | None = None, shape="square"):
    return await console.post(
        f"/console/pools/{slug}/logo",
        {"logo_shape": shape},
        files={"logo": ("logo.png", data or png_bytes(), "image/png")},
    )


async def test_logo_upload_shows_in_the_qr_at_once(world: World, as_a: Console, db):
    r = await make_logo(as_a, "alpha", png_bytes(fmt="JPEG"), shape="round")
    assert r.status_code == 303, r.text
    row = await db.fetchrow(
        "SELECT logo_png, logo_sha256, logo_shape FROM pools WHERE slug = 'alpha'"
    )
    assert row["logo_png"].startswith(b"\x89PNG")  # re-encoded
    assert row["logo_sha256"] == hashlib.sha256(row["logo_png"]).hexdigest()
    assert row["logo_shape"] == "round"
    with Image.open(io.BytesIO(row["logo_png"])) as im:
        assert im.size[0] == im.size[1] <= 256
    async with world.running.client("alpha") as pool_host:
        logo = await pool_host.get("/logo")
        assert logo.content == row["logo_png"]
        ticket = (await pool_host.post("/api/qrcode", json={})).json()
        qr = await pool_host.get(f"/api/qrcode/{ticket['ticket']}.png")
    with Image.open(io.BytesIO(qr.content)) as im:
        img = im.convert("RGB")
    results = [r for r in zxingcpp.read_barcodes(img) if r.format == zxingcpp.BarcodeFormat.QRCode]
    assert [r.text for r in results] == [ticket["qrcode"]["content"]]
    w, h = img.size
    r_, g_, _b = img.getpixel((w // 2, h // 2))
    assert r_ > 150 and g_ < 100  # the logo's red in the centre
    # Remove it again.
    assert (await as_a.post("/console/pools/alpha/logo/delete")).status_code == 303
    assert await db.fetchval("SELECT logo_png FROM pools WHERE slug = 'alpha'") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a" + b"\0" * 100, "PNG 或 JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "无法读取"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * (1024 * 1024 + 10), "最大 1024 KB"),
    ],
)
async def test_bad_logos_are_refused(world: World, as_a: Console, db, data, message):
    r = await make_logo(as_a, "alpha", data)
    assert r.status_code == 400
    assert message in r.text
    assert await db.fetchval("SELECT logo_png FROM pools WHERE slug = 'alpha'") is None


async def test_an_oversized_upload_is_refused_before_it_is_read(world: World, as_a: Console, db):
    r = await make_logo(as_a, "alpha", b"\x89PNG\r\n\x1a\n" + b"\0" * (3 * 1024 * 1024))
    assert r.status_code == 413 and "1 MB" in r.text
    r = await as_a.post("/console/pools/alpha", {"name": "x" * (100 * 1024)})
    assert r.status_code == 413
    assert await db.fetchval("SELECT name FROM pools WHERE slug = 'alpha'") == "Alpha"


async def test_a_decompression_bomb_is_refused(world: World, as_a: Console, db):
    out = io.BytesIO()
    Image.new("1", (20000, 20000), 0).save(out, "PNG")  # a few kB, 400 megapixels
    assert len(out.getvalue()) < 1024 * 1024
    r = await make_logo(as_a, "alpha", out.getvalue())
    assert r.status_code == 400 and "Logo 太大" in r.text
    assert await db.fetchval("SELECT logo_png FROM pools WHERE slug = 'alpha'") is None


# --- mini program and the write-only AppSecret ------------------------------------------


async def test_app_secret_is_write_only_and_never_leaks(
    world: World, as_a: Console, db, box, fresh_fake, caplog
):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def keep(r: httpx.Response) -> httpx.Response:
        seen.append(r.text + str(r.headers))
        return r

    # A wrong secret first: WeChat's 40125, shown clearly, nothing saved.
    wrong = "wrongsecret0000000000000000000000"
    r = keep(await as_a.post("/console/pools/alpha/mini-program/test",
                             {"mode": "private", "appid": SECOND_APPID, "secret": wrong}))  # fmt: skip
    assert r.status_code == 200 and "40125" in r.text
    assert await db.fetchval("SELECT mp_appid FROM pools WHERE slug = 'alpha'") is None
    # The right one tests OK before saving...
    r = keep(await as_a.post("/console/pools/alpha/mini-program/test",
                             {"mode": "private", "appid": SECOND_APPID, "secret": SECOND_SECRET}))  # fmt: skip
    assert r.status_code == 200 and "连接成功" in r.text
    # ...a bad AppID is re-shown with the message (the secret is not)...
    r = keep(await as_a.post("/console/pools/alpha/mini-program",
                             {"mode": "private", "appid": "wx123", "secret": SECOND_SECRET}))  # fmt: skip
    assert r.status_code == 400 and 'value="wx123"' in r.text
    # ...and is saved sealed.
    r = keep(await as_a.post("/console/pools/alpha/mini-program",
                             {"mode": "private", "appid": SECOND_APPID, "secret": SECOND_SECRET}))  # fmt: skip
    assert r.status_code == 303
    row = await db.fetchrow("SELECT id, mp_appid, mp_secret_enc FROM pools WHERE slug = 'alpha'")
    assert row["mp_appid"] == SECOND_APPID
    assert SECOND_SECRET.encode() not in row["mp_secret_enc"]
    assert (
        box.decrypt(row["mp_secret_enc"], pools.mp_secret_context(row["id"])).decode()
        == SECOND_SECRET
    )
    # Saved: the test button uses the stored secret when the field is left empty.
    r = keep(await as_a.post("/console/pools/alpha/mini-program/test",
                             {"mode": "private", "appid": SECOND_APPID, "secret": ""}))  # fmt: skip
    assert "连接成功" in r.text
    # Saving again with an empty secret keeps it; a new AppID without one is refused.
    r = keep(await as_a.post("/console/pools/alpha/mini-program",
                             {"mode": "private", "appid": SECOND_APPID, "secret": ""}))  # fmt: skip
    assert r.status_code == 303
    r = keep(await as_a.post("/console/pools/alpha/mini-program",
                             {"mode": "private", "appid": "wx00000000000000c3", "secret": ""}))  # fmt: skip
    assert r.status_code == 400
    assert await db.fetchval("SELECT mp_appid FROM pools WHERE slug = 'alpha'") == SECOND_APPID
    # Every page of the pool, as an admin would browse it.
    for method, path in pool_routes(world.running):
        if method == "GET" and "logo.png" not in path:
            keep(await as_a.get(fill(path, "alpha", world, objects_of="a")))
    keep(await as_a.get("/console/"))
    # A WeChat user logs in through the private mini program: the portal uses the secret.
    async with world.running.client() as apex:
        phone = Phone(apex, "zhang", appid=SECOND_APPID)
        assert (await phone.login()).status_code == 200
    for text in seen:
        assert SECOND_SECRET not in text and wrong not in text
    assert SECOND_SECRET not in caplog.text and wrong not in caplog.text
    # Back to the platform's default: both columns cleared.
    r = await as_a.post("/console/pools/alpha/mini-program", {"mode": "default"})
    assert r.status_code == 303
    row = await db.fetchrow("SELECT mp_appid, mp_secret_enc FROM pools WHERE slug = 'alpha'")
    assert row["mp_appid"] is None and row["mp_secret_enc"] is None


# --- clients -----------------------------------------------------------------------------


async def test_clients_create_edit_rotate_delete(world: World, as_a: Console, db, box):
    # Bad input: the message, and everything entered is still there.
    bad = {"name": "Shop", "redirect_uris": "https://shop.example/cb\nhttp://shop.example/cb",
           "web_origins": "https://shop.example"}  # fmt: skip
    r = await as_a.post("/console/pools/alpha/clients", bad)
    assert r.status_code == 400
    assert "http://shop.example/cb" in r.text and "https://shop.example" in r.text
    count = await db.fetchval("SELECT count(*) FROM clients WHERE pool_id = $1", world.a.pool.id)
    good = {"name": "Shop", "redirect_uris": "https://shop.example/cb\nhttps://shop.example/cb",
            "post_logout_redirect_uris": "https://shop.example/bye",
            "web_origins": "https://Shop.example/"}  # fmt: skip
    r = await as_a.post("/console/pools/alpha/clients", good)
    assert r.status_code == 303
    client_id = r.headers["location"].rsplit("/", 1)[-1]
    client = await clients.get(db, world.a.pool.id, client_id)
    assert client.redirect_uris == ("https://shop.example/cb",)
    assert client.web_origins == ("https://shop.example",)
    assert client.post_logout_redirect_uris == ("https://shop.example/bye",)
    page = await as_a.get(r.headers["location"])
    secret = re.search(r'id="client-secret" class="mono wide" readonly value="([^"]+)"', page.text)
    assert secret and clients.verify_secret(box, client, secret.group(1))
    again = await as_a.get(r.headers["location"])  # shown once only
    assert secret.group(1) not in again.text
    assert count + 1 == await db.fetchval(
        "SELECT count(*) FROM clients WHERE pool_id = $1", world.a.pool.id
    )
    # Edit.
    r = await as_a.post(f"/console/pools/alpha/clients/{client_id}",
                        {**good, "redirect_uris": "https://shop.example/new", "name": "Shop 2"})  # fmt: skip
    assert r.status_code == 303
    client = await clients.get(db, world.a.pool.id, client_id)
    assert client.name == "Shop 2" and client.redirect_uris == ("https://shop.example/new",)
    # Rotate: asked first (a POST without the confirmation changes nothing), then the
    # new secret works, the old one does not.
    r = await as_a.post(f"/console/pools/alpha/clients/{client_id}/rotate")
    assert r.status_code == 200 and 'name="confirm" value="yes"' in r.text
    client = await clients.get(db, world.a.pool.id, client_id)
    assert clients.verify_secret(box, client, secret.group(1))
    r = await as_a.post(f"/console/pools/alpha/clients/{client_id}/rotate", {"confirm": "yes"})
    page = await as_a.get(r.headers["location"])
    new = re.search(r'id="client-secret" class="mono wide" readonly value="([^"]+)"', page.text)
    client = await clients.get(db, world.a.pool.id, client_id)
    assert clients.verify_secret(box, client, new.group(1))
    assert not clients.verify_secret(box, client, secret.group(1))
    # The default client cannot be deleted; this one can.
    default = await clients.get_default(db, world.a.pool.id)
    r = await as_a.post(f"/console/pools/alpha/clients/{default.client_id}/delete")
    assert await clients.get_default(db, world.a.pool.id) is not None
    r = await as_a.post(f"/console/pools/alpha/clients/{client_id}/delete")
    assert r.status_code == 303
    assert await clients.get(db, world.a.pool.id, client_id) is None


# --- users -------------------------------------------------------------------------------


async def test_users_search_detail_and_masked_phones(world: World, as_a: Console, db):
    async with db.acquire() as conn:
        await make_user(conn, world.a.pool.id, "Zoe_100%", "13712345678")
    page = await as_a.get("/console/pools/alpha/users")
    assert "138****1111" in page.text and "13800001111" not in page.text
    assert "Bob" not in page.text
    for q, expect in (("1371", "Zoe"), ("zoe", "Zoe"), ("100%", "Zoe"), (str(world.a_user), "Ann")):
        page = await as_a.get("/console/pools/alpha/users", params={"q": q})
        assert expect in page.text, q
        other = "Ann" if expect == "Zoe" else "Zoe"
        assert other not in page.text, q
    # Another pool's user id finds nothing.
    page = await as_a.get("/console/pools/alpha/users", params={"q": str(world.b_user)})
    assert "Bob" not in page.text
    detail = await as_a.get(f"/console/pools/alpha/users/{world.a_user}")
    assert "13800001111" in detail.text  # in full on the detail page only


async def test_blocking_revokes_tokens_and_refuses_the_next_login(
    world: World, db, redis_client, fresh_fake
):
    # A real user of B, logged in through the mini program.
    async with world.running.client("bravo") as pool_host, world.running.client() as apex:
        ticket = (await pool_host.post("/api/qrcode", json={})).json()
        phone = Phone(apex, "li")
        r = await phone.scan_and_confirm(ticket["ticket"], nickname="Li")
        assert r.status_code == 200, r.text
        user_id = await db.fetchval(
            "SELECT user_id FROM wechat_identities WHERE openid LIKE '%' AND pool_id = $1",
            world.b.pool.id,
        )
        client_pk = await db.fetchval(
            "SELECT id FROM clients WHERE pool_id = $1 AND is_default", world.b.pool.id
        )
        async with db.acquire() as conn:
            family = await make_refresh_token(conn, world.b.pool.id, client_pk, user_id)
        console = Console(world.running)
        try:
            assert (await console.login("b@example.com")).status_code == 303
            r = await console.post(f"/console/pools/bravo/users/{user_id}/block")
            assert r.status_code == 303
            page = await console.get(r.headers["location"])
            assert "已封禁" in page.text
            assert await db.fetchval(
                "SELECT revoked_at IS NOT NULL FROM refresh_tokens WHERE family_id = $1", family
            )
            assert await redis_client.exists(f"revoked:sid:{family}")
            # The next scan is refused.
            ticket = (await pool_host.post("/api/qrcode", json={})).json()
            r = await phone.scan_and_confirm(ticket["ticket"])
            assert r.status_code == 403 and r.json()["error"] == "user_blocked"
            # Unblocked, they log in again.
            r = await console.post(f"/console/pools/bravo/users/{user_id}/unblock")
            assert r.status_code == 303
            ticket = (await pool_host.post("/api/qrcode", json={})).json()
            assert (await phone.scan_and_confirm(ticket["ticket"])).status_code == 200
            logins = await console.get("/console/pools/bravo/logins")
            assert "user_blocked" in logins.text
        finally:
            await console.aclose()


# --- logins ------------------------------------------------------------------------------


async def add_events(db, pool_id: int, user_id) -> None:
    now = datetime.now(UTC)
    rows = [
        (now, "success", "Mozilla"),
        (now - timedelta(days=1), "signup", '=HYPERLINK("http://evil")'),
        (now - timedelta(days=1), "user_blocked", "+cmd"),
        (now - timedelta(days=3), "success", "@SUM(1)"),
        (now - timedelta(days=40), "success", "-old"),
    ]
    for when, result, agent in rows:
        await db.execute(
            """INSERT INTO login_events (pool_id, user_id, client_id, result, ip, user_agent,
                                         created_at)
               VALUES ($1, $2, 'cweb', $3, '203.0.113.9', $4, $5)""",
            pool_id,
            user_id,
            result,
            agent,
            when,
        )


async def test_logins_page_chart_and_filters(world: World, as_a: Console, db):
    await add_events(db, world.a.pool.id, world.a_user)
    await add_events(db, world.b.pool.id, world.b_user)
    page = await as_a.get("/console/pools/alpha/logins")
    assert page.status_code == 200
    svg = re.search(r"<svg class=\"chart\".*?</svg>", page.text, re.S).group(0)
    assert 'role="img"' in svg and "<title" in svg and "<desc" in svg
    assert "style" not in svg
    assert svg.count('class="chart-day"') == 30
    assert svg.count('class="chart-ok"') == 3  # today, yesterday, 3 days ago
    assert svg.count('class="chart-refused"') == 1
    assert "30 天内成功登录 3 次，被拒绝 1 次" in svg
    assert page.text.count("203.0.113.9") == 5
    page = await as_a.get("/console/pools/alpha/logins", params={"result": "refused"})
    assert page.text.count("203.0.113.9") == 1
    since = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    page = await as_a.get("/console/pools/alpha/logins", params={"since": since, "result": "ok"})
    assert page.text.count("203.0.113.9") == 2
    page = await as_a.get("/console/pools/alpha/logins", params={"since": "yesterday"})
    assert page.status_code == 200 and "已忽略" in page.text


async def test_csv_export_is_filtered_and_defused(world: World, as_a: Console, db):
    await add_events(db, world.a.pool.id, world.a_user)
    await add_events(db, world.b.pool.id, world.b_user)
    r = await as_a.get("/console/pools/alpha/logins.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert len(rows) == 5
    assert {row["user_id"] for row in rows} == {str(world.a_user)}
    agents = {row["user_agent"] for row in rows}
    assert agents == {"Mozilla", '\'=HYPERLINK("http://evil")', "'+cmd", "'@SUM(1)", "'-old"}
    r = await as_a.get("/console/pools/alpha/logins.csv", params={"result": "user_blocked"})
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert [row["result"] for row in rows] == ["user_blocked"]


# --- superadmin -------------------------------------------------------------------------


async def test_superadmin_creates_a_pool_and_adds_admins(world: World, db):
    console = Console(world.running)
    try:
        assert (await console.login("root@example.com")).status_code == 303
        r = await console.post("/console/pools", {"slug": "Admin", "name": "X"})
        assert r.status_code == 400 and 'value="admin"' in r.text
        r = await console.post("/console/pools", {"slug": "charlie", "name": "Charlie"})
        assert r.status_code == 303 and r.headers["location"] == "/console/pools/charlie"
        assert await pools.get_by_slug(db, "charlie") is not None
        r = await console.post("/console/pools", {"slug": "charlie", "name": "Again"})
        assert r.status_code == 400 and "已被使用" in r.text
        # A new admin needs a password; an existing one is just added.
        r = await console.post("/console/pools/charlie/admins", {"email": "new@example.com"})
        assert r.status_code == 400
        r = await console.post("/console/pools/charlie/admins",
                               {"email": "new@example.com", "password": PASSWORD})  # fmt: skip
        assert r.status_code == 303
        r = await console.post("/console/pools/charlie/admins", {"email": "a@example.com"})
        assert r.status_code == 303
    finally:
        await console.aclose()
    new = Console(world.running)
    try:
        assert (await new.login("new@example.com")).status_code == 303
        home = await new.get("/console/")
        assert "Charlie" in home.text and "Alpha" not in home.text
        # Not a superadmin: cannot create pools nor add admins.
        r = await new.post("/console/pools", {"slug": "delta", "name": "Delta"})
        assert r.status_code == 403
        r = await new.post(
            "/console/pools/charlie/admins", {"email": "x@example.com", "password": PASSWORD}
        )
        assert r.status_code == 403
        assert await pools.get_by_slug(db, "delta") is None
    finally:
        await new.aclose()


async def test_pages_in_english(world: World, as_a: Console):
    page = await as_a.get("/console/pools/alpha", params={"lang": "en"})
    assert "Settings of Alpha" in page.text and 'lang="en"' in page.text
    page = await as_a.get("/console/pools/alpha")
    assert "Alpha 的设置" not in page.text  # remembered by the cookie
    assert fake.DEMO_APPID in page.text


async def test_the_login_log_pages_through_every_event_once(world: World, as_a: Console, db):
    same_time = datetime.now(UTC) - timedelta(hours=1)
    await db.executemany(
        """INSERT INTO login_events (pool_id, result, user_agent, created_at)
           VALUES ($1, 'success', $2, $3)""",
        [
            (world.a.pool.id, f"agent-{i:03d}", same_time + timedelta(seconds=i // 7))
            for i in range(120)
        ],
    )
    seen: list[str] = []
    url = "/console/pools/alpha/logins"
    for _ in range(5):
        r = await as_a.get(url)
        assert r.status_code == 200
        seen += re.findall(r"<td>(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)</td>", r.text)
        more = re.search(r'<a href="(\?[^"]+)">', r.text.split('class="pager"')[-1])
        if not more:
            break
        url = "/console/pools/alpha/logins" + more.group(1).replace("&amp;", "&")
    assert len(seen) == 120
    assert seen == sorted(seen, reverse=True)
    r = await as_a.get("/console/pools/alpha/logins.csv")
    agents = [row["user_agent"] for row in csv.DictReader(io.StringIO(r.text.lstrip("\ufeff")))]
    assert sorted(agents) == [f"agent-{i:03d}" for i in range(120)]


async def test_a_session_ends_at_its_absolute_limit(world: World, as_a: Console, redis_client):
    (key,) = await redis_client.keys("console:session:*")
    data = json.loads(await redis_client.get(key))
    data["created"] -= auth.ABSOLUTE_SECONDS + 1
    await redis_client.set(key, json.dumps(data), ex=60)
    r = await as_a.get("/console/pools/alpha")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=")
    assert await redis_client.exists(key) == 0


async def test_pages_have_no_inline_script_or_style(world: World, as_a: Console):
    """CSP-ready: the console's policy forbids inline code, so none may be there."""
    await make_logo(as_a, "alpha")
    pages = [
        fill(p, "alpha", world, objects_of="a") for m, p in pool_routes(world.running) if m == "GET"
    ]
    for url in [*pages, "/console/"]:
        if url.endswith((".png", ".csv")):
            continue
        r = await as_a.get(url)
        assert r.status_code == 200, url
        assert "'unsafe-inline'" not in r.headers["content-security-policy"]
        assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", r.text), url
