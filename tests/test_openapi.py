"""``GET /openapi.json`` (portal/web/openapi.py) tells the truth about the JSON routes.

Three ways it could lie, each caught here: a route the app has but the document
lacks (or the reverse), a document that is not valid OpenAPI 3.1, and real
answers of the real flows (ticket, scan, confirm, exchange, OIDC code and
refresh, userinfo, introspection, revocation, and their errors) that do not
match the documented status, body schema or error code.
"""

from __future__ import annotations

import json
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from starlette.routing import Route

from portal.app import Site
from portal.tenants import clients, pools
from tests.phone import Phone
from tests.support import LoopbackTransport, RunningPortal

REDIRECT = "https://rp.example.com/callback"
# What is JSON on a pool or the apex (portal/web/pages.py's wants_json), less the pages.
JSON_PREFIXES = ("/api/", "/oidc/", "/.well-known/")
JSON_PATHS = {"/healthz", "/readyz", "/openapi.json"}
PAGES = {"/oidc/auth", "/oidc/auth/complete", "/oidc/logout"}
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        created = await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
        rp, rp_secret = await clients.create(
            conn, box, pool_id=created.pool.id, name="RP", redirect_uris=[REDIRECT]
        )
    return {"pool": created, "rp": rp, "rp_secret": rp_secret}


@pytest.fixture
async def doc(apex) -> dict:
    r = await apex.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def app_json_routes(running: RunningPortal) -> set[tuple[str, str]]:
    """(method, path) of every JSON route of the running app, apex and pool sites."""
    app = running.server.config.app
    found = set()
    for site in app.router.routes:
        if not isinstance(site, Site) or site.site not in ("apex", "pool"):
            continue
        for route in site.router.routes:
            if not isinstance(route, Route) or route.path in PAGES:
                continue
            if route.path.startswith(JSON_PREFIXES) or route.path in JSON_PATHS:
                found |= {(m.lower(), route.path) for m in route.methods or () if m != "HEAD"}
    return found


def documented(doc: dict) -> set[tuple[str, str]]:
    return {(m, path) for path, item in doc["paths"].items() for m in item if m in METHODS}


class Contract:
    """Checks real responses against the document."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.seen: set[tuple[str, str, int]] = set()

    def check(self, r: httpx.Response, path: str) -> httpx.Response:
        method = r.request.method.lower()
        operation = self.doc["paths"][path][method]
        status = str(r.status_code)
        assert status in operation["responses"], (
            f"{method.upper()} {path} answered {status}, not documented: {r.text[:300]}"
        )
        self.seen.add((method, path, r.status_code))
        content = operation["responses"][status].get("content")
        if content is None:
            assert not r.content, f"{method.upper()} {path} {status}: documented without a body"
            return r
        media = r.headers["content-type"].split(";")[0].strip()
        assert media in content, f"{method.upper()} {path} {status}: {media} not in {list(content)}"
        if media == "application/json":
            self.validate(content[media]["schema"], r.json(), f"{method.upper()} {path} {status}")
        elif media == "text/event-stream":  # each event's data, as documented
            events = re.findall(r"^event: (.*)\ndata: (.*)$", r.text, re.MULTILINE)
            assert events, r.text
            event = content[media]["schema"]["properties"]
            for name, data in events:
                assert name == event["event"]["const"]
                self.validate(event["data"]["contentSchema"], json.loads(data), f"{path} event")
        return r

    def validate(self, schema: dict, value: object, where: str) -> None:
        schema = {**schema, "components": self.doc["components"]}
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, f"{where}: {errors}\n{str(value)[:500]}"


@pytest.fixture
def contract(doc) -> Contract:
    return Contract(doc)


async def test_the_document_is_valid_openapi_3_1(doc, portal):
    validate_openapi(doc)
    assert doc["openapi"].startswith("3.1")
    pool_server = doc["servers"][0]
    assert pool_server["url"] == "http://{slug}.{apex}"
    assert pool_server["variables"]["apex"]["default"] == f"localhost:{portal.port}"
    # The mini-program API is on both kinds of host; this document only on the apex.
    mp = doc["paths"]["/api/mp/session"]["servers"]
    assert [s["url"] for s in mp] == ["http://{slug}.{apex}", "http://{apex}"]
    assert [s["url"] for s in doc["paths"]["/openapi.json"]["servers"]] == ["http://{apex}"]


async def test_every_json_route_is_documented_and_nothing_else(doc, portal):
    in_app = app_json_routes(portal)
    assert len(in_app) >= 20
    assert ("post", "/api/mp/avatar") in in_app
    assert in_app == documented(doc), (
        f"in the app only: {sorted(in_app - documented(doc))}; "
        f"in the document only: {sorted(documented(doc) - in_app)}"
    )


async def test_every_error_response_has_the_design_shape_and_its_codes(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            assert op["responses"], f"{method} {path}"
            for status, response in op["responses"].items():
                if int(status) < 400:
                    continue
                schema = response["content"]["application/json"]["schema"]
                if path == "/oidc/userinfo" and status == "401":
                    schema = schema["oneOf"][0]  # or {}: no token, no code (RFC 6750 §3.1)
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}, (method, path)
                codes = schema["allOf"][1]["properties"]["error"]
                assert codes.get("enum") or codes.get("const"), (method, path, status)


async def test_the_document_is_only_on_the_apex(pc):
    r = await pc.get("/openapi.json")
    assert r.status_code == 404


async def page_ticket(browser: httpx.AsyncClient, url: str) -> tuple[str, str]:
    page = await browser.get(url)
    assert page.status_code == 200, page.text
    ticket = re.search(r'data-ticket="([^"]+)"', page.text)[1]
    secret = re.search(r'data-secret="([^"]+)"', page.text)[1]
    return ticket, secret


async def test_the_qr_and_mini_program_flows_answer_as_documented(pc, apex, contract, acme):
    c = contract
    r = c.check(await pc.post("/api/qrcode", json={}), "/api/qrcode")
    assert r.status_code == 201
    t = r.json()
    ticket, secret = t["ticket"], {"x-ticket-secret": t["secret"]}
    status_path = "/api/qrcode/{ticket}/status"
    c.check(await pc.get(f"/api/qrcode/{ticket}/status", headers=secret), status_path)
    c.check(await pc.get(f"/api/qrcode/{ticket}.png"), "/api/qrcode/{ticket}.png")
    c.check(await pc.get(f"/api/qrcode/{ticket}.svg"), "/api/qrcode/{ticket}.svg")
    # Errors of the QR API.
    assert (
        c.check(await pc.post("/api/qrcode", json={"client_id": "nope"}), "/api/qrcode").json()[
            "error"
        ]
        == "invalid_client"
    )
    c.check(await pc.post("/api/qrcode", content=b"[1]"), "/api/qrcode")
    c.check(
        await pc.post("/api/qrcode", content=b"{}", headers={"content-type": "text/plain"}),
        "/api/qrcode",
    )
    c.check(await pc.get(f"/api/qrcode/{ticket}/status"), status_path)  # no secret: 403
    c.check(await pc.get(f"/api/qrcode/{ticket}/status?wait=99", headers=secret), status_path)
    c.check(await pc.get("/api/qrcode/" + "x" * 20 + "/status", headers=secret), status_path)
    c.check(await pc.get("/api/qrcode/" + "x" * 20 + ".png"), "/api/qrcode/{ticket}.png")
    c.check(
        await pc.get("/api/qrcode/" + "x" * 20 + "/events", params={"secret": "s"}),
        "/api/qrcode/{ticket}/events",
    )
    exchange = f"/api/qrcode/{ticket}/exchange"
    r = c.check(
        await pc.post(exchange, json={"secret": t["secret"]}), "/api/qrcode/{ticket}/exchange"
    )
    assert r.json()["error"] == "invalid_grant"  # not confirmed yet

    # The phone: session errors, scan, confirm, cancel.
    mp = "/api/mp/session"
    for body in ({"appid": "wxnope", "code": "a.1"}, {"appid": Phone(apex, "x").appid,
                 "code": "invalid.1"}, {"appid": 3}):  # fmt: skip
        c.check(await apex.post(mp, json=body), mp)
    alice = Phone(apex, "alice")
    c.check(await alice.login(), mp)
    scan = "/api/mp/tickets/{ticket}/scan"
    confirm = "/api/mp/tickets/{ticket}/confirm"
    c.check(await apex.post(f"/api/mp/tickets/{ticket}/scan"), scan)  # no session: 401
    c.check(await alice.confirm(ticket), confirm)  # not scanned: 409
    c.check(await alice.scan(ticket), scan)
    c.check(await Phone(apex, "bob").scan(ticket), scan)  # taken: 409
    c.check(await alice.confirm(ticket, nickname="Alice", avatar_url="ftp://x"), confirm)
    c.check(await alice.confirm(ticket, nickname="Alice"), confirm)
    c.check(await alice.scan(ticket), scan)  # final: 410
    c.check(await alice.cancel(ticket), "/api/mp/tickets/{ticket}/cancel")  # final: 410
    c.check(await pc.get(f"/api/qrcode/{ticket}/status", headers=secret), status_path)
    async with pc.stream("GET", f"/api/qrcode/{ticket}/events", headers=secret) as r:
        await r.aread()  # a confirmed ticket's stream ends after its one event
        c.check(r, "/api/qrcode/{ticket}/events")
    r = c.check(
        await pc.post(exchange, json={"secret": t["secret"]}), "/api/qrcode/{ticket}/exchange"
    )
    assert r.status_code == 200 and r.json()["user"]["nickname"] == "Alice"
    tokens = r.json()
    r = c.check(
        await pc.post(exchange, json={"secret": t["secret"]}), "/api/qrcode/{ticket}/exchange"
    )
    assert r.json()["error"] == "invalid_grant"
    c.check(await pc.post(exchange, json={"secret": "wrong"}), "/api/qrcode/{ticket}/exchange")

    # A second ticket, cancelled by its scanner; an avatar upload.
    t2 = (await pc.post("/api/qrcode")).json()
    c.check(await alice.scan(t2["ticket"]), scan)
    c.check(await alice.cancel(t2["ticket"]), "/api/mp/tickets/{ticket}/cancel")
    avatar = "/api/mp/avatar"
    auth = {"authorization": f"Bearer {alice.token}"}
    c.check(await apex.post(avatar, content=b"not an image", headers={**auth,
            "content-type": "image/png"}), avatar)  # fmt: skip
    c.check(
        await apex.post(avatar, content=b"x", headers={**auth, "content-type": "text/x"}), avatar
    )
    c.check(await apex.post(avatar, content=b"x"), avatar)  # no session: 401

    # The exchange's access token at userinfo.
    info = "/oidc/userinfo"
    r = c.check(
        await pc.get(info, headers={"authorization": f"Bearer {tokens['access_token']}"}), info
    )
    assert r.status_code == 200 and r.json()["nickname"] == "Alice"
    c.check(await pc.post(info, data={"access_token": tokens["access_token"]}), info)
    assert c.check(await pc.get(info), info).json() == {}  # no token: no error code
    c.check(await pc.get(info, headers={"authorization": "Bearer nope"}), info)
    c.check(await pc.post(info, content=b"{}", headers={"content-type": "application/json"}), info)
    assert {s for m, p, s in c.seen if p == exchange.replace(ticket, "{ticket}")} >= {200, 400, 403}


async def test_the_oidc_endpoints_answer_as_documented(portal, pc, apex, contract, acme):
    c = contract
    c.check(await pc.get("/.well-known/openid-configuration"), "/.well-known/openid-configuration")
    rfc8414 = "/.well-known/oauth-authorization-server"
    c.check(await pc.get(rfc8414), rfc8414)
    c.check(await pc.get("/oidc/jwks"), "/oidc/jwks")
    c.check(await apex.get("/healthz"), "/healthz")
    c.check(await apex.get("/readyz"), "/readyz")
    c.check(await apex.get("/openapi.json"), "/openapi.json")

    rp, rp_secret = acme["rp"], acme["rp_secret"]
    issuer = portal.settings.pool_url("acme")
    verifier = secrets.token_urlsafe(48)
    query = urlencode({
        "client_id": rp.client_id, "redirect_uri": REDIRECT, "response_type": "code",
        "scope": "openid profile offline_access", "state": "s", "nonce": "n",
        "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256",
    })  # fmt: skip
    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=10) as browser:
        ticket, secret = await page_ticket(browser, f"{issuer}/oidc/auth?{query}")
        assert (await Phone(apex, "carol").scan_and_confirm(ticket)).status_code == 200
        done = await browser.post(
            f"{issuer}/oidc/auth/complete", data={"ticket": ticket, "secret": secret}
        )
    assert done.status_code == 303, done.text
    code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]

    token = "/oidc/token"
    basic = httpx.BasicAuth(rp.client_id, rp_secret)
    grant = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
             "code_verifier": verifier}  # fmt: skip
    r = c.check(await pc.post(token, data=grant, auth=basic), token)
    assert r.status_code == 200 and r.json()["refresh_token"]
    issued = r.json()
    refresh = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    r = c.check(await pc.post(token, data=refresh, auth=basic), token)
    assert r.status_code == 200
    fresh = r.json()
    wrong = httpx.BasicAuth(rp.client_id, "wrong")
    assert c.check(await pc.post(token, data=refresh, auth=wrong), token).status_code == 401
    c.check(await pc.post(token, data={"grant_type": "password"}, auth=basic), token)
    # Client input echoed in an OAuth2 error_description is kept to printable ASCII.
    r = c.check(await pc.post(token, data={"grant_type": 'pass"wörd'}, auth=basic), token)
    assert r.json()["error"] == "unsupported_grant_type"
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = c.check(await pc.post(token, content="é=1&é=2".encode(), headers=form), token)
    assert r.json() == {
        "error": "invalid_request",
        "error_description": "Parameter ?? is repeated.",
    }
    nul = {"grant_type": "refresh_token", "client_id": "a\x00"}
    r = c.check(await pc.post(token, data=nul), token)
    assert r.json()["error"] == "invalid_client"  # not a 500 from PostgreSQL
    c.check(await pc.post(token, data={"client_id": rp.client_id}), token)
    c.check(await pc.post(token, json={"grant_type": "refresh_token"}), token)
    wider = {**refresh, "refresh_token": fresh["refresh_token"], "scope": "openid phone"}
    r = c.check(await pc.post(token, data=wider, auth=basic), token)
    assert r.json()["error"] == "invalid_scope"  # and the refresh token is not spent by it:

    introspect, revoke = "/oidc/introspect", "/oidc/revoke"
    r = c.check(
        await pc.post(introspect, data={"token": fresh["access_token"]}, auth=basic), introspect
    )
    assert r.json()["active"] is True
    r = c.check(
        await pc.post(introspect, data={"token": fresh["refresh_token"]}, auth=basic), introspect
    )
    assert r.json()["active"] is True and r.json()["token_type"] == "refresh_token"
    r = c.check(await pc.post(introspect, data={"token": "nope"}, auth=basic), introspect)
    assert r.json() == {"active": False}
    c.check(await pc.post(introspect, data={}, auth=basic), introspect)
    r = c.check(await pc.post(revoke, data={"token": fresh["refresh_token"]}, auth=basic), revoke)
    assert r.status_code == 200
    c.check(await pc.post(revoke, data={"token": "x"}, auth=wrong), revoke)
    c.check(await pc.post(revoke, data={"token": "x", "client_id": "nope"}), revoke)
    # A replayed code: refused (and what its first use issued is revoked).
    r = c.check(await pc.post(token, data=grant, auth=basic), token)
    assert r.json()["error"] == "invalid_grant"
    statuses = {s for _, p, s in c.seen if p == token}
    assert statuses == {200, 400, 401}
