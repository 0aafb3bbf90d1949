"""OpenID Connect for every relying party (issue 18, items 2 and 3 of "what broke"):
the implicit (``id_token``) and hybrid (``code id_token``) flows with their
response modes and rules, per-client response types, and silent authentication
(``prompt=none`` answered into a hidden iframe of the client's own origin)."""

from __future__ import annotations

import base64
import hashlib
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
    code_grant,
    end_sso,
    page_ticket,
    rp_auth,
    scan_login,
    token_request,
)

ALL_TYPES = ["code", "id_token", "code id_token"]


@pytest.fixture
async def setup(portal, db, box):
    """The pool ``acme`` with a confidential client at ``RP``."""
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
        rp, rp_secret = await clients.create(
            conn, box, pool_id=acme.pool.id, name="RP", redirect_uris=[REDIRECT],
            web_origins=[RP],
        )  # fmt: skip
    return {"issuer": f"http://acme.localhost:{portal.port}", "acme": acme, "rp": rp,
            "rp_secret": rp_secret}  # fmt: skip


@pytest.fixture
async def browser(portal):
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as client:
        yield client


def fragment(location: str) -> dict[str, str]:
    assert location.startswith(REDIRECT + "#"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).fragment).items()}


def query(location: str) -> dict[str, str]:
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def jwks(browser, setup) -> KeySet:
    return KeySet.import_key_set((await browser.get(f"{setup['issuer']}/oidc/jwks")).json())


def half_hash(value: str) -> str:
    digest = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


async def allow(portal, client, types=ALL_TYPES) -> clients.Client:
    """Register ``client`` for ``types``, as the console does (and drop the
    portal's cached copy, as the console's change message would)."""
    async with portal.state["db"].acquire() as conn:
        client = await clients.register(conn, client, response_types=types)
    portal.state["clients"].clear()
    return client


async def test_implicit_id_token_goes_in_the_fragment(setup, browser, apex, portal):
    rp = await allow(portal, setup["rp"])
    params, _ = auth_params(rp, response_type="id_token", nonce="n-1", scope="openid profile",
                            prompt="login")  # fmt: skip
    params.pop("code_challenge"), params.pop("code_challenge_method")
    url = f"{setup['issuer']}/oidc/auth?" + str(httpx.QueryParams(params))
    r = await scan_login(browser, apex, url, nickname="Alice")
    assert r.status_code == 303, r.text
    got = fragment(r.headers["location"])
    assert set(got) == {"id_token", "state", "iss"} and got["state"] == "xyz"
    assert got["iss"] == setup["issuer"]
    claims = jwt.decode(got["id_token"], await jwks(browser, setup)).claims
    assert claims["aud"] == rp.client_id and claims["iss"] == setup["issuer"]
    assert claims["nonce"] == "n-1" and claims["sid"]
    assert "at_hash" not in claims and "c_hash" not in claims  # nothing else was issued
    assert claims["name"] == "Alice"  # no userinfo call follows: the claims are in the ID token

    # Single sign-on: the next one needs no scan; form_post posts it instead.
    params.update(response_mode="form_post", prompt="", nonce="n-2")
    r = await browser.get(f"{setup['issuer']}/oidc/auth", params=params)
    assert r.status_code == 200 and 'name="id_token"' in r.text and f'action="{REDIRECT}"' in r.text
    assert 'name="code"' not in r.text


async def test_hybrid_code_id_token_carries_the_codes_hash(setup, browser, apex, portal):
    rp = await allow(portal, setup["rp"])
    params, verifier = auth_params(rp, response_type="id_token code", nonce="n-h",
                                   prompt="login")  # fmt: skip
    url = f"{setup['issuer']}/oidc/auth?" + str(httpx.QueryParams(params))
    r = await scan_login(browser, apex, url)
    assert r.status_code == 303, r.text
    got = fragment(r.headers["location"])  # fragment: the hybrid flow's default
    assert {"code", "id_token", "state", "iss"} == set(got)
    front = jwt.decode(got["id_token"], await jwks(browser, setup)).claims
    assert front["c_hash"] == half_hash(got["code"]) and front["nonce"] == "n-h"
    assert "at_hash" not in front
    # The code still works at the token endpoint, for the same login (sid) and person.
    t = await token_request(browser, setup, code_grant(got["code"], verifier), rp_auth(setup))
    assert t.status_code == 200, t.text
    back = jwt.decode(t.json()["id_token"], await jwks(browser, setup)).claims
    assert (back["sub"], back["sid"], back["nonce"]) == (front["sub"], front["sid"], "n-h")


async def test_response_type_rules(setup, browser, apex, portal):
    iss = setup["issuer"]

    async def ask(client, **extra):
        params, _ = auth_params(client, **extra)
        params = {k: v for k, v in params.items() if v is not None}
        return await browser.get(f"{iss}/oidc/auth", params=params)

    # The access token in the front channel is never offered (RFC 9700 §2.1.2).
    for rt in ("token", "id_token token", "code token", "code code", "none"):
        r = await ask(setup["rp"], response_type=rt, nonce="n")
        assert r.status_code == 303, (rt, r.text)
        assert query(r.headers["location"])["error"] == "unsupported_response_type", rt
    # Registered for code only (the default): the others are refused, in the fragment.
    r = await ask(setup["rp"], response_type="id_token", nonce="n")
    assert fragment(r.headers["location"])["error"] == "unauthorized_client"
    rp = await allow(portal, setup["rp"])
    # An ID token needs a nonce; its error goes where the ID token would have.
    for rt in ("id_token", "code id_token"):
        got = fragment((await ask(rp, response_type=rt)).headers["location"])
        assert got["error"] == "invalid_request" and "nonce" in got["error_description"], rt
        assert got["state"] == "xyz"
        # Never in the query (OIDC Core §3.3.2.5), even when asked.
        got = fragment(
            (await ask(rp, response_type=rt, nonce="n", response_mode="query")).headers["location"]
        )
        assert got["error"] == "invalid_request" and "query" in got["error_description"], rt
    # The code flow's default stays the query; fragment can be asked for.
    r = await ask(rp, response_type="code", response_mode="fragment", prompt="none")
    assert fragment(r.headers["location"])["error"] == "login_required"
    r = await ask(rp, response_type="code", prompt="none")
    assert query(r.headers["location"])["error"] == "login_required"

    meta = (await browser.get(f"{iss}/.well-known/openid-configuration")).json()
    assert meta["response_types_supported"] == ALL_TYPES
    assert meta["response_modes_supported"] == ["query", "fragment", "form_post", "web_message"]


async def test_registered_response_types_are_checked(db, box, setup):
    async with db.acquire() as conn:
        for bad in (["token"], ["code token"], [], ["id_token id_token"]):
            with pytest.raises(clients.ValidationError):
                await clients.register(conn, setup["rp"], response_types=bad)
        got = await clients.register(conn, setup["rp"], response_types=["id_token code", "code"])
        assert got.response_types == ("code", "code id_token")
        assert (
            await clients.get(conn, got.pool_id, got.client_id)
        ).response_types == got.response_types


# --- silent authentication ---------------------------------------------------------


async def test_silent_authentication_answers_into_a_frame_of_the_clients_origin(
    setup, browser, apex
):
    iss = setup["issuer"]
    # Not logged in yet: the hosted login page can be framed by nobody.
    params, _ = auth_params(setup["rp"])
    page = await browser.get(f"{iss}/oidc/auth", params=params)
    assert page.status_code == 200 and "data-ticket" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    ticket, secret = page_ticket(page.text)
    from tests.phone import Phone

    assert (await Phone(apex, "alice").scan_and_confirm(ticket)).status_code == 200
    done = await browser.post(
        f"{iss}/oidc/auth/complete", data={"ticket": ticket, "secret": secret}
    )
    assert done.status_code == 303

    for mode in ("web_message", "form_post"):
        params, _ = auth_params(setup["rp"], prompt="none", response_mode=mode)
        r = await browser.get(f"{iss}/oidc/auth", params=params)
        assert r.status_code == 200, (mode, r.text)
        assert "code" in r.text
        policy = r.headers["content-security-policy"]
        # Exactly the origin the response is for, and no X-Frame-Options to contradict it.
        assert f"frame-ancestors {RP};" in policy + ";" or policy.endswith(f"frame-ancestors {RP}")
        assert "x-frame-options" not in r.headers, mode
    # An error for prompt=none (after logout) is framable the same way.
    await end_sso(browser, iss)
    params, _ = auth_params(setup["rp"], prompt="none", response_mode="web_message")
    r = await browser.get(f"{iss}/oidc/auth", params=params)
    assert (
        "login_required" in r.text
        and f"frame-ancestors {RP}" in r.headers["content-security-policy"]
    )
    # Other pages stay unframable.
    r = await browser.get(f"{iss}/oidc/logout")
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


@pytest.fixture
async def https_portal(db, redis_client, settings_factory):
    """A portal behind a TLS proxy (scheme https), reached over plain http here."""
    from tests.support import free_socket, run_portal

    sock = free_socket()
    settings = settings_factory(base_url=f"https://localhost:{sock.getsockname()[1]}")
    async with run_portal(settings, sock=sock) as running:
        yield running


async def test_over_https_the_session_cookie_goes_into_cross_site_frames(https_portal, db, box):
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme")
        rp, _ = await clients.create(conn, box, pool_id=acme.pool.id, name="RP",
                                     redirect_uris=[REDIRECT])  # fmt: skip
    async with https_portal.client("acme") as pool, https_portal.client(None) as apex:
        params, _ = auth_params(rp)
        page = await pool.get("/oidc/auth", params=params)
        assert page.status_code == 200, page.text
        binding = page.headers["set-cookie"]
        # The browser binding stays Lax: it guards the hosted page's own form.
        assert binding.startswith("__Host-portal_browser=") and "samesite=lax" in binding.lower()
        ticket, secret = page_ticket(page.text)
        from tests.phone import Phone

        assert (await Phone(apex, "alice").scan_and_confirm(ticket)).status_code == 200
        cookie = binding.split(";")[0]
        done = await pool.post("/oidc/auth/complete", data={"ticket": ticket, "secret": secret},
                               headers={"cookie": cookie})  # fmt: skip
        assert done.status_code == 303, done.text
        session = done.headers["set-cookie"].lower()
        assert session.startswith("__host-portal_session=")
        assert "samesite=none" in session and "secure" in session and "path=/" in session
        assert "domain" not in session and "httponly" in session
