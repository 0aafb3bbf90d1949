"""OpenID Connect for every relying party (issue 18, items 1, 5 and 6): CORS on the
endpoints a browser-only client calls, claims without nulls, and the smaller
protocol fixes, over real HTTP."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from portal.tenants import clients, pools
from tests.support import LoopbackTransport
from tests.test_oidc import (
    REDIRECT,
    RP,
    auth_params,
    code_for,
    code_grant,
    rp_auth,
    scan_login,
    token_request,
)

EVIL = "https://evil.example.net"
PUBLIC = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server",
          "/oidc/jwks")  # fmt: skip
USER_CLAIMS = {"name", "nickname", "preferred_username", "picture", "updated_at", "phone_number",
               "phone_number_verified"}  # fmt: skip


async def tokens_for(setup, browser, apex, scope="openid", **confirm) -> dict:
    params, verifier = auth_params(setup["rp"], scope=scope, prompt="login")
    url = f"{setup['issuer']}/oidc/auth?" + str(httpx.QueryParams(params))
    done = await scan_login(browser, apex, url, **confirm)
    assert done.status_code == 303, done.text
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
    r = await token_request(browser, setup, code_grant(code, verifier), rp_auth(setup))
    assert r.status_code == 200, r.text
    return r.json()


def id_claims(setup, id_token: str, jwks: dict) -> dict:
    return jwt.decode(id_token, KeySet.import_key_set(jwks)).claims


@pytest.fixture
async def setup(portal, db, box):
    """The pool ``acme`` with a confidential client at ``RP`` (its one redirect URI)."""
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
        rp, rp_secret = await clients.create(
            conn, box, pool_id=acme.pool.id, name="RP", redirect_uris=[REDIRECT],
            web_origins=[RP],
        )  # fmt: skip
    return {"issuer": f"http://acme.localhost:{portal.port}", "rp": rp, "rp_secret": rp_secret}


@pytest.fixture
async def browser(portal):
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as client:
        yield client


# --- 1. CORS -----------------------------------------------------------------------


async def test_public_documents_answer_every_origin_with_a_star(setup, browser):
    iss = setup["issuer"]
    for path in PUBLIC:
        for headers in ({"origin": EVIL}, {"origin": RP}, {}):
            r = await browser.get(iss + path, headers=headers)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["access-control-allow-origin"] == "*", path
            assert "access-control-allow-credentials" not in r.headers
        pre = await browser.request(
            "OPTIONS", iss + path,
            headers={"origin": EVIL, "access-control-request-method": "GET"},
        )  # fmt: skip
        assert pre.status_code == 204, (path, pre.text)
        assert pre.headers["access-control-allow-origin"] == "*"
        assert "GET" in pre.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in pre.headers
        plain = await browser.request("OPTIONS", iss + path)  # not a preflight: never 405
        assert plain.status_code == 204 and "GET" in plain.headers["allow"]


async def test_userinfo_and_revocation_answer_the_clients_own_origin(setup, browser, apex):
    iss = setup["issuer"]
    issued = await tokens_for(setup, browser, apex, scope="openid profile")
    bearer = {"authorization": f"Bearer {issued['access_token']}"}
    for path, method in (("/oidc/userinfo", "GET"), ("/oidc/revoke", "POST")):
        pre = await browser.request(
            "OPTIONS", iss + path,
            headers={"origin": RP, "access-control-request-method": method,
                     "access-control-request-headers": "authorization, content-type"},
        )  # fmt: skip
        assert pre.status_code == 204, (path, pre.text)
        assert pre.headers["access-control-allow-origin"] == RP
        assert method in pre.headers["access-control-allow-methods"]
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in pre.headers
        evil = await browser.request(
            "OPTIONS", iss + path, headers={"origin": EVIL, "access-control-request-method": method}
        )
        assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
        assert (await browser.request("OPTIONS", iss + path)).status_code == 204

    r = await browser.get(f"{iss}/oidc/userinfo", headers={**bearer, "origin": RP})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == RP
    assert "origin" in r.headers["vary"].lower()
    assert "access-control-allow-credentials" not in r.headers
    r = await browser.get(f"{iss}/oidc/userinfo", headers={**bearer, "origin": EVIL})
    assert r.status_code == 403 and r.json()["error"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in r.headers
    # A refused token: the client's website can read why (WWW-Authenticate exposed).
    r = await browser.get(
        f"{iss}/oidc/userinfo", headers={"authorization": "Bearer nope", "origin": RP}
    )
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == RP
    assert "www-authenticate" in r.headers["access-control-expose-headers"].lower()

    form = {"token": issued["access_token"], "token_type_hint": "access_token"}
    r = await browser.post(f"{iss}/oidc/revoke", data=form, auth=rp_auth(setup),
                           headers={"origin": EVIL})  # fmt: skip
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = await browser.get(f"{iss}/oidc/userinfo", headers=bearer)
    assert r.status_code == 200  # the refused revocation did nothing
    r = await browser.post(f"{iss}/oidc/revoke", data=form, auth=rp_auth(setup),
                           headers={"origin": RP})  # fmt: skip
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == RP
    r = await browser.get(f"{iss}/oidc/userinfo", headers=bearer)
    assert r.status_code == 401


# --- 5. Claims ----------------------------------------------------------------------


async def test_claims_without_a_value_are_omitted(setup, browser, apex):
    iss = setup["issuer"]
    jwks = (await browser.get(f"{iss}/oidc/jwks")).json()
    issued = await tokens_for(setup, browser, apex, scope="openid profile phone", user="bob")
    claims = id_claims(setup, issued["id_token"], jwks)
    info = (
        await browser.get(
            f"{iss}/oidc/userinfo", headers={"authorization": f"Bearer {issued['access_token']}"}
        )
    ).json()
    for where in (claims, info):
        assert None not in where.values(), where
        assert not {"name", "nickname", "preferred_username", "picture", "phone_number"} & set(
            where
        ), where
        assert isinstance(where["updated_at"], int) and where["updated_at"] > 1_700_000_000


async def test_name_preferred_username_phone_and_updated_at(setup, browser, apex):
    iss = setup["issuer"]
    jwks = (await browser.get(f"{iss}/oidc/jwks")).json()
    issued = await tokens_for(
        setup, browser, apex, scope="openid profile phone",
        phone="13800138000", nickname="Alice", avatar_url="https://cdn.example.com/a.png",
    )  # fmt: skip
    claims = id_claims(setup, issued["id_token"], jwks)
    info = (
        await browser.get(
            f"{iss}/oidc/userinfo", headers={"authorization": f"Bearer {issued['access_token']}"}
        )
    ).json()
    for where in (claims, info):
        assert where["name"] == where["nickname"] == where["preferred_username"] == "Alice"
        assert where["picture"] == "https://cdn.example.com/a.png"
        assert where["phone_number"] == "+8613800138000"
        assert where["phone_number_verified"] is True
        assert abs(where["updated_at"] - claims["iat"]) < 120
    # Only the scopes granted: openid alone carries no user claims.
    issued = await tokens_for(setup, browser, apex, scope="openid")
    claims = id_claims(setup, issued["id_token"], jwks)
    assert not USER_CLAIMS & set(claims)
    meta = (await browser.get(f"{iss}/.well-known/openid-configuration")).json()
    assert set(meta["claims_supported"]) == USER_CLAIMS | {
        "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "at_hash", "sid",
    }  # fmt: skip


# --- 6. Smaller ---------------------------------------------------------------------


async def test_request_and_request_uri_have_their_own_error_codes(setup, browser):
    # Request objects are supported now (issue 18, item 3): one that is not a
    # signed JWT of the client has its own code; a request_uri that is not a
    # pushed request's is still not supported.
    for name, error in (("request_uri", "request_uri_not_supported"),
                        ("request", "invalid_request_object")):  # fmt: skip
        params, _ = auth_params(setup["rp"], **{name: "urn:example:x"})
        r = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
        assert r.status_code == 303, r.text
        query = parse_qs(urlsplit(r.headers["location"]).query)
        assert query["error"] == [error] and query["state"] == ["xyz"]


async def test_rfc8414_metadata_is_the_same_document(setup, browser):
    iss = setup["issuer"]
    oidc = await browser.get(f"{iss}/.well-known/openid-configuration")
    oauth = await browser.get(f"{iss}/.well-known/oauth-authorization-server")
    assert oauth.status_code == 200 and oauth.headers["content-type"] == "application/json"
    assert oauth.json() == oidc.json() and oauth.json()["issuer"] == iss


async def test_userinfo_without_a_token_has_no_error_code(setup, browser):
    iss = setup["issuer"]
    for r in (
        await browser.get(f"{iss}/oidc/userinfo"),
        await browser.post(f"{iss}/oidc/userinfo", data={}),
    ):
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == f'Bearer realm="{iss}"'
        assert r.json() == {} and "error" not in r.headers["www-authenticate"]
    r = await browser.get(f"{iss}/oidc/userinfo", headers={"authorization": "Bearer x.y.z"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer realm="{iss}", error="invalid_token"'), challenge


async def test_a_login_older_than_max_age_is_redone(setup, browser, apex):
    iss = setup["issuer"]
    await code_for(setup, browser, apex, setup["rp"])
    await asyncio.sleep(1.1)  # auth_time is in whole seconds
    params, _ = auth_params(setup["rp"], max_age="1", prompt="none")
    r = await browser.get(f"{iss}/oidc/auth", params=params)
    assert r.status_code == 303
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert query["error"] == ["login_required"]
    assert "max_age" in query["error_description"][0]
    params, _ = auth_params(setup["rp"], max_age="1")
    r = await browser.get(f"{iss}/oidc/auth", params=params)
    assert r.status_code == 200 and "data-ticket" in r.text  # the login page again
    params, _ = auth_params(setup["rp"], max_age="3600", prompt="none")
    r = await browser.get(f"{iss}/oidc/auth", params=params)
    assert r.status_code == 303 and "code=" in r.headers["location"]
    browser.cookies.clear()  # another browser: no session at all
    params, _ = auth_params(setup["rp"], prompt="none")
    r = await browser.get(f"{iss}/oidc/auth", params=params)
    query = parse_qs(urlsplit(r.headers["location"]).query)
    assert query["error_description"] == ["The user is not logged in."]


async def test_a_missing_redirect_uri_is_a_clear_error_page(setup, browser):
    params, _ = auth_params(setup["rp"])  # the client has exactly one registered URI
    del params["redirect_uri"]
    for lang, text in (("en", "redirect_uri"), ("zh-CN", "redirect_uri")):
        r = await browser.get(
            f"{setup['issuer']}/oidc/auth", params=params, headers={"accept-language": lang}
        )
        assert r.status_code == 400 and "location" not in r.headers
        assert text in r.text
    assert (
        "does not say where to return"
        in (
            await browser.get(
                f"{setup['issuer']}/oidc/auth", params=params, headers={"accept-language": "en"}
            )
        ).text
    )


async def test_unsupported_grant_type_describes_itself(setup, browser):
    r = await token_request(browser, setup, {"grant_type": "password"}, rp_auth(setup))
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "unsupported_grant_type"
    assert "unsupported_grant_type" not in body["error_description"]
    assert "password" in body["error_description"]


async def test_a_revoked_refresh_token_is_described_as_revoked(setup, browser, apex):
    issued = await tokens_for(setup, browser, apex, scope="openid offline_access")
    r = await browser.post(
        f"{setup['issuer']}/oidc/revoke",
        data={"token": issued["refresh_token"]},
        auth=rp_auth(setup),
    )
    assert r.status_code == 200
    r = await token_request(
        browser, setup,
        {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}, rp_auth(setup),
    )  # fmt: skip
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "revoked" in r.json()["error_description"]
    assert "already used" not in r.json()["error_description"]
