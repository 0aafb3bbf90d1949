"""Scan login that resists phishing (issue 20) in a real browser: the number a
PC page shows for number matching (the hosted page, the SDK's QR login and the
``<portal-login>`` component), and the phone's own login ("Open WeChat")."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import expect

from portal.tenants import pools
from tests.browser.conftest import POOL_SLUG
from tests.browser.test_hosted_page import (
    ZH,
    authorization,
    expect_callback,
    read_qr,
    redeem,
)
from tests.browser.test_sdk import read_qr as read_widget_qr
from tests.browser.test_sdk import site  # noqa: F401  (the example website, a fixture)
from tests.phone import Phone


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
