"""The OpenID Foundation's OP conformance checks, as our own tests (issue 18, item 6).

The Foundation's hosted suite cannot be reached from here, and its old Python
test tool (oidctest 0.8.2) could not be run against a pool (docs/oidc-conformance.md
says why). These tests take the checks of that tool's OP test flows
(rohe/oidctest, test_tool/cp/test_op/flows; each test names the flow it follows)
for the profiles the issue asks for, with static client registration (the pool
has no dynamic registration): Config, Basic (``code``), Implicit (``id_token``;
``id_token token`` is not offered), Hybrid (``code id_token``; ``code token`` and
``code id_token token`` are not offered), Form Post, RP-Initiated Logout,
Back-Channel Logout and Front-Channel Logout. They run over real HTTP against a
running portal, logging in with the fake WeChat.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import KeySet

from portal import worker
from portal.oidc.logout import EVENT
from portal.tenants import clients, pools
from tests.support import LoopbackTransport, free_socket, serve_asgi
from tests.test_oidc import scan_login

RP = "https://rp.example.com"
CB = f"{RP}/cb"
BYE = f"{RP}/bye"


@pytest.fixture
async def op(portal, db, box, settings_factory):
    """The pool ``op`` with a confidential client registered statically for every
    response type, a logout URI and front-channel logout."""
    await db.execute("TRUNCATE procrastinate_jobs, procrastinate_workers RESTART IDENTITY CASCADE")
    async with db.acquire() as conn:
        made = await pools.create(conn, box, slug="op", name="OP", allow_http=True)
        rp, secret = await clients.create(
            conn, box, pool_id=made.pool.id, name="Conformance RP", redirect_uris=[CB],
            post_logout_redirect_uris=[BYE], web_origins=[RP],
            scopes=["openid", "profile", "phone", "offline_access"],
            registration={"response_types": ["code", "id_token", "code id_token"],
                          "frontchannel_logout_uri": f"{RP}/fc"},
        )  # fmt: skip
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as browser:
        yield {"iss": f"http://op.localhost:{portal.port}", "rp": rp, "secret": secret,
               "browser": browser, "portal": portal,
               "worker_settings": settings_factory(env="dev", base_url=portal.settings.base_url)}  # fmt: skip


def request(op, response_type="code", **extra) -> tuple[dict, str]:
    verifier = secrets.token_urlsafe(40)
    params = {"client_id": op["rp"].client_id, "redirect_uri": CB, "response_type": response_type,
              "scope": "openid", "state": secrets.token_urlsafe(8)}  # fmt: skip
    if "code" in (response_type or "code").split():
        params |= {"code_challenge": create_s256_code_challenge(verifier),
                   "code_challenge_method": "S256"}  # fmt: skip
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}, verifier


def answer(r: httpx.Response, where: str = "query") -> dict[str, str]:
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert location.startswith(CB), location
    part = urlsplit(location).query if where == "query" else urlsplit(location).fragment
    return {k: v[0] for k, v in parse_qs(part).items()}


async def login(op, apex, params, where="query", **profile) -> dict[str, str]:
    url = f"{op['iss']}/oidc/auth?" + str(httpx.QueryParams(params))
    return answer(await scan_login(op["browser"], apex, url, **profile), where)


async def keys(op) -> KeySet:
    return KeySet.import_key_set((await op["browser"].get(f"{op['iss']}/oidc/jwks")).json())


async def tokens(op, code, verifier, **auth) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CB,
            "code_verifier": verifier, **auth.pop("form", {})}  # fmt: skip
    return await op["browser"].post(f"{op['iss']}/oidc/token", data=form, **auth)


def basic(op) -> dict:
    return {"auth": (op["rp"].client_id, op["secret"])}


def half_hash(value: str) -> str:
    digest = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


async def check_id_token(op, token: str, *, nonce: str | None = None) -> dict:
    """OP-IDToken-C-Signature, OP-IDToken-RS256, OP-IDToken-kid: signed, with a kid
    found in the JWKS, iss/aud/exp/iat/sub right, and the nonce if one was sent."""
    decoded = jwt.decode(token, await keys(op))
    assert decoded.header["alg"] == "RS256" and decoded.header["kid"]
    claims = decoded.claims
    now = time.time()
    assert claims["iss"] == op["iss"] and claims["aud"] == op["rp"].client_id
    assert claims["exp"] > now and claims["iat"] <= now + 5 and claims["sub"]
    assert claims.get("nonce") == nonce
    return claims


# --- Config -----------------------------------------------------------------------


async def test_config_profile(op):
    """OP-Discovery-Config, -JWKs, -claims_supported, -jwks_uri, OP-RpInitLogout-Discovery,
    OP-BackChannel-Discovery, OP-FrontChannel-Discovery."""
    r = await op["browser"].get(f"{op['iss']}/.well-known/openid-configuration")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    meta = r.json()
    assert meta["issuer"] == op["iss"]
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                 "end_session_endpoint"):  # fmt: skip
        assert meta[name].startswith(op["iss"] + "/"), name
    assert {"code", "id_token", "code id_token"} == set(meta["response_types_supported"])
    assert meta["subject_types_supported"] == ["public"]
    assert "RS256" in meta["id_token_signing_alg_values_supported"]
    assert {"sub", "iss", "aud", "nonce", "name"} <= set(meta["claims_supported"])
    assert "openid" in meta["scopes_supported"]
    assert meta["backchannel_logout_supported"] and meta["backchannel_logout_session_supported"]
    assert meta["frontchannel_logout_supported"] and meta["frontchannel_logout_session_supported"]
    jwks = (await op["browser"].get(meta["jwks_uri"])).json()
    assert jwks["keys"]
    for key in jwks["keys"]:
        assert key["kid"] and key["use"] == "sig" and key["kty"] in ("RSA", "EC")
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


# --- Basic (code) -----------------------------------------------------------------


async def test_basic_code_flow(op, apex):
    """OP-Response-code, OP-nonce-code, OP-IDToken-*, OP-ClientAuth-Basic-Static,
    OP-UserInfo-Endpoint/-Header/-Body, OP-scope-profile, OP-scope-phone,
    OP-Req-NotUnderstood, OP-Req-ui_locales, OP-Token-refresh."""
    params, verifier = request(op, scope="openid profile phone offline_access", nonce="n0",
                               extra_unknown="x", ui_locales="en")  # fmt: skip
    got = await login(op, apex, params, nickname="Ada", phone="13800138000")
    assert got["state"] == params["state"] and got["iss"] == op["iss"]
    r = await tokens(op, got["code"], verifier, **basic(op))
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    claims = await check_id_token(op, body["id_token"], nonce="n0")
    assert claims["at_hash"] == half_hash(body["access_token"])
    bearer = {"authorization": f"Bearer {body['access_token']}"}
    infos = [
        await op["browser"].get(f"{op['iss']}/oidc/userinfo", headers=bearer),
        await op["browser"].post(f"{op['iss']}/oidc/userinfo", headers=bearer),
        await op["browser"].post(
            f"{op['iss']}/oidc/userinfo", data={"access_token": body["access_token"]}
        ),
    ]
    for info in infos:
        assert info.status_code == 200, info.text
        assert info.json()["sub"] == claims["sub"] and info.json()["name"] == "Ada"
        assert info.json()["phone_number"] == "+8613800138000"
    fresh = await op["browser"].post(f"{op['iss']}/oidc/token", **basic(op), data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"]})  # fmt: skip
    assert fresh.status_code == 200 and fresh.json()["access_token"] != body["access_token"]


async def test_basic_client_secret_post_and_no_nonce(op, apex):
    """OP-ClientAuth-SecretPost-Static, OP-nonce-NoReq-code."""
    params, verifier = request(op)
    got = await login(op, apex, params)
    r = await tokens(op, got["code"], verifier,
                     form={"client_id": op["rp"].client_id, "client_secret": op["secret"]})  # fmt: skip
    assert r.status_code == 200
    await check_id_token(op, r.json()["id_token"], nonce=None)


async def test_basic_code_reuse(op, apex):
    """OP-OAuth-2nd, OP-OAuth-2nd-Revokes."""
    params, verifier = request(op, scope="openid offline_access")
    got = await login(op, apex, params)
    first = await tokens(op, got["code"], verifier, **basic(op))
    assert first.status_code == 200
    second = await tokens(op, got["code"], verifier, **basic(op))
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    info = await op["browser"].get(f"{op['iss']}/oidc/userinfo",
                                   headers={"authorization": f"Bearer {first.json()['access_token']}"})  # fmt: skip
    assert info.status_code == 401


async def test_basic_prompt_max_age_and_errors(op, apex):
    """OP-prompt-none-NotLoggedIn, OP-prompt-none-LoggedIn, OP-prompt-login,
    OP-Req-max_age=1, OP-Req-max_age=10000, OP-Response-Missing, OP-redirect_uri-NotReg,
    OP-Req-id_token_hint."""
    browser = op["browser"]
    params, _ = request(op, prompt="none")
    got = answer(await browser.get(f"{op['iss']}/oidc/auth", params=params))
    assert got["error"] == "login_required" and got["state"] == params["state"]
    params, verifier = request(op, nonce="n1")
    got = await login(op, apex, params)
    id_token = (await tokens(op, got["code"], verifier, **basic(op))).json()["id_token"]
    auth_time = jwt.decode(id_token, await keys(op)).claims["auth_time"]
    params, _ = request(op, prompt="none", id_token_hint=id_token)
    assert "code" in answer(await browser.get(f"{op['iss']}/oidc/auth", params=params))
    params, _ = request(op, max_age="10000")
    assert "code" in answer(await browser.get(f"{op['iss']}/oidc/auth", params=params))
    await asyncio.sleep(1.1)
    for extra in ({"max_age": "1"}, {"prompt": "login"}):
        params, _ = request(op, **extra)
        page = await browser.get(f"{op['iss']}/oidc/auth", params=params)
        assert page.status_code == 200 and "data-ticket" in page.text, extra  # log in again
    params, verifier = request(op, max_age="1", nonce="n2")
    got = await login(op, apex, params)
    claims = jwt.decode((await tokens(op, got["code"], verifier, **basic(op))).json()["id_token"],
                        await keys(op)).claims  # fmt: skip
    assert claims["auth_time"] > auth_time
    params, _ = request(op, response_type=None)
    got = answer(await browser.get(f"{op['iss']}/oidc/auth", params=params))
    assert got["error"] == "unsupported_response_type"
    params, _ = request(op, redirect_uri="https://attacker.example/cb")
    r = await browser.get(f"{op['iss']}/oidc/auth", params=params)
    assert r.status_code == 400 and "location" not in r.headers


# --- Implicit (id_token) and Hybrid (code id_token) ----------------------------------


async def test_implicit_id_token(op, apex):
    """OP-Response-id_token, OP-nonce-noncode, OP-nonce-NoReq-noncode, OP-IDToken-kid,
    OP-scope-profile (claims in the ID token when no access token is issued)."""
    params, _ = request(op, "id_token", nonce="imp", scope="openid profile")
    got = await login(op, apex, params, "fragment", nickname="Ida")
    assert set(got) == {"id_token", "state", "iss"}
    claims = await check_id_token(op, got["id_token"], nonce="imp")
    assert claims["name"] == "Ida" and "at_hash" not in claims
    for rt in ("id_token", "code id_token"):
        params, _ = request(op, rt)
        got = answer(await op["browser"].get(f"{op['iss']}/oidc/auth", params=params), "fragment")
        assert got["error"] == "invalid_request", rt  # no nonce
    for rt in ("id_token token", "code token", "code id_token token", "token"):
        params, _ = request(op, rt, nonce="x")
        r = await op["browser"].get(f"{op['iss']}/oidc/auth", params=params)
        assert answer(r)["error"] == "unsupported_response_type", rt  # not offered


async def test_hybrid_code_id_token(op, apex):
    """OP-Response-code+id_token, OP-IDToken-c_hash, OP-nonce-noncode."""
    params, verifier = request(op, "code id_token", nonce="hyb")
    got = await login(op, apex, params, "fragment")
    front = await check_id_token(op, got["id_token"], nonce="hyb")
    assert front["c_hash"] == half_hash(got["code"])
    r = await tokens(op, got["code"], verifier, **basic(op))
    back = await check_id_token(op, r.json()["id_token"], nonce="hyb")
    assert back["sub"] == front["sub"] and back["at_hash"] == half_hash(r.json()["access_token"])


# --- Form Post ----------------------------------------------------------------------


@pytest.mark.parametrize("response_type", ["code", "id_token", "code id_token"])
async def test_form_post(op, apex, response_type):
    """OP-Response-form_post (C, I, CI) and OP-Response-form_post-Error."""
    params, _ = request(op, response_type, nonce="fp", response_mode="form_post")
    url = f"{op['iss']}/oidc/auth?" + str(httpx.QueryParams(params))
    page = await scan_login(op["browser"], apex, url)
    assert page.status_code == 200 and f'action="{CB}"' in page.text
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
    assert fields["state"] == params["state"] and fields["iss"] == op["iss"]
    for part in response_type.split():
        assert fields[part], part
    params, _ = request(op, response_type, response_mode="form_post", prompt="none",
                        nonce="fp", scope="profile")  # fmt: skip
    error = await op["browser"].get(f"{op['iss']}/oidc/auth", params=params)
    assert 'name="error" value="invalid_scope"' in error.text


# --- RP-Initiated Logout, Back- and Front-Channel Logout ----------------------------


async def signed_in(op, apex) -> str:
    params, verifier = request(op, nonce="lo")
    got = await login(op, apex, params)
    return (await tokens(op, got["code"], verifier, **basic(op))).json()["id_token"]


async def test_rp_initiated_logout(op, apex):
    """OP-RpInitLogout, -Only-state, -No-state, -No-post_logout_redirect_uri,
    -Bad_redirect_uri, -Unregistered-post_logout_redirect_uri, -Wrong-id_token_hint,
    -Modified-id_token_hint, -No-params, -No-id_token_hint."""
    browser, end = op["browser"], f"{op['iss']}/oidc/logout"
    hint = await signed_in(op, apex)
    r = await browser.get(end, params={"id_token_hint": hint, "post_logout_redirect_uri": BYE,
                                       "state": "s"})  # fmt: skip
    # Front-channel logout frames first, then goes on to the registered URI with state.
    assert r.status_code == 200 and f'data-next="{BYE}?state=s"' in r.text
    hint = await signed_in(op, apex)
    r = await browser.get(end, params={"id_token_hint": hint})  # no redirect URI
    assert r.status_code == 200 and "frontchannel" in r.text
    for bad in ("https://attacker.example/bye", f"{BYE}/other"):
        hint = await signed_in(op, apex)
        r = await browser.get(end, params={"id_token_hint": hint, "post_logout_redirect_uri": bad})
        assert "location" not in r.headers and bad not in r.text
    head, body, _ = hint.split(".")
    none_head = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    for wrong in (f"{none_head}.{body}.", "not.a.token", f"{head}.{body}.AAAA"):
        r = await browser.get(end, params={"id_token_hint": wrong, "post_logout_redirect_uri": BYE})
        assert r.status_code == 400 and "location" not in r.headers
    hint = await signed_in(op, apex)
    r = await browser.get(end)  # no parameters: asked first (no forced logout)
    assert r.status_code == 200 and "logout-confirm" in r.text
    r = await browser.get(
        end, params={"client_id": op["rp"].client_id, "post_logout_redirect_uri": BYE}
    )
    assert "logout-confirm" in r.text


async def test_back_and_front_channel_logout(op, apex, db, receiver_url):
    """OP-BackChannel-RpInitLogout, OP-FrontChannel-RpInitLogout."""
    url, got = receiver_url
    async with op["portal"].state["db"].acquire() as conn:
        await clients.register(conn, op["rp"], allow_http=True, backchannel_logout_uri=url)
    op["portal"].state["clients"].clear()
    hint = await signed_in(op, apex)
    sid = jwt.decode(hint, await keys(op)).claims["sid"]
    r = await op["browser"].get(f"{op['iss']}/oidc/logout", params={"id_token_hint": hint})
    frame = html.unescape(re.search(r'<iframe class="frontchannel" src="([^"]+)"', r.text)[1])
    assert frame.startswith(f"{RP}/fc?")
    assert parse_qs(urlsplit(frame).query) == {"iss": [op["iss"]], "sid": [sid]}
    await worker.run_async(op["worker_settings"], concurrency=2, install_signal_handlers=False,
                           wait=False)  # fmt: skip
    (token,) = got
    decoded = jwt.decode(token, await keys(op))
    assert decoded.header["typ"] == "logout+jwt"
    claims = decoded.claims
    assert claims["iss"] == op["iss"] and claims["aud"] == op["rp"].client_id
    assert claims["sid"] == sid and claims["events"] == {EVENT: {}} and "nonce" not in claims


@pytest.fixture
async def receiver_url():
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    got: list[str] = []

    async def endpoint(request: Request) -> Response:
        got.append(str((await request.form())["logout_token"]))
        return Response(status_code=200)

    sock = free_socket()
    app = Starlette(routes=[Route("/bc", endpoint, methods=["POST"])])
    async with serve_asgi(app, sock, name="the RP's back channel", lifespan="off"):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/bc", got
