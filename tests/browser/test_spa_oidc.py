"""A browser-only relying party (issue 18, item 1): a single-page app on its own
origin, with no backend and no hand-written metadata, uses the pool through
discovery alone: it fetches the discovery document, then the JWKS it names,
logs in with PKCE by redirect, exchanges the code at the token endpoint, reads
userinfo and signs out by revoking its token. Every one of those calls is a
cross-origin ``fetch`` in Chromium, so each needs the pool's CORS answers
(and the preflights of those that send ``Authorization``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from playwright.async_api import expect

from portal.tenants import clients
from tests.browser.spa import spa_app
from tests.phone import Phone
from tests.support import free_socket, serve_asgi

# The app: what discovery says is the only thing it knows besides the issuer.
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
  try {
    var meta = await (await fetch(config.issuer + "/.well-known/openid-configuration")).json();
    show("issuer", meta.issuer);
    var jwks = await (await fetch(meta.jwks_uri)).json();
    show("keys", String(jwks.keys.length));
    var redirect = location.origin + location.pathname;
    var query = new URLSearchParams(location.search);
    if (!query.get("code")) {
      var verifier = random(), state = random();
      sessionStorage.setItem("pkce", JSON.stringify({ verifier: verifier, state: state }));
      var challenge = b64url(await crypto.subtle.digest("SHA-256",
                                                       new TextEncoder().encode(verifier)));
      var auth = new URL(meta.authorization_endpoint);
      auth.search = new URLSearchParams({
        client_id: config.client_id, response_type: "code", scope: "openid profile",
        redirect_uri: redirect, state: state, code_challenge: challenge,
        code_challenge_method: "S256",
      }).toString();
      var login = document.getElementById("login");
      login.href = auth.toString();
      login.hidden = false;
      return;
    }
    var saved = JSON.parse(sessionStorage.getItem("pkce"));
    if (query.get("state") !== saved.state || query.get("iss") !== meta.issuer) {
      show("result", "bad state or issuer");
      return;
    }
    var tokens = await (await fetch(meta.token_endpoint, {
      method: "POST",
      body: new URLSearchParams({
        grant_type: "authorization_code", code: query.get("code"), redirect_uri: redirect,
        code_verifier: saved.verifier, client_id: config.client_id,
      }),
    })).json();
    if (!tokens.access_token) { show("result", "token: " + JSON.stringify(tokens)); return; }
    var bearer = { authorization: "Bearer " + tokens.access_token };
    var info = await (await fetch(meta.userinfo_endpoint, { headers: bearer })).json();
    show("name", info.name || "");
    show("result", "logged in");
    document.getElementById("logout").hidden = false;
    document.getElementById("logout").addEventListener("click", async function () {
      var revoked = await fetch(meta.revocation_endpoint, {
        method: "POST",
        body: new URLSearchParams({
          token: tokens.access_token, token_type_hint: "access_token",
          client_id: config.client_id,
        }),
      });
      var after = await fetch(meta.userinfo_endpoint, { headers: bearer });
      show("challenge", after.headers.get("WWW-Authenticate") || "");
      show("result", "signed out: revoke " + revoked.status + ", userinfo " + after.status);
    });
  } catch (error) {
    show("result", "failed: " + error);
  }
})();
"""


@dataclass(frozen=True)
class Spa:
    origin: str
    client: clients.Client

    @property
    def url(self) -> str:
        return f"{self.origin}/app"


SPA_BODY = (
    '<a id="login" hidden>Log in</a><button id="logout" hidden>Sign out</button>'
    '<dl><dt>issuer</dt><dd id="issuer"></dd><dt>keys</dt><dd id="keys"></dd>'
    '<dt>name</dt><dd id="name"></dd><dt>challenge</dt><dd id="challenge"></dd></dl>'
    '<p id="result" role="status"></p>'
)


@pytest.fixture
async def spa(dev_portal, db, box) -> AsyncIterator[Spa]:
    """The single-page app on its own port, a public client of the pool at its origin."""
    sock = free_socket()
    origin = f"http://localhost:{sock.getsockname()[1]}"
    async with db.acquire() as conn, conn.transaction():
        client, _ = await clients.create(
            conn, box, pool_id=dev_portal.pool.pool.id, name="SPA",
            redirect_uris=[f"{origin}/app"], web_origins=[origin], public=True, allow_http=True,
        )  # fmt: skip
    app = spa_app(dev_portal.pool_url("").rstrip("/"), client.client_id, SPA_SCRIPT, SPA_BODY)
    async with serve_asgi(app, sock, name="the SPA", lifespan="off"):
        yield Spa(origin, client)


# Chromium logs the 401 the app asks for (userinfo after the revocation).
@pytest.mark.allow_console_errors(r"status of 401 \(Unauthorized\)")
async def test_a_single_page_app_uses_the_pool_through_discovery_alone(
    dev_portal, spa, apex, new_page
):
    issuer = dev_portal.pool_url("").rstrip("/")
    page = await new_page(locale="en")
    await page.goto(spa.url)
    await expect(page.locator("#issuer")).to_have_text(issuer)
    await expect(page.locator("#keys")).not_to_have_text("")
    login = page.locator("#login")
    await expect(login).to_be_visible()
    assert (await login.get_attribute("href")).startswith(f"{issuer}/oidc/auth?")

    await login.click()
    hosted = page.locator("#login[data-ticket]")
    await expect(hosted).to_be_attached()
    ticket = await hosted.get_attribute("data-ticket")
    r = await Phone(apex, "sally").scan_and_confirm(ticket, nickname="Sally")
    assert r.status_code == 200, r.text

    # Back on the app: code → tokens (CORS at the token endpoint), then userinfo
    # with a bearer token (a preflight, then the GET).
    await expect(page.locator("#result")).to_have_text("logged in")
    assert page.url.startswith(spa.url + "?code=")
    await expect(page.locator("#name")).to_have_text("Sally")

    await page.locator("#logout").click()
    await expect(page.locator("#result")).to_have_text("signed out: revoke 200, userinfo 401")
    # The refusal's reason is readable across origins (WWW-Authenticate is exposed).
    await expect(page.locator("#challenge")).to_contain_text('error="invalid_token"')
