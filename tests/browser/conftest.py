"""Fixtures for real-browser tests: headless Chromium (Debian's) driven by Playwright.

The whole suite shares one asyncio event loop, so this uses Playwright's async API.

- ``browser`` (session): one Chromium for the whole run.
- ``new_page(locale=..., user_agent=..., **context_options)`` (function): opens a
  page in a fresh browser context (its own cookies and storage, as another person
  would have); every context is closed after the test.
- ``page`` (function): one such page; its locale is ``zh-CN`` unless the test is
  marked ``@pytest.mark.locale("en")``.
- ``console``: the console errors and uncaught page errors of every page the test
  opened. A test fails if any arrived, unless marked
  ``@pytest.mark.allow_console_errors(r"regex", ...)`` (no pattern: allow all).
- ``dev_portal``: a dev-mode portal over real HTTP on clean stores, with a pool
  ``acme`` ("Acme 示例"); see ``DevPortal``. ``apex``: a client for its apex host
  (what the mini program talks to).
- ``rp``: the relying-party test site on its own origin (rp_site.py); ``shop``: a
  public client ("Shop", PKCE) of the pool at that origin.
- ``doc_screenshot(page, name)``: writes ``docs/screenshots/NAME.png`` only when
  ``PORTAL_SCREENSHOTS=1``.

When a test fails, a screenshot, the HTML and the console of each of its pages go
to ``/tmp/portal-browser-artifacts/<test>/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from portal.tenants import clients, pools
from portal.wechat import fake
from tests.browser.rp_site import RPSite, run_rp_site
from tests.support import RunningPortal, free_socket, run_portal

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; `playwright install` cannot download here
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium tries to reach the internet, which is closed here.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path("/tmp/portal-browser-artifacts")
DOC_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DEFAULT_LOCALE = "zh-CN"
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 15_000  # an upper bound for one wait, never a pause

# Requests the browser makes by itself, not the page: Chromium asks every site for
# /favicon.ico and logs its 404 as a console error. The portal serves none (yet).
BROWSER_NOISE = re.compile(r"^$")  # nothing ignored: the portal serves /favicon.ico

POOL_SLUG = "acme"
POOL_NAME = "Acme 示例"

expect.set_options(timeout=TIMEOUT_MS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "locale(tag): the browser locale of the `page` fixture (default zh-CN)"
    )
    config.addinivalue_line(
        "markers",
        "allow_console_errors(*patterns): console errors matching a pattern (any, if none) "
        "do not fail the test",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    # Each phase's report on the item, so fixtures can tell at teardown if the test failed.
    report = yield
    setattr(item, f"_report_{report.when}", report)
    return report


def _failed(item: pytest.Item) -> bool:
    return any(
        getattr(getattr(item, f"_report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


# --- the browser ---------------------------------------------------------------


def _require_chromium() -> None:
    """Skips the test when there is no Chromium, except under CI, where it fails
    (unless ``SKIP_BROWSER_INSTALL`` says the browser was left out on purpose)."""
    if CHROMIUM.exists():
        return
    if _set("SKIP_BROWSER_INSTALL"):
        pytest.skip(
            f"no browser: SKIP_BROWSER_INSTALL is set and {CHROMIUM} is missing; "
            "`make browser` as root installs Debian's chromium and fonts-noto-cjk"
        )
    reason = f"{CHROMIUM} is missing (Debian: apt-get install chromium fonts-noto-cjk)"
    if _set("CI"):
        pytest.fail(f"browser tests cannot run under CI: {reason}")
    pytest.skip(f"no browser: {reason}")


def _set(name: str) -> bool:
    return os.environ.get(name, "").lower() not in ("", "0", "false")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    _require_chromium()
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class ConsoleEntry:
    url: str
    kind: str  # "console" or "pageerror"
    text: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.url}: {self.text}"


@dataclass
class ConsoleLog:
    """Console errors (``console.error``, failed loads) and uncaught errors of the pages."""

    entries: list[ConsoleEntry] = field(default_factory=list)
    allowed: tuple[re.Pattern[str], ...] = ()

    def watch(self, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type in ("error", "assert"):
                where = message.location.get("url") or page.url
                if not BROWSER_NOISE.search(where):
                    self.entries.append(ConsoleEntry(where, "console", message.text))

        def on_page_error(error: Exception) -> None:
            self.entries.append(ConsoleEntry(page.url, "pageerror", str(error)))

        page.on("console", on_console)
        page.on("pageerror", on_page_error)

    def unexpected(self) -> list[ConsoleEntry]:
        return [e for e in self.entries if not any(p.search(e.text) for p in self.allowed)]

    def assert_clean(self, where: str = "") -> None:
        """No console error so far (allowed ones aside)."""
        bad = self.unexpected()
        assert not bad, f"console errors{' on ' + where if where else ''}:\n" + "\n".join(
            map(str, bad)
        )


@pytest.fixture
def console(request: pytest.FixtureRequest) -> ConsoleLog:
    marker = request.node.get_closest_marker("allow_console_errors")
    allowed: tuple[re.Pattern[str], ...] = ()
    if marker is not None:
        allowed = tuple(re.compile(p) for p in marker.args) if marker.args else (re.compile(""),)
    return ConsoleLog(allowed=allowed)


def _artifact_dir(item: pytest.Item) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid.split("::", 1)[-1])[:150]
    return ARTIFACTS / name


async def _save_artifacts(item: pytest.Item, contexts: list[BrowserContext], log: ConsoleLog):
    folder = _artifact_dir(item)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "console.txt").write_text("".join(f"{e}\n" for e in log.entries))
    n = 0
    for context in contexts:
        for page in context.pages:
            n += 1
            with contextlib.suppress(Exception):  # a crashed page must not hide the failure
                await page.screenshot(path=folder / f"page{n}.png", full_page=True, timeout=5000)
                (folder / f"page{n}.html").write_text(
                    f"<!-- {page.url} -->\n" + await page.content()
                )
    print(f"browser artifacts: {folder}")  # shown with the failure's captured output


NewPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def new_page(
    browser: Browser, console: ConsoleLog, request: pytest.FixtureRequest
) -> AsyncIterator[NewPage]:
    """``await new_page(locale="zh-CN", user_agent=None, **context_options)``: a page in a
    fresh browser context (viewport 1280x800 unless given)."""
    contexts: list[BrowserContext] = []

    async def open_page(
        locale: str = DEFAULT_LOCALE, user_agent: str | None = None, **options: Any
    ) -> Page:
        options.setdefault("viewport", VIEWPORT)
        if user_agent:
            options["user_agent"] = user_agent
        context = await browser.new_context(locale=locale, **options)
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        context.on("page", console.watch)  # pages it opens later (popups) too
        page = await context.new_page()
        return page

    try:
        yield open_page
    finally:
        bad = console.unexpected()
        if _failed(request.node) or bad:
            await _save_artifacts(request.node, contexts, console)
        for context in contexts:
            await context.close()
    console.assert_clean()


@pytest.fixture
async def page(new_page: NewPage, request: pytest.FixtureRequest) -> Page:
    marker = request.node.get_closest_marker("locale")
    return await new_page(locale=marker.args[0] if marker else DEFAULT_LOCALE)


@pytest.fixture
def doc_screenshot() -> Callable[[Page, str], Awaitable[None]]:
    """``await doc_screenshot(page, "name")`` → docs/screenshots/name.png, only when
    PORTAL_SCREENSHOTS=1 (normal runs leave the committed pictures alone)."""

    async def take(page: Page, name: str, **options: Any) -> None:
        if os.environ.get("PORTAL_SCREENSHOTS") != "1":
            return
        DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=DOC_SCREENSHOTS / f"{name}.png", **options)

    return take


# --- the portal ------------------------------------------------------------------


class TicketEvents:
    """A ticket's Server-Sent Events stream, read over HTTP in a background task.

    ``async with`` returns once the stream is open and its first event (the status
    at the time) has arrived, so nothing that happens afterwards can be missed."""

    def __init__(self, client: httpx.AsyncClient, ticket: str, secret: str) -> None:
        self._client = client
        self._path = f"/api/qrcode/{ticket}/events"
        self._secret = secret
        self._queue: asyncio.Queue[dict | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.received: list[dict] = []  # every status event so far, in order

    @property
    def statuses(self) -> list[str]:
        return [event["status"] for event in self.received]

    async def _read(self) -> None:
        try:
            async with self._client.stream(
                "GET", self._path, params={"secret": self._secret}
            ) as response:
                response.raise_for_status()
                event, data = "", []
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        if event == "status":
                            status = json.loads("\n".join(data))
                            self.received.append(status)
                            await self._queue.put(status)
                        event, data = "", []
        finally:
            self._queue.put_nowait(None)  # the stream ended

    async def next(self, timeout: float = TIMEOUT_MS / 1000) -> dict | None:
        """The next status event; None once the stream has ended."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def ended(self, timeout: float = TIMEOUT_MS / 1000) -> None:
        """Waits for the server to close the stream (it does after a final status)."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def __aenter__(self) -> TicketEvents:
        self._task = asyncio.create_task(self._read())
        first = await self.next()
        if first is None:
            self._task.result()  # raises what went wrong
            raise AssertionError("the event stream ended before its first event")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass
class DevPortal:
    """A dev-mode portal (``/dev/*`` on) over real HTTP, with the pool ``acme``.

    Browser URLs use the names the portal itself knows (``http://localhost:PORT``,
    ``http://acme.localhost:PORT``): Chromium resolves ``*.localhost`` to loopback."""

    running: RunningPortal
    pool: pools.CreatedPool

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def base_url(self) -> str:
        return self.running.settings.base_url

    def url(self, path: str = "/", slug: str | None = None) -> str:
        """A browser URL on the apex (``slug=None``) or a pool host."""
        base = self.running.settings.pool_url(slug) if slug else self.base_url
        return base + path

    def pool_url(self, path: str = "/") -> str:
        return self.url(path, POOL_SLUG)

    def client(self, slug: str | None = POOL_SLUG, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client for the pool host (``slug=None``: the apex)."""
        return self.running.client(slug, **kwargs)

    async def reveal_scanners(self) -> None:
        """The pool shows a returning user's nickname and avatar as soon as they scan
        (``scan_reveal = 'profile'``; by default nothing shows until they confirm)."""
        state = self.running.state
        await state["db"].execute(
            "UPDATE pools SET scan_reveal = 'profile' WHERE slug = $1", POOL_SLUG
        )
        await pools.announce_change(state["hub"], POOL_SLUG)
        for _ in range(200):  # until this process's cache has heard of it
            pool = await state["pools"].get(POOL_SLUG)
            if pool is not None and pool.scan_reveal == "profile":
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the pool cache did not pick up scan_reveal")

    async def create_ticket(self, **body: Any) -> dict:
        """``POST /api/qrcode`` on the pool, as its login page does."""
        async with self.client() as pool:
            r = await pool.post("/api/qrcode", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def events(self, ticket: dict) -> contextlib.AbstractAsyncContextManager[TicketEvents]:
        """``async with dev_portal.events(ticket) as events``: its SSE stream, read live."""

        @contextlib.asynccontextmanager
        async def open_stream() -> AsyncIterator[TicketEvents]:
            async with self.client() as client:
                client.timeout = httpx.Timeout(10, read=60)  # a keepalive comes every 15 s
                async with TicketEvents(client, ticket["ticket"], ticket["secret"]) as events:
                    yield events

        return open_stream()

    async def exchange(self, ticket: dict) -> httpx.Response:
        async with self.client() as pool:
            return await pool.post(
                f"/api/qrcode/{ticket['ticket']}/exchange", json={"secret": ticket["secret"]}
            )


@pytest.fixture
async def dev_portal(
    db, redis_client, box, settings_factory, fake_wechat
) -> AsyncIterator[DevPortal]:
    """A dev-mode portal over real HTTP on clean stores, with the pool ``acme``; the
    default mini program's link rule is published on the fake WeChat (as ``portal dev``
    does), so the phone simulator opens QR codes under it."""
    async with db.acquire() as conn:
        created = await pools.create(conn, box, slug=POOL_SLUG, name=POOL_NAME, allow_http=True)
    sock = free_socket()
    settings = settings_factory(env="dev", base_url=f"http://localhost:{sock.getsockname()[1]}")
    await asyncio.to_thread(
        fake.publish_link_rule, fake_wechat.url, settings.default_mp_appid, settings.qr_prefix
    )
    try:
        async with run_portal(settings, sock=sock) as running:
            yield DevPortal(running, created)
    finally:
        sock.close()  # also when the app fails to start


@pytest.fixture
async def apex(dev_portal) -> AsyncIterator[httpx.AsyncClient]:
    """What the mini program talks to: the dev portal's apex host."""
    async with dev_portal.client(None) as client:
        yield client


@pytest.fixture
async def rp() -> AsyncIterator[RPSite]:
    async with run_rp_site() as site:
        yield site


@pytest.fixture
async def shop(dev_portal, db, box, rp) -> clients.Client:
    """A public client ("Shop", PKCE) of the pool, at the RP site's origin."""
    async with db.acquire() as conn, conn.transaction():
        client, secret = await clients.create(
            conn, box, pool_id=dev_portal.pool.pool.id, name="Shop",
            redirect_uris=[rp.redirect_uri], web_origins=[rp.origin], public=True, allow_http=True,
        )  # fmt: skip
    assert secret is None
    return client
