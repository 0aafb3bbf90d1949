"""The OpenID Connect provider, driven by a relying-party library this project
did not write (Authlib's OAuth 2.0 client), and its negative cases."""

import asyncio
import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from portal.tenants import clients, keys, pools
from tests.phone import Phone
from tests.support import LoopbackTransport

RP = "https://rp.example.com"
REDIRECT = f"{RP}/callback"
LOGOUT_TO = f"{RP}/bye"


@pytest.fixture
async def setup(portal, db, box):
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
        async with conn.transaction():
            rp, rp_secret = await clients.create(
                conn, box, pool_id=acme.pool.id, name="RP", redirect_uris=[REDIRECT],
                post_logout_redirect_uris=[LOGOUT_TO], web_origins=[RP],
            )  # fmt: skip
            spa, _ = await clients.create(
                conn, box, pool_id=acme.pool.id, name="SPA", redirect_uris=[REDIRECT], public=True
            )
        beta = await pools.create(conn, box, slug="beta", name="Beta", allow_http=True)
    return {
        "issuer": f"http://acme.localhost:{portal.port}",
        "acme": acme,
        "beta": beta,
        "rp": rp,
        "rp_secret": rp_secret,
        "spa": spa,
    }


@pytest.fixture
async def browser(portal):
    """What a browser does on the pool host: follow nothing, keep cookies."""
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as client:
        yield client


def page_ticket(html: str) -> tuple[str, str]:
    ticket = re.search(r'data-ticket="([^"]+)"', html)[1]
    secret = re.search(r'data-secret="([^"]+)"', html)[1]
    return ticket, secret


async def scan_login(
    browser, apex, auth_url: str, user: str = "alice", **confirm
) -> httpx.Response:
    """Open the hosted page, scan and confirm on the phone, and let the page finish."""
    page = await browser.get(auth_url)
    assert page.status_code == 200, page.text
    ticket, secret = page_ticket(page.text)
    phone = Phone(apex, user)
    assert (await phone.scan_and_confirm(ticket, **confirm)).status_code == 200
    issuer = f"{urlsplit(auth_url).scheme}://{urlsplit(auth_url).netloc}"
    return await browser.post(
        f"{issuer}/oidc/auth/complete", data={"ticket": ticket, "secret": secret}
    )


async def end_sso(browser, issuer: str) -> None:
    """Log this browser out of the pool, as its user would: open the logout
    page and press the button on its confirmation form."""
    page = await browser.get(f"{issuer}/oidc/logout")
    assert page.status_code == 200, page.text
    if "logout-confirm" in page.text:
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        done = await browser.post(f"{issuer}/oidc/logout", data=fields)
        assert done.status_code == 200 and "logout-confirm" not in done.text


def validate_id_token(
    id_token: str, jwks: dict, *, issuer: str, client_id: str, nonce: str | None
) -> dict:
    token = jwt.decode(id_token, KeySet.import_key_set(jwks))
    claims = {"iss": {"essential": True, "value": issuer}, "aud": {"essential": True, "value": client_id},
              "exp": {"essential": True}, "iat": {"essential": True}, "sub": {"essential": True}}  # fmt: skip
    if nonce:
        claims["nonce"] = {"essential": True, "value": nonce}
    JWTClaimsRegistry(**claims).validate(token.claims)
    return token.claims


async def test_a_standard_client_library_does_the_whole_flow(setup, browser, apex, portal):
    issuer = setup["issuer"]
    rp = AsyncOAuth2Client(
        client_id=setup["rp"].client_id,
        client_secret=setup["rp_secret"],
        scope="openid profile phone offline_access",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        transport=LoopbackTransport(),
    )
    async with rp:
        meta = (
            await rp.request(
                "GET", f"{issuer}/.well-known/openid-configuration", withhold_token=True
            )
        ).json()
        assert meta["issuer"] == issuer and not issuer.endswith("/")
        assert meta["code_challenge_methods_supported"] == ["S256"]
        verifier, nonce = generate_token(48), generate_token(20)
        url, state = rp.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )

        done = await scan_login(browser, apex, url, phone="13800138000", nickname="Alice")
        assert done.status_code == 303
        location = done.headers["location"]
        assert location.startswith(REDIRECT + "?")
        query = parse_qs(urlsplit(location).query)
        assert query["state"] == [state] and query["iss"] == [issuer]

        token = await rp.fetch_token(
            meta["token_endpoint"], authorization_response=location, code_verifier=verifier
        )
        assert token["token_type"].lower() == "bearer" and token["refresh_token"]
        jwks = (await rp.request("GET", meta["jwks_uri"], withhold_token=True)).json()
        claims = validate_id_token(
            token["id_token"], jwks, issuer=issuer, client_id=setup["rp"].client_id, nonce=nonce
        )
        assert claims["amr"] == ["wechat_qr"] and claims["auth_time"] <= claims["iat"]
        assert claims["phone_number"] == "+8613800138000" and claims["nickname"] == "Alice"
        at_hash = base64.urlsafe_b64encode(
            hashlib.sha256(token["access_token"].encode()).digest()[:16]
        ).rstrip(b"=")
        assert claims["at_hash"] == at_hash.decode()

        info = (await rp.get(meta["userinfo_endpoint"])).json()
        # No picture was shared: the claim is left out, never null (OIDC Core §5.3.2).
        assert info == {"sub": claims["sub"], "name": "Alice", "nickname": "Alice",
                        "preferred_username": "Alice", "updated_at": claims["updated_at"],
                        "phone_number": "+8613800138000", "phone_number_verified": True}  # fmt: skip

        old_refresh = token["refresh_token"]
        fresh = await rp.refresh_token(meta["token_endpoint"])
        assert (
            fresh["refresh_token"] != old_refresh and fresh["access_token"] != token["access_token"]
        )
        validate_id_token(
            fresh["id_token"], jwks, issuer=issuer, client_id=setup["rp"].client_id, nonce=None
        )

        r = await rp.revoke_token(
            meta["revocation_endpoint"], token=fresh["access_token"], token_type_hint="access_token"
        )
        assert r.status_code == 200
        r = await rp.get(meta["userinfo_endpoint"])
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"

        # The browser holds a login session at the pool: the next request needs no scan.
        again = await browser.get(rp.create_authorization_url(meta["authorization_endpoint"],
                                                               code_verifier=verifier, nonce=nonce)[0])  # fmt: skip
        assert again.status_code == 303 and "code=" in again.headers["location"]

        r = await browser.get(meta["end_session_endpoint"], params={
            "id_token_hint": token["id_token"], "post_logout_redirect_uri": LOGOUT_TO, "state": "s1"})  # fmt: skip
        assert r.status_code == 303 and r.headers["location"] == f"{LOGOUT_TO}?state=s1"
        # Logged out: the login's refresh token is revoked and the session is gone.
        r = await rp.post(meta["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"]},
                          auth=(setup["rp"].client_id, setup["rp_secret"]))  # fmt: skip
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        url, _ = rp.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        assert (await browser.get(url)).status_code == 200  # the QR page again


def auth_params(client, **extra):
    verifier = secrets.token_urlsafe(40)
    params = {"client_id": client.client_id, "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "openid", "state": "xyz", "code_challenge": create_s256_code_challenge(verifier),
              "code_challenge_method": "S256"}  # fmt: skip
    params.update(extra)
    return params, verifier


async def code_for(setup, browser, apex, client, **extra) -> tuple[str, str]:
    extra.setdefault("prompt", "login")  # a scan every time, whatever session the browser has
    params, verifier = auth_params(client, **extra)
    url = f"{setup['issuer']}/oidc/auth?" + httpx.QueryParams(params).__str__()
    done = await scan_login(browser, apex, url)
    assert done.status_code == 303, done.text
    return parse_qs(urlsplit(done.headers["location"]).query)["code"][0], verifier


def code_grant(code: str, verifier: str) -> dict:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }


def rp_auth(setup) -> tuple[str, str]:
    return setup["rp"].client_id, setup["rp_secret"]


async def token_request(browser, setup, data, auth=None):
    return await browser.post(f"{setup['issuer']}/oidc/token", data=data, auth=auth)


async def test_an_unregistered_redirect_uri_is_an_error_page_never_a_redirect(setup, browser):
    for uri in (
        f"{RP}/other",
        REDIRECT + "/",
        REDIRECT.upper(),
        REDIRECT + "?x=1",
        "https://evil.example.com/cb",
    ):
        params, _ = auth_params(setup["rp"], redirect_uri=uri)
        r = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
        assert r.status_code == 400 and "location" not in r.headers, uri
        assert "text/html" in r.headers["content-type"]
    params, _ = auth_params(setup["rp"], client_id="nope")
    r = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
    assert r.status_code == 400 and "location" not in r.headers
    # A client of pool A is unknown at pool B.
    params, _ = auth_params(setup["rp"])
    r = await browser.get(
        f"http://beta.localhost:{urlsplit(setup['issuer']).port}/oidc/auth", params=params
    )
    assert r.status_code == 400 and "location" not in r.headers


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"request": "eyJ..."}, "invalid_request_object"),  # not a signed JWT of the client
        ({"prompt": "none"}, "login_required"),
    ],
)
async def test_errors_after_the_redirect_uri_is_checked_go_back_to_the_client(
    setup, browser, change, error
):
    params, _ = auth_params(setup["rp"], **change)
    r = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
    assert r.status_code == 303
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert (
        query["error"] == [error]
        and query["state"] == ["xyz"]
        and query["iss"] == [setup["issuer"]]
    )


async def test_a_public_client_must_use_pkce(setup, browser, apex):
    params, _ = auth_params(setup["spa"])
    del params["code_challenge"], params["code_challenge_method"]
    r = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
    assert r.status_code == 303 and "error=invalid_request" in r.headers["location"]
    code, verifier = await code_for(setup, browser, apex, setup["spa"])
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": setup["spa"].client_id,
    }
    r = await token_request(browser, setup, {**data, "code_verifier": "w" * 43})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # A failed attempt does not spend the code (issue 16): the right verifier still works.
    r = await token_request(browser, setup, {**data, "code_verifier": verifier})
    assert r.status_code == 200, r.text

    code, verifier = await code_for(setup, browser, apex, setup["spa"], scope="openid profile")
    r = await token_request(browser, setup, {**data, "code": code})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"  # verifier missing
    code, verifier = await code_for(setup, browser, apex, setup["spa"])
    r = await token_request(
        browser, setup, {**data, "code": code, "code_verifier": verifier, "client_secret": "x"}
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"
    code, verifier = await code_for(setup, browser, apex, setup["spa"])
    r = await token_request(browser, setup, {**data, "code": code, "code_verifier": verifier})
    assert r.status_code == 200 and "refresh_token" not in r.json()  # no offline_access asked


async def test_code_reuse_fails_and_revokes_what_the_first_use_issued(setup, browser, apex):
    code, verifier = await code_for(
        setup, browser, apex, setup["rp"], scope="openid offline_access"
    )
    auth = rp_auth(setup)
    data = code_grant(code, verifier)
    first = await token_request(browser, setup, data, auth)
    assert first.status_code == 200
    second = await token_request(browser, setup, data, auth)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    r = await browser.get(f"{setup['issuer']}/oidc/userinfo",
                          headers={"authorization": f"Bearer {first.json()['access_token']}"})  # fmt: skip
    assert r.status_code == 401
    r = await token_request(
        browser,
        setup,
        {"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
        auth,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_client_authentication(setup, browser, apex):
    code, verifier = await code_for(setup, browser, apex, setup["rp"])
    data = code_grant(code, verifier)
    r = await token_request(browser, setup, data, (setup["rp"].client_id, "wrong"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic")
    r = await token_request(browser, setup, {**data, "client_id": setup["rp"].client_id})
    assert r.status_code == 401 or r.status_code == 400
    assert r.json()["error"] == "invalid_client"
    # client_secret_post works as well as basic.
    r = await token_request(
        browser,
        setup,
        {**data, "client_id": setup["rp"].client_id, "client_secret": setup["rp_secret"]},
    )
    assert r.status_code == 200, r.text
    r = await browser.post(
        f"{setup['issuer']}/oidc/token", json={"grant_type": "authorization_code"}
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await token_request(
        browser, setup, {"grant_type": "password"}, (setup["rp"].client_id, setup["rp_secret"])
    )
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


async def test_redirect_uri_must_match_at_the_token_endpoint(setup, browser, apex):
    code, verifier = await code_for(setup, browser, apex, setup["rp"])
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": f"{RP}/other",
        "code_verifier": verifier,
    }
    r = await token_request(browser, setup, data, (setup["rp"].client_id, setup["rp_secret"]))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_expired_code(setup, browser, apex, portal):
    code, verifier = await code_for(setup, browser, apex, setup["rp"])
    redis = portal.state["redis"]
    for key in await redis.keys("code:*"):
        await redis.delete(key)  # what Redis does when the 60 seconds are up
    data = code_grant(code, verifier)
    r = await token_request(browser, setup, data, (setup["rp"].client_id, setup["rp_secret"]))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_codes_and_tokens_do_not_cross_pools(setup, browser, apex, portal, db, box):
    async with db.acquire() as conn, conn.transaction():
        beta_client, beta_secret = await clients.create(
            conn, box, pool_id=setup["beta"].pool.id, name="Beta RP", redirect_uris=[REDIRECT]
        )
    code, verifier = await code_for(
        setup, browser, apex, setup["rp"], scope="openid offline_access"
    )
    beta = f"http://beta.localhost:{portal.port}"
    data = code_grant(code, verifier)
    r = await browser.post(
        f"{beta}/oidc/token", data=data, auth=(beta_client.client_id, beta_secret)
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await browser.post(
        f"{beta}/oidc/token", data=data, auth=(setup["rp"].client_id, setup["rp_secret"])
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # The code still works at its own pool, and its access token only there.
    r = await token_request(browser, setup, data, (setup["rp"].client_id, setup["rp_secret"]))
    assert r.status_code == 200
    bearer = {"authorization": f"Bearer {r.json()['access_token']}"}
    assert (
        await browser.get(f"{setup['issuer']}/oidc/userinfo", headers=bearer)
    ).status_code == 200
    r = await browser.get(f"{beta}/oidc/userinfo", headers=bearer)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"


async def test_refresh_token_reuse_revokes_the_family(setup, browser, apex):
    code, verifier = await code_for(
        setup, browser, apex, setup["rp"], scope="openid offline_access"
    )
    auth = rp_auth(setup)
    data = code_grant(code, verifier)
    first = (await token_request(browser, setup, data, auth)).json()
    second = (
        await token_request(
            browser,
            setup,
            {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
            auth,
        )
    ).json()
    assert second["refresh_token"]
    replay = await token_request(
        browser,
        setup,
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth,
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # The thief's replay ended the session for the legitimate holder too.
    r = await token_request(
        browser,
        setup,
        {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
        auth,
    )
    assert r.status_code == 400
    r = await browser.get(
        f"{setup['issuer']}/oidc/userinfo",
        headers={"authorization": f"Bearer {second['access_token']}"},
    )
    assert r.status_code == 401


async def test_concurrent_refreshes_have_one_winner(setup, browser, apex):
    code, verifier = await code_for(
        setup, browser, apex, setup["rp"], scope="openid offline_access"
    )
    auth = rp_auth(setup)
    data = code_grant(code, verifier)
    first = (await token_request(browser, setup, data, auth)).json()
    body = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    results = await asyncio.gather(*(token_request(browser, setup, body, auth) for _ in range(10)))
    assert sorted(r.status_code for r in results).count(200) == 1


async def test_response_modes(setup, browser, apex):
    params, _ = auth_params(setup["rp"], response_mode="form_post")
    url = f"{setup['issuer']}/oidc/auth?" + str(httpx.QueryParams(params))
    r = await scan_login(browser, apex, url)
    assert r.status_code == 200
    assert f'action="{REDIRECT}"' in r.text and 'name="code"' in r.text and 'value="xyz"' in r.text
    await end_sso(browser, setup["issuer"])  # no SSO for the next one

    params, _ = auth_params(setup["rp"], response_mode="web_message")
    url = f"{setup['issuer']}/oidc/auth?" + str(httpx.QueryParams(params))
    r = await scan_login(browser, apex, url)
    assert r.status_code == 200
    assert f'data-target-origin="{RP}"' in r.text and "code" in r.text
    assert r.headers["referrer-policy"] == "no-referrer"


async def test_pool_root_goes_to_the_callback_url_with_a_code(portal, db, box, browser, apex):
    async with db.acquire() as conn:
        created = await pools.create(
            conn, box, slug="shop", name="Shop", callback_url="https://shop.example.com/after-login"
        )
    base = f"http://shop.localhost:{portal.port}"
    r = await scan_login(browser, apex, f"{base}/")
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("https://shop.example.com/after-login?code=")
    code = parse_qs(urlsplit(location).query)["code"][0]
    r = await browser.post(f"{base}/oidc/token", data={"grant_type": "authorization_code", "code": code,
                           "redirect_uri": "https://shop.example.com/after-login"},
                           auth=(created.default_client.client_id, created.default_client_secret))  # fmt: skip
    assert r.status_code == 200 and r.json()["id_token"]


async def test_es256_pools_and_key_rotation(setup, browser, apex, db, box, portal):
    pool_id = setup["acme"].pool.id
    code, verifier = await code_for(setup, browser, apex, setup["rp"])
    auth = rp_auth(setup)
    data = code_grant(code, verifier)
    old = (await token_request(browser, setup, data, auth)).json()
    await db.execute("UPDATE pools SET id_token_alg = 'ES256' WHERE id = $1", pool_id)
    async with db.acquire() as conn:
        await keys.rotate(conn, box, pool_id)
    await pools.announce_change(portal.state["hub"], "acme")
    await asyncio.sleep(0.2)
    # A new scan (prompt=login), not a logout: logging out now ends the first
    # login's tokens too (issue 18), and this test is about the old key's tokens.
    code, verifier = await code_for(setup, browser, apex, setup["rp"])
    new = (
        await token_request(browser, setup, {**data, "code": code, "code_verifier": verifier}, auth)
    ).json()
    jwks = (await browser.get(f"{setup['issuer']}/oidc/jwks")).json()
    assert sorted(k["alg"] for k in jwks["keys"]) == [
        "ES256",
        "RS256",
    ]  # the old key is still published
    for tokens in (old, new):
        validate_id_token(
            tokens["id_token"],
            jwks,
            issuer=setup["issuer"],
            client_id=setup["rp"].client_id,
            nonce=None,
        )
        r = await browser.get(
            f"{setup['issuer']}/oidc/userinfo",
            headers={"authorization": f"Bearer {tokens['access_token']}"},
        )
        assert r.status_code == 200
    assert jwt.decode(new["id_token"], KeySet.import_key_set(jwks)).header["alg"] == "ES256"


async def test_introspection(setup, browser, apex, db, box):
    code, verifier = await code_for(
        setup, browser, apex, setup["rp"], scope="openid offline_access"
    )
    auth = rp_auth(setup)
    data = code_grant(code, verifier)
    tokens = (await token_request(browser, setup, data, auth)).json()
    url = f"{setup['issuer']}/oidc/introspect"
    r = (await browser.post(url, data={"token": tokens["access_token"]}, auth=auth)).json()
    assert (
        r["active"] is True
        and r["client_id"] == setup["rp"].client_id
        and r["iss"] == setup["issuer"]
    )
    r = (await browser.post(url, data={"token": tokens["refresh_token"]}, auth=auth)).json()
    assert r["active"] is True and r["token_type"] == "refresh_token"
    assert (await browser.post(url, data={"token": "garbage"}, auth=auth)).json() == {
        "active": False
    }
    await db.execute("UPDATE users SET blocked = true")
    assert (await browser.post(url, data={"token": tokens["access_token"]}, auth=auth)).json() == {
        "active": False
    }
    r = await browser.post(
        url, data={"token": tokens["access_token"], "client_id": setup["spa"].client_id}
    )
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


async def test_logout_never_redirects_to_an_unregistered_address(setup, browser, apex):
    code, verifier = await code_for(setup, browser, apex, setup["rp"])
    auth = rp_auth(setup)
    data = code_grant(code, verifier)
    tokens = (await token_request(browser, setup, data, auth)).json()
    r = await browser.get(f"{setup['issuer']}/oidc/logout", params={
        "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://evil.example.com/"})  # fmt: skip
    assert r.status_code == 400 and "location" not in r.headers
    r = await browser.get(f"{setup['issuer']}/oidc/logout", params={
        "id_token_hint": "not.a.token", "post_logout_redirect_uri": LOGOUT_TO})  # fmt: skip
    assert r.status_code == 400 and "location" not in r.headers
    # Without a hint naming the client, the address cannot be trusted either.
    r = await browser.get(
        f"{setup['issuer']}/oidc/logout", params={"post_logout_redirect_uri": LOGOUT_TO}
    )
    assert r.status_code == 400 and "location" not in r.headers


async def test_a_ticket_confirmed_in_one_browser_cannot_be_completed_in_another(
    setup, browser, apex, portal
):
    """Login CSRF: an attacker confirms their own ticket with their own phone and
    has a victim's browser post it. The hosted page is bound to the browser
    that opened it, so the victim is not logged in as the attacker."""
    params, _ = auth_params(setup["rp"])
    page = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
    ticket, secret = page_ticket(page.text)
    assert (await Phone(apex, "mallory").scan_and_confirm(ticket)).status_code == 200
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as victim:
        r = await victim.post(
            f"{setup['issuer']}/oidc/auth/complete", data={"ticket": ticket, "secret": secret}
        )
        assert r.status_code == 403 and "location" not in r.headers
        assert "portal_session" not in victim.cookies
        # Nor does the victim's browser get a login session from it.
        r = await victim.get(f"{setup['issuer']}/oidc/auth", params=auth_params(setup["rp"])[0])
        assert r.status_code == 200 and "data-ticket" in r.text
    # The refused attempt did not spend the ticket: the browser that opened it finishes.
    r = await browser.post(
        f"{setup['issuer']}/oidc/auth/complete", data={"ticket": ticket, "secret": secret}
    )
    assert r.status_code == 303 and "code=" in r.headers["location"]


async def test_logout_without_a_hint_for_this_user_asks_first(setup, browser, apex):
    """A link or image on another site cannot end someone's session: without an
    id_token_hint naming this session's user, logout asks on a page whose form
    carries a token tied to the session."""
    await code_for(setup, browser, apex, setup["rp"])  # this browser is logged in
    issuer = setup["issuer"]
    params, _ = auth_params(setup["rp"])
    r = await browser.get(f"{issuer}/oidc/logout", params={"client_id": setup["rp"].client_id,
                          "post_logout_redirect_uri": LOGOUT_TO, "state": "s2"})  # fmt: skip
    assert r.status_code == 200 and "logout-confirm" in r.text
    assert (await browser.get(f"{issuer}/oidc/auth", params=params)).status_code == 303  # still in
    # A forged POST (another site's form) has no valid token.
    for forged in ({}, {"confirm": "0" * 32}):
        r = await browser.post(f"{issuer}/oidc/logout", data=forged)
        assert r.status_code == 200 and "logout-confirm" in r.text
    assert (await browser.get(f"{issuer}/oidc/auth", params=params)).status_code == 303
    # Another user's ID token is no evidence either.
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as elsewhere:
        params_bob, verifier_bob = auth_params(setup["rp"])
        url = f"{issuer}/oidc/auth?" + str(httpx.QueryParams(params_bob))
        done = await scan_login(elsewhere, apex, url, user="bob")
        bob_code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    bob = (await token_request(browser, setup, code_grant(bob_code, verifier_bob),
                               rp_auth(setup))).json()  # fmt: skip
    r = await browser.get(f"{issuer}/oidc/logout", params={"id_token_hint": bob["id_token"]})
    assert r.status_code == 200 and "logout-confirm" in r.text
    # The user presses the button: logged out, and sent where the client asked.
    r = await browser.get(f"{issuer}/oidc/logout", params={"client_id": setup["rp"].client_id,
                          "post_logout_redirect_uri": LOGOUT_TO, "state": "s2"})  # fmt: skip
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', r.text))
    assert fields["post_logout_redirect_uri"] == LOGOUT_TO and fields["state"] == "s2"
    r = await browser.post(f"{issuer}/oidc/logout", data=fields)
    assert r.status_code == 303 and r.headers["location"] == f"{LOGOUT_TO}?state=s2"
    r = await browser.get(f"{issuer}/oidc/auth", params=params)
    assert r.status_code == 200 and "data-ticket" in r.text  # a new scan is needed


async def test_session_and_prompt(setup, browser, apex):
    code, _ = await code_for(setup, browser, apex, setup["rp"])
    assert code
    params, _ = auth_params(setup["rp"])
    r = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
    assert r.status_code == 303 and "code=" in r.headers["location"]  # single sign-on
    for extra in ({"prompt": "login"}, {"max_age": "0"}):
        params, _ = auth_params(setup["rp"], **extra)
        r = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
        assert r.status_code == 200 and "data-ticket" in r.text, extra
    params, _ = auth_params(setup["rp"], prompt="none")
    r = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
    assert r.status_code == 303 and "code=" in r.headers["location"]


async def test_discovery(setup, browser):
    meta = (await browser.get(f"{setup['issuer']}/.well-known/openid-configuration")).json()
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                 "revocation_endpoint", "introspection_endpoint", "end_session_endpoint"):  # fmt: skip
        assert meta[name].startswith(setup["issuer"] + "/oidc/")
    assert meta["response_modes_supported"] == ["query", "fragment", "form_post", "web_message"]


# --- Issue 16: the outside review ---------------------------------------------------


async def test_the_pool_page_hands_back_the_state_its_site_started_with(
    portal, db, box, apex, browser
):
    """Finding 5, login CSRF on a pool's own page: an attacker scans with their
    own phone and sends the resulting callback link to a victim. The tenant's
    site starts every login at ``/?state=<kept in its session>``; the callback
    gets that state back, so its backend can refuse a link it did not start."""
    callback = "https://shop.example.com/after-login"
    async with db.acquire() as conn:
        shop = await pools.create(conn, box, slug="shop", name="Shop", callback_url=callback)
    base = f"http://shop.localhost:{portal.port}"
    sessions_kept = {}  # what the tenant's site keeps per browser: its state

    async def start_and_scan(who: str, user: str) -> str:
        sessions_kept[who] = secrets.token_urlsafe(16)
        async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as b:
            r = await scan_login(b, apex, f"{base}/?state={sessions_kept[who]}&nonce=n-{who}", user)
        assert r.status_code == 303, r.text
        assert r.headers["location"].startswith(callback + "?")
        return r.headers["location"]

    def backend_accepts(who: str, location: str) -> bool:
        """The README's check at the callback: the state this browser's session kept."""
        query = parse_qs(urlsplit(location).query)
        return query.get("state") == [sessions_kept[who]] and query.get("iss") == [base]

    mallory_link = await start_and_scan("mallory", "mallory")
    assert parse_qs(urlsplit(mallory_link).query)["state"] == [sessions_kept["mallory"]]
    victim_link = await start_and_scan("victim", "victim")
    assert backend_accepts("victim", victim_link)
    # The attacker's link, opened by the victim, carries the attacker's state: refused.
    assert not backend_accepts("victim", mallory_link)
    # The code still works for the backend that checks; the nonce is in the ID token.
    code = parse_qs(urlsplit(victim_link).query)["code"][0]
    r = await browser.post(f"{base}/oidc/token", data={"grant_type": "authorization_code",
                        "code": code, "redirect_uri": callback},
                        auth=(shop.default_client.client_id, shop.default_client_secret))  # fmt: skip
    assert r.status_code == 200, r.text
    assert jwt.decode(r.json()["id_token"], KeySet.import_key_set(
        (await browser.get(f"{base}/oidc/jwks")).json())).claims["nonce"] == "n-victim"  # fmt: skip
    # An over-long state is refused on a page, never carried.
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as b:
        r = await b.get(f"{base}/", params={"state": "s" * 3000})
    assert r.status_code == 400 and "location" not in r.headers


async def test_a_failed_redemption_does_not_spend_the_code(setup, browser, apex, portal, db, box):
    """Finding 8: another client of the pool (even a public one, with no secret),
    a wrong redirect_uri or a wrong verifier is refused without spending the
    code; the rightful client then redeems it. Of many right redemptions at
    once, exactly one wins."""
    async with db.acquire() as conn, conn.transaction():
        other, other_secret = await clients.create(
            conn, box, pool_id=setup["acme"].pool.id, name="Other", redirect_uris=[REDIRECT]
        )
    code, verifier = await code_for(
        setup, browser, apex, setup["rp"], scope="openid offline_access"
    )
    data = code_grant(code, verifier)
    attempts = [
        token_request(browser, setup, {**data, "client_id": setup["spa"].client_id}),
        token_request(browser, setup, data, (other.client_id, other_secret)),
        token_request(browser, setup, {**data, "redirect_uri": f"{RP}/other"}, rp_auth(setup)),
        token_request(browser, setup, {**data, "code_verifier": "w" * 43}, rp_auth(setup)),
        token_request(
            browser, setup, {k: v for k, v in data.items() if k != "code_verifier"}, rp_auth(setup)
        ),
    ]
    for r in await asyncio.gather(*attempts):
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    # Unauthenticated: refused before the code is looked at.
    r = await token_request(browser, setup, data, (setup["rp"].client_id, "wrong"))
    assert r.status_code == 401
    # The rightful client, ten times at once, among more wrong-client attempts: one winner.
    right = [token_request(browser, setup, data, rp_auth(setup)) for _ in range(10)]
    wrong = [
        token_request(browser, setup, data, (other.client_id, other_secret)) for _ in range(10)
    ]
    results = await asyncio.gather(*right, *wrong)
    assert [r.status_code for r in results[:10]].count(200) == 1, [r.text for r in results]
    assert all(r.status_code == 400 for r in results[10:])
    winner = next(r for r in results[:10] if r.status_code == 200).json()
    assert winner["refresh_token"]
    # The other right attempts were replays: they revoked what the winner got.
    r = await browser.get(f"{setup['issuer']}/oidc/userinfo",
                          headers={"authorization": f"Bearer {winner['access_token']}"})  # fmt: skip
    assert r.status_code == 401


async def test_introspection_answers_only_about_the_callers_own_tokens(
    setup, browser, apex, db, box
):
    """Finding 9, RFC 7662 §4: a confidential client learns nothing about another
    client's tokens, access or refresh; {"active": false} as for a token that
    does not exist."""
    async with db.acquire() as conn, conn.transaction():
        other, other_secret = await clients.create(
            conn, box, pool_id=setup["acme"].pool.id, name="Other", redirect_uris=[REDIRECT]
        )
    code, verifier = await code_for(
        setup, browser, apex, setup["rp"], scope="openid offline_access"
    )
    tokens = (
        await token_request(browser, setup, code_grant(code, verifier), rp_auth(setup))
    ).json()
    url = f"{setup['issuer']}/oidc/introspect"
    for token in (tokens["access_token"], tokens["refresh_token"]):
        r = await browser.post(url, data={"token": token}, auth=(other.client_id, other_secret))
        assert r.status_code == 200 and r.json() == {"active": False}, r.text
        r = await browser.post(url, data={"token": token}, auth=rp_auth(setup))
        assert r.json()["active"] is True and r.json()["client_id"] == setup["rp"].client_id


async def test_tokens_follow_the_clients_registration_in_the_code_flow(
    setup, browser, apex, db, box
):
    """Finding 6, the authorization code path: scopes are cut to what the client is
    registered for; a public client gets no refresh token even when it asks
    for offline_access (its refresh tokens would need no secret)."""
    code, verifier = await code_for(
        setup, browser, apex, setup["spa"], scope="openid profile phone offline_access"
    )
    r = await token_request(browser, setup, {**code_grant(code, verifier),
                            "client_id": setup["spa"].client_id})  # fmt: skip
    assert r.status_code == 200, r.text
    assert "refresh_token" not in r.json() and r.json()["scope"] == "openid profile phone"
    # A confidential client registered for openid and profile only.
    async with db.acquire() as conn, conn.transaction():
        narrow, narrow_secret = await clients.create(
            conn, box, pool_id=setup["acme"].pool.id, name="Narrow", redirect_uris=[REDIRECT],
            scopes=["openid", "profile"],
        )  # fmt: skip
    code, verifier = await code_for(
        setup, browser, apex, narrow, scope="openid phone offline_access"
    )
    r = await token_request(
        browser, setup, code_grant(code, verifier), (narrow.client_id, narrow_secret)
    )
    assert r.status_code == 200 and r.json()["scope"] == "openid", r.text
    assert "refresh_token" not in r.json()
    info = await browser.get(f"{setup['issuer']}/oidc/userinfo",
                             headers={"authorization": f"Bearer {r.json()['access_token']}"})  # fmt: skip
    assert set(info.json()) == {"sub"}


async def test_a_hosted_page_ticket_cannot_be_exchanged_around_its_request(setup, browser, apex):
    """Issue 16, the class of finding 6: a ticket of the hosted page ends only as a
    code bound to its authorization request (redirect URI, PKCE, scope, state);
    the QR API's exchange would hand out tokens around all of that. Refused,
    without spending the ticket."""
    params, _ = auth_params(setup["rp"])
    page = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
    ticket, secret = page_ticket(page.text)
    assert (await Phone(apex, "alice").scan_and_confirm(ticket)).status_code == 200
    url = f"{setup['issuer']}/api/qrcode/{ticket}/exchange"
    r = await browser.post(url, json={"secret": "x" * 43})
    assert r.status_code == 403 and r.json()["error"] == "invalid_secret"
    r = await browser.post(url, json={"secret": secret})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert "id_token" not in r.text
    r = await browser.post(
        f"{setup['issuer']}/oidc/auth/complete", data={"ticket": ticket, "secret": secret}
    )
    assert r.status_code == 303 and "code=" in r.headers["location"]
