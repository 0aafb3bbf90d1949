"""Issue 21, item 5: the page of a host with no portal behind it (an unknown pool)
is styled like every other page, and its links lead to the apex, not to ``/`` of
the dead host. Static assets answer on every host."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, Response, expect

from portal.web import i18n

ZH = i18n.translator("zh-CN")
EN = i18n.translator("en")
# The page itself is a 404, which Chromium reports as a failed load; nothing else may.
DOCUMENT_404 = r"status of 404 \(Not Found\)"


async def open_dead_host(page: Page, url: str) -> list[Response]:
    assets: list[Response] = []
    page.on("response", lambda r: assets.append(r) if "/static/" in r.url else None)
    response = await page.goto(url)
    assert response is not None and response.status == 404
    return assets


async def styled(page: Page) -> bool:
    """Whether portal.css applied: its card has rounded corners and a background."""
    return await page.evaluate(
        """() => {
            const card = document.querySelector(".card");
            const s = card && getComputedStyle(card);
            return !!s && s.borderTopLeftRadius !== "0px"
                && s.backgroundColor !== "rgba(0, 0, 0, 0)";
        }"""
    )


@pytest.mark.allow_console_errors(DOCUMENT_404)
async def test_an_unknown_pool_has_a_styled_page_that_leads_to_the_apex(
    dev_portal, page, doc_screenshot
):
    dead = dev_portal.url("/oidc/auth?client_id=x", slug="nosuch")
    assets = await open_dead_host(page, dead)
    await expect(page.get_by_role("heading", level=1)).to_have_text(ZH("error.title"))
    await expect(page.get_by_text(ZH("error.pool_not_found"))).to_be_visible()
    # Its stylesheet (and icon) came from the same dead host, found.
    assert dev_portal.url("/static/portal.css", slug="nosuch") in [r.url for r in assets]
    assert [r.status for r in assets] == [200] * len(assets)
    assert await styled(page)
    await doc_screenshot(page, "error-unknown-pool")
    home = page.get_by_role("link", name=ZH("error.back"))
    assert await home.get_attribute("href") == dev_portal.url("/")
    brand = page.locator("a.brand")
    assert await brand.get_attribute("href") == dev_portal.url("/")
    await home.click()
    await expect(page).to_have_url(dev_portal.url("/"))
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert await styled(page) or await page.locator(".card").count() == 0


@pytest.mark.locale("en")
@pytest.mark.allow_console_errors(DOCUMENT_404)
async def test_the_english_page_too(dev_portal, page):
    await open_dead_host(page, dev_portal.url("/?lang=en", slug="nosuch"))
    await expect(page.get_by_role("heading", level=1)).to_have_text(EN("error.title"))
    assert await styled(page)
    home = page.get_by_role("link", name=EN("error.back"))
    assert await home.get_attribute("href") == dev_portal.url("/")


async def test_static_assets_answer_on_every_host(dev_portal):
    for slug in ("nosuch", "acme", None):
        async with dev_portal.client(slug) as client:
            css = await client.get("/static/portal.css")
            assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
            icon = await client.get("/favicon.ico")
            assert icon.status_code == 200, slug
            missing = await client.get("/static/nothing-here.css")
            assert missing.status_code == 404, slug
    # A name that is not the portal's at all: the same.
    async with dev_portal.client(None, headers={"host": "elsewhere.example"}) as other:
        assert (await other.get("/static/portal.css")).status_code == 200
        page = await other.get("/")
        assert page.status_code == 404 and "unknown_host" in page.text
        assert re.search(r'href="' + re.escape(dev_portal.url("/")) + '"', page.text)


async def test_an_error_page_on_a_pool_host_leads_to_the_apex_too(dev_portal):
    async with dev_portal.client() as pool:
        r = await pool.get("/no/such/page", headers={"accept": "text/html"})
    assert r.status_code == 404
    assert f'<a href="{dev_portal.url("/")}">{ZH("error.back")}</a>' in r.text
