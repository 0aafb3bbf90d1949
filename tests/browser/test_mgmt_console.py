"""Management clients in the console, in headless Chromium: an admin adds one with
two scopes (Chinese and English pages), sees its secret once and its scopes, and
the secret works at once for the management API with exactly those scopes;
unticking a scope takes it from the client's live token."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.browser.test_console import FORM_ERRORS, add_admin, sign_in


async def _token(dev_portal, client_id: str, secret: str) -> str:
    async with dev_portal.client() as http:
        r = await http.post(
            "/oidc/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert r.status_code == 200, r.text
        return r.json()["access_token"]


async def _api(dev_portal, token: str, path: str) -> int:
    async with dev_portal.client() as http:
        r = await http.get(path, headers={"authorization": f"Bearer {token}"})
        return r.status_code


async def _created(page: Page) -> tuple[str, str]:
    secret = await page.get_by_label("client_secret").input_value()
    client_id = (await page.locator("#client-id").inner_text()).strip()
    return client_id, secret


@pytest.mark.allow_console_errors(FORM_ERRORS)
async def test_add_a_management_client_and_use_it(dev_portal, db, page, console, doc_screenshot):
    await add_admin(db)
    await sign_in(page, dev_portal)
    await page.get_by_role("link", name="应用").first.click()
    panel = page.get_by_role("region", name="添加管理客户端")
    await expect(panel).to_be_visible()
    # No scope ticked: refused, with the reason next to the scopes.
    await panel.get_by_label("名称").fill("后台同步")
    await panel.get_by_role("button", name="添加管理客户端").click()
    await expect(page.get_by_text("请至少选择一项管理权限。")).to_be_visible()
    panel = page.get_by_role("region", name="添加管理客户端")
    await expect(panel.get_by_label("名称")).to_have_value("后台同步")
    await panel.get_by_label("users:read").check()
    await panel.get_by_label("logins:read").check()
    await panel.get_by_role("button", name="添加管理客户端").click()
    # Its page: the secret once, the type, the scopes, where to get tokens.
    await expect(page.get_by_role("heading", name="后台同步")).to_be_visible()
    await expect(page.get_by_text("管理客户端（管理 API）")).to_be_visible()
    await expect(page.locator("#mclient-scopes")).to_have_text("users:read logins:read")
    await expect(page.get_by_text("/oidc/token")).to_be_visible()
    client_id, secret = await _created(page)
    token = await _token(dev_portal, client_id, secret)
    assert await _api(dev_portal, token, "/api/v1/users") == 200
    assert await _api(dev_portal, token, "/api/v1/logins") == 200
    assert await _api(dev_portal, token, "/api/v1/clients") == 403
    # Shown once: a reload has no secret.
    await page.reload()
    await expect(page.get_by_label("client_secret")).to_have_count(0)
    await doc_screenshot(page, "console-management-client")  # no secret in the picture
    # Unticking users:read takes it from the live token at once.
    await page.get_by_label("users:read").uncheck()
    await page.get_by_role("button", name="保存").click()
    await expect(page.locator("#mclient-scopes")).to_have_text("logins:read")
    assert await _api(dev_portal, token, "/api/v1/users") == 403
    # The list says what it is and what it may do.
    await page.get_by_role("link", name="← 应用").click()
    row = page.get_by_role("row", name="后台同步")
    await expect(row).to_contain_text("管理客户端（管理 API）: logins:read")
    # The audit trail has both changes, by this admin, with the scopes changed.
    rows = await db.fetch(
        "SELECT action, actor_type, before, after FROM audit_log WHERE target = $1 ORDER BY id",
        client_id,
    )
    assert [r["action"] for r in rows] == ["client.create", "client.update"]
    assert {r["actor_type"] for r in rows} == {"admin"}
    created, updated = ({k: r[k] for k in ("before", "after")} for r in rows)
    assert created["before"] is None and created["after"]["type"] == "management"
    assert "users:read" in created["after"]["scopes"]
    assert updated["after"]["scopes"] == ["logins:read"]
    assert "users:read" in updated["before"]["scopes"]
    console.assert_clean("management client")


@pytest.mark.locale("en")
async def test_management_client_in_english(dev_portal, db, page, console):
    await add_admin(db)
    await page.goto(dev_portal.url("/console/login"))
    await page.get_by_label("Email").fill("admin@acme.example")
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_label("Password").press("Enter")
    await page.goto(dev_portal.url("/console/pools/acme/clients"))
    panel = page.get_by_role("region", name="Add a management client")
    await panel.get_by_label("Name").fill("Back office")
    await panel.get_by_label("settings:write").check()
    await panel.get_by_role("button", name="Add management client").click()
    await expect(page.get_by_text("Management client (management API)")).to_be_visible()
    await expect(page.locator("#mclient-scopes")).to_have_text("settings:write")
    client_id, secret = await _created(page)
    token = await _token(dev_portal, client_id, secret)
    assert await _api(dev_portal, token, "/api/v1/settings") == 200
    assert await _api(dev_portal, token, "/api/v1/users") == 403
    console.assert_clean("management client, English")
