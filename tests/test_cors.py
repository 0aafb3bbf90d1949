"""CORS and Origin checks (portal/web/cors.py): a client's website may use the QR API
and /oidc/token from its registered web origins only; servers (no Origin) and
the pool's own pages as before."""

from __future__ import annotations

import httpx
import pytest

from portal.tenants import clients, pools
from tests.phone import Phone

SHOP = "https://shop.example.com"
OTHER = "https://other.example.com"  # registered, but for another client of the pool
EVIL = "https://evil.example.net"


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)


async def _client(db, box, pool_id: int, name: str, origin: str) -> clients.Client:
    async with db.acquire() as conn:
        client, _ = await clients.create(
            conn, box, pool_id=pool_id, name=name, redirect_uris=[f"{origin}/cb"],
            web_origins=[origin], public=True,
        )  # fmt: skip
    return client


@pytest.fixture
async def shop(db, box, acme) -> clients.Client:
    return await _client(db, box, acme.pool.id, "Shop", SHOP)


@pytest.fixture
async def other(db, box, acme) -> clients.Client:
    return await _client(db, box, acme.pool.id, "Other", OTHER)


def allowed(r: httpx.Response) -> str | None:
    return r.headers.get("access-control-allow-origin")


async def create(pc, origin: str | None, **body) -> httpx.Response:
    headers = {"origin": origin} if origin else {}
    return await pc.post("/api/qrcode", json=body, headers=headers)


async def test_ticket_creation_from_the_clients_own_origin(pc, shop, other):
    r = await create(pc, SHOP, client_id=shop.client_id)
    assert r.status_code == 201, r.text
    assert allowed(r) == SHOP
    assert "origin" in r.headers["vary"].lower()
    assert "access-control-allow-credentials" not in r.headers


@pytest.mark.parametrize("origin", [OTHER, EVIL, "null"])
async def test_ticket_creation_from_any_other_origin_is_refused(pc, shop, other, origin):
    r = await create(pc, origin, client_id=shop.client_id)
    assert r.status_code == 403
    assert r.json()["error"] == "origin_not_allowed"
    assert allowed(r) is None


async def test_no_origin_and_the_pools_own_origin_work_as_before(pc, portal, shop):
    r = await create(pc, None, client_id=shop.client_id)
    assert r.status_code == 201 and allowed(r) is None
    own = portal.settings.pool_url("acme")
    r = await create(pc, own)  # the hosted page: the default client, same origin
    assert r.status_code == 201 and allowed(r) is None


async def test_the_default_client_has_no_web_origin(pc, shop):
    r = await create(pc, SHOP)  # no client_id: the pool's default client
    assert r.status_code == 403 and r.json()["error"] == "origin_not_allowed"


async def test_preflight(pc, shop):
    asks = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    r = await pc.options("/api/qrcode", headers={"origin": SHOP, **asks})
    assert r.status_code == 204
    assert allowed(r) == SHOP
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "content-type" in r.headers["access-control-allow-headers"].lower()
    assert int(r.headers["access-control-max-age"]) > 0
    r = await pc.options("/api/qrcode/x/exchange", headers={"origin": SHOP, **asks})
    assert r.status_code == 204 and allowed(r) == SHOP
    r = await pc.options("/oidc/token", headers={"origin": SHOP, **asks})
    assert r.status_code == 204 and allowed(r) == SHOP
    r = await pc.options("/api/qrcode", headers={"origin": EVIL, **asks})
    assert r.status_code == 403 and allowed(r) is None
    assert r.json()["error"] == "origin_not_allowed"


async def test_a_ticket_serves_only_its_clients_origins(pc, apex, shop, other):
    t = (await create(pc, SHOP, client_id=shop.client_id)).json()
    path = f"/api/qrcode/{t['ticket']}"
    for origin, code in ((SHOP, 200), (OTHER, 403), (EVIL, 403), (None, 200)):
        headers = {"origin": origin} if origin else {}
        r = await pc.get(f"{path}/status", params={"secret": t["secret"]}, headers=headers)
        assert r.status_code == code, (origin, r.text)
        assert allowed(r) == (SHOP if origin == SHOP else None)
        async with pc.stream(
            "GET", f"{path}/events", params={"secret": t["secret"]}, headers=headers
        ) as r:
            assert r.status_code == code, origin
            assert allowed(r) == (SHOP if origin == SHOP else None)
        r = await pc.get(f"{path}.png", headers=headers)
        assert r.status_code == code, origin

    r = await Phone(apex, "alice").scan_and_confirm(t["ticket"])
    assert r.status_code == 200, r.text
    body = {"secret": t["secret"]}
    r = await pc.post(f"{path}/exchange", json=body, headers={"origin": OTHER})
    assert r.status_code == 403 and r.json()["error"] == "origin_not_allowed"
    r = await pc.post(f"{path}/exchange", json=body, headers={"origin": SHOP})
    assert r.status_code == 200, r.text
    assert allowed(r) == SHOP and r.json()["id_token"]
    # A later error is readable by the client's site too.
    r = await pc.post(f"{path}/exchange", json=body, headers={"origin": SHOP})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert allowed(r) == SHOP


async def test_errors_before_the_client_is_known(pc, shop):
    # A website of the pool may read why; anyone else gets no CORS headers.
    r = await pc.get("/api/qrcode/AAAAAAAAAAAAAAAAAAAAAA/status", headers={"origin": SHOP})
    assert r.status_code == 404 and allowed(r) == SHOP
    r = await pc.get("/api/qrcode/AAAAAAAAAAAAAAAAAAAAAA/status", headers={"origin": EVIL})
    assert r.status_code == 404 and allowed(r) is None


async def test_token_endpoint(pc, shop, other):
    form = {
        "grant_type": "authorization_code",
        "code": "nope",
        "redirect_uri": f"{SHOP}/cb",
        "client_id": shop.client_id,
        "code_verifier": "v" * 43,
    }
    r = await pc.post("/oidc/token", data=form, headers={"origin": OTHER})
    assert r.status_code == 403 and r.json()["error"] == "origin_not_allowed"
    r = await pc.post("/oidc/token", data=form, headers={"origin": SHOP})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert allowed(r) == SHOP
    r = await pc.post("/oidc/token", data=form)  # a backend: no Origin
    assert r.status_code == 400 and allowed(r) is None


async def test_other_routes_are_not_concerned(pc, shop):
    # Introspection is for confidential clients' backends only: no CORS. (JWKS and
    # discovery are public documents now: tests/test_oidc_rp.py.)
    r = await pc.post("/oidc/introspect", data={"token": "x"}, headers={"origin": EVIL})
    assert r.status_code == 400 and allowed(r) is None
