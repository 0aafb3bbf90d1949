"""The login mini program (miniprogram/), tested in Node with miniprogram-simulate
against this real portal and the fake WeChat over HTTP (tests/miniprogram/).

The Node tests run the mini program's own pages and modules; the `wx` calls that
reach the network (wx.request, wx.login, the getPhoneNumber button) are backed by
real HTTP to the portal started here, which asks the fake WeChat. Here, the PC side
of one of those logins watches its ticket's event stream and must see it confirmed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from portal.tenants import clients, pools
from portal.wechat.fake import DEMO_APPID
from tests.phone import Phone
from tests.support import free_socket, run_portal

ROOT = Path(__file__).resolve().parent.parent
MINIPROGRAM = ROOT / "miniprogram"
NODE_TESTS = ROOT / "tests" / "miniprogram"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, as in tests/browser
HAVE_CHROMIUM = CHROMIUM.exists()
SECOND_APPID = "wx00000000000000b2"
SECOND_SECRET = "secretofthesecondapp000000000000"
NODE_TIMEOUT = 300


def _node_tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("the mini program's tests need Node.js 18+ and npm (node/npm not on PATH)")
    return node, npm


async def _run(*args: str, cwd: Path, env: dict | None = None, timeout: float = NODE_TIMEOUT):
    """A subprocess without blocking the event loop (the portal serves from this loop)."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture(scope="module")
def node_project() -> Path:
    """tests/miniprogram with its node_modules (``npm ci`` from the lockfile if missing)."""
    _, npm = _node_tools()
    if not (NODE_TESTS / "node_modules" / "miniprogram-simulate").is_dir():
        r = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_TESTS,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"
    return NODE_TESTS


async def _create_pool(db, box, slug: str, name: str, **kwargs) -> pools.CreatedPool:
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug=slug, name=name, allow_http=True, **kwargs)


async def _read_events(client: httpx.AsyncClient, ticket: dict, seen: list, opened: asyncio.Event):
    async with client.stream(
        "GET", f"/api/qrcode/{ticket['ticket']}/events", params={"secret": ticket["secret"]}
    ) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                opened.set()
                if seen[-1]["status"] in ("confirmed", "cancelled", "expired"):
                    return


async def _run_node_tests(node_project: Path, portal, fake, ticket: dict, tmp_path: Path):
    """Runs tests/miniprogram (jest) against this portal; every Node test must pass."""
    pool_urls = {
        s: portal.settings.pool_url(s) for s in ("acme", "phoneco", "other", "guard", "strict")
    }
    env = {
        **os.environ,
        "PORTAL_API_BASE": portal.settings.base_url,  # the apex: the one API base
        "PORTAL_DOMAIN": portal.settings.apex_host,
        "PORTAL_QR_PREFIX": portal.settings.qr_prefix,  # the default mini program's link rule
        "PORTAL_CONNECT_HOST": "127.0.0.1",
        "PORTAL_POOLS": json.dumps(pool_urls),
        "PORTAL_MP_APPID": DEMO_APPID,
        "PORTAL_FLOW_TICKET": ticket["ticket"],
        "PORTAL_BLOCKED_USER": "mallory",
        "FAKE_WECHAT_URL": fake.url,
        "PORTAL_TEST_REDIS_URL": portal.settings.redis_url,  # a ticket's time running out
        "PORTAL_MP_SNAPSHOTS": str(tmp_path / "screens"),
        "CI": "1",  # jest: no interactive output
    }
    report = tmp_path / "jest.json"
    code, output = await _run(
        str(node_project / "node_modules" / ".bin" / "jest"),
        "--runInBand",
        "--json",
        f"--outputFile={report}",
        cwd=node_project,
        env=env,
    )
    print(output)  # pytest shows it when the test fails
    assert code == 0, "the mini program's Node tests failed (their output is above)"
    results = json.loads(report.read_text())
    assert results["numFailedTests"] == 0
    assert results["numPassedTests"] == results["numTotalTests"] >= 15
    names = {t["title"] for s in results["testResults"] for t in s["assertionResults"]}
    assert "full scan and confirm of the ticket the PC page is waiting on" in names
    return results


@pytest.fixture
async def portal(db, redis_client, settings_factory):
    """The portal as conftest's, with WeChat's content security on (issue 17): the
    nicknames the mini program sends go through the fake's msgSecCheck."""
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}", content_security=True
    )
    async with run_portal(settings, sock=sock) as running:
        yield running


async def test_the_mini_program_against_the_real_portal(
    node_project, portal, db, box, fresh_fake, tmp_path
):
    acme = await _create_pool(db, box, "acme", "Acme 示例")
    await _create_pool(db, box, "phoneco", "Phone Co")
    await db.execute("UPDATE pools SET phone_required = true WHERE slug = 'phoneco'")
    await _create_pool(db, box, "other", "Other", mp_appid=SECOND_APPID, mp_secret=SECOND_SECRET)
    # Issue 20: number matching, and a computer's QR code from an image refused.
    await _create_pool(db, box, "guard", "Guard")
    await db.execute("UPDATE pools SET number_match = true WHERE slug = 'guard'")
    await _create_pool(db, box, "strict", "Strict")
    await db.execute("UPDATE pools SET scan_source_policy = 'refuse' WHERE slug = 'strict'")

    async with portal.client() as apex, portal.client("acme") as pc:
        # A user of acme whom its admin blocked.
        r = await pc.post("/api/qrcode")
        assert (await Phone(apex, "mallory").scan_and_confirm(r.json()["ticket"])).is_success
        await db.execute("UPDATE users SET blocked = true WHERE pool_id = $1", acme.pool.id)

        # The PC side of the login the mini program will confirm (on the site "Acme 商城"):
        # its event stream is open.
        async with db.acquire() as conn:
            shop, _ = await clients.create(
                conn,
                box,
                pool_id=acme.pool.id,
                name="Acme 商城",
                redirect_uris=["https://shop.example.com/cb"],
            )
        r = await pc.post("/api/qrcode", json={"client_id": shop.client_id})
        assert r.status_code == 201
        ticket = r.json()
        seen: list[dict] = []
        opened = asyncio.Event()
        pc.timeout = httpx.Timeout(10, read=120)
        events = asyncio.create_task(_read_events(pc, ticket, seen, opened))
        try:
            await asyncio.wait_for(opened.wait(), 10)
            await _run_node_tests(node_project, portal, fresh_fake, ticket, tmp_path)
            # The PC page heard it: scanned, then confirmed, by the mini program's own code.
            await asyncio.wait_for(asyncio.shield(events), 10)
        finally:
            events.cancel()
        assert [e["status"] for e in seen] == ["pending", "scanned", "confirmed"]
        assert seen[-1]["scanned_by"]["nickname"] == "小程序用户 Alice"
        # The avatar picked with chooseAvatar was uploaded and came with the confirmation.
        avatar = seen[-1]["scanned_by"]["avatar_url"]
        assert avatar.startswith(f"{portal.settings.base_url}/avatars/"), avatar
        r = await pc.post(f"/api/qrcode/{ticket['ticket']}/exchange", json=ticket)
        assert r.status_code == 200, r.text
        assert r.json()["user"]["nickname"] == "小程序用户 Alice"
        assert r.json()["user"]["avatar_url"] == avatar
        async with portal.client() as apex:
            png = await apex.get(avatar.removeprefix(portal.settings.base_url))
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        # The phone number shared with the getPhoneNumber button reached the pool.
        phone = await db.fetchval(
            """SELECT u.phone_number FROM users u JOIN pools p ON p.id = u.pool_id
               WHERE p.slug = 'phoneco' AND u.phone_number IS NOT NULL"""
        )
        assert phone == "13800138000"

        await _screenshots(tmp_path / "screens")


async def test_the_mini_program_compiles(node_project, tmp_path):
    node, _ = _node_tools()
    code, output = await _run(node, "check.js", cwd=node_project)
    assert code == 0, output
    assert "wxml: 2 files compiled by wcc" in output

    # The check fails on what would break in WeChat.
    broken = tmp_path / "mp"
    shutil.copytree(MINIPROGRAM, broken)
    login = broken / "pages" / "login"
    (login / "index.wxml").write_text("<view wx:if='{{a}}'>unclosed")
    js = login / "index.js"
    js.write_text(js.read_text() + "\nvar x = { ...{} }\nvar y = x?.y\n")
    (broken / "pages" / "index" / "index.json").write_text("{")
    (broken / "pages" / "index" / "index.wxss").unlink()
    code, output = await _run(node, "check.js", str(broken), cwd=node_project)
    assert code == 1
    assert "wxml: wcc failed" in output
    assert "pages/login/index.js: not ES2015" in output
    assert "pages/index/index.json: invalid JSON" in output
    assert "pages/index/index.wxss: missing" in output


def test_the_mini_program_config_is_in_one_file():
    config = (MINIPROGRAM / "config.js").read_text()
    for key in ("apiBase:", "appid:", "qrPrefixes:"):
        assert key in config
    # No other file names a URL or an AppID of its own.
    for path in MINIPROGRAM.rglob("*.js"):
        if path.name != "config.js":
            text = path.read_text()
            assert "https://" not in text.replace("^https:\\/\\/", ""), path
            assert "wx000000000000demo" not in text, path
    assert "node_modules" in (ROOT / ".gitignore").read_text()


# --- screenshots of the confirm screen's states ----------------------------------

# WeChat's built-in components, as the screenshots need them (the simulator renders
# them as custom elements without any style of their own).
_BUILTIN_CSS = """
html, body { margin: 0; background: #f5f6f7; }
body { width: 750px; min-height: 1334px; color: #1d2129; font-size: 30px;
  font-family: "PingFang SC", "Noto Sans CJK SC", "Noto Sans", sans-serif; }
wx-view, wx-button, wx-input { display: block; }
wx-text { display: inline; }
wx-image { display: inline-block; overflow: hidden; }
wx-image > img { width: 100%; height: 100%; object-fit: contain; display: block; }
wx-image[mode=aspectFill] > img { object-fit: cover; }
wx-button { position: relative; cursor: pointer; }
wx-button[disabled] { opacity: .6; }
wx-input { color: #1d2129; line-height: 72px; }
wx-input::before { content: attr(data-value); }
wx-input[data-value=""]::before { content: attr(placeholder); color: #a9aeb8; }
"""

_PREPARE = """() => {
  // <image src> → an <img> inside; a local path → the mini program's own file.
  for (const el of document.querySelectorAll('wx-image')) {
    const src = el.getAttribute('src');
    if (!src) continue;
    const img = document.createElement('img');
    img.src = src.startsWith('/') ? (window.LOCAL_IMAGES[src] || '') : src;
    el.appendChild(img);
  }
  return Promise.all([...document.images].map(i => i.complete ? 1 :
    new Promise(r => { i.onload = i.onerror = r; })));
}"""

SCREENS = (
    "mp-confirm",
    "mp-confirm-en",
    "mp-phone-required",
    "mp-success",
    "mp-expired",
    "mp-taken",
    "mp-wrong-mini-program",
    "mp-blocked",
    "mp-wechat-unavailable",
    # issue 20
    "mp-confirm-context",
    "mp-confirm-warned",
    "mp-scan-source-refused",
    "mp-number-matching",
    "mp-reported",
)


def _saved_screens(snapshots: Path) -> dict[str, dict]:
    assert sorted(p.stem for p in snapshots.glob("*.json")) == sorted(SCREENS)
    return {name: json.loads((snapshots / f"{name}.json").read_text()) for name in SCREENS}


async def _screenshots(snapshots: Path) -> None:
    """Each screen the Node tests saved, rendered in Chromium (750 px wide: WeChat's
    750 rpx, as a 2x phone screenshot). Written to docs/screenshots only with
    PORTAL_SCREENSHOTS=1, like the browser tests' pictures."""
    screens = _saved_screens(snapshots)
    if not HAVE_CHROMIUM:
        return  # the Node tests above are the test; the pictures are documentation
    from playwright.async_api import async_playwright

    avatar = base64.b64encode((MINIPROGRAM / "images" / "avatar.png").read_bytes()).decode()
    local = {"/images/avatar.png": f"data:image/png;base64,{avatar}"}
    write = os.environ.get("PORTAL_SCREENSHOTS") == "1"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page(viewport={"width": 750, "height": 1334})
            for name in SCREENS:
                screen = screens[name]
                html = (
                    "<!doctype html><meta charset=utf-8>"
                    f"<style>{_BUILTIN_CSS}</style><style>{screen['css']}</style>"
                    f"<script>window.LOCAL_IMAGES = {json.dumps(local)}</script>"
                    f"<body>{screen['html']}</body>"
                )
                await page.set_content(html)
                await page.evaluate(_PREPARE)
                assert await page.locator("wx-view").count() > 3
                if write:
                    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=SCREENSHOTS / f"{name}.png")
        finally:
            await browser.close()
