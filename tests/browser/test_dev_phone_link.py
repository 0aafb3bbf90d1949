"""Issue 21, item 1: without real WeChat the phone simulator is the only way to
finish a login, so in dev every QR a newcomer meets links to it: the hosted page,
the SDK's QR and ``<portal-login>`` show "在手机模拟器中打开" / "open in the
phone simulator", which opens ``/dev/phone`` on the apex with the code filled
in. In production none of them shows it, and ``POST /api/qrcode`` has no
``dev_phone_url``. The simulator takes a ticket, the QR's content or the QR
image's address. Each test runs against a dev and a production portal."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from playwright.async_api import Page, expect

from examples.rp.app import Config, create_app
from portal.tenants import clients, pools
from portal.web import i18n
from portal.wechat import fake
from tests.browser.conftest import POOL_NAME, POOL_SLUG, DevPortal
from tests.phone import Phone
from tests.support import LoopbackTransport, free_socket, run_portal, serve_asgi

ZH = i18n.translator("zh-CN")
EN = i18n.translator("en")


@pytest.fixture(params=["dev", "prod"])
async def portal(
    request, db, redis_client, box, settings_factory, fake_wechat
) -> AsyncIterator[DevPortal]:
    """The portal over real HTTP with the pool ``acme``, once with PORTAL_ENV=dev and
    once in production."""
    async with db.acquire() as conn:
        created = await pools.create(conn, box, slug=POOL_SLUG, name=POOL_NAME, allow_http=True)
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = settings_factory(env=request.param, base_url=f"http://localhost:{port}")
    # the default mini program's link rule, published as `portal dev` does (issue 17)
    fake.publish_link_rule(fake_wechat.url, settings.default_mp_appid, settings.qr_prefix)
    try:
        async with run_portal(settings, sock=sock) as running:
            yield DevPortal(running, created)
    finally:
        sock.close()


def is_dev(portal: DevPortal) -> bool:
    return portal.running.settings.is_dev


def simulator_link(portal: DevPortal, ticket: str) -> str:
    content = portal.url(f"/q/{ticket}")  # the default mini program's rule, on the apex
    return portal.url("/dev/phone?url=" + quote(content, safe=""))


async def play_the_phone(page: Page, content: str, user: str) -> None:
    """The simulator page, opened by the link: the code is filled in already."""
    await expect(page.get_by_label(ZH("phone.url"))).to_have_value(content)
    await page.get_by_label(ZH("phone.user")).fill(user)
    await page.get_by_role("button", name=ZH("phone.scan"), exact=True).click()
    await expect(page.get_by_role("status")).to_have_text(ZH("phone.js.scanned"))
    await page.get_by_role("button", name=ZH("phone.confirm"), exact=True).click()
    await expect(page.get_by_role("status")).to_have_text(ZH("phone.js.confirmed"))


async def test_the_qr_api_names_the_simulator_in_dev_only(portal):
    ticket = await portal.create_ticket()
    if is_dev(portal):
        assert ticket["dev_phone_url"] == simulator_link(portal, ticket["ticket"])
    else:
        assert "dev_phone_url" not in ticket
        async with portal.client(None) as apex:
            assert (await apex.get("/dev/phone")).status_code == 404
    # The OpenAPI document describes it, as optional.
    async with portal.client(None) as apex:
        schema = (await apex.get("/openapi.json")).json()["components"]["schemas"]["QrCode"]
    assert "dev_phone_url" in schema["properties"] and "dev_phone_url" not in schema["required"]


async def test_the_hosted_page_links_to_the_simulator_in_dev_only(portal, new_page, doc_screenshot):
    page = await new_page()
    await page.goto(portal.pool_url("/"))
    login = page.locator("#login")
    ticket = await login.get_attribute("data-ticket")
    assert ticket
    await expect(page.locator("#qr")).to_be_visible()
    link = page.get_by_role("link", name=ZH("login.dev_phone"))
    if not is_dev(portal):
        await expect(link).to_have_count(0)
        assert "/dev/phone" not in await page.content()
        return
    await expect(link).to_be_visible()
    assert await link.get_attribute("href") == simulator_link(portal, ticket)
    await doc_screenshot(page, "hosted-page")
    async with page.context.expect_page() as opened:
        await link.click()
    phone = await opened.value
    await play_the_phone(phone, portal.url(f"/q/{ticket}"), "newcomer")
    # The hosted page, still open in its tab, finishes the login.
    await expect(page.get_by_role("heading", level=1)).to_have_text(ZH("oidc.logged_in.title"))


@dataclass(frozen=True)
class Shop:
    origin: str

    def url(self, path: str) -> str:
        return self.origin + path


@contextlib.asynccontextmanager
async def example_shop(portal: DevPortal, db, box) -> AsyncIterator[Shop]:
    """The example website (examples/rp) on its own origin, with a public client."""
    sock = free_socket()
    origin = f"http://localhost:{sock.getsockname()[1]}"
    async with db.acquire() as conn, conn.transaction():
        client, _ = await clients.create(
            conn, box, pool_id=portal.pool.pool.id, name="Example Shop",
            redirect_uris=[f"{origin}/callback"], web_origins=[origin], public=True,
            allow_http=True,
        )  # fmt: skip
    config = Config(portal.pool_url("").rstrip("/"), client.client_id, origin)
    async with serve_asgi(create_app(config, transport=LoopbackTransport()), sock, name="shop"):
        yield Shop(origin)


async def test_the_sdk_qr_links_to_the_simulator_in_dev_only(portal, db, box, new_page, apex_of):
    async with example_shop(portal, db, box) as shop:
        page = await new_page()
        await page.goto(shop.url("/sdk?lang=zh-CN"))
        widget = page.locator("#login .portal-qr")
        await expect(widget).to_have_attribute("data-portal-status", "pending")
        ticket = await widget.get_attribute("data-portal-ticket")
        assert ticket
        link = widget.get_by_role("link", name=ZH("login.dev_phone"))
        if not is_dev(portal):
            await expect(widget.locator("a")).to_have_count(1)  # there, but hidden
            await expect(widget.locator("a")).to_be_hidden()
            return
        await expect(link).to_be_visible()
        assert await link.get_attribute("href") == simulator_link(portal, ticket)
        # Once the code is used, the link goes: it would lead to a dead code.
        async with apex_of(portal) as apex:
            r = await Phone(apex, "sdk_user").scan_and_confirm(ticket, nickname="Sid")
        assert r.status_code == 200, r.text
        await expect(page.locator("#result")).to_have_attribute("data-state", "verified")
        await expect(link).to_be_hidden()


async def test_the_component_links_to_the_simulator_in_dev_only(portal, db, box, new_page):
    async with example_shop(portal, db, box) as shop:
        page = await new_page()  # a Chinese browser, on the shop's English page
        await page.goto(shop.url("/component"))
        element = page.locator("portal-login")
        widget = element.locator(".portal-qr")  # inside its shadow root
        await expect(widget).to_have_attribute("data-portal-status", "pending")
        ticket = await widget.get_attribute("data-portal-ticket")
        assert ticket
        link = element.get_by_role("link", name=EN("login.dev_phone"))
        if not is_dev(portal):
            await expect(element.locator("a")).to_be_hidden()
            return
        await expect(link).to_be_visible()
        assert await link.get_attribute("href") == simulator_link(portal, ticket)
        async with page.context.expect_page() as opened:
            await link.click()
        await play_the_phone(await opened.value, portal.url(f"/q/{ticket}"), "comp_user")
        await expect(page.locator("#result")).to_have_attribute("data-state", "verified")


@pytest.fixture
def apex_of():
    def make(portal: DevPortal):
        return portal.client(None)

    return make


@pytest.mark.parametrize("form", ["ticket", "content", "png", "svg", "png?size=1"])
async def test_the_simulator_takes_a_ticket_the_content_or_the_image_address(
    dev_portal, page, form
):
    made = await dev_portal.create_ticket()
    ticket, qr = made["ticket"], made["qrcode"]
    pasted = {
        "ticket": ticket,
        "content": qr["content"],
        "png": qr["png"],
        "svg": qr["svg"],
        "png?size=1": qr["png"] + "?size=1",
    }[form]
    await page.goto(dev_portal.url("/dev/phone"))
    await page.get_by_label(ZH("phone.url")).fill(pasted)
    await page.get_by_label(ZH("phone.user")).fill("paster")
    await page.get_by_role("button", name=ZH("phone.scan"), exact=True).click()
    await expect(page.get_by_role("status")).to_have_text(ZH("phone.js.scanned"))
    async with dev_portal.client() as pool:
        r = await pool.get(f"/api/qrcode/{ticket}/status", params={"secret": made["secret"]})
    assert r.json()["status"] == "scanned"


async def test_the_simulator_still_refuses_other_addresses(dev_portal, page):
    await page.goto(dev_portal.url("/dev/phone"))
    field = page.get_by_label(ZH("phone.url"))
    for pasted in (
        dev_portal.pool_url("/logo"),
        dev_portal.pool_url("/api/qrcode/abc.gif"),
        dev_portal.pool_url("/api/qrcode/abc/status"),
    ):
        await field.fill(pasted)
        await page.get_by_role("button", name=ZH("phone.scan"), exact=True).click()
        await expect(page.get_by_role("status")).to_have_text(ZH("phone.js.bad_url"))
        await expect(field).to_have_attribute("aria-invalid", "true")
