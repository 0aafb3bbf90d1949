"""The portal's pages in a real browser: what a person reads, in both languages.

Every page must load without a console error or an uncaught script error (the
``console`` fixture fails the test otherwise; here it is also checked page by page).
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

DESKTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI"
)
PHONE_SCREEN = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}

# The language switch in every page's header shows the other language's name.
SWITCH = {"zh-CN": "English", "en": "中文"}
OTHER = {"zh-CN": "en", "en": "zh-CN"}
Q_LEAD = {"zh-CN": "请使用微信扫描此二维码。", "en": "Scan this QR code with WeChat."}
Q_WECHAT_LEAD = {
    "zh-CN": "请在微信小程序中打开此二维码。",
    "en": "Open this QR code in the WeChat mini program.",
}


def headings(which: str, pool_name: str) -> dict[str, str]:
    if which == "apex":
        return {"zh-CN": "微信扫码登录门户", "en": "WeChat scan login portal"}
    return {"zh-CN": f"登录 {pool_name}", "en": f"Log in to {pool_name}"}


async def page_url(dev_portal, which: str) -> str:
    if which == "apex":
        return dev_portal.url("/")
    if which == "pool":
        return dev_portal.pool_url("/")
    ticket = await dev_portal.create_ticket()
    assert ticket["qrcode"]["content"] == dev_portal.url(f"/q/{ticket['ticket']}")
    return ticket["qrcode"]["content"]


def language_link(page: Page, lang_now: str):
    return page.locator("header").get_by_role("link", name=SWITCH[lang_now], exact=True)


async def expect_language(page: Page, lang: str, heading: str) -> None:
    """The page is (or becomes, once a navigation ends) in ``lang``."""
    await expect(page.locator("html")).to_have_attribute("lang", lang)
    await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    await expect(language_link(page, lang)).to_be_visible()
    await page.wait_for_load_state()  # its images and scripts too, for the console check


async def switch_language(page: Page, lang_now: str, heading: str) -> str:
    """Clicks the header's language link, as a person would; returns the new language."""
    lang = OTHER[lang_now]
    await language_link(page, lang_now).click()
    await expect(page).to_have_url(re.compile(rf"[?&]lang={re.escape(lang)}(?:&|$)"))
    await expect_language(page, lang, heading)
    return lang


@pytest.mark.parametrize("which", ["apex", "pool", "q"])
async def test_language_switch_is_remembered(dev_portal, page, console, which):
    url = await page_url(dev_portal, which)
    texts = headings(which, dev_portal.pool.pool.name)

    await page.goto(url)  # the browser asks for zh-CN; Chinese is the default anyway
    await expect_language(page, "zh-CN", texts["zh-CN"])
    console.assert_clean(f"{which} in zh-CN")

    await switch_language(page, "zh-CN", texts["en"])
    console.assert_clean(f"{which} in en")
    await page.reload()
    await expect_language(page, "en", texts["en"])
    await page.goto(url)  # without ?lang=: the cookie remembers the choice
    assert "lang=" not in page.url
    await expect_language(page, "en", texts["en"])

    await switch_language(page, "en", texts["zh-CN"])
    await page.goto(url)
    await expect_language(page, "zh-CN", texts["zh-CN"])
    console.assert_clean(which)


@pytest.mark.locale("en")
async def test_apex_follows_the_browser_language(dev_portal, page, console):
    await page.goto(dev_portal.url("/"))
    await expect_language(page, "en", "WeChat scan login portal")
    await expect(page.get_by_role("link", name="Admin console")).to_be_visible()
    # Dev only: the way to the phone simulator.
    await page.get_by_role("link", name="Phone simulator (dev)").click()
    await expect(page).to_have_url(dev_portal.url("/dev/phone"))
    await expect_language(page, "en", "Phone simulator")
    await expect(page.get_by_role("button", name="Scan", exact=True)).to_be_enabled()
    console.assert_clean("apex and simulator in en")


async def test_q_page_on_a_computer(dev_portal, new_page, console, doc_screenshot):
    """A QR opened in an ordinary browser: it says to scan with WeChat and, in dev,
    offers the phone simulator, which takes the QR's link."""
    page = await new_page(user_agent=DESKTOP_UA)
    url = await page_url(dev_portal, "q")
    name = dev_portal.pool.pool.name

    await page.goto(url)
    await expect_language(page, "zh-CN", f"登录 {name}")
    main = page.get_by_role("main")
    await expect(main.get_by_text(Q_LEAD["zh-CN"])).to_be_visible()
    await expect(main.get_by_text(Q_WECHAT_LEAD["zh-CN"])).to_have_count(0)
    await expect(main.get_by_role("img", name=name)).to_be_visible()  # the pool's logo
    await doc_screenshot(page, "q-page")

    await main.get_by_role("link", name="在手机模拟器中打开").click()
    await expect(page).to_have_url(re.compile(r"/dev/phone\?"))
    await expect(page.get_by_label("二维码内容（链接）")).to_have_value(url)
    console.assert_clean("/q and the simulator")

    await page.go_back()
    await expect_language(page, "zh-CN", f"登录 {name}")
    await switch_language(page, "zh-CN", f"Log in to {name}")
    await expect(main.get_by_text(Q_LEAD["en"])).to_be_visible()
    await expect(main.get_by_role("link", name="Open in the phone simulator")).to_be_visible()


async def test_q_page_inside_wechat(dev_portal, new_page, console):
    """Opened in WeChat's own browser: it says to use the mini program instead."""
    page = await new_page(user_agent=WECHAT_UA, **PHONE_SCREEN)
    url = await page_url(dev_portal, "q")
    name = dev_portal.pool.pool.name

    await page.goto(url)
    await expect_language(page, "zh-CN", f"登录 {name}")
    main = page.get_by_role("main")
    await expect(main.get_by_text(Q_WECHAT_LEAD["zh-CN"])).to_be_visible()
    await expect(main.get_by_text(Q_LEAD["zh-CN"])).to_have_count(0)

    await switch_language(page, "zh-CN", f"Log in to {name}")
    await expect(main.get_by_text(Q_WECHAT_LEAD["en"])).to_be_visible()
    await expect(main.get_by_text(Q_LEAD["en"])).to_have_count(0)
    console.assert_clean("/q inside WeChat")
