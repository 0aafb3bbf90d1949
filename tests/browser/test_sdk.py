"""The JavaScript SDK, the ``<portal-login>`` element and the hosted page by popup and
redirect, in headless Chromium, from the example website (``examples/rp``) on its
own origin.

The example site's backend verifies every ID token it receives against the
pool's JWKS (issuer, audience, expiry, nonce); a page shows "verified" only
when that backend said so. The phone is played over the real mini-program API
(``tests.phone.Phone``) against the fake WeChat.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
import zxingcpp
from PIL import Image
from playwright.async_api import Locator, Page, Request, Route, expect

from examples.rp.app import Config, create_app
from portal.scan.tickets import key as ticket_key
from portal.tenants import clients, pools
from tests.browser.conftest import POOL_SLUG, TIMEOUT_MS
from tests.phone import Phone
from tests.support import LoopbackTransport, free_socket, serve_asgi

EVENTS_RE = re.compile(r"/api/qrcode/[A-Za-z0-9_-]+/events\?")
CORS_NOISE = (r"blocked by CORS policy", r"Failed to load resource")


@dataclass(frozen=True)
class Site:
    origin: str  # registered for the client
    other_origin: str  # the same server on an origin the pool knows nothing about
    client: clients.Client
    config: Config

    def url(self, path: str) -> str:
        return self.origin + path


@pytest.fixture
async def site(dev_portal, db, box) -> AsyncIterator[Site]:
    """The example website on its own port, with a public client of the pool at its origin."""
    sock = free_socket()
    port = sock.getsockname()[1]
    origin = f"http://localhost:{port}"
    async with db.acquire() as conn, conn.transaction():
        client, _ = await clients.create(
            conn, box, pool_id=dev_portal.pool.pool.id, name="Example Shop",
            redirect_uris=[f"{origin}/callback"], web_origins=[origin], public=True,
            allow_http=True,
        )  # fmt: skip
    config = Config(dev_portal.pool_url("").rstrip("/"), client.client_id, origin)
    app = create_app(config, transport=LoopbackTransport())
    async with serve_asgi(app, sock, name="the example site"):
        yield Site(origin, f"http://127.0.0.1:{port}", client, config)


async def returning_user(dev_portal, phone: Phone, **profile: str) -> None:
    """An earlier login, so the pool shows this user's face as soon as they scan (the
    pool's scan_reveal allowing it: issue 16)."""
    await dev_portal.reveal_scanners()
    earlier = await dev_portal.create_ticket()
    r = await phone.scan_and_confirm(earlier["ticket"], **profile)
    assert r.status_code == 200, r.text


async def read_qr(img: Locator, dev_portal) -> str:
    """Reads the QR off the ``<img>`` as a camera would; returns its ticket."""
    await expect(img).to_be_visible()
    assert await img.evaluate("img => img.tagName") == "IMG"
    await img.evaluate("img => img.decode()")
    found = zxingcpp.read_barcodes(
        Image.open(io.BytesIO(await img.screenshot())), formats=zxingcpp.BarcodeFormat.QRCode
    )
    assert len(found) == 1, [f.text for f in found]
    match = re.fullmatch(
        re.escape(dev_portal.url("/q/")) + r"([A-Za-z0-9_-]{22,32})", found[0].text
    )
    assert match, found[0].text
    return match[1]


async def shown_ticket(widget: Locator) -> str:
    await expect(widget).to_have_attribute("data-portal-status", "pending")
    ticket = await widget.get_attribute("data-portal-ticket")
    assert ticket
    return ticket


async def expect_verified(page: Page, nickname: str) -> dict:
    """The example site's backend verified the ID token: who it says logged in."""
    result = page.locator("#result")
    await expect(result).to_have_attribute("data-state", "verified")
    await expect(result).to_contain_text(f"Logged in as {nickname}")
    return await page.evaluate("window.verified")


async def until(condition, timeout: float = TIMEOUT_MS / 1000) -> None:
    """Waits for a condition on what the test recorded (requests seen, and so on)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (set by Playwright callbacks)
            await asyncio.sleep(0.05)


async def events(page: Page) -> list[dict]:
    return await page.evaluate("window.events")


async def expire(dev_portal, redis_client, ticket: str) -> None:
    """Ends the ticket's time now (its deadline is on Redis's clock); the next read of
    it in Redis turns it "expired" and wakes whoever waits on it."""
    await redis_client.hset(ticket_key(ticket), "exp", 0)
    async with dev_portal.client() as pool:
        r = await pool.get(f"/api/qrcode/{ticket}.png")  # a plain read, straight from Redis
    assert r.status_code == 200


# --- 1. the SDK ----------------------------------------------------------------------


async def test_sdk_on_success_gets_the_user_and_tokens(
    dev_portal, site, apex, new_page, doc_screenshot
):
    avatar_url = dev_portal.pool_url("/logo")
    alice = Phone(apex, "alice")
    await returning_user(dev_portal, alice, nickname="爱丽丝", avatar_url=avatar_url)

    page = await new_page()
    await page.goto(site.url("/sdk?lang=zh-CN"))
    widget = page.locator("#login .portal-qr")
    await expect(widget.get_by_role("status")).to_have_text("请使用微信扫一扫登录")
    ticket = await read_qr(widget.locator("img.portal-qr-img"), dev_portal)
    assert ticket == await shown_ticket(widget)
    await expect(widget.get_by_role("img", name="用微信扫码登录的二维码")).to_be_visible()
    await doc_screenshot(page, "sdk-qrlogin")

    # The scanner's face and name over the code, before confirming.
    assert (await alice.scan(ticket)).status_code == 200
    await expect(widget.locator(".portal-qr-who")).to_have_text("爱丽丝")
    await expect(widget.locator(".portal-qr-avatar")).to_have_attribute("src", avatar_url)
    await expect(widget.locator(".portal-qr-avatar")).to_be_visible()
    await expect(widget.get_by_role("status")).to_have_text("扫码成功，请在手机上确认登录")
    await doc_screenshot(page, "sdk-qrlogin-scanned")

    assert (await alice.confirm(ticket)).status_code == 200
    verified = await expect_verified(page, "爱丽丝")
    tokens = await page.evaluate("window.tokens")
    assert tokens["token_type"] == "Bearer" and tokens["access_token"] and tokens["id_token"]
    assert tokens["user"]["nickname"] == "爱丽丝"
    assert verified["sub"] == tokens["user"]["id"] and verified["flow"] == "sdk"
    assert [e["name"] for e in await events(page)] == ["scanned", "success"]
    assert (await events(page))[0]["detail"] == {"nickname": "爱丽丝", "avatar_url": avatar_url}
    await expect(widget.get_by_role("status")).to_have_text("登录成功")


@pytest.mark.locale("en")
async def test_sdk_texts_follow_the_page_language_and_can_be_overridden(site, new_page):
    page = await new_page(locale="en")
    await page.goto(site.url("/sdk?lang=en"))
    widget = page.locator("#login .portal-qr")
    await expect(widget.get_by_role("status")).to_have_text(
        "Scan the QR code with WeChat to log in"
    )
    await page.evaluate(
        """cfg => { const box = document.createElement("div"); box.id = "custom";
            document.querySelector("main").append(box);
            Portal.qrLogin(box, {clientId: cfg.clientId, lang: "zh", texts: {scan: "扫我"}}); }""",
        await page.evaluate("JSON.parse(document.getElementById('config').textContent)"),
    )
    await expect(page.locator("#custom .portal-qr-status")).to_have_text("扫我")
    await expect(page.locator("#custom img.portal-qr-img")).to_have_attribute(
        "alt", "用微信扫码登录的二维码"
    )


async def test_starting_twice_doubles_nothing(dev_portal, site, apex, new_page):
    page = await new_page()
    creates: list[str] = []
    streams: list[str] = []

    def seen(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/api/qrcode"):
            creates.append(request.url)
        elif EVENTS_RE.search(request.url):
            streams.append(request.url)

    page.on("request", seen)
    await page.goto(site.url("/sdk?lang=zh-CN"))
    widget = page.locator("#login .portal-qr")
    first = await shown_ticket(widget)
    same = await page.evaluate(
        """() => {
            const cfg = JSON.parse(document.getElementById("config").textContent);
            const again = Portal.qrLogin("#login", {clientId: cfg.clientId});
            const sameHandle = again === window.widget;
            again.refresh(); again.refresh(); window.widget.refresh();  // one new code, not three
            return sameHandle;
        }"""
    )
    assert same
    await expect(widget).not_to_have_attribute("data-portal-ticket", first)
    second = await shown_ticket(widget)
    await expect(page.locator("#login .portal-qr")).to_have_count(1)
    await page.wait_for_timeout(500)  # room for any duplicate to show itself
    assert len(creates) == 2, creates
    assert len(streams) == 2, streams  # one per ticket: the first one's was closed

    r = await Phone(apex, "carol").scan_and_confirm(second, nickname="Carol")
    assert r.status_code == 200, r.text
    await expect_verified(page, "Carol")
    assert [e["name"] for e in await events(page)].count("success") == 1


# --- 2. the component ------------------------------------------------------------------


async def test_component_fires_portal_login(dev_portal, site, apex, new_page, doc_screenshot):
    page = await new_page()
    await page.goto(site.url("/component?lang=zh-CN"))
    element = page.locator("portal-login")
    widget = element.locator(".portal-qr")  # inside its shadow root
    await expect(element.get_by_role("heading")).to_have_text("微信扫码登录")
    ticket = await read_qr(widget.locator("img.portal-qr-img"), dev_portal)
    await doc_screenshot(page, "sdk-component")
    # The events bubble out of the shadow root to the document.
    await page.evaluate(
        """() => document.addEventListener("portal-login", e => { window.docSaw = e.detail.user; })"""
    )

    bob = Phone(apex, "bob")
    assert (await bob.scan(ticket)).status_code == 200
    await expect(widget.get_by_role("status")).to_have_text("扫码成功，请在手机上确认登录")
    assert (await bob.confirm(ticket, nickname="Bob")).status_code == 200
    verified = await expect_verified(page, "Bob")
    assert verified["flow"] == "component"
    names = [e["name"] for e in await events(page)]
    assert names == ["portal-scanned", "portal-login"], names
    assert (await page.evaluate("window.docSaw"))["id"] == verified["sub"]


async def test_component_expiry_refreshes_by_itself(dev_portal, site, apex, new_page, redis_client):
    page = await new_page()
    await page.goto(site.url("/component?lang=zh-CN"))  # the page sets auto-refresh
    widget = page.locator("portal-login .portal-qr")
    old = await shown_ticket(widget)
    await expire(dev_portal, redis_client, old)
    await expect(widget).not_to_have_attribute("data-portal-ticket", old)
    fresh = await shown_ticket(widget)
    assert "portal-expired" in [e["name"] for e in await events(page)]
    r = await Phone(apex, "dora").scan_and_confirm(fresh, nickname="Dora")
    assert r.status_code == 200, r.text
    await expect_verified(page, "Dora")


# --- 3. popup and redirect ---------------------------------------------------------------


async def test_popup_resolves_with_tokens(dev_portal, site, apex, new_page, doc_screenshot):
    page = await new_page()
    await page.goto(site.url("/popup"))
    nonce = (await page.evaluate("JSON.parse(document.getElementById('config').textContent)"))[
        "nonce"
    ]
    async with page.expect_popup() as info:
        await page.get_by_role("button", name="Log in with WeChat").click()
    popup = await info.value
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    popup.once("close", lambda _: closed.done() or closed.set_result(None))
    await expect(popup).to_have_url(re.compile(r"/oidc/auth\?.*response_mode=web_message"))
    query = parse_qs(urlsplit(popup.url).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] == [nonce]
    ticket = await read_qr(popup.locator("#qr"), dev_portal)
    await doc_screenshot(popup, "sdk-popup")

    r = await Phone(apex, "erin").scan_and_confirm(ticket, nickname="Erin")
    assert r.status_code == 200, r.text
    await asyncio.wait_for(closed, TIMEOUT_MS / 1000)  # the popup closed itself
    verified = await expect_verified(page, "Erin")
    assert verified["flow"] == "popup"
    tokens = await page.evaluate("window.tokens")
    assert tokens["nonce"] == nonce and tokens["claims"]["nonce"] == nonce
    assert tokens["claims"]["aud"] == site.client.client_id
    assert tokens["access_token"] and tokens["token_type"] == "Bearer"


async def test_redirect_callback_completes(dev_portal, site, apex, new_page, doc_screenshot):
    page = await new_page()
    await page.goto(site.url("/redirect"))
    await page.get_by_role("button", name="Log in with WeChat").click()
    await expect(page).to_have_url(re.compile("^" + re.escape(dev_portal.pool_url("/oidc/auth?"))))
    ticket = await read_qr(page.locator("#qr"), dev_portal)
    await doc_screenshot(page, "sdk-redirect")

    r = await Phone(apex, "frank").scan_and_confirm(ticket, nickname="Frank")
    assert r.status_code == 200, r.text
    verified = await expect_verified(page, "Frank")
    assert verified["flow"] == "redirect"
    assert page.url == site.url("/callback")  # the code left the address bar
    assert (await events(page))[0] == {
        "name": "redirect",
        "detail": {"appState": {"from": "/redirect"}},
    }
    # The answer was used once: the same callback again is refused by the SDK.
    failed = await page.evaluate(
        "() => Portal.handleRedirectCallback(location.href + '?code=x&state=y').catch(e => e.error)"
    )
    assert failed == "invalid_state"


# --- 4. refusals, expiry and lost connections ----------------------------------------------


@pytest.mark.allow_console_errors(*CORS_NOISE)
async def test_an_unregistered_origin_is_refused(dev_portal, site, new_page):
    page = await new_page()
    await page.goto(
        site.other_origin + "/sdk?lang=zh-CN"
    )  # the same page, on an origin nobody registered
    widget = page.locator("#login .portal-qr")
    await expect(widget).to_have_attribute("data-portal-status", "error")
    await expect(widget.get_by_role("button", name="刷新二维码")).to_be_visible()
    assert await widget.get_attribute("data-portal-ticket") is None  # no ticket was made
    assert (await events(page)) == [
        {"name": "error", "detail": {"error": "network_error", "retrying": False}}
    ]
    # What the browser was told, as a server sees it.
    async with dev_portal.client() as pool:
        r = await pool.post(
            "/api/qrcode",
            json={"client_id": site.client.client_id},
            headers={"origin": site.other_origin},
        )
    assert r.status_code == 403 and r.json()["error"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in r.headers


async def test_expiry_then_click_to_retry(dev_portal, site, apex, new_page, redis_client):
    page = await new_page()
    await page.goto(site.url("/sdk?lang=zh-CN"))  # autoRefresh off
    widget = page.locator("#login .portal-qr")
    old = await shown_ticket(widget)
    await expire(dev_portal, redis_client, old)
    await expect(widget).to_have_attribute("data-portal-status", "expired")
    await expect(widget.locator(".portal-qr-why")).to_have_text("二维码已过期")
    assert [e["name"] for e in await events(page)] == ["expired"]
    await widget.get_by_role("button", name="刷新二维码").click()
    fresh = await shown_ticket(widget)
    assert fresh != old
    await expect(widget.locator(".portal-qr-retry")).to_be_hidden()
    r = await Phone(apex, "gina").scan_and_confirm(fresh, nickname="Gina")
    assert r.status_code == 200, r.text
    await expect_verified(page, "Gina")


async def test_expiry_with_auto_refresh(dev_portal, site, apex, new_page, redis_client):
    page = await new_page()
    await page.goto(site.url("/sdk?autoRefresh=1&lang=zh-CN"))
    widget = page.locator("#login .portal-qr")
    old = await shown_ticket(widget)
    await expire(dev_portal, redis_client, old)
    await expect(widget).not_to_have_attribute("data-portal-ticket", old)
    fresh = await shown_ticket(widget)
    await expect(widget.locator(".portal-qr-retry")).to_be_hidden()
    assert [e["name"] for e in await events(page)] == ["expired"]
    r = await Phone(apex, "hank").scan_and_confirm(fresh, nickname="Hank")
    assert r.status_code == 200, r.text
    await expect_verified(page, "Hank")


async def test_a_real_expiry_with_a_short_qr_lifetime(dev_portal, site, apex, new_page, db):
    """No shortcut: the pool's shortest QR lifetime (30 s) runs out while the page watches."""
    await db.execute("UPDATE pools SET qr_lifetime = 30 WHERE slug = $1", POOL_SLUG)
    await pools.announce_change(dev_portal.running.state["hub"], POOL_SLUG)
    cache = dev_portal.running.state["pools"]
    await until(lambda: cache._entries.get(POOL_SLUG) is None)  # the message came back

    page = await new_page()
    await page.goto(site.url("/sdk?autoRefresh=1&lang=zh-CN"))
    widget = page.locator("#login .portal-qr")
    old = await shown_ticket(widget)
    await expect(widget).not_to_have_attribute("data-portal-ticket", old, timeout=45_000)
    fresh = await shown_ticket(widget)
    assert [e["name"] for e in await events(page)] == ["expired"]
    r = await Phone(apex, "liam").scan_and_confirm(fresh, nickname="Liam")
    assert r.status_code == 200, r.text
    await expect_verified(page, "Liam")


async def test_cancel_shows_retry(dev_portal, site, apex, new_page):
    page = await new_page()
    await page.goto(site.url("/sdk?lang=zh-CN"))
    widget = page.locator("#login .portal-qr")
    ticket = await shown_ticket(widget)
    ivan = Phone(apex, "ivan")
    assert (await ivan.scan(ticket)).status_code == 200
    assert (await ivan.cancel(ticket)).status_code == 200
    await expect(widget.locator(".portal-qr-why")).to_have_text("你已取消登录")
    await expect(widget.get_by_role("button", name="刷新二维码")).to_be_visible()
    assert [e["name"] for e in await events(page)] == ["scanned", "cancelled"]


@pytest.mark.allow_console_errors(r"ERR_FAILED", r"Failed to load resource")
async def test_a_lost_sse_connection_recovers(dev_portal, site, apex, new_page):
    page = await new_page()
    streams: list[str] = []

    async def drop_first(route: Route) -> None:
        streams.append(route.request.url)
        if len(streams) == 1:
            await route.abort("connectionreset")  # the stream is cut
        else:
            await route.continue_()

    await page.route(EVENTS_RE, drop_first)
    await page.goto(site.url("/sdk?lang=zh-CN"))
    await page.evaluate("window.sameDocument = true")
    widget = page.locator("#login .portal-qr")
    ticket = await shown_ticket(widget)
    await until(lambda: len(streams) > 1)  # the SDK connected again by itself

    r = await Phone(apex, "judy").scan_and_confirm(ticket, nickname="Judy")
    assert r.status_code == 200, r.text
    await expect_verified(page, "Judy")
    assert await page.evaluate("window.sameDocument")  # no reload
    names = [e["name"] for e in await events(page)]
    assert names == ["error", "scanned", "success"] or names == ["error", "success"], names
    assert (await events(page))[0]["detail"] == {"error": "connection_lost", "retrying": True}


@pytest.mark.allow_console_errors(r"ERR_FAILED", r"Failed to load resource")
async def test_no_sse_at_all_falls_back_to_long_polling(dev_portal, site, apex, new_page):
    page = await new_page()
    polls: list[str] = []
    page.on("request", lambda r: "/status?" in r.url and "wait=" in r.url and polls.append(r.url))
    await page.route(EVENTS_RE, lambda route: route.abort("connectionrefused"))
    await page.goto(site.url("/sdk?lang=zh-CN"))
    widget = page.locator("#login .portal-qr")
    ticket = await shown_ticket(widget)
    await until(lambda: polls)
    await expect(widget.get_by_role("status")).to_have_text("请使用微信扫一扫登录")  # back online

    kim = Phone(apex, "kim")
    assert (await kim.scan(ticket)).status_code == 200
    await expect(widget.get_by_role("status")).to_have_text("扫码成功，请在手机上确认登录")
    assert (await kim.confirm(ticket, nickname="Kim")).status_code == 200
    await expect_verified(page, "Kim")
    assert "known=pending" in polls[0]


# --- 5. the example shop's page sets the widget's language (issue 21, item 13) -----------


@pytest.mark.parametrize("path", ["/sdk", "/component"])
async def test_the_page_language_wins_over_the_browsers(site, new_page, path):
    # A Chinese browser on the shop's English page: the widget speaks the page's language.
    page = await new_page(locale="zh-CN")
    await page.goto(site.url(path))
    widget = page.locator(".portal-qr")
    await expect(widget.get_by_role("status")).to_have_text(
        "Scan the QR code with WeChat to log in"
    )
    if path == "/component":
        await expect(page.locator("portal-login").get_by_role("heading")).to_have_text(
            "Log in with WeChat"
        )
    # The page's own switch: the same page in Chinese, and the widget with it.
    await page.get_by_role("link", name="中文").click()
    await expect(widget.get_by_role("status")).to_have_text("请使用微信扫一扫登录")
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"


@pytest.mark.parametrize("width", [1280, 800, 390])
@pytest.mark.parametrize("path", ["/sdk", "/component", "/popup"])
async def test_the_code_blocks_are_never_cut_off(site, new_page, path, width, doc_screenshot):
    page = await new_page(viewport={"width": width, "height": 900})
    await page.goto(site.url(path))
    code = page.locator("pre.code")
    await expect(code).to_be_visible()
    box = await code.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
    # All of its text is inside its box: wrapped, nothing hidden past its right edge.
    hidden = await code.evaluate("el => el.scrollWidth - el.clientWidth")
    assert hidden <= 0, f"{hidden}px of the code hidden at {width}px"
    assert await page.evaluate("document.documentElement.scrollWidth") <= width
    if path == "/component" and width == 1280:
        await expect(page.locator("portal-login .portal-qr")).to_have_attribute(
            "data-portal-status", "pending"
        )
        await doc_screenshot(page, "sdk-component-en")
