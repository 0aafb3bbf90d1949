"""Dev tools (phone simulator, demo callback) and the /q/{ticket} page, over real HTTP."""

import asyncio
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request

from portal.dev import tools as devtools
from portal.scan import mpapi
from portal.tenants import pools
from portal.web import i18n
from portal.wechat import fake
from portal.wechat.fake import DEMO_APPID
from tests.phone import Phone
from tests.support import LoopbackTransport, free_socket, run_portal

PORTAL_DIR = Path(devtools.__file__).resolve().parents[1]
TICKET = "Abc_DEF-123456789xyz"
WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI"
)
SAFARI_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
async def dev_portal(db, redis_client, settings_factory):
    sock = free_socket()
    settings = settings_factory(env="dev", base_url=f"http://localhost:{sock.getsockname()[1]}")
    async with run_portal(settings, sock=sock) as running:
        yield running


async def make_pool(db, box, slug="bx", name="<b>x</b>"):
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug=slug, name=name, allow_http=True)


def data_attribute(page: str, name: str) -> str:
    match = re.search(rf"""{name}=(["'])(.*?)\1""", page, re.S)
    assert match, f"no {name} attribute"
    return html.unescape(match[2])


def url_field(page: str) -> str:
    match = re.search(r'<input id="phone-url"[^>]*?\svalue="([^"]*)"', page)
    assert match, "no URL field"
    return html.unescape(match[1])


def assert_csp_ready(page: str) -> None:
    """No inline script, style or event handler: the page must pass a strict CSP."""
    for tag in re.findall(r"<script\b[^>]*>", page):
        assert "src=" in tag, tag
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", page)
    assert "<style" not in page
    assert not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+=", page)


# --- /dev/phone ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "title", "scan"), [("zh-CN", "手机模拟器", "扫码"), ("en", "Phone simulator", "Scan")]
)
async def test_phone_page_renders(dev_portal, lang, title, scan):
    async with dev_portal.client() as apex:
        r = await apex.get("/dev/phone", params={"lang": lang})
    assert r.status_code == 200, r.text
    assert r.headers["content-language"] == lang
    page = r.text
    assert f'<html lang="{lang}">' in page
    assert title in page and f">{scan}</button>" in page
    assert data_attribute(page, "data-default-appid") == DEMO_APPID
    nonce = re.search(r"script-src 'nonce-([^']+)'", r.headers["content-security-policy"])[1]
    assert f'<script nonce="{nonce}" src="/static/dev_phone.js" defer></script>' in page
    assert 'href="/static/dev_phone.css"' in page
    for field in ("phone-url", "phone-user", "phone-number", "phone-nickname", "phone-avatar"):
        assert f'<label for="{field}">' in page and f'id="{field}"' in page
    assert 'value="alice"' in page
    assert_csp_ready(page)
    messages = json.loads(data_attribute(page, "data-messages"))
    assert messages["scanned"] == i18n.translator(lang)("phone.js.scanned")
    assert set(messages) == {k.removeprefix("phone.js.") for k in devtools._SCRIPT_MESSAGES}


async def test_phone_page_prefills_the_url_escaped(dev_portal):
    url = 'http://demo.localhost/q/abc"><script>alert(1)</script>'
    async with dev_portal.client() as apex:
        r = await apex.get("/dev/phone", params={"url": url, "lang": "en"})
    assert r.status_code == 200
    assert "<script>alert(1)" not in r.text
    assert url_field(r.text) == url


async def test_phone_page_uses_the_configured_default_appid(db, redis_client, settings_factory):
    sock = free_socket()
    settings = settings_factory(
        env="dev",
        base_url=f"http://localhost:{sock.getsockname()[1]}",
        default_mp_appid="wx00000000000000b2",
    )
    async with run_portal(settings, sock=sock) as running, running.client() as apex:
        r = await apex.get("/dev/phone")
    assert data_attribute(r.text, "data-default-appid") == "wx00000000000000b2"


async def test_dev_pages_are_not_on_pool_hosts(dev_portal, db, box):
    await make_pool(db, box, slug="acme", name="Acme")
    async with dev_portal.client("acme") as pool:
        for path in ("/dev/phone", "/dev/callback"):
            assert (await pool.get(path)).status_code == 404


async def test_production_has_no_dev_pages(portal):
    async with portal.client() as apex:
        for path in ("/dev/phone", "/dev/callback", "/dev/phone?url=x", "/dev/"):
            r = await apex.get(path)
            assert r.status_code == 404, path
            assert "dev_phone.js" not in r.text


@pytest.mark.parametrize("handler", [devtools.phone, devtools.callback])
async def test_dev_handlers_refuse_production_even_if_mounted(handler, settings_factory):
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/dev/phone",
        "query_string": b"",
        "headers": [],
        "state": {"settings": settings_factory(env="prod")},
    }
    with pytest.raises(HTTPException) as caught:
        await handler(Request(scope))
    assert caught.value.status_code == 404


# --- /dev/callback ---------------------------------------------------------------


async def test_callback_shows_the_parameters_escaped(dev_portal):
    async with dev_portal.client() as apex:
        r = await apex.get(
            "/dev/callback",
            params={"code": "c0de", "state": "<script>alert('x')</script>", "iss": "http://a"},
        )
    assert r.status_code == 200
    page = r.text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert '<code class="value">c0de</code>' in page
    assert "<code>iss</code>" in page  # anything else received is listed too
    assert "/oidc/token" in page
    assert r.headers["referrer-policy"] == "no-referrer"
    assert_csp_ready(page)


async def test_callback_shows_an_error(dev_portal):
    async with dev_portal.client() as apex:
        r = await apex.get(
            "/dev/callback",
            params={"error": "access_denied", "error_description": "<i>no</i>", "lang": "en"},
        )
    assert r.status_code == 200
    assert '<code class="value">access_denied</code>' in r.text
    assert "&lt;i&gt;no&lt;/i&gt;" in r.text and "<i>no</i>" not in r.text
    assert "an error arrived" in r.text


# --- /q/{ticket} on a pool host ---------------------------------------------------


async def test_q_page_names_the_pool_escaped(portal, db, box):
    await make_pool(db, box)
    async with portal.client("bx", headers={"user-agent": SAFARI_UA}) as pool:
        r = await pool.get(f"/q/{TICKET}", params={"lang": "en"})
    assert r.status_code == 200, r.text
    page = r.text
    assert "<b>x</b>" not in page
    assert "Log in to &lt;b&gt;x&lt;/b&gt;" in page
    assert 'src="/logo?v=default"' in page
    assert "Scan this QR code with WeChat." in page
    assert "mini program" in page
    assert "/dev/phone" not in page  # production
    assert r.headers["referrer-policy"] == "no-referrer"
    assert_csp_ready(page)


async def test_q_page_in_chinese_by_default(portal, db, box):
    await make_pool(db, box, name="示例")
    async with portal.client("bx") as pool:
        r = await pool.get(f"/q/{TICKET}")
    assert r.status_code == 200
    assert "登录 示例" in r.text and "请使用微信扫描此二维码。" in r.text


@pytest.mark.parametrize(
    ("lang", "hint"),
    [
        ("en", "Open this QR code in the WeChat mini program."),
        ("zh-CN", "请在微信小程序中打开此二维码。"),
    ],
)
async def test_q_page_inside_wechat(portal, db, box, lang, hint):
    await make_pool(db, box)
    async with portal.client("bx", headers={"user-agent": WECHAT_UA}) as pool:
        r = await pool.get(f"/q/{TICKET}", params={"lang": lang})
    assert r.status_code == 200
    assert hint in r.text
    assert i18n.translator(lang)("q.lead") not in r.text


@pytest.mark.parametrize(
    "ticket",
    ["a.b", "a%20b", "%3Cscript%3Ealert(1)%3C%2Fscript%3E", "x" * 65, "ab%2Fcd", "t%C3%A9st"],
)
async def test_q_page_rejects_bad_tickets(portal, db, box, ticket):
    await make_pool(db, box)
    async with portal.client("bx") as pool:
        r = await pool.get(f"/q/{ticket}")
    assert r.status_code == 404
    assert "<script>" not in r.text


async def test_q_page_accepts_short_and_long_tickets(portal, db, box):
    await make_pool(db, box)
    async with portal.client("bx") as pool:
        for ticket in ("a", "x" * 64):
            assert (await pool.get(f"/q/{ticket}")).status_code == 200


async def test_q_page_is_only_on_pool_hosts(portal):
    async with portal.client() as apex:
        assert (await apex.get(f"/q/{TICKET}")).status_code == 404


async def test_q_page_links_the_simulator_in_dev(dev_portal, db, box):
    await make_pool(db, box)
    port = dev_portal.port
    async with dev_portal.client("bx") as pool:
        r = await pool.get(f"/q/{TICKET}")
    assert r.status_code == 200
    content = f"http://localhost:{port}/q/{TICKET}"  # what bx's QR says now (issue 17)
    link = f"http://localhost:{port}/dev/phone?url={quote(content, safe='')}&lang=zh-CN"
    assert f'href="{link.replace("&", "&amp;")}"' in r.text  # the page's language goes along
    async with dev_portal.client() as apex:  # and the simulator takes it
        r = await apex.get(link.removeprefix(f"http://localhost:{port}"))
    assert url_field(r.text) == content


# --- texts and the simulator's script -----------------------------------------------


def test_every_text_is_in_both_languages():
    used = set(devtools._SCRIPT_MESSAGES)
    for name in ("dev_phone.html", "dev_callback.html", "scan_outside_wechat.html"):
        used |= set(re.findall(r'_\("([^"]+)"', (PORTAL_DIR / "templates" / name).read_text()))
    for lang in i18n.LANGUAGES:
        assert used <= i18n.MESSAGES[lang].keys(), (lang, used - i18n.MESSAGES[lang].keys())
    ours = {k for k in i18n.MESSAGES["en"] if k.startswith(("phone.", "q."))}
    assert ours == {k for k in i18n.MESSAGES["zh-CN"] if k.startswith(("phone.", "q."))}


def test_the_script_calls_the_mini_program_api():
    script = (PORTAL_DIR / "static" / "dev_phone.js").read_text()
    paths = {route.path for route in mpapi.routes()}
    assert paths == {
        "/api/mp/session",
        "/api/mp/tickets/{ticket}/scan",
        "/api/mp/tickets/{ticket}/confirm",
        "/api/mp/tickets/{ticket}/cancel",
    }
    assert '"/api/mp/session"' in script
    for action in ("scan", "confirm", "cancel"):
        assert f'"/api/mp/tickets/" + encodeURIComponent(t) + "/{action}"' in script
    assert '"Bearer " + token' in script
    assert "phone_code" in script and "nickname" in script and "avatar_url" in script
    assert ".innerHTML" not in script and "eval(" not in script


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_script_parses():
    script = PORTAL_DIR / "static" / "dev_phone.js"
    subprocess.run(["node", "--check", str(script)], check=True, timeout=30)


# Just enough DOM to run dev_phone.js in node: elements by id, text, attributes,
# events. fetch is node's own, pointed at the portal; the script is unchanged.
DOM_STUB = r"""
const [origin, appid, url, phone, steps, messages] = process.argv.slice(1);
class El {
  constructor(attrs = {}) { Object.assign(this, { attrs, children: [], on: {}, textContent: "",
    className: "", hidden: false, disabled: false, open: false, value: attrs.value || "" }); }
  getAttribute(n) { return n in this.attrs ? this.attrs[n] : null; }
  setAttribute(n, v) { this.attrs[n] = String(v); }
  removeAttribute(n) { delete this.attrs[n]; }
  addEventListener(t, f) { (this.on[t] ||= []).push(f); }
  fire(t) { (this.on[t] || []).forEach((f) => f({ preventDefault() {} })); }
  focus() {} closest() { return this; } append(...c) { this.children.push(...c); }
  prepend(c) { this.children.unshift(c); } replaceChildren() { this.children = []; }
}
const els = new Proxy({}, { get: (o, id) => (o[id] ||= new El()) });
els["phone-app"] = new El({ "data-messages": messages });
const values = { url, user: "bob", number: phone, nickname: "Bob", avatar: "", appid };
for (const [k, v] of Object.entries(values)) els["phone-" + k] = new El({ value: v });
globalThis.document = { getElementById: (id) => els[id], createElement: () => new El() };
const realFetch = fetch;
globalThis.fetch = (path, init) => realFetch(origin + path, init);
require("vm").runInThisContext(require("fs").readFileSync(process.env.SCRIPT, "utf8"));
const idle = () => new Promise((done) => {
  const check = () => (els["phone-scan"].disabled ? setTimeout(check, 10) : done());
  setTimeout(check, 10);
});
(async () => {
  const seen = [];
  for (const step of steps.split(",")) {
    step === "scan" ? els["phone-form"].fire("submit") : els["phone-" + step].fire("click");
    await idle();
    seen.push({ status: els["phone-status"].textContent, pool: els["phone-pool-name"].textContent,
      log: els["phone-log"].children.length });
  }
  console.log(JSON.stringify(seen));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_the_script_scans_and_confirms(db, box, redis_client, settings_factory, fake_wechat):
    """The simulator's own script against the real mini-program API and fake WeChat
    (which opens the mini program under its published link rule, issue 17)."""
    sock = free_socket()
    settings = settings_factory(env="dev", base_url=f"http://localhost:{sock.getsockname()[1]}")
    await asyncio.to_thread(
        fake.publish_link_rule, fake_wechat.url, settings.default_mp_appid, settings.qr_prefix
    )
    await make_pool(db, box, slug="acme", name="Acme <&>")
    _ = i18n.translator("en")
    messages = {k.removeprefix("phone.js."): _(k) for k in devtools._SCRIPT_MESSAGES}

    async def run(ticket: dict, steps: str) -> list[dict]:
        # node's fetch cannot set Host, so it connects by the name in base_url.
        args = [settings.base_url, DEMO_APPID, ticket["qrcode"]["content"], "13800138000", steps]
        proc = await asyncio.create_subprocess_exec(
            "node", "-e", DOM_STUB, *args, json.dumps(messages),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "SCRIPT": str(PORTAL_DIR / "static" / "dev_phone.js")},
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        return json.loads(out)

    async with run_portal(settings, sock=sock) as running, running.client("acme") as pc:

        async def status(t: dict) -> str:
            headers = {"x-ticket-secret": t["secret"]}
            r = await pc.get(f"/api/qrcode/{t['ticket']}/status", headers=headers)
            return r.json()["status"]

        t = (await pc.post("/api/qrcode", json={})).json()
        seen = await run(t, "scan,confirm")
        assert [s["status"] for s in seen] == [_("phone.js.scanned"), _("phone.js.confirmed")]
        assert seen[0]["pool"] == "Acme <&>"
        assert seen[1]["log"] == 4  # the link opened (/dev/phone/open), session, scan, confirm
        assert await status(t) == "confirmed"
        user = await db.fetchrow("SELECT phone_number, nickname FROM users")
        assert dict(user) == {"phone_number": "13800138000", "nickname": "Bob"}

        t = (await pc.post("/api/qrcode", json={})).json()
        seen = await run(t, "confirm,scan,cancel")
        assert seen[0]["status"].startswith(_("phone.js.failed"))
        assert "ticket_not_scanned" in seen[0]["status"]
        assert seen[2]["status"] == _("phone.js.cancelled")
        assert await status(t) == "cancelled"


async def test_the_demo_callback_shows_the_state_check(dev_portal, db, box):
    """Issue 16, finding 5, as the dev demo shows it: a login started from the
    site (`/dev/login`, which keeps a state in the browser's session) comes back
    with that state and passes; the callback link of someone else's login, or
    one without a state, is flagged as one a backend must refuse."""
    base = dev_portal.settings.base_url
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="demo", name="Demo", allow_http=True,
                           callback_url=f"{base}/dev/callback")  # fmt: skip

    async def login(browser, apex, user: str) -> str:
        r = await browser.get(f"{base}/dev/login?pool=demo")
        assert r.status_code == 303, r.text
        page = await browser.get(r.headers["location"])
        ticket = data_attribute(page.text, "data-ticket")
        secret = data_attribute(page.text, "data-secret")
        phone = Phone(apex, user)
        assert (await phone.scan_and_confirm(ticket)).status_code == 200
        done = await browser.post(
            f"{dev_portal.settings.pool_url('demo')}/oidc/auth/complete",
            data={"ticket": ticket, "secret": secret},
        )
        assert done.status_code == 303 and "state=" in done.headers["location"], done.text
        return done.headers["location"]

    def check(page) -> str:
        return data_attribute(page.text, "data-state-check")

    async with (
        dev_portal.client() as apex,
        httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as mallory,
        httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as victim,
    ):
        own = await login(victim, apex, "victim")
        assert check(await victim.get(own + "&lang=en")) == "ok"
        attackers = await login(mallory, apex, "mallory")
        await victim.get(f"{base}/dev/login?pool=demo")  # the victim started a login too
        page = await victim.get(attackers + "&lang=en")
        assert check(page) == "mismatch" and "must refuse" in page.text
        no_state = attackers.split("?")[0] + "?code=abc"
        assert check(await victim.get(no_state)) == "missing"
    async with dev_portal.client() as apex:
        assert (await apex.get("/dev/login?pool=Not_A_Slug")).status_code == 404
