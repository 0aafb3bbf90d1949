"""The demo callback page (/dev/callback) in a real browser, after a whole login
on the demo pool's own page: it shows the exchange command with the pool's
default client, its token endpoint and where the secret is (issue 21, item 2).
The command itself is run, as shown, by tests/test_readme_quickstart.py."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from portal.dev import tools as devtools
from portal.tenants import pools
from portal.web import i18n
from tests.phone import Phone


@pytest.mark.locale("en")
async def test_the_callback_shows_the_exchange_command(dev_portal, page, db, box, doc_screenshot):
    _ = i18n.translator("en")
    async with db.acquire() as conn:
        demo = await pools.create(
            conn, box, slug=devtools.DEMO_SLUG, name="Demo 演示",
            callback_url=dev_portal.url("/dev/callback"), allow_http=True,
        )  # fmt: skip
    # As a website starts it (state kept), then the demo pool's own page.
    await page.goto(dev_portal.url("/dev/login?pool=demo"))
    await expect(page.locator("#qr")).to_be_visible()
    ticket = await page.locator('input[name="ticket"]').get_attribute("value")
    async with dev_portal.client(None) as apex:
        r = await Phone(apex, "alice").scan_and_confirm(ticket)
        assert r.status_code == 200, r.text
    await page.wait_for_url(re.compile(r"/dev/callback\?code="))
    await expect(page.locator("#state-check")).to_have_attribute("data-state-check", "ok")
    command = page.locator("#exchange")
    secret_file = dev_portal.running.settings.data_dir.resolve() / devtools.DEMO_SECRET_FILE
    await expect(command).to_contain_text(
        f'curl -s -u "{demo.default_client.client_id}:$(cat {secret_file})"'
    )
    await expect(command).to_contain_text(f"-d redirect_uri={dev_portal.url('/dev/callback')}")
    await expect(command).to_contain_text(dev_portal.url("/oidc/token", devtools.DEMO_SLUG))
    await expect(page.get_by_text(_("phone.cb.secret_file"))).to_be_visible()
    await doc_screenshot(page, "dev-callback", full_page=True)
