"""Issue 21, items 6 and 10: the console on a phone (390 px wide) and its login chart.

- No console page scrolls sideways at 390 px: a wide table scrolls in its own box.
- "Rotate the secret" asks first, on a page that says what breaks (the old
  secret stops working at once; for the default client, the pool's own hosted
  page's backend), in Chinese and English; cancelling changes nothing.
- The chart's y-axis has whole-number ticks, and a day with one login reaches
  the line labelled 1.
With PORTAL_SCREENSHOTS=1: console-phone-*.png, console-rotate.png and
console-logins.png in docs/screenshots/."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from playwright.async_api import Page, expect

from portal.tenants import clients
from portal.web import i18n
from tests.browser.test_console import add_admin, sign_in
from tests.phone import Phone

PHONE = {"width": 390, "height": 844}
zh = i18n.translator("zh-CN")
en = i18n.translator("en")


async def fits(page: Page, where: str) -> None:
    """Nothing sticks out past the right edge; a wide table scrolls inside itself."""
    width = await page.evaluate("document.documentElement.clientWidth")
    assert width <= PHONE["width"]
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{where}: the page is {scroll}px wide on a {width}px screen"
    tables = await page.evaluate(
        """() => [...document.querySelectorAll("table.data")].map(t => {
            const r = t.getBoundingClientRect();
            return {right: r.right, inner: t.scrollWidth, box: t.clientWidth,
                    overflow: getComputedStyle(t).overflowX};
        })"""
    )
    for t in tables:
        assert t["right"] <= width + 0.5, f"{where}: a table ends at {t['right']}px"
        if t["inner"] > t["box"]:
            assert t["overflow"] in ("auto", "scroll"), f"{where}: a wide table is cut off"


async def test_every_console_page_fits_a_phone(dev_portal, db, box, new_page, doc_screenshot):
    await add_admin(db)
    pool = dev_portal.pool.pool
    async with db.acquire() as conn:
        shop, _ = await clients.create(
            conn, box, pool_id=pool.id, name="Acme Shop with a rather long name",
            redirect_uris=["https://shop.example.com/a/very/long/path/to/the/oauth/callback"],
            web_origins=["https://shop.example.com"], allow_http=True,
        )  # fmt: skip
    async with dev_portal.client(None) as apex:
        for name in ("wang_with_a_long_name", "zhao"):
            ticket = await dev_portal.create_ticket()
            r = await Phone(apex, name).scan_and_confirm(
                ticket["ticket"], nickname=name.title(), phone="13812345678"
            )
            assert r.status_code == 200, r.text
    user_id = await db.fetchval("SELECT id FROM users WHERE pool_id = $1 LIMIT 1", pool.id)

    page = await new_page(viewport=PHONE)
    await sign_in(page, dev_portal)
    base = "/console/pools/acme"
    pages = {
        "pools": "/console/",
        "settings": base,
        "clients": base + "/clients",
        "client": f"{base}/clients/{shop.client_id}",
        "rotate": f"{base}/clients/{shop.client_id}/rotate",
        "users": base + "/users",
        "user": f"{base}/users/{user_id}",
        "logins": base + "/logins",
        "audit": base + "/audit",
    }
    for name, path in pages.items():
        response = await page.goto(dev_portal.url(path))
        assert response is not None and response.status == 200, path
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        await fits(page, name)
        if name in ("clients", "logins"):
            await doc_screenshot(page, f"console-phone-{name}", full_page=True)
    # The log's table is wider than the phone: it scrolls sideways, by itself.
    await page.goto(dev_portal.url(base + "/logins"))
    log = page.locator("table.data").last
    before = await page.evaluate("window.scrollX")
    await log.evaluate("t => { t.scrollLeft = 200; }")
    assert await log.evaluate("t => t.scrollLeft") > 0
    assert await page.evaluate("window.scrollX") == before == 0


async def test_rotating_the_default_clients_secret_asks_first(
    dev_portal, db, box, new_page, console, doc_screenshot
):
    await add_admin(db)
    pool = dev_portal.pool.pool
    default = dev_portal.pool.default_client
    old = dev_portal.pool.default_client_secret
    page = await new_page(viewport=PHONE)
    await sign_in(page, dev_portal)
    await page.goto(dev_portal.url(f"/console/pools/acme/clients/{default.client_id}"))
    await page.get_by_role("link", name=zh("console.client.rotate")).click()

    # The confirmation says what breaks; nothing changed yet.
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        zh("console.rotate.title", name=default.name)
    )
    await expect(page.get_by_text(zh("console.rotate.what"))).to_be_visible()
    await expect(page.get_by_text(zh("console.rotate.default_no_callback"))).to_be_visible()
    await fits(page, "rotate")
    await doc_screenshot(page, "console-rotate", full_page=True)
    fresh = await clients.get(db, pool.id, default.client_id)
    assert clients.verify_secret(box, fresh, old)

    # Cancel: back to the client, the secret unchanged.
    await page.get_by_role("link", name=zh("console.rotate.cancel")).click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(default.name)
    fresh = await clients.get(db, pool.id, default.client_id)
    assert clients.verify_secret(box, fresh, old)

    # Confirm: a new secret, shown once; the old one no longer works.
    await page.get_by_role("link", name=zh("console.client.rotate")).click()
    await page.get_by_role("button", name=zh("console.rotate.confirm")).click()
    new = await page.get_by_label("client_secret").input_value()
    fresh = await clients.get(db, pool.id, default.client_id)
    assert clients.verify_secret(box, fresh, new)
    assert not clients.verify_secret(box, fresh, old)
    await expect(page.get_by_role("status").first).to_contain_text(zh("console.flash.rotated"))
    console.assert_clean("rotate")


async def test_the_confirmation_names_the_callback_in_english(
    dev_portal, db, box, new_page, console
):
    await add_admin(db)
    pool = dev_portal.pool.pool
    callback = "https://acme.example.com/after-login"
    await db.execute("UPDATE pools SET callback_url = $1 WHERE id = $2", callback, pool.id)
    await db.execute(
        "UPDATE clients SET redirect_uris = array_append(redirect_uris, $1) WHERE client_id = $2",
        callback,
        dev_portal.pool.default_client.client_id,
    )
    page = await new_page(viewport=PHONE)
    await sign_in(page, dev_portal)
    default = dev_portal.pool.default_client
    await page.goto(
        dev_portal.url(f"/console/pools/acme/clients/{default.client_id}/rotate?lang=en")
    )
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        en("console.rotate.title", name=default.name)
    )
    await expect(page.get_by_text(en("console.rotate.default", callback=callback))).to_be_visible()
    await expect(page.get_by_role("button", name=en("console.rotate.confirm"))).to_be_visible()


async def test_a_confidential_client_that_is_not_the_default_is_warned_too(
    dev_portal, db, box, new_page
):
    await add_admin(db)
    async with db.acquire() as conn:
        shop, secret = await clients.create(
            conn, box, pool_id=dev_portal.pool.pool.id, name="Shop",
            redirect_uris=["https://shop.example/cb"], allow_http=True,
        )  # fmt: skip
    page = await new_page()
    await sign_in(page, dev_portal)
    await page.goto(dev_portal.url(f"/console/pools/acme/clients/{shop.client_id}/rotate"))
    await expect(page.get_by_text(zh("console.rotate.what"))).to_be_visible()
    await expect(page.get_by_text(zh("console.rotate.default_no_callback"))).to_have_count(0)
    assert secret and clients.verify_secret(
        box, await clients.get(db, dev_portal.pool.pool.id, shop.client_id), secret
    )


async def test_a_day_with_one_login_reaches_the_line_labelled_1(
    dev_portal, db, new_page, doc_screenshot
):
    await add_admin(db)
    pool_id = dev_portal.pool.pool.id
    now = datetime.now(UTC)
    rows = [(pool_id, "success", now)]  # today: one
    rows += [(pool_id, "success", now - timedelta(days=1, minutes=i)) for i in range(4)]
    rows += [(pool_id, "user_blocked", now - timedelta(days=1, minutes=9))]  # 4 + 1 = 5
    await db.executemany(
        """INSERT INTO login_events (pool_id, client_id, result, ip, created_at)
           VALUES ($1, 'cweb', $2, '198.51.100.7', $3)""",
        rows,
    )
    page = await new_page()
    await sign_in(page, dev_portal)
    await page.goto(dev_portal.url("/console/pools/acme/logins"))
    chart = page.get_by_role("img", name=re.compile("每日登录次数"))
    await expect(chart).to_be_visible()
    ticks = await chart.evaluate(
        """svg => [...svg.querySelectorAll("line.chart-grid")].map((line, i) => ({
            y: line.getBoundingClientRect().top,
            label: svg.querySelectorAll("line.chart-grid + text.chart-label")[i].textContent,
        }))"""
    )
    assert [t["label"] for t in ticks] == ["0", "1", "2", "3", "4", "5"]
    line = {t["label"]: t["y"] for t in ticks}
    bars = await chart.evaluate(
        """svg => [...svg.querySelectorAll("rect.chart-ok, rect.chart-refused")].map(r => ({
            kind: r.getAttribute("class"), top: r.getBoundingClientRect().top}))"""
    )
    tops = sorted(bars, key=lambda b: b["top"])
    # Yesterday's refused attempt tops the bar at 5; today's single login at 1.
    assert tops[0]["kind"] == "chart-refused" and abs(tops[0]["top"] - line["5"]) < 1
    assert abs(tops[-1]["top"] - line["1"]) < 1, (tops, line)
    await doc_screenshot(page, "console-logins", full_page=True)


async def test_the_rotate_form_without_confirmation_changes_nothing(dev_portal, db, box, new_page):
    """A stale page (or another site) posting the old one-click form is shown the question."""
    await add_admin(db)
    page = await new_page()
    await sign_in(page, dev_portal)
    default = dev_portal.pool.default_client
    await page.goto(dev_portal.url(f"/console/pools/acme/clients/{default.client_id}"))
    csrf = await page.locator("input[name=csrf]").first.input_value()
    r = await page.request.post(
        dev_portal.url(f"/console/pools/acme/clients/{default.client_id}/rotate"),
        form={"csrf": csrf},
    )
    assert r.status == 200 and zh("console.rotate.what") in await r.text()
    fresh = await clients.get(db, dev_portal.pool.pool.id, default.client_id)
    assert clients.verify_secret(box, fresh, dev_portal.pool.default_client_secret)
