"""Personal data and the audit trail in the console, in headless Chromium: an admin
sets the pool's retention, exports a user's data, deletes the user (only after
ticking the confirmation), and reads it all back in the audit trail, filtered
and as CSV, in Chinese and in English; a superadmin deletes a pool by typing its
slug."""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import Page, expect

from portal.tenants import admins
from tests.browser.conftest import POOL_SLUG
from tests.browser.test_console import EMAIL, FORM_ERRORS, PASSWORD, add_admin, sign_in

PHONE = "13700007777"


async def _user(db, pool_id: int) -> str:
    return str(
        await db.fetchval(
            """INSERT INTO users (pool_id, nickname, phone_number, phone_country_code)
               VALUES ($1, '小红', $2, '86') RETURNING id""",
            pool_id,
            PHONE,
        )
    )


@pytest.mark.allow_console_errors(FORM_ERRORS)
async def test_retention_export_delete_and_the_trail(
    dev_portal, db, page: Page, console, doc_screenshot
):
    await add_admin(db)
    user_id = await _user(db, dev_portal.pool.pool.id)
    await sign_in(page, dev_portal)

    # Retention periods, on the settings page.
    retention = page.get_by_role("region", name="数据保留期限")
    await retention.get_by_label("登录记录保留（天）").fill("90")
    await retention.get_by_label("IP 地址和 User-Agent 保留（天）").fill("14")
    await retention.get_by_role("button", name="保存").click()
    await expect(page.get_by_role("status").first).to_have_text("保留期限已保存，下次清理时生效。")
    await expect(page.get_by_label("登录记录保留（天）")).to_have_value("90")

    # The user's page: export, then delete.
    await page.goto(dev_portal.url(f"/console/pools/{POOL_SLUG}/users/{user_id}"))
    privacy = page.get_by_role("region", name="个人信息")
    async with page.expect_download() as info:
        await privacy.get_by_role("button", name="导出用户数据（JSON）").click()
    download = await info.value
    data = json.loads((await download.path()).read_text(encoding="utf-8"))
    assert data["user"]["id"] == user_id and data["user"]["phone_number"] == PHONE
    assert data["retention"] == {"login_events_days": 90, "ip_and_user_agent_days": 14}
    # Not without the confirmation: the browser holds the form back.
    await privacy.get_by_role("button", name="删除此用户").click()
    await expect(page).to_have_url(re.compile(rf"/users/{user_id}$"))
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    await privacy.get_by_label("我明白此操作不可撤销").check()
    await privacy.get_by_role("button", name="删除此用户").click()
    await expect(page.get_by_role("status").first).to_have_text("用户已删除，其个人信息已清除。")
    assert await db.fetchval("SELECT count(*) FROM users") == 0

    # The trail says who did what.
    await page.get_by_role("link", name="审计日志").click()
    await expect(page.get_by_role("heading", name="审计日志")).to_be_visible()
    table = page.get_by_role("table", name="审计日志")
    await expect(table.locator("tbody tr")).to_have_count(3)
    await expect(table.locator("tbody tr").first).to_contain_text("user.delete")
    await expect(table.locator("tbody tr").first).to_contain_text(EMAIL)
    await expect(table).to_contain_text("login_retention_days")
    await expect(table).not_to_contain_text(PHONE)
    await doc_screenshot(page, "console-audit", full_page=True)
    await page.get_by_label("操作", exact=True).select_option("user.export")
    await page.get_by_role("button", name="筛选").click()
    await expect(page).to_have_url(re.compile(r"action=user\.export"))
    await expect(table.locator("tbody tr")).to_have_count(1)
    async with page.expect_download() as info:
        await page.get_by_role("link", name="导出 CSV").click()
    text = (await (await info.value).path()).read_text(encoding="utf-8-sig")
    assert text.count("user.export") == 1 and "user.delete" not in text
    console.assert_clean("privacy console")


@pytest.mark.locale("en")
@pytest.mark.allow_console_errors(FORM_ERRORS)
async def test_a_superadmin_deletes_a_pool_by_typing_its_slug(dev_portal, db, page: Page, console):
    async with db.acquire() as conn:
        await admins.create(conn, email=EMAIL, password=PASSWORD, superadmin=True)
    await page.goto(dev_portal.url(f"/console/pools/{POOL_SLUG}"))
    await page.get_by_label("Email").fill(EMAIL)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Password").press("Enter")
    danger = page.get_by_role("region", name="Delete this pool")
    await expect(danger).to_contain_text(f"Type the pool's slug {POOL_SLUG} to confirm")
    # A wrong slug: the browser refuses it before sending.
    await danger.get_by_label("Type the pool's slug to confirm").fill("acm")
    await danger.get_by_role("button", name="Delete this pool").click()
    assert await db.fetchval("SELECT count(*) FROM pools") == 1
    await danger.get_by_label("Type the pool's slug to confirm").fill(POOL_SLUG)
    await danger.get_by_role("button", name="Delete this pool").click()
    await expect(page.get_by_role("status").first).to_have_text(
        f"The pool {POOL_SLUG} and all its data are deleted."
    )
    assert await db.fetchval("SELECT count(*) FROM pools") == 0
    # The platform's trail keeps the deletion.
    await page.get_by_role("link", name="Platform audit trail").click()
    await expect(
        page.get_by_role("heading", name="Platform audit trail (every pool)")
    ).to_be_visible()
    row = page.get_by_role("table", name="Audit trail").locator("tbody tr").first
    await expect(row).to_contain_text("pool.delete")
    await expect(row).to_contain_text(POOL_SLUG)
    console.assert_clean("pool deletion")
