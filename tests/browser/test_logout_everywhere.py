"""Logout that reaches every site (issue 18), in Chromium: two websites of one pool,
each with a backend that keeps its own sessions and registered a back-channel
logout URI. The person signs in at both (one scan, then single sign-on); when
they log out at one, the other's session ends too (the pool's worker posts a
signed logout token to it), and again when an admin blocks them in the console."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.async_api import expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from portal import worker
from portal.tenants import admins, clients
from tests.phone import Phone
from tests.support import LoopbackTransport, free_socket, serve_asgi

EVENT = "http://schemas.openid.net/event/backchannel-logout"
PASSWORD = "correct horse battery staple 18"


@dataclass
class Site:
    """A relying party with a backend: its sessions (cookie → who and which login)."""

    name: str
    issuer: str
    origin: str = ""
    client_id: str = ""
    secret: str = ""
    sessions: dict[str, dict] = field(default_factory=dict)
    pending: dict[str, dict] = field(default_factory=dict)
    heard: list[dict] = field(default_factory=list)

    def app(self) -> Starlette:
        async def home(request: Request) -> Response:
            session = self.sessions.get(request.cookies.get("rp", ""))
            body = (
                f'<p id="status">Signed in as {session["name"]}</p>'
                '<a id="logout" href="/logout">Log out</a>'
                if session
                else '<p id="status">Signed out</p><a id="login" href="/login">Log in</a>'
            )
            return HTMLResponse(
                f"<!doctype html><link rel='icon' href='data:,'><title>{self.name}</title><h1>{self.name}</h1>{body}"
            )

        async def login(request: Request) -> Response:
            state, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(40)
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            self.pending[state] = {"verifier": verifier}
            query = urlencode({
                "client_id": self.client_id, "response_type": "code", "scope": "openid profile",
                "redirect_uri": f"{self.origin}/callback", "state": state,
                "code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256",
            })  # fmt: skip
            return RedirectResponse(f"{self.issuer}/oidc/auth?{query}", status_code=303)

        async def callback(request: Request) -> Response:
            pending = self.pending.pop(request.query_params.get("state", ""), None)
            if pending is None:
                return HTMLResponse("bad state", status_code=400)
            async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as http:
                tokens = (await http.post(f"{self.issuer}/oidc/token", auth=(self.client_id, self.secret), data={
                    "grant_type": "authorization_code", "code": request.query_params["code"],
                    "redirect_uri": f"{self.origin}/callback", "code_verifier": pending["verifier"],
                })).json()  # fmt: skip
                keys = KeySet.import_key_set((await http.get(f"{self.issuer}/oidc/jwks")).json())
            claims = jwt.decode(tokens["id_token"], keys).claims
            cookie = secrets.token_urlsafe(16)
            self.sessions[cookie] = {"sub": claims["sub"], "sid": claims["sid"],
                                     "name": claims.get("name", ""), "id_token": tokens["id_token"]}  # fmt: skip
            response = RedirectResponse("/", status_code=303)
            response.set_cookie("rp", cookie, httponly=True, samesite="lax")
            return response

        async def logout(request: Request) -> Response:
            session = self.sessions.pop(request.cookies.get("rp", ""), None)
            if session is None:
                return RedirectResponse("/", status_code=303)
            query = urlencode({"id_token_hint": session["id_token"],
                               "post_logout_redirect_uri": f"{self.origin}/"})  # fmt: skip
            return RedirectResponse(f"{self.issuer}/oidc/logout?{query}", status_code=303)

        async def backchannel(request: Request) -> Response:
            """Back-Channel Logout 1.0 §2.6: validate, then end the sessions it names."""
            token = str((await request.form()).get("logout_token") or "")
            async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as http:
                keys = KeySet.import_key_set((await http.get(f"{self.issuer}/oidc/jwks")).json())
            try:
                decoded = jwt.decode(token, keys)
            except Exception:
                return Response(status_code=400)
            claims = decoded.claims
            if (decoded.header.get("typ") != "logout+jwt" or claims.get("iss") != self.issuer
                    or claims.get("aud") != self.client_id or EVENT not in claims.get("events", {})
                    or "nonce" in claims):  # fmt: skip
                return Response(status_code=400)
            self.heard.append(claims)
            for cookie, session in list(self.sessions.items()):
                if claims.get("sid") == session["sid"] or (
                    "sid" not in claims and claims.get("sub") == session["sub"]
                ):
                    del self.sessions[cookie]
            return Response(status_code=200, headers={"cache-control": "no-store"})

        return Starlette(routes=[
            Route("/", home), Route("/login", login), Route("/callback", callback),
            Route("/logout", logout), Route("/backchannel", backchannel, methods=["POST"]),
        ])  # fmt: skip


@contextlib.asynccontextmanager
async def running_site(site: Site, dev_portal, db, box) -> AsyncIterator[Site]:
    sock = free_socket()
    site.origin = f"http://{site.name.lower()}.localhost:{sock.getsockname()[1]}"
    async with db.acquire() as conn, conn.transaction():
        client, secret = await clients.create(
            conn, box, pool_id=dev_portal.pool.pool.id, name=site.name,
            redirect_uris=[f"{site.origin}/callback"], post_logout_redirect_uris=[f"{site.origin}/"],
            allow_http=True,
            registration={"backchannel_logout_uri": f"http://127.0.0.1:{sock.getsockname()[1]}/backchannel"},
        )  # fmt: skip
    site.client_id, site.secret = client.client_id, secret
    async with serve_asgi(site.app(), sock, name=site.name, lifespan="off"):
        yield site


@pytest.fixture
async def sites(dev_portal, db, box) -> AsyncIterator[tuple[Site, Site]]:
    await db.execute("TRUNCATE procrastinate_jobs, procrastinate_workers RESTART IDENTITY CASCADE")
    issuer = dev_portal.pool_url("").rstrip("/")
    async with (
        running_site(Site("Shop", issuer), dev_portal, db, box) as shop,
        running_site(Site("Forum", issuer), dev_portal, db, box) as forum,
    ):
        yield shop, forum


async def run_worker(dev_portal) -> None:
    await worker.run_async(
        dev_portal.running.settings, concurrency=2, install_signal_handlers=False, wait=False
    )


async def sign_in_at_both(page, sites, apex, *, scan: bool = True) -> None:
    shop, forum = sites
    await page.goto(f"{shop.origin}/")
    await page.locator("#login").click()
    if scan:
        hosted = page.locator("#login[data-ticket]")
        await expect(hosted).to_be_attached()
        ticket = await hosted.get_attribute("data-ticket")
        r = await Phone(apex, "sally").scan_and_confirm(ticket, nickname="Sally")
        assert r.status_code == 200, r.text
    await expect(page.locator("#status")).to_have_text("Signed in as Sally")
    # The second site: the pool's session signs the person in without a scan.
    await page.goto(f"{forum.origin}/")
    await page.locator("#login").click()
    await expect(page.locator("#status")).to_have_text("Signed in as Sally")


async def test_logging_out_at_one_site_ends_the_other(dev_portal, sites, apex, new_page):
    shop, forum = sites
    page = await new_page(locale="en")
    await sign_in_at_both(page, sites, apex)

    await page.goto(f"{shop.origin}/")
    await page.locator("#logout").click()
    await expect(page).to_have_url(f"{shop.origin}/")
    await expect(page.locator("#status")).to_have_text("Signed out")
    assert len(forum.sessions) == 1  # nothing sent yet: the worker sends it
    await run_worker(dev_portal)
    await page.goto(f"{forum.origin}/")
    await expect(page.locator("#status")).to_have_text("Signed out")
    assert [c.get("sid") is not None for c in forum.heard] == [True]
    assert [c.get("sid") is not None for c in shop.heard] == [True]


async def test_an_admin_blocking_the_person_ends_both(dev_portal, sites, apex, new_page, db):
    page = await new_page(locale="en")
    await sign_in_at_both(page, sites, apex)
    async with db.acquire() as conn:
        await admins.create(conn, email="ops@example.com", password=PASSWORD, pool_slugs=["acme"])
    user_id = await db.fetchval("SELECT id FROM users WHERE nickname = 'Sally'")

    console = await new_page(locale="en")
    await console.goto(dev_portal.url("/console/login"))
    await console.locator("#email").fill("ops@example.com")
    await console.locator("#password").fill(PASSWORD)
    await console.locator("button[type=submit]").click()
    await console.goto(dev_portal.url(f"/console/pools/acme/users/{user_id}"))
    await console.locator("form[action$='/block'] button[type=submit]").click()
    await expect(console.locator("h1 .badge-bad")).to_be_visible()

    await run_worker(dev_portal)
    for site in sites:
        await page.goto(f"{site.origin}/")
        await expect(page.locator("#status")).to_have_text("Signed out")
        assert [("sid" in c, c["sub"]) for c in site.heard] == [(False, str(user_id))]
