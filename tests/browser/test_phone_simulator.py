"""The phone simulator (/dev/phone) in a real browser, against a real dev portal.

A PC-side ticket is made over HTTP and its Server-Sent Events stream read live;
a person then plays the mini program in Chromium: fills the form, scans,
confirms or cancels, and reads what the page says.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from playwright.async_api import Page, expect

from portal.web import i18n

_ = i18n.translator("zh-CN")  # the pages' default language, and the browser's locale
PHONE = "13800138000"


def simulator_url(dev_portal, ticket: dict) -> str:
    return dev_portal.url("/dev/phone?" + urlencode({"url": ticket["qrcode"]["content"]}))


async def open_simulator(page: Page, dev_portal, ticket: dict, user: str, phone: str = "") -> None:
    await page.goto(simulator_url(dev_portal, ticket))
    await expect(page.get_by_label(_("phone.url"))).to_have_value(ticket["qrcode"]["content"])
    await page.get_by_label(_("phone.user")).fill(user)
    await page.get_by_label(_("phone.number")).fill(phone)


def button(page: Page, key: str):
    return page.get_by_role("button", name=_(key), exact=True)


async def scan(page: Page, dev_portal) -> None:
    await button(page, "phone.scan").click()
    await expect(page.get_by_role("status")).to_have_text(_("phone.js.scanned"))
    scanned = page.locator("#phone-scanned")
    await expect(scanned).to_be_visible()
    await expect(scanned.locator("#phone-pool-name")).to_have_text(dev_portal.pool.pool.name)


@pytest.mark.allow_console_errors(r"status of 404")
async def test_a_qr_code_under_no_published_rule_does_not_open(dev_portal, page):
    """As WeChat: a link QR opens the mini program only under a link rule it published
    (issue 17). An older QR of the pool's own host is under none: the simulator says
    why and sends nothing to the mini-program API."""
    ticket = await dev_portal.create_ticket()
    old = dev_portal.pool_url(f"/q/{ticket['ticket']}")
    await page.goto(dev_portal.url("/dev/phone?" + urlencode({"url": old})))
    await page.get_by_label(_("phone.user")).fill("alice")
    await button(page, "phone.scan").click()
    status = page.get_by_role("status")
    await expect(status).to_contain_text(_("phone.js.hint.no_link_rule"))
    await expect(status).to_have_class(re.compile(r"\berror\b"))
    await expect(page.locator("#phone-log > li")).to_have_count(1)  # only /dev/phone/open
    await expect(page.locator("#phone-log > li").first).to_contain_text("/dev/phone/open")


async def test_scan_and_confirm(dev_portal, page, db, doc_screenshot):
    ticket = await dev_portal.create_ticket()
    async with dev_portal.events(ticket) as events:
        assert events.statuses == ["pending"]
        await open_simulator(page, dev_portal, ticket, "alice", PHONE)
        await page.get_by_label(_("phone.nickname")).fill("爱丽丝")

        await scan(page, dev_portal)
        scanned = await events.next()
        assert scanned is not None and scanned["status"] == "scanned"

        await button(page, "phone.confirm").click()
        await expect(page.get_by_role("status")).to_have_text(_("phone.js.confirmed"))
        await expect(page.get_by_role("status")).to_have_class(re.compile(r"\bok\b"))
        confirmed = await events.next()
        assert confirmed is not None and confirmed["status"] == "confirmed"
        assert await events.next() is None  # the stream ends after a final status
    assert events.statuses == ["pending", "scanned", "confirmed"]
    # The log shows the four calls (the link opened as WeChat would, issue 17; session,
    # scan, confirm), newest first.
    await expect(page.locator("#phone-log > li")).to_have_count(4)
    await expect(page.locator("#phone-log > li").first).to_contain_text("/confirm")
    await doc_screenshot(page, "phone-simulator", full_page=True)

    r = await dev_portal.exchange(ticket)
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert user["phone_number"] == PHONE and user["phone_country_code"] == "86"
    assert user["nickname"] == "爱丽丝"
    row = await db.fetchrow("SELECT phone_number FROM users WHERE id = $1::uuid", user["id"])
    assert row["phone_number"] == PHONE


async def test_scan_and_cancel(dev_portal, page):
    ticket = await dev_portal.create_ticket()
    async with dev_portal.events(ticket) as events:
        await open_simulator(page, dev_portal, ticket, "carol")
        await scan(page, dev_portal)
        assert (await events.next() or {}).get("status") == "scanned"

        await button(page, "phone.cancel").click()
        await expect(page.get_by_role("status")).to_have_text(_("phone.js.cancelled"))
        assert (await events.next() or {}).get("status") == "cancelled"
        assert await events.next() is None
    assert events.statuses == ["pending", "scanned", "cancelled"]

    r = await dev_portal.exchange(ticket)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


# The refused scan is a 409 answer to the page's fetch, which Chromium logs.
@pytest.mark.allow_console_errors(r"status of 409")
async def test_another_user_sees_ticket_taken(dev_portal, page, new_page, console):
    ticket = await dev_portal.create_ticket()
    async with dev_portal.events(ticket) as events:
        await open_simulator(page, dev_portal, ticket, "alice", PHONE)
        await scan(page, dev_portal)
        assert (await events.next() or {}).get("status") == "scanned"

        bob = await new_page()  # another browser: another person, another WeChat user
        await open_simulator(bob, dev_portal, ticket, "bob")
        await button(bob, "phone.scan").click()
        status = bob.get_by_role("status")
        await expect(status).to_have_class(re.compile(r"\berror\b"))
        await expect(status).to_contain_text(_("phone.js.failed"))
        await expect(status).to_contain_text(_("phone.js.hint.ticket_taken"))
        await expect(status).to_contain_text("ticket_taken")
        await expect(bob.locator("#phone-scanned")).to_be_hidden()
        await expect(bob.locator("#phone-log > li.error").first).to_contain_text("409")

        # Bob's try changed nothing: Alice still confirms.
        await button(page, "phone.confirm").click()
        await expect(page.get_by_role("status")).to_have_text(_("phone.js.confirmed"))
        assert (await events.next() or {}).get("status") == "confirmed"
    assert events.statuses == ["pending", "scanned", "confirmed"]
    assert [e.text for e in console.entries] and all("409" in e.text for e in console.entries)

    r = await dev_portal.exchange(ticket)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["phone_number"] == PHONE
