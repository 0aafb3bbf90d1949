"""Webhooks in the console, in headless Chromium (issue 19, part 3): an admin adds an
endpoint and copies its secret (shown once), reads the delivery log with each
attempt, replays a delivery, and sees the notice of an endpoint the portal
disabled for failing; in Chinese and in English."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect
from standardwebhooks import Webhook

from portal import jobs, worker
from tests.browser.conftest import POOL_SLUG
from tests.browser.test_console import FORM_ERRORS, add_admin, sign_in
from tests.test_webhooks import running_receiver


async def run_worker(dev_portal) -> None:
    await worker.run_async(
        dev_portal.running.settings, concurrency=2, install_signal_handlers=False, wait=False
    )


@pytest.mark.allow_console_errors(FORM_ERRORS)
async def test_endpoint_secret_log_replay_and_notice(dev_portal, db, page: Page, console):
    await db.execute("TRUNCATE procrastinate_jobs, procrastinate_workers RESTART IDENTITY CASCADE")
    await add_admin(db)
    pool_id = dev_portal.pool.pool.id
    await sign_in(page, dev_portal)
    await page.get_by_role("link", name="Webhooks").click()
    await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    await expect(page.get_by_text("还没有 Webhook 地址。")).to_be_visible()

    async with running_receiver() as receiver:
        # A private address is refused with a readable error, the form kept.
        await page.get_by_label("URL").fill("https://10.0.0.7/hook")
        await page.get_by_role("checkbox", name="user.created").check()
        await page.get_by_role("button", name="添加", exact=True).click()
        await expect(page.get_by_role("alert")).to_contain_text("公网")  # the error names why
        await expect(page.get_by_label("URL")).to_have_value("https://10.0.0.7/hook")

        # The receiver on loopback (dev mode allows it); the secret is shown this once.
        await page.get_by_label("URL").fill(receiver.url)
        await page.get_by_label("说明").fill("CRM <sync>")
        await page.get_by_role("button", name="添加", exact=True).click()
        secret = await page.get_by_role("textbox", name="签名密钥").input_value()
        assert secret.startswith("whsec_")
        endpoint_url = page.url
        await page.reload()
        await expect(page.get_by_role("textbox", name="签名密钥")).to_have_count(0)

        async with db.acquire() as conn, conn.transaction():
            await jobs.emit(conn, pool_id, "user.created", {"user_id": "u-1"})
        await run_worker(dev_portal)
        [(headers, body)] = receiver.received
        assert Webhook(secret).verify(body, headers)["data"] == {"user_id": "u-1"}

        await page.reload()
        log = page.get_by_role("region", name="投递记录")
        row = log.get_by_role("row").nth(1)
        await expect(row).to_contain_text("user.created")
        await expect(row).to_contain_text(headers["webhook-id"])
        await expect(row).to_contain_text("成功")
        await row.get_by_role("link").click()
        attempts = page.get_by_role("region", name="user.created 的每次尝试")
        await expect(attempts).to_contain_text("HTTP 200")
        await expect(attempts).to_contain_text("thanks")

        # Replay: the same message again, as one more attempt.
        await page.get_by_role("button", name="重新发送").first.click()
        await expect(page.get_by_role("status").first).to_have_text("已安排重新发送。")
        await run_worker(dev_portal)
        assert len(receiver.received) == 2
        assert receiver.received[1][0]["webhook-id"] == headers["webhook-id"]
        await page.reload()
        await expect(page.get_by_role("region", name="user.created 的每次尝试")).to_contain_text(
            "重新发送"
        )

    # Disabled for failing: the notice on the list and on the endpoint, in English too.
    await db.execute(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'failing', "
        "disabled_at = now(), failing_since = now() - interval '6 days'"
    )
    await page.goto(dev_portal.url(f"/console/pools/{POOL_SLUG}/webhooks"))
    await expect(page.get_by_role("alert")).to_contain_text("连续多天发送失败")
    await page.get_by_role("link", name="English").click()
    await expect(page.get_by_role("alert")).to_contain_text("failed for days and was disabled")
    await expect(page.get_by_text("CRM <sync>")).to_be_visible()  # escaped, shown as typed
    await page.get_by_role("link", name="Open").click()
    await expect(page).to_have_url(endpoint_url)
    await expect(page.locator("#failing-notice")).to_contain_text("more than 5 days")
    await page.get_by_role("button", name="Enable").click()
    await expect(page.get_by_role("status").first).to_have_text("The endpoint is enabled.")
    row = await db.fetchrow("SELECT enabled, failing_since FROM webhook_endpoints")
    assert row["enabled"] and row["failing_since"] is None
    # And it is in the audit trail.
    actions = {
        r["action"]
        for r in await db.fetch("SELECT action FROM audit_log WHERE pool_id = $1", pool_id)
    }
    assert {"webhook.create", "webhook.replay", "webhook.enable"} <= actions
    assert re.search(r"/webhooks/[0-9a-f-]{36}$", endpoint_url)
