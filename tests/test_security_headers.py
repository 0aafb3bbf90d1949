"""Security headers (portal/web/headers.py): a nonce-based CSP on every HTML page,
nothing framable, Referrer-Policy, nosniff on every response, HSTS only in
production over https, and the attributes of every cookie the portal sets.

The page walk takes its routes from the running app (both sites), so a page
added later is checked without anyone remembering to list it here.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from starlette.routing import Route

from portal.app import Site
from portal.tenants import admins, clients, pools
from tests.phone import Phone
from tests.support import LoopbackTransport, RunningPortal, free_socket, run_portal

RP = "https://rp.example.com:8443"
REDIRECT = f"{RP}/callback"
LOGOUT_TO = "https://bye.example.org/after"
PASSWORD = "correct horse battery"
# Pages whose URL may carry a code, ticket, state or authorization request.
NO_REFERRER = ("/oidc/", "/q/", "/dev/callback")


# --- parsing ------------------------------------------------------------------------


def csp_of(r: httpx.Response) -> dict[str, list[str]]:
    values = r.headers.get_list("content-security-policy")
    assert len(values) == 1, f"{r.url}: {values}"
    out: dict[str, list[str]] = {}
    for part in values[0].split(";"):
        name, *sources = part.split()
        assert name not in out, f"{name} twice in {values[0]}"
        out[name] = sources
    return out


def nonce_of(r: httpx.Response) -> str:
    sources = csp_of(r)["script-src"]
    assert len(sources) == 1 and sources[0].startswith("'nonce-"), sources
    return sources[0][len("'nonce-") : -1]


def check_always(r: httpx.Response, framer: str | None = None) -> None:
    """What every response carries, page or not. ``framer``: the one origin an
    authorization response (form_post, web_message) may be framed by, for silent
    authentication; its CSP names it, and X-Frame-Options (which cannot) is absent."""
    assert r.headers.get_list("x-content-type-options") == ["nosniff"], r.url
    assert r.headers.get_list("x-frame-options") == ([] if framer else ["DENY"]), r.url


def check_page(r: httpx.Response, framer: str | None = None) -> dict[str, list[str]]:
    """An HTML page: the strict CSP, every script and style tag with its nonce,
    no frame (but ``framer``'s), the Referrer-Policy its URL calls for. Returns the policy."""
    check_always(r, framer)
    raw = r.headers["content-security-policy"]
    assert (
        "unsafe-inline" not in raw
        and "unsafe-eval" not in raw
        and "*" not in raw.replace("://*.", "")
    ), raw
    csp = csp_of(r)
    nonce = nonce_of(r)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", nonce), nonce  # 128 bits, base64url
    assert csp["default-src"] == ["'none'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == [framer or "'none'"]
    assert csp["style-src"] == ["'self'", f"'nonce-{nonce}'"]
    assert "'self'" in csp["img-src"]
    tags = re.findall(r"<(?:script|style)\b[^>]*>", r.text)
    for tag in tags:
        assert f'nonce="{nonce}"' in tag, (r.url, tag)
    # Nothing inline the nonce would not cover either: handlers and style attributes.
    assert not re.search(r"\son[a-z]+=|\sstyle=", r.text), r.url
    path = r.url.path
    expected = "no-referrer" if path.startswith(NO_REFERRER) else None
    if expected:
        assert r.headers["referrer-policy"] == expected, path
    else:
        assert r.headers["referrer-policy"] in ("same-origin", "no-referrer"), path
    return csp


def is_page(r: httpx.Response) -> bool:
    return r.headers.get("content-type", "").startswith("text/html")


def cookie_attrs(header: str) -> tuple[str, str, dict[str, str]]:
    """(name, value, {attribute lowercased: value}) of one Set-Cookie header."""
    first, *rest = [p.strip() for p in header.split(";")]
    name, _, value = first.partition("=")
    attrs = {}
    for part in rest:
        key, _, val = part.partition("=")
        attrs[key.lower()] = val
    return name, value, attrs


def set_cookies(r: httpx.Response) -> dict[str, dict[str, str]]:
    out = {}
    for header in r.headers.get_list("set-cookie"):
        name, _, attrs = cookie_attrs(header)
        out[name] = attrs
    return out


# --- the world ----------------------------------------------------------------------


@dataclass
class World:
    running: RunningPortal
    pool: pools.CreatedPool
    client_id: str
    user_id: str
    issuer: str


async def make_world(running: RunningPortal, db, box, *, allow_http: bool = True) -> World:
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=allow_http)
        rp, _ = await clients.create(
            conn, box, pool_id=acme.pool.id, name="RP", redirect_uris=[REDIRECT],
            post_logout_redirect_uris=[LOGOUT_TO], web_origins=[RP], public=True,
        )  # fmt: skip
        await admins.create(conn, email="root@example.com", password=PASSWORD, superadmin=True)
        user_id = await conn.fetchval(
            "INSERT INTO users (pool_id, nickname) VALUES ($1, 'Ann') RETURNING id", acme.pool.id
        )
    issuer = running.settings.pool_url("acme")
    return World(running, acme, rp.client_id, str(user_id), issuer)


@pytest.fixture
async def dev(db, redis_client, box, settings_factory):
    """A dev-mode portal (every page the product has, /dev/* too) with a pool."""
    sock = free_socket()
    settings = settings_factory(env="dev", base_url=f"http://localhost:{sock.getsockname()[1]}")
    async with run_portal(settings, sock=sock) as running:
        yield await make_world(running, db, box)


@pytest.fixture
async def browser():
    """What a browser does: follow nothing, keep cookies, reach any host on loopback."""
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as client:
        yield client


def auth_params(world: World, **extra: str) -> dict[str, str]:
    verifier = secrets.token_urlsafe(40)
    params = {"client_id": world.client_id, "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "openid profile", "state": "st", "nonce": "nn",
              "code_challenge": create_s256_code_challenge(verifier),
              "code_challenge_method": "S256"}  # fmt: skip
    params.update(extra)
    return params


async def console_login(browser: httpx.AsyncClient, base: str) -> httpx.Response:
    page = await browser.get(f"{base}/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    r = await browser.post(
        f"{base}/console/login",
        data={"email": "root@example.com", "password": PASSWORD, "csrf": csrf},
    )
    assert r.status_code == 303, r.text
    return r


def page_ticket(html: str) -> tuple[str, str]:
    ticket = re.search(r'data-ticket="([^"]+)"', html)[1]
    return ticket, re.search(r'data-secret="([^"]+)"', html)[1]


async def scan_login(world: World, browser: httpx.AsyncClient, **params: str) -> httpx.Response:
    """The hosted page, a scan and a confirmation on the phone, the page's POST."""
    page = await browser.get(f"{world.issuer}/oidc/auth?{urlencode(auth_params(world, **params))}")
    assert page.status_code == 200, page.text
    ticket, secret = page_ticket(page.text)
    async with world.running.client() as apex:
        assert (await Phone(apex, "alice").scan_and_confirm(ticket)).status_code == 200
    return await browser.post(
        f"{world.issuer}/oidc/auth/complete", data={"ticket": ticket, "secret": secret}
    )


# --- walking every route ------------------------------------------------------------


def site_routes(running: RunningPortal, site: str) -> list[Route]:
    app = running.server.config.app
    found = next(r for r in app.router.routes if isinstance(r, Site) and r.site == site)
    return [r for r in found.router.routes if isinstance(r, Route)]


def fill(path: str, values: dict[str, str]) -> str:
    names = set(re.findall(r"{(\w+)(?::\w+)?}", path))
    unknown = names - values.keys()
    assert not unknown, f"the test does not know how to fill {unknown} in {path}: add it"
    return re.sub(r"{(\w+)(?::\w+)?}", lambda m: values[m[1]], path)


async def test_every_page_of_both_sites_has_the_strict_headers(dev: World, browser):
    running = dev.running
    async with running.client("acme") as pool:
        ticket = (await pool.post("/api/qrcode", json={})).json()["ticket"]
    await console_login(browser, running.settings.base_url)
    values = {
        "ticket": ticket,
        "slug": "acme",
        "client_id": dev.client_id,
        "user_id": dev.user_id,
        "endpoint_id": "00000000-0000-4000-8000-000000000000",  # webhooks (no such endpoint)
        "delivery_id": "1",
        "appid": "wx000000000000demo",  # /wechat/push/{appid} (issue 17)
        "name": "0" * 64,
        "path": "no/such/page",
    }
    # Pages that show more with a query (what a real visit carries).
    queries = {
        ("pool", "/oidc/auth"): urlencode(auth_params(dev)),
        ("apex", "/dev/callback"): "code=abc&state=xyz",
        ("apex", "/dev/phone"): f"url={dev.issuer}/q/{ticket}",
    }
    bases = {"apex": running.settings.base_url, "pool": dev.issuer}
    pages: set[tuple[str, str]] = set()
    checked = 0
    for site, base in bases.items():
        for route in site_routes(running, site):
            if "GET" not in (route.methods or ()) or route.path.endswith("/events"):
                continue  # the SSE stream: a JSON error without its secret, checked below
            url = base + fill(route.path, values)
            query = queries.get((site, route.path))
            r = await browser.get(url + (f"?{query}" if query else ""))
            checked += 1
            check_always(r)
            if is_page(r):
                check_page(r)
                pages.add((site, route.path))
    assert checked > 30
    # The walk saw the pages it should (else it proves nothing).
    assert {
        ("apex", "/"),
        ("apex", "/console/"),
        ("apex", "/console/pools/{slug}"),
        ("apex", "/console/pools/{slug}/users/{user_id}"),
        ("apex", "/dev/phone"),
        ("apex", "/dev/callback"),
        ("pool", "/"),
        ("pool", "/oidc/auth"),
        ("pool", "/oidc/logout"),
        ("pool", "/q/{ticket}"),
    } <= pages, pages
    # Error pages of each site, and of a host that is no pool.
    for url in (
        f"{bases['apex']}/no/such/page",
        f"{dev.issuer}/no/such/page",
        f"http://nopool.localhost:{running.port}/",
        f"{bases['apex']}/avatars/{'0' * 64}.png",
    ):
        r = await browser.get(url, headers={"accept": "text/html"})
        assert r.status_code in (400, 404), (url, r.status_code)
        assert is_page(r), url
        check_page(r)


async def test_every_response_is_nosniff(dev: World):
    """JSON, images, static files, the SDK, SSE errors, CORS preflights, 404s."""
    running = dev.running
    async with running.client("acme") as pool:
        created = await pool.post("/api/qrcode", json={})
        check_always(created)
        ticket, secret = created.json()["ticket"], created.json()["secret"]
        for path in (
            f"/api/qrcode/{ticket}.png",
            f"/api/qrcode/{ticket}.svg",
            f"/api/qrcode/{ticket}/status?secret={secret}",
            f"/api/qrcode/{ticket}/events",
            "/sdk/v1/portal.js",
            "/static/hosted.js",
            "/static/portal.css",
            "/logo",
            "/favicon.ico",
            "/oidc/jwks",
            "/.well-known/openid-configuration",
            "/api/nothing",
            "/healthz",
        ):
            r = await pool.get(path)
            assert r.status_code < 500, (path, r.status_code)
            check_always(r)
    # An uploaded avatar: a picture anyone may upload, never to be sniffed as a page.
    async with running.client() as apex:
        phone = Phone(apex, "alice")
        (await phone.login()).raise_for_status()
        async with running.client("acme") as pool:
            png = (await pool.get(f"/api/qrcode/{ticket}.png")).content
        up = await apex.post(
            "/api/mp/avatar",
            content=png,
            headers={"authorization": f"Bearer {phone.token}", "content-type": "image/png"},
        )
        assert up.status_code == 201, up.text
        check_always(up)
        avatar = await apex.get(httpx.URL(up.json()["avatar_url"]).path)
        assert avatar.status_code == 200 and avatar.headers["content-type"] == "image/png"
        check_always(avatar)
    async with running.client("acme") as pool:
        preflight = await pool.options(
            "/api/qrcode",
            headers={"origin": RP, "access-control-request-method": "POST"},
        )
        check_always(preflight)
        assert not is_page(preflight)


async def test_the_nonce_is_fresh_for_every_response(dev: World, browser):
    url = f"{dev.issuer}/oidc/auth?{urlencode(auth_params(dev))}"
    first, second = await browser.get(url), await browser.get(url)
    one, two = nonce_of(first), nonce_of(second)
    assert one != two
    # The page's script carries its own response's nonce, never the other's.
    assert f'nonce="{one}"' in first.text and f'nonce="{two}"' in second.text
    assert f'nonce="{one}"' not in second.text
    apex = [await browser.get(dev.running.settings.base_url + "/") for _ in range(2)]
    assert nonce_of(apex[0]) != nonce_of(apex[1])


async def test_the_hosted_page_allows_exactly_its_client_origin(dev: World, browser):
    r = await browser.get(f"{dev.issuer}/oidc/auth?{urlencode(auth_params(dev))}")
    assert r.status_code == 200
    csp = check_page(r)
    # Its form posts here; the answer 303s to the redirect URI (checked by browsers too).
    assert csp["form-action"] == ["'self'", RP]
    assert csp["connect-src"] == ["'self'"]  # SSE and long polling, same origin
    # The scanner's avatar: uploaded ones live on the apex, older ones on WeChat's CDN.
    assert csp["img-src"] == [
        "'self'",
        dev.running.settings.base_url,
        "thirdwx.qlogo.cn",
        "wx.qlogo.cn",
    ]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert re.search(r'<script nonce="[^"]+" src="/static/hosted.js"', r.text)


async def test_form_post_allows_only_the_redirect_uri_origin(dev: World, browser):
    r = await scan_login(dev, browser, response_mode="form_post")
    assert r.status_code == 200, r.text
    assert f'action="{REDIRECT}"' in r.text
    csp = check_page(r, framer=RP)  # silent authentication: the client's hidden iframe
    assert csp["form-action"] == [RP]
    assert csp["connect-src"] == ["'none'"]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    # An error sent back by form_post is held to the same origin.
    r = await browser.get(
        f"{dev.issuer}/oidc/auth?"
        + urlencode(auth_params(dev, response_mode="form_post", response_type="token"))
    )
    assert 'name="error"' in r.text
    assert check_page(r, framer=RP)["form-action"] == [RP]


async def test_web_message_page_has_no_form_and_only_the_clients_frame(dev: World, browser):
    r = await browser.get(
        f"{dev.issuer}/oidc/auth?"
        + urlencode(auth_params(dev, response_mode="web_message", response_type="token"))
    )
    assert 'data-target-origin="https://rp.example.com:8443"' in r.text
    csp = check_page(r, framer=RP)
    assert csp["form-action"] == ["'none'"]
    # A popup's, or the client's own hidden iframe (silent authentication), no other.
    assert csp["frame-ancestors"] == [RP]
    assert r.headers["referrer-policy"] == "no-referrer"


async def test_logout_confirmation_may_lead_to_the_post_logout_uri(dev: World, browser):
    done = await scan_login(dev, browser)  # a session, so logout asks first
    assert done.status_code == 303
    r = await browser.get(
        f"{dev.issuer}/oidc/logout?"
        + urlencode({"client_id": dev.client_id, "post_logout_redirect_uri": LOGOUT_TO})
    )
    assert r.status_code == 200 and 'action="/oidc/logout"' in r.text
    assert check_page(r)["form-action"] == ["'self'", "https://bye.example.org"]


async def test_console_and_apex_pages(dev: World, browser):
    base = dev.running.settings.base_url
    home = await browser.get(base + "/")
    csp = check_page(home)
    assert csp["form-action"] == ["'none'"] and csp["connect-src"] == ["'none'"]
    assert home.headers["referrer-policy"] == "same-origin"
    login = await browser.get(base + "/console/login")
    assert check_page(login)["form-action"] == ["'self'"]
    await console_login(browser, base)
    for path in ("/console/", "/console/pools/acme", "/console/pools/acme/logins"):
        r = await browser.get(base + path)
        assert r.status_code == 200, path
        csp = check_page(r)
        assert csp["form-action"] == ["'self'"]
        assert csp["connect-src"] == ["'none'"]  # the console has no script
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["cache-control"] == "no-store"
    # Not pages, but answers a tab may show: a policy that allows nothing.
    r = await browser.get(base + "/console/pools/acme/logins.csv")
    assert r.status_code == 200
    check_always(r)
    assert "default-src 'none'" in r.headers["content-security-policy"]
    phone = await browser.get(base + "/dev/phone")
    csp = check_page(phone)
    assert f"http://*.localhost:{dev.running.port}" in csp["img-src"]  # pool logos
    assert csp["connect-src"] == ["'self'"]


async def test_no_hsts_in_dev_or_over_http(dev: World, browser, db, redis_client, settings_factory):
    r = await browser.get(dev.running.settings.base_url + "/")
    assert "strict-transport-security" not in r.headers
    # Production over plain http (behind a proxy that has not got TLS yet): none either.
    sock = free_socket()
    settings = settings_factory(base_url=f"http://localhost:{sock.getsockname()[1]}")
    async with run_portal(settings, sock=sock) as running:
        async with running.client() as apex:
            assert "strict-transport-security" not in (await apex.get("/healthz")).headers


# --- production over https: HSTS and Secure cookies --------------------------------


@pytest.fixture
async def prod_https(db, redis_client, box, settings_factory):
    sock = free_socket()
    settings = settings_factory(base_url="https://login.example.test")
    async with run_portal(settings, sock=sock) as running:
        world = await make_world(running, db, box, allow_http=False)
        transport = httpx.AsyncHTTPTransport()

        class ToLoopback(httpx.AsyncBaseTransport):
            """The TLS proxy's part: https URLs reach the portal on loopback."""

            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                original = request.url
                request.url = original.copy_with(scheme="http", host="127.0.0.1", port=running.port)
                try:
                    return await transport.handle_async_request(request)
                finally:
                    request.url = original

        async with httpx.AsyncClient(transport=ToLoopback(), timeout=10) as client:
            yield world, client
        await transport.aclose()


async def test_hsts_on_every_response_in_production_over_https(prod_https):
    world, client = prod_https
    base = world.running.settings.base_url
    urls = [
        f"{base}/",
        f"{base}/healthz",
        f"{base}/static/portal.css",
        f"{base}/console/login",
        f"{base}/no/such/page",
        f"{world.issuer}/",
        f"{world.issuer}/logo",
        f"{world.issuer}/oidc/jwks",
        f"{world.issuer}/oidc/auth?{urlencode(auth_params(world))}",
        f"{world.issuer}/api/qrcode/nothing/status",
    ]
    for url in urls:
        r = await client.get(url)
        assert r.headers.get_list("strict-transport-security") == [
            "max-age=63072000; includeSubDomains"
        ], url
        check_always(r)
        if is_page(r):
            check_page(r)


async def test_cookies_over_https(prod_https):
    world, client = prod_https
    base = world.running.settings.base_url
    # The language cookie: no script reads it.
    r = await client.get(f"{base}/?lang=en")
    lang = set_cookies(r)["lang"]
    assert {"httponly", "secure"} <= lang.keys()
    assert lang["samesite"].lower() == "lax" and lang["path"] == "/"
    assert int(lang["max-age"]) > 0 and "domain" not in lang
    # The console: sign-in form's CSRF cookie, then the session.
    page = await client.get(f"{base}/console/login")
    csrf_cookie = set_cookies(page)["console_login_csrf"]
    assert {"httponly", "secure"} <= csrf_cookie.keys()
    assert csrf_cookie["samesite"].lower() == "strict"
    assert csrf_cookie["path"] == "/console/login" and "domain" not in csrf_cookie
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    r = await client.post(
        f"{base}/console/login",
        data={"email": "root@example.com", "password": PASSWORD, "csrf": csrf},
    )
    assert r.status_code == 303
    cookies = set_cookies(r)
    session = cookies["__Host-console"]  # Secure, Path=/, no Domain: the browser insists
    assert {"httponly", "secure"} <= session.keys()
    assert session["path"] == "/" and "domain" not in session
    assert session["samesite"].lower() == "lax" and int(session["max-age"]) > 0
    # The spent CSRF cookie is cleared with the same attributes it was set with.
    cleared = cookies["console_login_csrf"]
    assert cleared["path"] == "/console/login" and {"secure", "httponly"} <= cleared.keys()
    # The pool's own cookies (hosted page binding, the login session).
    auth_url = f"{world.issuer}/oidc/auth?{urlencode(auth_params(world))}"
    page = await client.get(auth_url)
    pool_cookies = set_cookies(page)
    assert pool_cookies, "the hosted page sets its browser-binding cookie"
    ticket, secret = page_ticket(page.text)
    async with world.running.client(headers={"host": "login.example.test"}) as apex:
        assert (await Phone(apex, "alice").scan_and_confirm(ticket)).status_code == 200
    done = await client.post(
        f"{world.issuer}/oidc/auth/complete", data={"ticket": ticket, "secret": secret}
    )
    assert done.status_code == 303, done.text
    pool_cookies.update(set_cookies(done))
    assert len(pool_cookies) >= 2, pool_cookies
    assert set(pool_cookies) == {"__Host-portal_browser", "__Host-portal_session"}
    for name, attrs in pool_cookies.items():
        # "__Host-": no other host under the apex can plant a session or a binding.
        assert {"httponly", "secure"} <= attrs.keys(), name
        # The login session goes into a client's hidden iframe (silent
        # authentication): None over https; the binding guards a form: Lax.
        want = "none" if name == "__Host-portal_session" else "lax"
        assert attrs["samesite"].lower() == want, name
        assert attrs["path"] == "/" and "domain" not in attrs, name


async def test_cookies_over_http_are_not_secure(dev: World, browser):
    r = await browser.get(dev.running.settings.base_url + "/?lang=en")
    lang = set_cookies(r)["lang"]
    assert "secure" not in lang and "httponly" in lang
    page = await browser.get(dev.running.settings.base_url + "/console/login")
    assert "secure" not in set_cookies(page)["console_login_csrf"]
