"""The Content-Security-Policy in a real browser: every kind of page works under
it and reports no violation, and no page of the portal can be framed.

Each page's ``securitypolicyviolation`` events are sent to the test through a
binding installed before any of the page's own code (so a violation during
load is seen too); Chromium also logs each violation as a console error,
which the ``console`` fixture fails on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import pytest
from playwright.async_api import BrowserContext, Page, expect

from portal.tenants import admins
from portal.web import i18n
from tests.browser.conftest import POOL_NAME, POOL_SLUG
from tests.browser.rp_site import RPSite
from tests.browser.test_hosted_page import (
    authorization,
    open_login_popup,
    popup_opener_url,
    returning_user,
    uploaded_avatar,
)
from tests.phone import Phone

ZH = i18n.translator("zh-CN")
EMAIL = "csp@acme.example"
PASSWORD = "correct horse battery"

_REPORT = """
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolation({
    page: location.href, directive: e.violatedDirective, blocked: e.blockedURI,
    sample: e.sample, source: e.sourceFile + ":" + e.lineNumber,
  });
});
"""


class Violations(list):
    """Every CSP violation of every page of the watched contexts."""

    async def watch(self, context: BrowserContext) -> None:
        await context.expose_function("__cspViolation", lambda v: self.append(v))
        await context.add_init_script(_REPORT)


@pytest.fixture
async def csp_page(new_page) -> AsyncIterator[tuple[Page, Violations]]:
    violations = Violations()
    page = await new_page()
    await violations.watch(page.context)
    yield page, violations
    assert violations == [], violations


async def expect_nonce_csp(page: Page) -> None:
    """The page as loaded had a nonce policy and its scripts carry that nonce."""
    scripts = page.locator("script")
    for i in range(await scripts.count()):
        # The nonce attribute is hidden from the DOM once used; the property keeps it.
        assert await scripts.nth(i).evaluate("s => s.nonce.length >= 22"), i


# --- the hosted page, a whole scan login --------------------------------------------


async def test_hosted_page_scan_login_without_violations(dev_portal, rp, shop, apex, csp_page):
    page, violations = csp_page
    alice = Phone(apex, "alice")
    avatar_url = await uploaded_avatar(apex, alice, rp)  # an avatar from the apex
    await returning_user(dev_portal, alice, nickname="Alice", avatar_url=avatar_url)
    auth = authorization(dev_portal, shop, rp)
    response = await page.goto(auth.url)
    assert "'nonce-" in (await response.all_headers())["content-security-policy"]
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"登录 {POOL_NAME}")
    await expect_nonce_csp(page)
    await page.locator("#qr").evaluate("img => img.decode()")  # the QR image loaded
    ticket = await page.locator("#login").get_attribute("data-ticket")

    assert (await alice.scan(ticket)).status_code == 200
    # The script ran (SSE): the scanner's name and avatar show.
    await expect(page.locator("#status-text")).to_have_text(ZH("login.scanned"))
    await expect(page.locator("#avatar")).to_have_attribute("src", avatar_url)
    await page.locator("#avatar").evaluate("img => img.decode()")
    assert (await alice.confirm(ticket, nickname="Alice", avatar_url=avatar_url)).status_code == 200
    # The page's form posts to /oidc/auth/complete, which 303s to the RP on another
    # origin: form-action allows exactly that one.
    await expect(page).to_have_url(re.compile("^" + re.escape(rp.redirect_uri + "?")))
    await expect(page.locator("#q-state")).to_have_text(auth.state)
    assert violations == []


async def test_popup_web_message_without_violations(dev_portal, rp, shop, apex, csp_page):
    page, violations = csp_page
    auth = authorization(dev_portal, shop, rp)
    await page.goto(popup_opener_url(rp.origin, auth, dev_portal))
    popup, closed = await open_login_popup(page)
    await expect(popup.get_by_role("heading", level=1)).to_have_text(f"登录 {POOL_NAME}")
    await expect_nonce_csp(popup)
    ticket = await popup.locator("#login").get_attribute("data-ticket")
    assert (await Phone(apex, "bob").scan_and_confirm(ticket)).status_code == 200
    # The web_message page's script ran: the opener got the code, the popup closed.
    await expect(page.get_by_role("status")).to_have_text("logged in")
    await expect(page.locator("#state")).to_have_text(auth.state)
    await asyncio.wait_for(closed, 15)
    assert violations == []


async def test_form_post_without_violations(dev_portal, rp, shop, apex, csp_page):
    page, violations = csp_page
    posted: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

    async def rp_callback(route) -> None:
        # The RP's callback takes the POST (the test site has only a GET one).
        request = route.request
        if request.method == "POST" and not posted.done():
            posted.set_result(parse_qs(request.post_data or ""))
        await route.fulfill(status=200, content_type="text/html", body="<h1>Shop</h1>")

    await page.route(rp.redirect_uri, rp_callback)
    auth = authorization(dev_portal, shop, rp, response_mode="form_post")
    await page.goto(auth.url)
    ticket = await page.locator("#login").get_attribute("data-ticket")
    assert (await Phone(apex, "carol").scan_and_confirm(ticket)).status_code == 200
    # complete → the form_post page, whose script submits its form to the RP at once.
    body = await asyncio.wait_for(posted, 15)
    assert body["state"] == [auth.state] and body["code"][0]
    await expect(page).to_have_url(rp.redirect_uri)
    assert violations == []


# --- other pages ----------------------------------------------------------------------


async def test_console_pages_without_violations(dev_portal, db, csp_page):
    page, violations = csp_page
    async with db.acquire() as conn:
        await admins.create(conn, email=EMAIL, password=PASSWORD, pool_slugs=[POOL_SLUG])
    await page.goto(dev_portal.url("/console/login"))
    await page.get_by_label(re.compile("邮箱|Email")).fill(EMAIL)
    await page.get_by_label(re.compile("密码|Password")).fill(PASSWORD)
    await page.keyboard.press("Enter")  # the form's POST, then a 303 to /console/
    await expect(page).to_have_url(dev_portal.url("/console/"))
    for path in ("", "/clients", "/users", "/logins"):
        await page.goto(dev_portal.url(f"/console/pools/{POOL_SLUG}{path}"))
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        await expect(page.locator("link[rel=stylesheet]").first).to_be_attached()
        # The stylesheet applied (style-src 'self'): the console's layout is a grid/flex.
        display = await page.locator(".console-shell").evaluate("e => getComputedStyle(e).display")
        assert display != "block", display
    # The QR preview image loaded (img-src 'self').
    await page.goto(dev_portal.url(f"/console/pools/{POOL_SLUG}"))
    await page.locator("img.qr-preview").evaluate("img => img.decode()")
    assert violations == []


@pytest.mark.allow_console_errors(r"404")  # the error page's own status, logged by Chromium
async def test_error_home_and_q_pages_without_violations(dev_portal, csp_page):
    page, violations = csp_page
    r = await page.goto(dev_portal.pool_url("/no/such/page"))
    assert r.status == 404
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    await page.locator(".brand-logo").evaluate("img => img.decode()")  # the pool's logo
    await page.goto(dev_portal.url("/"))
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    ticket = await dev_portal.create_ticket()
    await page.goto(dev_portal.pool_url(f"/q/{ticket['ticket']}"))
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    await page.goto(dev_portal.url("/dev/phone"))
    await expect(page.locator("#phone-status")).to_be_visible()
    assert violations == []


# --- framing --------------------------------------------------------------------------


async def framed(page: Page, rp: RPSite, url: str) -> str:
    """Loads ``url`` in an iframe of a page on another origin (the RP site's third
    origin, a real loopback server: Chromium refuses public pages framing local
    ones anyway, which would prove nothing); returns the frame's text."""
    await page.goto(f"{rp.other_origin}/callback")
    await page.evaluate(
        """url => new Promise(done => {
          const frame = document.createElement("iframe");
          frame.onload = frame.onerror = () => done();
          frame.src = url;
          document.body.append(frame);
        })""",
        url,
    )
    handle = await page.locator("iframe").element_handle()
    frame = await handle.content_frame()
    assert frame is not None
    return await frame.evaluate("() => document.body ? document.body.innerText : ''")


# Chromium logs the refusal on the framing page's console: that refusal is the point.
@pytest.mark.allow_console_errors(r"frame-ancestors|X-Frame-Options|Refused to display")
async def test_pages_refuse_to_be_framed_by_another_origin(dev_portal, rp, shop, new_page):
    page = await new_page()
    # The test's method works: a page that may be framed shows its text in the frame.
    assert "Shop: callback" in await framed(page, rp, f"{rp.redirect_uri}?x=1")
    auth = authorization(dev_portal, shop, rp)
    web_message = authorization(dev_portal, shop, rp, response_mode="web_message")
    for url in (
        auth.url,  # the hosted login page: clickjacking a scan
        web_message.url,  # the popup's page is never framed either
        dev_portal.url("/console/login"),
        dev_portal.pool_url("/"),
        dev_portal.url("/"),
    ):
        page = await new_page()
        text = await framed(page, rp, url)
        assert POOL_NAME not in text and "登录" not in text, (url, text)
