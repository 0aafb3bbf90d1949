"""Scan login that resists phishing (issue 20) in a real browser: the number a
PC page shows for number matching (the hosted page, the SDK's QR login and the
``<portal-login>`` component), and the phone's own login ("Open WeChat")."""

from __future__ import annotations

import asyncio
import contextlib
import re
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import expect

from portal.tenants import pools
from portal.web import i18n
from portal.wechat.fake import DEMO_APPID
from tests.browser.conftest import POOL_SLUG
from tests.browser.test_hosted_page import (
    IPHONE_SAFARI_UA,
    PHONE_SCREEN,
    WECHAT_IPHONE_UA,
    ZH,
    authorization,
    expect_callback,
    read_qr,
    redeem,
)
from tests.browser.test_sdk import read_qr as read_widget_qr
from tests.browser.test_sdk import site  # noqa: F401  (the example website, a fixture)
from tests.phone import Phone

SIM = i18n.translator("zh-CN")  # the phone simulator's texts (the browser's locale)


class MatchingPhone(Phone):
    """The mini program with number matching: the scan offers three numbers."""

    async def scan_for_choices(self, ticket: str, scene: int = 1011) -> list[int]:
        if self.token is None:
            (await self.login()).raise_for_status()
        r = await self.client.post(
            f"/api/mp/tickets/{ticket}/scan", json={"scene": scene}, headers=self._auth()
        )
        assert r.status_code == 200, r.text
        return r.json()["number_choices"]

    async def confirm_number(self, ticket: str, number: int):
        return await self.client.post(
            f"/api/mp/tickets/{ticket}/confirm", json={"number": number}, headers=self._auth()
        )


async def _number_matching(dev_portal) -> None:
    state = dev_portal.running.state
    await state["db"].execute("UPDATE pools SET number_match = true WHERE slug = $1", POOL_SLUG)
    await pools.announce_change(state["hub"], POOL_SLUG)
    for _ in range(200):
        pool = await state["pools"].get(POOL_SLUG)
        if pool is not None and pool.number_match:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the pool's change never reached the portal")


async def test_the_hosted_page_shows_the_number_to_pick(
    dev_portal, rp, shop, apex, new_page, doc_screenshot
):
    await _number_matching(dev_portal)
    auth = authorization(dev_portal, shop, rp)
    page = await new_page()
    await page.goto(auth.url)
    ticket = await read_qr(page, dev_portal)
    await expect(page.locator("#match")).to_be_hidden()  # nothing before the scan
    erin = MatchingPhone(apex, "erin")
    choices = await erin.scan_for_choices(ticket)
    number = page.locator("#match-number")
    await expect(number).to_have_text(re.compile(r"^\d\d$"))
    shown = int(await number.text_content())
    assert shown in choices
    await expect(page.locator("#match")).to_contain_text(ZH("login.match_number"))
    await doc_screenshot(page, "hosted-page-number")
    r = await erin.confirm_number(ticket, shown)
    assert r.status_code == 200, r.text
    code = await expect_callback(page, rp, auth, dev_portal)
    assert (await redeem(dev_portal, shop, rp, auth, code))["sub"]


@pytest.mark.parametrize("path", ["/sdk", "/component"])
async def test_the_sdk_and_the_component_show_the_number(
    dev_portal,
    site,  # noqa: F811
    apex,
    new_page,
    path,
):
    await _number_matching(dev_portal)
    page = await new_page()
    await page.goto(site.url(f"{path}?lang=en"))
    widget = page.locator(".portal-qr").first
    ticket = await read_widget_qr(widget.locator("img.portal-qr-img"), dev_portal)
    await expect(widget.locator(".portal-qr-number")).to_be_hidden()
    frank = MatchingPhone(apex, "frank")
    choices = await frank.scan_for_choices(ticket)
    number = widget.locator(".portal-qr-number")
    await expect(number).to_be_visible()
    shown = int(await number.text_content())
    assert shown in choices
    await expect(widget.locator(".portal-qr-hint")).to_have_text("Pick this number on your phone")
    # A wrong pick cancels the login: the page says so.
    wrong = next(n for n in choices if n != shown)
    r = await frank.confirm_number(ticket, wrong)
    assert r.status_code == 403 and r.json()["error"] == "number_mismatch"
    await expect(widget.locator(".portal-qr-why")).to_have_text("You cancelled the login")
    await expect(widget.locator(".portal-qr-number")).to_be_hidden()


# --- the phone itself: "Open WeChat" (issue 20, item 5) ------------------------------


async def test_a_phone_browser_logs_in_through_open_wechat(
    dev_portal, rp, shop, new_page, db, doc_screenshot, fresh_fake
):
    auth = authorization(dev_portal, shop, rp)
    phone = await new_page(user_agent=IPHONE_SAFARI_UA, **PHONE_SCREEN)
    await phone.goto(auth.url)
    open_wechat = phone.get_by_role("link", name=ZH("login.open_wechat"))
    await expect(open_wechat).to_be_visible()
    await expect(phone.locator("#status-text")).to_have_text(ZH("login.open_wechat_hint"))
    link = await open_wechat.get_attribute("href")
    assert link and link.startswith("weixin://dl/business/?t="), link
    await doc_screenshot(phone, "hosted-page-phone")
    # WeChat opens the mini program's confirm page from the link: the phone simulator
    # follows it as WeChat would (the fake says which ticket and scene it opens).
    wechat = await new_page()
    await wechat.goto(dev_portal.url("/dev/phone?" + urlencode({"url": link})))
    await wechat.get_by_label(SIM("phone.user")).fill("pat")
    await wechat.get_by_role("button", name=SIM("phone.scan"), exact=True).click()
    await expect(wechat.get_by_role("status")).to_have_text(SIM("phone.js.scanned"))
    await expect(wechat.locator("#phone-scan-meta")).to_contain_text("scan_source: ok")
    await wechat.get_by_role("button", name=SIM("phone.confirm"), exact=True).click()
    await expect(wechat.get_by_role("status")).to_have_text(SIM("phone.js.confirmed"))
    # Back in the browser (it was in the background): the page re-checks at once; or
    # its stream already told it, and it is on its way to the site.
    with contextlib.suppress(PlaywrightError):
        await phone.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    code = await expect_callback(phone, rp, auth, dev_portal)
    assert (await redeem(dev_portal, shop, rp, auth, code))["sub"]
    row = await db.fetchrow("SELECT result, scene, scan_source FROM login_events")
    assert tuple(row) == ("signup", 1065, "ok")


@pytest.mark.allow_console_errors(r"status of 503")
async def test_without_links_the_phone_page_says_how_to_log_in(
    dev_portal, rp, shop, new_page, fresh_fake
):
    """A personal account's mini program may not make links (WeChat's 40002): the
    page keeps today's text, and WeChat is not asked again for every visitor."""
    async with httpx.AsyncClient(base_url=fresh_fake.url) as fake:
        r = await fake.post("/_fake/links", json={"appid": DEMO_APPID, "personal": True})
        assert r.status_code == 200
        try:
            for _ in range(2):
                phone = await new_page(user_agent=IPHONE_SAFARI_UA, **PHONE_SCREEN)
                await phone.goto(authorization(dev_portal, shop, rp).url)
                await expect(phone.locator("#status-text")).to_have_text(ZH("login.on_phone"))
                await phone.wait_for_load_state("networkidle")
                await expect(phone.locator("#open-wechat-wrap")).to_be_hidden()
            stats = (await fake.get("/_fake/stats")).json()["calls"]
        finally:  # the fake outlives the test
            await fake.post("/_fake/links", json={"appid": DEMO_APPID, "personal": False})
    assert stats.get("/wxa/generatescheme") == 1


async def test_wechat_s_browser_gets_the_long_press_page(dev_portal, rp, shop, new_page):
    phone = await new_page(user_agent=WECHAT_IPHONE_UA, **PHONE_SCREEN)
    await phone.goto(authorization(dev_portal, shop, rp).url)
    await expect(phone.locator("#status-text")).to_have_text(ZH("login.long_press"))
    await expect(phone.locator("#open-wechat")).to_have_count(0)  # already in WeChat
    qr = phone.get_by_role("img", name=ZH("login.qr_alt"))
    box = await qr.bounding_box()
    assert box is not None and box["width"] >= 240, box  # large: long-press to recognise


async def test_the_sdk_offers_open_wechat_as_an_option(
    dev_portal,
    site,  # noqa: F811
    new_page,
    fresh_fake,
):
    page = await new_page(user_agent=IPHONE_SAFARI_UA, **PHONE_SCREEN)
    await page.goto(site.url("/sdk?lang=en"))
    widget = page.locator("#login .portal-qr")
    await expect(widget.get_by_role("img", name="QR code to scan with WeChat")).to_be_visible()
    await expect(widget.locator(".portal-qr-open")).to_be_hidden()  # not asked for
    await page.evaluate("Portal.qrLogin('#login', {openWeChat: true})")  # the site's option
    open_wechat = widget.get_by_role("link", name="Open WeChat to log in")
    await expect(open_wechat).to_be_visible()
    link = await open_wechat.get_attribute("href")
    assert link and link.startswith("weixin://dl/business/?t="), link
    wechat = await new_page()
    await wechat.goto(dev_portal.url("/dev/phone?" + urlencode({"url": link})))
    await wechat.get_by_label(SIM("phone.user")).fill("sam")
    await wechat.get_by_role("button", name=SIM("phone.scan"), exact=True).click()
    await expect(wechat.get_by_role("status")).to_have_text(SIM("phone.js.scanned"))
    await wechat.get_by_role("button", name=SIM("phone.confirm"), exact=True).click()
    await expect(wechat.get_by_role("status")).to_have_text(SIM("phone.js.confirmed"))
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    await expect(page.locator("#result")).to_have_attribute("data-state", "verified")
    await expect(open_wechat).to_be_hidden()


async def test_the_phone_simulator_picks_the_number(dev_portal, rp, shop, new_page):
    await _number_matching(dev_portal)
    auth = authorization(dev_portal, shop, rp)
    page = await new_page()
    await page.goto(auth.url)
    await read_qr(page, dev_portal)
    # The hosted page's dev link: the simulator with this QR code's content filled in.
    simulator = await page.locator("#dev-phone a").get_attribute("href")
    wechat = await new_page()
    await wechat.goto(simulator)
    await wechat.get_by_label(SIM("phone.user")).fill("uma")
    await wechat.get_by_role("button", name=SIM("phone.scan"), exact=True).click()
    await expect(wechat.get_by_role("status")).to_have_text(SIM("phone.js.scanned"))
    await expect(page.locator("#match-number")).to_have_text(re.compile(r"^\d\d$"))
    shown = (await page.locator("#match-number").text_content()).strip()
    await expect(wechat.locator("#phone-numbers")).to_contain_text(SIM("phone.pick_number"))
    await wechat.get_by_role("button", name=shown, exact=True).click()
    await wechat.get_by_role("button", name=SIM("phone.confirm"), exact=True).click()
    await expect(wechat.get_by_role("status")).to_have_text(SIM("phone.js.confirmed"))
    code = await expect_callback(page, rp, auth, dev_portal)
    assert code
