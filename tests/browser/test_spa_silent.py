"""Silent renewal in a hidden iframe (issue 18, item 2), in Chromium, with the pool
over https (a local certificate) as in production: a single-page app on another
site (its own origin, ``http://localhost:PORT``) logs in by redirect, then renews
with ``prompt=none`` and ``response_mode=web_message`` in a hidden iframe. That
needs the pool's session cookie in a cross-site frame (``SameSite=None; Secure``,
still ``__Host-``) and a response page the app's origin may frame
(``frame-ancestors``). After the person logs out at the pool, the same silent
request answers ``login_required``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.async_api import expect

from portal.app import create_app
from portal.tenants import clients, pools
from tests.browser.spa import spa_app
from tests.phone import Phone
from tests.support import free_socket, serve_asgi

SPA_SCRIPT = """
(async function () {
  "use strict";
  var config = JSON.parse(document.getElementById("config").textContent);
  var show = function (id, text) { document.getElementById(id).textContent = text; };
  var b64url = function (bytes) {
    return btoa(String.fromCharCode.apply(null, new Uint8Array(bytes)))
      .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  };
  var random = function () { return b64url(crypto.getRandomValues(new Uint8Array(32))); };
  var meta = await (await fetch(config.issuer + "/.well-known/openid-configuration")).json();
  var redirect = location.origin + location.pathname;
  var issuerOrigin = new URL(meta.issuer).origin;
  var authUrl = async function (extra) {
    var verifier = random(), state = random();
    var challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    var url = new URL(meta.authorization_endpoint);
    url.search = new URLSearchParams(Object.assign({
      client_id: config.client_id, response_type: "code", scope: "openid profile",
      redirect_uri: redirect, state: state, code_challenge: challenge,
      code_challenge_method: "S256",
    }, extra)).toString();
    return { url: url.toString(), verifier: verifier, state: state };
  };
  var redeem = async function (code, verifier) {
    var tokens = await (await fetch(meta.token_endpoint, {
      method: "POST",
      body: new URLSearchParams({ grant_type: "authorization_code", code: code,
        redirect_uri: redirect, code_verifier: verifier, client_id: config.client_id }),
    })).json();
    var info = await (await fetch(meta.userinfo_endpoint, {
      headers: { authorization: "Bearer " + tokens.access_token } })).json();
    return info;
  };
  var query = new URLSearchParams(location.search);
  if (!query.get("code")) {
    var first = await authUrl({});
    sessionStorage.setItem("pkce", JSON.stringify(first));
    var login = document.getElementById("login");
    login.href = first.url;
    login.hidden = false;
    return;
  }
  var saved = JSON.parse(sessionStorage.getItem("pkce"));
  if (query.get("state") !== saved.state) { show("result", "bad state"); return; }
  var info = await redeem(query.get("code"), saved.verifier);
  show("result", "logged in as " + info.name);
  // Silent renewal: a hidden iframe, prompt=none, the answer by postMessage.
  document.getElementById("renew").hidden = false;
  document.getElementById("renew").addEventListener("click", async function () {
    show("silent", "renewing");
    var silent = await authUrl({ prompt: "none", response_mode: "web_message" });
    var frame = document.createElement("iframe");
    frame.hidden = true;
    var onMessage = async function (event) {
      if (event.origin !== issuerOrigin || !event.data ||
          event.data.type !== "authorization_response") return;
      window.removeEventListener("message", onMessage);
      frame.remove();
      var answer = event.data.response;
      if (answer.state !== silent.state || answer.iss !== meta.issuer) {
        show("silent", "bad state or issuer"); return;
      }
      if (answer.error) { show("silent", "error " + answer.error); return; }
      var renewed = await redeem(answer.code, silent.verifier);
      show("silent", "renewed as " + renewed.name);
    };
    window.addEventListener("message", onMessage);
    frame.src = silent.url;
    document.body.appendChild(frame);
  });
})().catch(function (error) { document.getElementById("result").textContent = "failed: " + error; });
"""


SPA_BODY = (
    '<a id="login" hidden>Log in</a><button id="renew" hidden>Renew</button>'
    '<p id="result" role="status"></p><p id="silent"></p>'
)


def local_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its subdomains (the browser
    context ignores that no authority signed it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.DNSName("*.localhost"),
             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class HttpsPortal:
    port: int
    issuer: str
    apex: httpx.AsyncClient


@pytest.fixture
async def https_portal(
    db, redis_client, box, settings_factory, tmp_path
) -> AsyncIterator[HttpsPortal]:
    """A dev-mode portal served over TLS (its own certificate), with the pool ``acme``."""
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme")
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = settings_factory(env="dev", base_url=f"https://localhost:{port}")
    cert, key = local_certificate(tmp_path)
    config = uvicorn.Config(create_app(settings), lifespan="on", log_level="warning",
                            proxy_headers=False, ws="none", ssl_certfile=str(cert),
                            ssl_keyfile=str(key))  # fmt: skip
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the https portal did not start")
        await asyncio.sleep(0.01)
    # The phone's client: the certificate is for names, and this connects to 127.0.0.1
    # (the mini program checks WeChat's certificate, not this test's).
    apex = httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{port}",
        verify=False,  # noqa: S501
        timeout=10,
        headers={"host": f"localhost:{port}"},
    )
    try:
        yield HttpsPortal(port, f"https://acme.localhost:{port}", apex)
    finally:
        await apex.aclose()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@pytest.fixture
async def normal_window(tmp_path) -> AsyncIterator:
    """A Chromium window with a profile of its own, as a person's browser is: the
    browser fixture's contexts are off-the-record, where Chromium blocks every
    third-party cookie (as Safari and Firefox do everywhere: docs/security.md)."""
    from playwright.async_api import async_playwright

    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _require_chromium

    _require_chromium()
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    # Third-party cookies allowed, as most people's Chrome has them (Chromium's own
    # default here blocks them; so do Safari and Firefox: docs/security.md).
    (profile / "Default" / "Preferences").write_text(
        json.dumps({"profile": {"cookie_controls_mode": 0, "block_third_party_cookies": False}})
    )
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
            headless=True, locale="en", ignore_https_errors=True,
        )  # fmt: skip
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            await context.close()


async def test_a_single_page_app_renews_silently_in_an_iframe(https_portal, db, box, normal_window):
    sock = free_socket()
    origin = f"http://localhost:{sock.getsockname()[1]}"  # another site than the pool
    pool_id = await db.fetchval("SELECT id FROM pools WHERE slug = 'acme'")
    async with db.acquire() as conn:
        client, _ = await clients.create(
            conn, box, pool_id=pool_id, name="SPA", redirect_uris=[f"{origin}/app"],
            web_origins=[origin], public=True,
        )  # fmt: skip
    async with serve_asgi(spa_app(https_portal.issuer, client.client_id, SPA_SCRIPT, SPA_BODY), sock, name="the SPA",
                          lifespan="off"):  # fmt: skip
        page = normal_window.pages[0] if normal_window.pages else await normal_window.new_page()
        await page.goto(f"{origin}/app")
        login = page.locator("#login")
        await expect(login).to_be_visible()
        await login.click()
        hosted = page.locator("#login[data-ticket]")
        await expect(hosted).to_be_attached()
        ticket = await hosted.get_attribute("data-ticket")
        r = await Phone(https_portal.apex, "sally").scan_and_confirm(ticket, nickname="Sally")
        assert r.status_code == 200, r.text
        await expect(page.locator("#result")).to_have_text("logged in as Sally")

        # The session cookie the browser holds for the pool: __Host-, Secure, SameSite=None.
        cookies = {c["name"]: c for c in await page.context.cookies(https_portal.issuer)}
        session = cookies["__Host-portal_session"]
        assert session["secure"] and session["sameSite"] == "None" and session["httpOnly"]

        await page.locator("#renew").click()
        await expect(page.locator("#silent")).to_have_text("renewed as Sally")
        await page.locator("#renew").click()  # and again: each renewal is a new code
        await expect(page.locator("#silent")).to_have_text("renewed as Sally")

        # Logged out at the pool (in another tab): the silent request says so.
        other = await page.context.new_page()
        await other.goto(f"{https_portal.issuer}/oidc/logout")
        await other.locator("#logout-confirm button[type=submit], form button").first.click()
        await expect(other.locator("h1")).to_have_text("Logged out")
        await page.locator("#renew").click()
        await expect(page.locator("#silent")).to_have_text("error login_required")
