"""Signed requests (issue 18, item 3): request objects (JAR, RFC 9101), pushed
authorization requests (PAR, RFC 9126) and JWT client authentication
(RFC 7523 ``private_key_jwt`` and ``client_secret_jwt``), over real HTTP; and
the SSRF checks on a client's ``jwks_uri``."""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from portal.oidc import jar
from portal.tenants import clients, pools
from tests.support import LoopbackTransport
from tests.test_oidc import REDIRECT, RP, auth_params, code_grant, scan_login

KEY = RSAKey.generate_key(2048, parameters={"kid": "rp-1"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "rp-1"})


@pytest.fixture
async def setup(portal, db, box):
    """Pool ``acme``: ``rp`` (confidential, with a registered JWK Set) and ``beta``'s
    client of the same shape in another pool."""
    async with db.acquire() as conn:
        acme = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
        beta = await pools.create(conn, box, slug="beta", name="Beta", allow_http=True)
        registration = {"jwks": {"keys": [KEY.as_dict(private=False)]}}
        rp, rp_secret = await clients.create(
            conn, box, pool_id=acme.pool.id, name="RP", redirect_uris=[REDIRECT],
            web_origins=[RP], registration=registration,
        )  # fmt: skip
        other, other_secret = await clients.create(
            conn, box, pool_id=beta.pool.id, name="Other", redirect_uris=[REDIRECT],
            registration=registration,
        )  # fmt: skip
    return {"issuer": f"http://acme.localhost:{portal.port}", "rp": rp, "rp_secret": rp_secret,
            "beta_issuer": f"http://beta.localhost:{portal.port}", "other": other,
            "other_secret": other_secret}  # fmt: skip


@pytest.fixture
async def browser(portal):
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as client:
        yield client


def signed(claims: dict, key=KEY, alg: str = "RS256", **header) -> str:
    return jwt.encode({"alg": alg, **header}, claims, key, algorithms=[alg])


def unsigned(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}."


def request_claims(setup, **extra) -> dict:
    params, _ = auth_params(setup["rp"], state="inner")
    params.pop("code_challenge"), params.pop("code_challenge_method")
    return {"iss": setup["rp"].client_id, "aud": setup["issuer"], "exp": int(time.time()) + 60,
            **params, **extra}  # fmt: skip


def location_params(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert location.startswith(REDIRECT), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def assertion(setup, *, key=KEY, alg="RS256", aud=None, jti=None, exp=60, client=None) -> str:
    client_id = (client or setup["rp"]).client_id
    claims = {"iss": client_id, "sub": client_id, "aud": aud or f"{setup['issuer']}/oidc/token",
              "exp": int(time.time()) + exp, "jti": jti or secrets.token_urlsafe(12)}  # fmt: skip
    return signed(claims, key, alg)


# --- request objects ---------------------------------------------------------------


async def test_a_signed_request_object_is_the_request(setup, browser, apex):
    iss = setup["issuer"]
    obj = signed(request_claims(setup, prompt="login"))
    # Only the object counts (RFC 9101 §6.3): the state beside it is ignored.
    url = f"{iss}/oidc/auth?" + str(httpx.QueryParams(
        {"client_id": setup["rp"].client_id, "request": obj, "state": "outer"}))  # fmt: skip
    got = location_params(await scan_login(browser, apex, url))
    assert got["state"] == "inner" and got["code"]


async def test_request_objects_that_do_not_verify_are_refused(setup, browser):
    iss, rp = setup["issuer"], setup["rp"]
    base = request_claims(setup)
    hs_key = OctKey.import_key(setup["rp_secret"])
    cases = {
        "another key": signed(base, OTHER_KEY),
        "alg none": unsigned(base),
        "wrong audience": signed({**base, "aud": "https://elsewhere.example"}),
        "expired": signed({**base, "exp": int(time.time()) - 5}),
        "valid too long": signed({**base, "exp": int(time.time()) + 86400}),
        "another issuer": signed({**base, "iss": "someone-else"}),
        "not a JWT": "not-a-jwt",
    }
    for what, obj in cases.items():
        outer = {"client_id": rp.client_id, "request": obj, "redirect_uri": REDIRECT,
                 "response_type": "code", "state": "s"}  # fmt: skip
        got = location_params(await browser.get(f"{iss}/oidc/auth", params=outer))
        assert got["error"] == "invalid_request_object", what
        assert got["state"] == "s"
    # No registered redirect_uri beside it: a page, never a redirect.
    r = await browser.get(f"{iss}/oidc/auth", params={"client_id": rp.client_id,
                                                      "request": cases["another key"]})  # fmt: skip
    assert r.status_code == 400 and "location" not in r.headers
    # HS256 with the client's own secret works.
    good = signed(base, hs_key, "HS256")
    r = await browser.get(f"{iss}/oidc/auth", params={"client_id": rp.client_id, "request": good})
    assert r.status_code == 200 and "data-ticket" in r.text


# --- pushed authorization requests -------------------------------------------------


async def test_pushed_authorization_requests(setup, browser, apex, portal):
    iss, rp = setup["issuer"], setup["rp"]
    auth = (rp.client_id, setup["rp_secret"])
    params, verifier = auth_params(rp, prompt="login", state="pushed")
    r = await browser.post(f"{iss}/oidc/par", data=params, auth=auth)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    request_uri, expires_in = r.json()["request_uri"], r.json()["expires_in"]
    assert request_uri.startswith("urn:ietf:params:oauth:request_uri:") and expires_in == 60
    front = {"client_id": rp.client_id, "request_uri": request_uri}
    done = await scan_login(browser, apex, f"{iss}/oidc/auth?" + str(httpx.QueryParams(front)))
    got = location_params(done)
    assert got["state"] == "pushed"
    t = await browser.post(f"{iss}/oidc/token", data=code_grant(got["code"], verifier), auth=auth)
    assert t.status_code == 200, t.text
    # Used once.
    again = await browser.get(f"{iss}/oidc/auth", params={**front, "prompt": "login"})
    assert again.status_code == 400 and "request_uri" in again.text
    # The hosted page's "new QR code" link repeats a pushed request by a request_uri of its own.
    r = await browser.post(f"{iss}/oidc/par", data=params, auth=auth)
    page = await browser.get(f"{iss}/oidc/auth", params={"client_id": rp.client_id,
                                                         "request_uri": r.json()["request_uri"]})  # fmt: skip
    link = html.unescape(re.search(r'id="refresh" href="([^"]+)"', page.text)[1])
    assert "request_uri=urn" in link and r.json()["request_uri"] not in link
    again = await browser.get(f"{iss}{link}")
    assert again.status_code == 200 and "data-ticket" in again.text
    # Another client, or another pool, cannot use it.
    r = await browser.post(f"{iss}/oidc/par", data=params, auth=auth)
    uri = r.json()["request_uri"]
    r = await browser.get(f"{setup['beta_issuer']}/oidc/auth",
                          params={"client_id": setup["other"].client_id, "request_uri": uri})  # fmt: skip
    assert r.status_code == 400 and "location" not in r.headers
    # A bad request is refused when pushed, as JSON.
    for bad, error in (({"redirect_uri": "https://evil.example/cb"}, "invalid_request"),
                       ({"response_type": "token"}, "unsupported_response_type"),
                       ({"request_uri": "urn:x"}, "invalid_request")):  # fmt: skip
        r = await browser.post(f"{iss}/oidc/par", data={**params, **bad}, auth=auth)
        assert r.status_code == 400 and r.json()["error"] == error, (bad, r.text)
    # Another pool's credentials, or none, push nothing.
    anonymous = {k: v for k, v in params.items() if k != "client_id"}
    r = await browser.post(f"{iss}/oidc/par", data=anonymous,
                           auth=(setup["other"].client_id, setup["other_secret"]))  # fmt: skip
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = await browser.post(f"{iss}/oidc/par", data=params)
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"
    # A client that must push: a request by value is refused.
    async with portal.state["db"].acquire() as conn:
        await clients.register(conn, rp, require_par=True)
    portal.state["clients"].clear()
    got = location_params(await browser.get(f"{iss}/oidc/auth", params=params))
    assert got["error"] == "invalid_request" and "PAR" in got["error_description"]
    # Not even with a signed request object by value.
    by_value = {"client_id": rp.client_id, "redirect_uri": REDIRECT, "response_type": "code",
                "request": signed(request_claims(setup))}  # fmt: skip
    got = location_params(await browser.get(f"{iss}/oidc/auth", params=by_value))
    assert got["error"] == "invalid_request" and "PAR" in got["error_description"]
    r = await browser.post(f"{iss}/oidc/par", data=params, auth=auth)
    r = await browser.get(f"{iss}/oidc/auth",
                          params={"client_id": rp.client_id, "request_uri": r.json()["request_uri"]})  # fmt: skip
    assert r.status_code == 200 and "data-ticket" in r.text
    # A signed request object can be pushed too.
    r = await browser.post(f"{iss}/oidc/par", auth=auth,
                           data={"client_id": rp.client_id, "request": signed(request_claims(setup))})  # fmt: skip
    assert r.status_code == 201, r.text


# --- JWT client authentication -----------------------------------------------------


async def test_private_key_jwt_and_client_secret_jwt(setup, browser, apex):
    iss, rp = setup["issuer"], setup["rp"]

    async def token(form):
        return await browser.post(f"{iss}/oidc/token", data=form)

    async def fresh_code():
        params, verifier = auth_params(rp, prompt="login")
        done = await scan_login(browser, apex, f"{iss}/oidc/auth?" + str(httpx.QueryParams(params)))
        return location_params(done)["code"], verifier

    code, verifier = await fresh_code()
    jwt_type = {"client_assertion_type": jar.ASSERTION_TYPE}
    # Failures first: the code is not spent by a client that did not authenticate.
    used = assertion(setup)
    failures = {
        "another key": assertion(setup, key=OTHER_KEY),
        "another audience": assertion(setup, aud="https://elsewhere.example/token"),
        "expired": assertion(setup, exp=-10),
        "HS256 with a wrong secret": assertion(setup, key=OctKey.import_key("x" * 43), alg="HS256"),
        "another pool's client": assertion(setup, client=setup["other"]),
    }
    for what, value in failures.items():
        r = await token({**code_grant(code, verifier), **jwt_type, "client_assertion": value})
        # RFC 6749 §5.2: 400 (401 only for credentials in the Authorization header).
        assert r.status_code == 400 and r.json()["error"] == "invalid_client", (what, r.text)
    r = await token({**code_grant(code, verifier), "client_assertion": used})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"  # no type
    r = await token({**code_grant(code, verifier), **jwt_type, "client_assertion": used})
    assert r.status_code == 200, r.text
    # The same assertion again (its jti): refused.
    code, verifier = await fresh_code()
    r = await token({**code_grant(code, verifier), **jwt_type, "client_assertion": used})
    assert r.json()["error"] == "invalid_client" and "jti" in r.json()["error_description"]
    # client_secret_jwt: HS256 keyed with the client's secret; the issuer as audience.
    hs = assertion(setup, key=OctKey.import_key(setup["rp_secret"]), alg="HS256", aud=iss)
    r = await token({**code_grant(code, verifier), **jwt_type, "client_assertion": hs})
    assert r.status_code == 200, r.text
    # Revocation takes it too, and only one method at a time.
    form = {"token": r.json()["access_token"], **jwt_type,
            "client_assertion": assertion(setup, aud=f"{iss}/oidc/revoke")}  # fmt: skip
    assert (await browser.post(f"{iss}/oidc/revoke", data=form)).status_code == 200
    form["client_assertion"] = assertion(setup)
    r = await browser.post(f"{iss}/oidc/revoke", data=form, auth=(rp.client_id, setup["rp_secret"]))
    assert r.status_code == 400

    meta = (await browser.get(f"{iss}/.well-known/openid-configuration")).json()
    assert {"private_key_jwt", "client_secret_jwt"} <= set(
        meta["token_endpoint_auth_methods_supported"]
    )
    assert meta["pushed_authorization_request_endpoint"] == f"{iss}/oidc/par"
    assert meta["request_parameter_supported"] is True
    assert "RS256" in meta["request_object_signing_alg_values_supported"]
    assert "none" not in meta["request_object_signing_alg_values_supported"]


# --- jwks_uri and SSRF -------------------------------------------------------------


async def test_a_jwks_uri_on_a_private_address_is_never_fetched(setup, browser, portal, apex):
    """A client registers a jwks_uri on the loopback (where an internal service
    would answer): the pool refuses to fetch it outside dev, and says why."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.support import free_socket, serve_asgi

    hits = []

    async def keys(request):
        hits.append(request.url.path)
        return JSONResponse({"keys": [KEY.as_dict(private=False)]})

    sock = free_socket()
    uri = f"https://127.0.0.1:{sock.getsockname()[1]}/jwks"
    async with serve_asgi(Starlette(routes=[Route("/jwks", keys)]), sock, name="jwks",
                          lifespan="off"):  # fmt: skip
        async with portal.state["db"].acquire() as conn:
            await clients.register(conn, setup["rp"], jwks_uri=uri)
        portal.state["clients"].clear()
        form = {"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT,
                "client_assertion_type": jar.ASSERTION_TYPE,
                "client_assertion": assertion(setup)}  # fmt: skip
        r = await browser.post(f"{setup['issuer']}/oidc/token", data=form)
        assert r.json()["error"] == "invalid_client", r.text
        assert "jwks_uri" in r.json()["error_description"], r.text
        # A failure is remembered a moment: the next requests do not each try again.
        form["client_assertion"] = assertion(setup)
        r = await browser.post(f"{setup['issuer']}/oidc/token", data=form)
        assert "jwks_uri" in r.json()["error_description"], r.text
    assert hits == []


async def test_registration_keeps_private_keys_out(db, setup):
    async with db.acquire() as conn:
        for bad in ({"keys": [KEY.as_dict(private=True)]}, {"keys": []}, {"nokeys": 1}, "[",
                    {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}):  # fmt: skip
            with pytest.raises(clients.ValidationError):
                await clients.register(conn, setup["rp"], jwks=bad)
        with pytest.raises(clients.ValidationError):
            await clients.register(conn, setup["rp"], jwks_uri="http://example.com/jwks")
        moved = await clients.register(conn, setup["rp"], jwks_uri="https://rp.example.com/jwks")
        assert moved.jwks is None and moved.jwks_uri == "https://rp.example.com/jwks"
