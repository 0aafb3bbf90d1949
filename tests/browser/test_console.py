"""The admin console in headless Chromium: sign in with the keyboard, upload a
logo and find it in a fresh QR code (still decoding), set a private mini
program, add a client, block a user and see their next scan refused, and view
the chart of logins per day. With PORTAL_SCREENSHOTS=1 the main pages are
saved as docs/screenshots/console-*.png."""

from __future__ import annotations

import io
import re
import secrets
from datetime import UTC, datetime, timedelta

import pytest
import zxingcpp
from PIL import Image
from playwright.async_api import Page, expect

from portal.tenants import admins, clients
from tests.browser.conftest import POOL_NAME, POOL_SLUG
from tests.phone import Phone

# A form sent back with an error answers 400 (or 403 for a refused CSRF token), which
# Chromium logs as a failed resource load; nothing else may show in the console.
FORM_ERRORS = r"status of 40[03] \(|the server responded with a status of 400"

PASSWORD = "correct horse battery"
EMAIL = "admin@acme.example"
SECOND_APPID = "wx00000000000000b2"
SECOND_SECRET = "secretofthesecondapp000000000000"


async def add_admin(db) -> None:
    async with db.acquire() as conn:
        await admins.create(conn, email=EMAIL, password=PASSWORD, pool_slugs=[POOL_SLUG])


async def sign_in(page: Page, dev_portal) -> None:
    await page.goto(dev_portal.url("/console/pools/acme"))
    await expect(page).to_have_url(re.compile(r"/console/login\?next="))
    # Keyboard only: the email field has the focus, Tab to the password, Enter to send.
    await expect(page.get_by_label("邮箱")).to_be_focused()
    await page.keyboard.type(EMAIL)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(dev_portal.url("/console/pools/acme"))
    await expect(page.get_by_role("heading", name=f"{POOL_NAME} 的设置")).to_be_visible()


def logo_png() -> bytes:
    im = Image.new("RGB", (320, 240), (210, 20, 30))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


@pytest.mark.allow_console_errors(FORM_ERRORS)
async def test_sign_in_and_sign_out(dev_portal, db, page, console, doc_screenshot):
    await add_admin(db)
    await page.goto(dev_portal.url("/console/"))
    await expect(page.get_by_role("heading", name="登录管理控制台")).to_be_visible()
    await doc_screenshot(page, "console-login")
    # A wrong password: a clear message, the email kept.
    await page.get_by_label("邮箱").fill(EMAIL)
    await page.get_by_label("密码").fill("not the password")
    await page.get_by_role("button", name="登录").click()
    await expect(page.get_by_role("alert")).to_have_text("邮箱或密码不正确。")
    await expect(page.get_by_label("邮箱")).to_have_value(EMAIL)
    await page.get_by_label("密码").fill(PASSWORD)
    await page.get_by_label("密码").press("Enter")
    await expect(page.get_by_role("heading", name="用户池")).to_be_visible()
    await expect(page.get_by_role("link", name=POOL_NAME)).to_be_visible()
    await doc_screenshot(page, "console-pools")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["console_session"]["httpOnly"]
    assert cookies["console_session"]["sameSite"] == "Lax"
    await page.get_by_role("button", name="退出登录").click()
    await expect(page.get_by_text("你已退出登录。")).to_be_visible()
    await page.goto(dev_portal.url("/console/"))
    await expect(page).to_have_url(re.compile(r"/console/login"))
    console.assert_clean("sign in and out")


async def test_upload_a_logo_and_see_it_in_a_fresh_qr(
    dev_portal, db, page, console, doc_screenshot
):
    await add_admin(db)
    await sign_in(page, dev_portal)
    logo = page.get_by_role("region", name="Logo")
    await logo.get_by_label("上传新 Logo").set_input_files(
        {"name": "logo.png", "mimeType": "image/png", "buffer": logo_png()}
    )
    await logo.get_by_label("圆形").check()
    await logo.get_by_role("button", name="保存 Logo").click()
    await expect(page.get_by_role("status").first).to_have_text(
        "Logo 已更新，新的二维码会立即使用它。"
    )
    preview = page.get_by_role("img", name="带有用户池 Logo 的示例二维码")
    await expect(preview).to_be_visible()
    assert await preview.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
    await doc_screenshot(page, "console-settings", full_page=True)

    # A fresh QR from the pool's API has the logo in its centre and still decodes.
    ticket = await dev_portal.create_ticket()
    async with dev_portal.client() as pool_host:
        png = (await pool_host.get(f"/api/qrcode/{ticket['ticket']}.png")).content
    with Image.open(io.BytesIO(png)) as im:
        img = im.convert("RGB")
    found = [
        r.text for r in zxingcpp.read_barcodes(img) if r.format == zxingcpp.BarcodeFormat.QRCode
    ]
    assert found == [ticket["qrcode"]["content"]]
    red, green, _ = img.getpixel((img.width // 2, img.height // 2))
    assert red > 150 and green < 80

    # The hosted page shows it too, at once.
    sha = await db.fetchval("SELECT logo_sha256 FROM pools WHERE slug = $1", POOL_SLUG)
    hosted = await page.context.new_page()
    await hosted.goto(dev_portal.pool_url("/"))
    brand = hosted.locator("img.brand-logo")
    await expect(brand).to_have_attribute("src", f"/logo?v={sha}")
    assert await brand.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
    console.assert_clean("logo")


@pytest.mark.allow_console_errors(FORM_ERRORS)
async def test_set_a_private_mini_program(dev_portal, db, page, console, doc_screenshot):
    await add_admin(db)
    await sign_in(page, dev_portal)
    mp = page.get_by_role("region", name="小程序")
    await mp.get_by_label("私有小程序").check()
    await mp.get_by_label("AppID", exact=True).fill(SECOND_APPID)
    await mp.get_by_label("AppSecret", exact=True).fill("wrongsecret000000000000000000000")
    await mp.get_by_role("button", name="测试连接").click()
    result = page.locator("#mp-test-result")
    await expect(result).to_contain_text("40125")
    # The secret is never put back into the page; the AppID is.
    await expect(page.get_by_label("AppSecret", exact=True)).to_have_value("")
    await expect(page.get_by_label("AppID", exact=True)).to_have_value(SECOND_APPID)
    await page.get_by_label("AppSecret", exact=True).fill(SECOND_SECRET)
    await page.get_by_role("button", name="测试连接").click()
    await expect(result).to_have_text("连接成功：微信接受了这个 AppID 和 AppSecret。")
    await page.locator("#mp").evaluate("el => el.scrollIntoView()")
    await doc_screenshot(page, "console-mini-program")
    await page.get_by_label("AppSecret", exact=True).fill(SECOND_SECRET)
    await mp.get_by_role("button", name="保存", exact=True).click()
    await expect(page.get_by_role("status").first).to_have_text("小程序设置已保存。")
    await expect(page.get_by_label("私有小程序")).to_be_checked()
    assert SECOND_SECRET not in await page.content()
    assert (
        await db.fetchval("SELECT mp_appid FROM pools WHERE slug = $1", POOL_SLUG) == SECOND_APPID
    )
    # The pool is now served by that mini program: its users log in through it.
    ticket = await dev_portal.create_ticket()
    async with dev_portal.client(None) as apex:
        phone = Phone(apex, "qian", appid=SECOND_APPID)
        r = await phone.scan_and_confirm(ticket["ticket"], nickname="Qian")
        assert r.status_code == 200, r.text
    console.assert_clean("mini program")


@pytest.mark.allow_console_errors(FORM_ERRORS)
async def test_add_a_client(dev_portal, db, box, page, console, doc_screenshot):
    await add_admin(db)
    await sign_in(page, dev_portal)
    await page.get_by_role("link", name="应用").click()
    await expect(page.get_by_role("heading", name="应用", exact=True)).to_be_visible()
    form = page.get_by_role("region", name="添加应用")
    await form.get_by_label("名称").fill("Acme Shop")
    await form.get_by_label("回调地址").fill("ftp://shop.example/cb")
    await form.get_by_label("允许的网页来源").fill("https://shop.example")
    await form.get_by_role("button", name="添加").click()
    # Refused, with the reason and nothing lost.
    await expect(page.get_by_text("地址无效：ftp://shop.example/cb")).to_be_visible()
    form = page.get_by_role("region", name="添加应用")  # the page beside the management client's
    await expect(form.get_by_label("名称")).to_have_value("Acme Shop")
    await expect(form.get_by_label("允许的网页来源")).to_have_value("https://shop.example")
    await form.get_by_label("回调地址").fill("https://shop.example/cb\nhttps://shop.example/cb2")
    await form.get_by_role("button", name="添加").click()
    await expect(page.get_by_role("heading", name="Acme Shop")).to_be_visible()
    secret = await page.get_by_label("client_secret").input_value()
    client_id = await page.locator("#client-id").inner_text()
    await doc_screenshot(page, "console-client")
    client = await clients.get(db, dev_portal.pool.pool.id, client_id)
    assert client.redirect_uris == ("https://shop.example/cb", "https://shop.example/cb2")
    assert clients.verify_secret(box, client, secret)
    await page.reload()
    await expect(page.get_by_label("client_secret")).to_have_count(0)  # shown once
    await page.get_by_role("link", name="应用").first.click()
    await expect(page.get_by_role("link", name="Acme Shop")).to_be_visible()
    await doc_screenshot(page, "console-clients")
    console.assert_clean("clients")


async def test_block_a_user_and_their_next_scan_is_refused(
    dev_portal, db, page, console, doc_screenshot
):
    await add_admin(db)
    async with dev_portal.client(None) as apex:
        for name, number in (("wang", "13812345678"), ("zhao", "13987654321")):
            ticket = await dev_portal.create_ticket()
            phone = Phone(apex, name)
            r = await phone.scan_and_confirm(ticket["ticket"], nickname=name.title(), phone=number)
            assert r.status_code == 200, r.text
        await sign_in(page, dev_portal)
        await page.get_by_role("link", name="用户", exact=True).click()
        await expect(page.get_by_role("cell", name="138****5678")).to_be_visible()
        await expect(page.get_by_text("13812345678")).to_have_count(0)
        await page.get_by_label("搜索用户").fill("zhao")
        await page.get_by_label("搜索用户").press("Enter")
        await expect(page).to_have_url(re.compile(r"/users\?q=zhao$"))
        await expect(page.get_by_role("link", name="Zhao")).to_be_visible()
        await expect(page.get_by_role("link", name="Wang")).to_have_count(0)
        await page.get_by_label("搜索用户").fill("")
        await page.get_by_role("button", name="搜索").click()
        await expect(page).to_have_url(re.compile(r"/users\?q=$"))
        await doc_screenshot(page, "console-users")
        await page.get_by_role("link", name="Wang").click()
        await expect(page.get_by_text("+86 13812345678")).to_be_visible()
        await page.get_by_role("button", name="封禁用户").click()
        await expect(page.get_by_role("status").first).to_contain_text("用户已封禁")
        await expect(page.get_by_role("button", name="解除封禁")).to_be_visible()
        await doc_screenshot(page, "console-user")
        # The next scan of the blocked user is refused.
        ticket = await dev_portal.create_ticket()
        r = await Phone(apex, "wang").scan_and_confirm(ticket["ticket"])
        assert r.status_code == 403 and r.json()["error"] == "user_blocked"
    console.assert_clean("block")


async def test_the_chart_of_logins_per_day(dev_portal, db, page, console, doc_screenshot):
    await add_admin(db)
    pool_id = dev_portal.pool.pool.id
    now = datetime.now(UTC)
    rows = []
    for day in range(30):
        for i in range((day * 7) % 11 + (3 if day < 5 else 0)):
            result = "success" if i % 5 else ("signup" if day % 2 else "user_blocked")
            rows.append((pool_id, result, now - timedelta(days=day, minutes=i)))
    await db.executemany(
        """INSERT INTO login_events (pool_id, client_id, result, ip, created_at)
           VALUES ($1, 'cweb', $2, '198.51.100.7', $3)""",
        rows,
    )
    refused = sum(1 for r in rows if r[1] == "user_blocked")
    await sign_in(page, dev_portal)
    await page.get_by_role("link", name="登录记录").click()
    chart = page.get_by_role("img", name="最近 30 天每日登录次数")
    await expect(chart).to_be_visible()
    await expect(chart.locator("g.chart-day")).to_have_count(30)
    await expect(page.get_by_text(f"被拒绝 {refused} 次（UTC 日期）")).to_be_visible()
    box = await chart.bounding_box()
    assert box and box["width"] > 500 and box["height"] > 150
    await doc_screenshot(page, "console-logins", full_page=True)
    # The filters narrow the log.
    await page.get_by_label("结果").select_option("refused")
    await page.get_by_role("button", name="筛选").click()
    await expect(page).to_have_url(re.compile(r"result=refused"))
    await expect(page.get_by_role("cell", name="user_blocked").first).to_be_visible()
    await expect(page.get_by_role("cell", name="success")).to_have_count(0)
    # The CSV export downloads.
    async with page.expect_download() as info:
        await page.get_by_role("link", name="导出 CSV").click()
    download = await info.value
    text = (await download.path()).read_text(encoding="utf-8-sig")
    assert text.count("user_blocked") == refused and "success" not in text
    console.assert_clean("chart " + secrets.token_hex(2))
