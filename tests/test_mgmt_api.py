"""The management API (``/api/v1``, portal/mgmt) over real HTTP on real PostgreSQL
and Redis: the client credentials grant that authenticates it, every route with
and without its scope, another pool's token refused on every route, the
audience, the rate limit, pagination, errors, and the audit row of every write.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import httpx
import pytest

from portal import jobs, mgmt
from portal.oidc import tokens
from portal.settings import Limit
from portal.tenants import clients, pools
from portal.wechat import fake
from tests.support import free_socket, run_portal
from tests.test_openapi import Contract

ALL = list(clients.MANAGEMENT_SCOPES)
REDIRECT = "https://rp.example.com/callback"
HOOK = "https://hooks.example.com/in"
USER = "00000000-0000-4000-8000-000000000001"

# Every route: (method, path, the scope it needs, a body). {user}, {client}: filled in.
ROUTES = [
    ("GET", "/api/v1/users", "users:read", None),
    ("POST", "/api/v1/users", "users:write", {"nickname": "n"}),
    ("GET", "/api/v1/users/{user}", "users:read", None),
    ("PATCH", "/api/v1/users/{user}", "users:write", {"nickname": "x"}),
    ("DELETE", "/api/v1/users/{user}", "users:write", None),
    ("POST", "/api/v1/users/{user}/block", "users:write", None),
    ("POST", "/api/v1/users/{user}/unblock", "users:write", None),
    ("GET", "/api/v1/users/{user}/export", "users:read", None),
    ("GET", "/api/v1/users/{user}/identities", "users:read", None),
    ("DELETE", "/api/v1/users/{user}/identities/1", "users:write", None),
    ("GET", "/api/v1/clients", "clients:read", None),
    ("POST", "/api/v1/clients", "clients:write", {"name": "x", "redirect_uris": [REDIRECT]}),
    ("GET", "/api/v1/clients/{client}", "clients:read", None),
    ("PATCH", "/api/v1/clients/{client}", "clients:write", {"name": "y"}),
    ("DELETE", "/api/v1/clients/{client}", "clients:write", None),
    ("POST", "/api/v1/clients/{client}/secret", "clients:write", None),
    ("GET", "/api/v1/logins", "logins:read", None),
    ("GET", "/api/v1/webhooks", "webhooks:write", None),
    ("POST", "/api/v1/webhooks", "webhooks:write", {"url": HOOK, "events": ["user.created"]}),
    ("GET", "/api/v1/webhooks/{webhook}", "webhooks:write", None),
    ("PATCH", "/api/v1/webhooks/{webhook}", "webhooks:write", {"description": "x"}),
    ("DELETE", "/api/v1/webhooks/{webhook}", "webhooks:write", None),
    ("POST", "/api/v1/webhooks/{webhook}/secret", "webhooks:write", None),
    ("GET", "/api/v1/webhooks/{webhook}/deliveries", "webhooks:write", None),
    ("GET", "/api/v1/webhooks/{webhook}/deliveries/{delivery}", "webhooks:write", None),
    ("POST", "/api/v1/webhooks/{webhook}/deliveries/{delivery}/replay", "webhooks:write", None),
    ("GET", "/api/v1/audit", "settings:write", None),
    ("GET", "/api/v1/settings", "settings:write", None),
    ("PATCH", "/api/v1/settings", "settings:write", {"name": "Renamed"}),
]


async def _pool(conn, box, slug: str) -> dict:
    created = await pools.create(conn, box, slug=slug, name=slug.title())
    mgmt, secret = await clients.create_management(
        conn, box, pool_id=created.pool.id, name="Back office", scopes=ALL
    )
    rp, rp_secret = await clients.create(
        conn, box, pool_id=created.pool.id, name="RP", redirect_uris=[REDIRECT]
    )
    user = await conn.fetchval(
        """INSERT INTO users (pool_id, nickname, phone_number, phone_country_code)
           VALUES ($1, $2, '13800138000', '86') RETURNING id""",
        created.pool.id,
        f"{slug} user",
    )
    await conn.execute(
        """INSERT INTO wechat_identities (pool_id, user_id, appid, openid, unionid)
           VALUES ($1, $2, 'wx000000000000demo', $3, NULL)""",
        created.pool.id,
        user,
        f"openid-{slug}",
    )
    # A webhook endpoint with one delivery (an event it subscribes to).
    webhook = await conn.fetchval(
        """INSERT INTO webhook_endpoints (pool_id, url, events, secret_enc)
           VALUES ($1, $2, '{user.created}', '\\x00') RETURNING id""",
        created.pool.id,
        HOOK,
    )
    async with conn.transaction():
        await jobs.emit(conn, created.pool.id, "user.created", {"user_id": str(user)})
    delivery = await conn.fetchval(
        "SELECT id FROM webhook_deliveries WHERE endpoint_id = $1", webhook
    )
    return {
        "webhook": str(webhook),
        "delivery": delivery,
        "pool": created.pool,
        "mgmt": mgmt,
        "secret": secret,
        "rp": rp,
        "rp_secret": rp_secret,
        "user": str(user),
    }


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        return await _pool(conn, box, "acme")


@pytest.fixture
async def other(db, box):
    async with db.acquire() as conn:
        return await _pool(conn, box, "other")


async def get_token(http, client_id: str, secret: str, scope: str | None = None) -> str:
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    r = await http.post("/oidc/token", data=data, auth=(client_id, secret))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def documented(doc: dict):
    """A response hook checking every answer of /api/v1 against /openapi.json
    (status, content type, body schema, error codes)."""
    contract = Contract(doc)
    templates = [
        (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
        for path in doc["paths"]
        if path.startswith("/api/v1/")
    ]

    async def hook(r: httpx.Response) -> None:
        path = r.request.url.path
        if not path.startswith("/api/v1/"):
            return
        await r.aread()
        matches = [t for rx, t in templates if rx.match(path)]
        # The most specific template: a literal segment beats a parameter.
        template = min(matches, key=lambda t: t.count("{"))
        contract.check(r, template)

    return hook


@pytest.fixture
async def doc(portal) -> dict:
    async with portal.client() as apex:
        return (await apex.get("/openapi.json")).json()


@pytest.fixture
async def api(portal, acme, doc):
    """An HTTP client for acme's API, authenticated with every scope; every answer
    is checked against the OpenAPI document."""
    async with portal.client("acme", event_hooks={"response": [documented(doc)]}) as http:
        token = await get_token(http, acme["mgmt"].client_id, acme["secret"])
        http.headers["authorization"] = f"Bearer {token}"
        yield http


def _path(template: str, pool: dict) -> str:
    return template.format(
        user=pool["user"],
        client=pool["rp"].client_id,
        webhook=pool["webhook"],
        delivery=pool["delivery"],
    )


async def _call(http, method: str, path: str, body, token: str | None):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return await http.request(method, path, json=body, headers=headers)


async def audit_rows(db, pool_id: int) -> list[dict]:
    rows = await db.fetch(
        "SELECT actor_type, actor_id, action, target, before, after, ip FROM audit_log "
        "WHERE pool_id = $1 ORDER BY id",
        pool_id,
    )
    return [dict(r) for r in rows]


# --- the token ------------------------------------------------------------------


async def test_client_credentials_grant(portal, acme):
    async with portal.client("acme") as http:
        auth = (acme["mgmt"].client_id, acme["secret"])
        r = await http.post("/oidc/token", data={"grant_type": "client_credentials"}, auth=auth)
        assert r.status_code == 200
        body = r.json()
        assert body["token_type"] == "Bearer" and body["scope"] == " ".join(ALL)
        assert "refresh_token" not in body and "id_token" not in body
        assert r.headers["cache-control"] == "no-store"
        # Narrowed on request; never widened.
        r = await http.post(
            "/oidc/token",
            data={"grant_type": "client_credentials", "scope": "logins:read users:read"},
            auth=auth,
        )
        assert r.json()["scope"] == "users:read logins:read"
        r = await http.post(
            "/oidc/token",
            data={"grant_type": "client_credentials", "scope": "openid"},
            auth=auth,
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
        # A wrong secret; an application client; a management client at another grant.
        r = await http.post(
            "/oidc/token", data={"grant_type": "client_credentials"}, auth=(auth[0], "wrong")
        )
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        r = await http.post(
            "/oidc/token",
            data={"grant_type": "client_credentials"},
            auth=(acme["rp"].client_id, acme["rp_secret"]),
        )
        assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
        r = await http.post(
            "/oidc/token",
            data={"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT},
            auth=auth,
        )
        assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
        # Discovery offers the grant.
        meta = (await http.get("/.well-known/openid-configuration")).json()
        assert "client_credentials" in meta["grant_types_supported"]
        # A management client cannot make login tickets or open the login page.
        r = await http.post("/api/qrcode", json={"client_id": auth[0]})
        assert r.status_code == 400 and r.json()["error"] == "invalid_client"


async def test_a_management_client_revokes_its_token(portal, acme):
    """RFC 7009 at the pool's /oidc/revoke: the token stops working at once."""
    async with portal.client("acme") as http:
        auth = (acme["mgmt"].client_id, acme["secret"])
        token = await get_token(http, *auth)
        bearer = {"authorization": f"Bearer {token}"}
        assert (await http.get("/api/v1/users", headers=bearer)).status_code == 200
        # Another client cannot revoke it.
        r = await http.post(
            "/oidc/revoke", data={"token": token}, auth=(acme["rp"].client_id, acme["rp_secret"])
        )
        assert r.status_code == 200
        assert (await http.get("/api/v1/users", headers=bearer)).status_code == 200
        r = await http.post("/oidc/revoke", data={"token": token}, auth=auth)
        assert r.status_code == 200
        r = await http.get("/api/v1/users", headers=bearer)
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"


async def test_management_token_is_no_userinfo_token(api):
    """A management token is for the API only: userinfo refuses it (its ``sub`` is
    a client, not a user)."""
    r = await api.get("/oidc/userinfo")
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"


# --- every route: no token, another pool's, a user's, the wrong scope ------------


@pytest.mark.parametrize(("method", "template", "scope", "body"), ROUTES)
async def test_route_refuses_other_credentials(
    portal, db, box, acme, other, doc, method, template, scope, body
):
    path = _path(template, acme)
    async with portal.client("acme", event_hooks={"response": [documented(doc)]}) as http:
        # No token: 401 with the Bearer challenge, nothing changed.
        r = await _call(http, method, path, body, None)
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        assert r.headers["www-authenticate"].startswith('Bearer realm="')
        # Another pool's management token (every scope), on acme's host: refused.
        async with portal.client("other") as there:
            foreign = await get_token(there, other["mgmt"].client_id, other["secret"])
        r = await _call(http, method, path, body, foreign)
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        # The same other-pool token on its own host with acme's ids: acme's data is
        # not there (404, or acme's ids simply not found in the list).
        async with portal.client("other") as there:
            r = await _call(there, method, path, body, foreign)
            assert r.status_code in (200, 201, 204, 404), r.text
            if r.status_code == 200 and method == "GET" and template.endswith("/users"):
                assert acme["user"] not in r.text
        # An OpenID Connect access token of acme (audience: a client), even one for
        # the management client's own id: not a management token.
        async with db.acquire() as conn:
            user = dict(
                await conn.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(acme["user"]))
            )
            oidc = await tokens.issue(
                conn,
                portal.state["keys"],
                box,
                issuer=portal.settings.pool_url("acme"),
                pool=acme["pool"],
                client_pk=acme["rp"].id,
                client_id=acme["rp"].client_id,
                user=user,
                scope="openid profile",
                auth_time=int(time.time()),
            )
        r = await _call(http, method, path, body, oidc.access_token)
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        # Acme's own management client, with every scope but the one needed: 403.
        async with db.acquire() as conn:
            narrow, secret = await clients.create_management(
                conn, box, pool_id=acme["pool"].id, name="Narrow",
                scopes=[s for s in ALL if s != scope],
            )  # fmt: skip
        token = await get_token(http, narrow.client_id, secret)
        r = await _call(http, method, path, body, token)
        assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
        assert f'scope="{scope}"' in r.headers["www-authenticate"]
    # Nothing of acme changed through any of these.
    assert await audit_rows(db, acme["pool"].id) == []
    assert await db.fetchval("SELECT name FROM pools WHERE slug = 'acme'") == "Acme"
    assert await db.fetchval("SELECT count(*) FROM users WHERE pool_id = $1", acme["pool"].id) == 1


async def test_narrowed_client_narrows_live_tokens(portal, db, api, acme):
    """An admin who takes a scope away takes it from the client's live tokens at once;
    a deleted client's tokens stop working."""
    assert (await api.get("/api/v1/users")).status_code == 200
    r = await api.patch(
        f"/api/v1/clients/{acme['mgmt'].client_id}", json={"scopes": ["clients:write"]}
    )
    assert r.status_code == 200 and r.json()["scopes"] == ["clients:write"]
    r = await api.get("/api/v1/users")
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    r = await api.delete(f"/api/v1/clients/{acme['mgmt'].client_id}")
    assert r.status_code == 204
    r = await api.patch(f"/api/v1/clients/{acme['rp'].client_id}", json={"name": "Z"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"


# --- users --------------------------------------------------------------------------


async def test_users_crud(api, db, acme):
    pool_id = acme["pool"].id
    r = await api.post("/api/v1/users", json={"nickname": "Lin", "phone_number": "13900139000"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["nickname"] == "Lin" and created["phone_country_code"] == "86"
    uid = created["id"]
    r = await api.get(f"/api/v1/users/{uid}")
    assert r.status_code == 200 and r.json()["phone_number"] == "13900139000"
    assert r.json()["identities"] == []
    r = await api.patch(f"/api/v1/users/{uid}", json={"nickname": "Lin Wei", "avatar_url": None})
    assert r.status_code == 200 and r.json()["nickname"] == "Lin Wei"
    # Bad input: 400 in the error shape, nothing written.
    for bad in ({"phone_number": "12ab"}, {"nickname": 5}, {"email": "x@y"}):
        r = await api.patch(f"/api/v1/users/{uid}", json=bad)
        assert r.status_code == 400 and set(r.json()) == {"error", "error_description"}
    r = await api.post(f"/api/v1/users/{uid}/block")
    assert r.status_code == 200 and r.json()["blocked"] is True
    r = await api.post(f"/api/v1/users/{uid}/unblock")
    assert r.status_code == 200 and r.json()["blocked"] is False
    # Identities: the seeded user's one, unlinked.
    r = await api.get(f"/api/v1/users/{acme['user']}/identities")
    [identity] = r.json()["identities"]
    assert identity["openid"] == "openid-acme"
    r = await api.delete(f"/api/v1/users/{acme['user']}/identities/{identity['id']}")
    assert r.status_code == 204
    r = await api.delete(f"/api/v1/users/{acme['user']}/identities/{identity['id']}")
    assert r.status_code == 404 and r.json()["error"] == "identity_not_found"
    # Export (portal.privacy's, as the console's), then delete: nothing personal left.
    await db.execute(
        "INSERT INTO wechat_identities (pool_id, user_id, appid, openid) VALUES ($1, $2, $3, $4)",
        pool_id,
        uuid.UUID(uid),
        fake.DEMO_APPID,
        "openid-of-lin",
    )
    await db.execute(
        "INSERT INTO login_events (pool_id, user_id, appid, openid, result, ip) "
        "VALUES ($1, $2, $3, 'openid-of-lin', 'success', '203.0.113.9')",
        pool_id,
        uuid.UUID(uid),
        fake.DEMO_APPID,
    )
    r = await api.get(f"/api/v1/users/{uid}/export")
    assert r.status_code == 200 and r.json()["user"]["id"] == uid
    assert r.json()["user"]["phone_number"] == "13900139000"
    assert [i["openid"] for i in r.json()["wechat_identities"]] == ["openid-of-lin"]
    assert [e["ip"] for e in r.json()["login_events"]] == ["203.0.113.9"]
    r = await api.delete(f"/api/v1/users/{uid}")
    assert r.status_code == 204
    for table in ("users", "wechat_identities", "login_events", "refresh_tokens", "audit_log"):
        dump = await db.fetchval(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")
        for personal in ("13900139000", "openid-of-lin", "Lin Wei", "203.0.113.9"):
            assert personal not in dump, (table, personal)
    for method in ("GET", "DELETE", "PATCH"):
        r = await api.request(method, f"/api/v1/users/{uid}", json={"nickname": "a"})
        assert r.status_code == 404 and r.json()["error"] == "user_not_found"
    r = await api.get("/api/v1/users/not-a-uuid")
    assert r.status_code == 404
    # Every write is in the audit trail, by this client, from this address.
    rows = await audit_rows(db, pool_id)
    assert [r["action"] for r in rows] == [
        "user.create",
        "user.update",
        "user.block",
        "user.unblock",
        "user.unlink_identity",
        "user.export",
        "user.delete",
    ]
    assert {(r["actor_type"], r["actor_id"]) for r in rows} == {("client", acme["mgmt"].client_id)}
    assert all(r["ip"] is not None for r in rows)
    # No personal data in the trail.
    for row in rows:
        assert "13900139000" not in str(row) and "Lin" not in str(row)


async def test_users_search_and_cursor_pagination(api, db, acme):
    pool_id = acme["pool"].id
    for i in range(7):
        await db.execute(
            "INSERT INTO users (pool_id, nickname, created_at) VALUES ($1, $2, now() - make_interval(mins => $3))",
            pool_id,
            f"page-{i}",
            i,
        )
    seen, cursor = [], None
    while True:
        params = {"limit": "3", "q": "page-"}
        if cursor:
            params["cursor"] = cursor
        r = await api.get("/api/v1/users", params=params)
        assert r.status_code == 200
        body = r.json()
        seen += [u["nickname"] for u in body["users"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"page-{i}" for i in range(7)]  # newest first, each once
    r = await api.get("/api/v1/users", params={"q": "13800138"})
    assert [u["id"] for u in r.json()["users"]] == [acme["user"]]
    for bad in ({"limit": "0"}, {"limit": "101"}, {"cursor": "garbage!"}):
        r = await api.get("/api/v1/users", params=bad)
        assert r.status_code == 400, bad


# --- clients ------------------------------------------------------------------------


async def test_clients_crud(api, portal, db, acme):
    r = await api.get("/api/v1/clients")
    kinds = {c["client_id"]: c["type"] for c in r.json()["clients"]}
    assert kinds[acme["mgmt"].client_id] == "management"
    assert kinds[acme["rp"].client_id] == "application"
    r = await api.post(
        "/api/v1/clients",
        json={
            "name": "Shop",
            "redirect_uris": [REDIRECT],
            "web_origins": ["https://shop.example.com"],
        },
    )
    assert r.status_code == 201, r.text
    shop = r.json()
    assert shop["client_secret"] and shop["redirect_uris"] == [REDIRECT]
    r = await api.post("/api/v1/clients", json={"name": "Bad", "redirect_uris": ["javascript:x"]})
    assert r.status_code == 400
    r = await api.post(
        "/api/v1/clients", json={"type": "management", "name": "Robot", "scopes": ["logins:read"]}
    )
    assert r.status_code == 201 and r.json()["scopes"] == ["logins:read"]
    robot = r.json()
    r = await api.post(
        "/api/v1/clients", json={"type": "management", "name": "R2", "scopes": ["openid"]}
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = await api.patch(f"/api/v1/clients/{shop['client_id']}", json={"name": "Shop 2"})
    assert r.status_code == 200 and r.json()["name"] == "Shop 2"
    assert r.json()["redirect_uris"] == [REDIRECT]  # left as it was
    # Rotating a secret: the old one stops working at once, the new one works.
    r = await api.post(f"/api/v1/clients/{robot['client_id']}/secret")
    assert r.status_code == 200
    fresh = r.json()["client_secret"]
    async with portal.client("acme") as http:
        r = await http.post(
            "/oidc/token",
            data={"grant_type": "client_credentials"},
            auth=(robot["client_id"], robot["client_secret"]),
        )
        assert r.status_code == 401
        await get_token(http, robot["client_id"], fresh)
    r = await api.delete(f"/api/v1/clients/{shop['client_id']}")
    assert r.status_code == 204
    r = await api.get(f"/api/v1/clients/{shop['client_id']}")
    assert r.status_code == 404 and r.json()["error"] == "client_not_found"
    default = acme["pool"]
    default_id = await db.fetchval(
        "SELECT client_id FROM clients WHERE pool_id = $1 AND is_default", default.id
    )
    r = await api.delete(f"/api/v1/clients/{default_id}")
    assert r.status_code == 409 and r.json()["error"] == "default_client"
    rows = await audit_rows(db, acme["pool"].id)
    assert [r["action"] for r in rows] == [
        "client.create",
        "client.create",
        "client.update",
        "client.rotate_secret",
        "client.delete",
    ]
    assert not any(fresh in str(r) or robot["client_secret"] in str(r) for r in rows)


# --- the login log ----------------------------------------------------------------------


async def test_logins_filters_and_pagination(api, db, acme):
    pool_id = acme["pool"].id
    uid = uuid.UUID(acme["user"])
    await db.execute(
        """INSERT INTO login_events (pool_id, user_id, client_id, result, created_at)
           SELECT $1, CASE WHEN i % 2 = 0 THEN $2::uuid END, CASE WHEN i % 3 = 0 THEN 'cA' ELSE 'cB' END,
                  CASE WHEN i % 5 = 0 THEN 'user_blocked' ELSE 'success' END,
                  timestamptz '2026-03-01 12:00+00' - make_interval(hours => i)
           FROM generate_series(0, 119) AS i""",
        pool_id,
        uid,
    )
    ids, cursor = [], None
    while True:
        r = await api.get("/api/v1/logins", params={"cursor": cursor} if cursor else {})
        assert r.status_code == 200
        ids += [e["id"] for e in r.json()["login_events"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert len(ids) == 120 == len(set(ids))
    r = await api.get("/api/v1/logins", params={"result": "user_blocked"})
    assert {e["result"] for e in r.json()["login_events"]} == {"user_blocked"}
    assert len(r.json()["login_events"]) == 24
    r = await api.get("/api/v1/logins", params={"user_id": str(uid), "client_id": "cA"})
    assert len(r.json()["login_events"]) == 20  # i even and a multiple of 3
    r = await api.get("/api/v1/logins", params={"since": "2026-03-01", "until": "2026-03-01"})
    assert len(r.json()["login_events"]) == 13  # hours 0..12 of March 1st
    for bad in ({"since": "yesterday"}, {"user_id": "x"}, {"cursor": "nope"}):
        r = await api.get("/api/v1/logins", params=bad)
        assert r.status_code == 400 and r.json()["error"] in ("invalid_request", "invalid_cursor")


# --- settings --------------------------------------------------------------------------


async def test_settings(api, db, acme, fresh_fake):
    r = await api.get("/api/v1/settings")
    assert r.status_code == 200
    assert r.json()["qr_lifetime"] == 120 and "mp_secret" not in r.json()
    r = await api.patch(
        "/api/v1/settings",
        json={"name": "Acme 2", "qr_lifetime": 300, "login_only": True, "callback_url": REDIRECT},
    )
    assert r.status_code == 200, r.text
    r = await api.patch(
        "/api/v1/settings", json={"number_match": True, "scan_source_policy": "refuse"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["number_match"] is True and r.json()["scan_source_policy"] == "refuse"
    assert r.json()["name"] == "Acme 2" and r.json()["qr_lifetime"] == 300
    assert await db.fetchval("SELECT qr_lifetime FROM pools WHERE id = $1", acme["pool"].id) == 300
    # The default client gets the callback URL, as from the console.
    uris = await db.fetchval(
        "SELECT redirect_uris FROM clients WHERE pool_id = $1 AND is_default", acme["pool"].id
    )
    assert REDIRECT in uris
    for bad in (
        {"qr_lifetime": 5},
        {"qr_lifetime": True},
        {"qr_type": "nope"},
        {"id": 9},
        {"callback_url": "http://evil.example.com/"},
        {"mp_appid": "wx1234567890abcdef", "mp_secret": "short"},
    ):
        r = await api.patch("/api/v1/settings", json=bad)
        assert r.status_code == 400, (bad, r.text)
    # A private mini program: the AppSecret is checked with WeChat, then never shown.
    appid, secret = "wx1234567890abcdef", "s3cretS3cretS3cretS3cret12"
    async with httpx.AsyncClient() as h:
        await h.post(f"{fresh_fake.url}/_fake/apps", json={"appid": appid, "secret": secret})
    r = await api.patch("/api/v1/settings", json={"mp_appid": appid, "mp_secret": "x" * 24})
    assert r.status_code >= 400 and r.json()["error"]
    r = await api.patch("/api/v1/settings", json={"mp_appid": appid, "mp_secret": secret})
    assert r.status_code == 200, r.text
    assert r.json()["mp_appid"] == appid and secret not in r.text
    # Retention (portal.privacy's, as the console's): checked, then applied.
    r = await api.patch(
        "/api/v1/settings", json={"login_retention_days": 90, "ip_retention_days": 7}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["login_retention_days"], r.json()["ip_retention_days"]) == (90, 7)
    for bad in ({"ip_retention_days": 91}, {"login_retention_days": 0}, {"ip_retention_days": "7"}):
        r = await api.patch("/api/v1/settings", json=bad)
        assert r.status_code == 400, (bad, r.text)
    rows = await audit_rows(db, acme["pool"].id)
    assert [r["action"] for r in rows] == [
        "settings.update",
        "settings.update",
        "settings.update",
        "pool.update",
    ]
    assert secret not in str(rows)
    assert fake.DEMO_APPID  # the platform's default is not a private one


# --- the rate limit ----------------------------------------------------------------------


async def test_rate_limit_per_client(db, redis_client, settings_factory, acme, box):
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}", rate_mgmt=Limit(5, 60)
    )
    async with db.acquire() as conn:
        second, second_secret = await clients.create_management(
            conn, box, pool_id=acme["pool"].id, name="Second", scopes=["users:read"]
        )
    async with run_portal(settings, sock=sock) as running, running.client("acme") as http:
        first = await get_token(http, acme["mgmt"].client_id, acme["secret"])
        other = await get_token(http, second.client_id, second_secret)
        # In parallel: exactly the limit gets through (one counter in Redis, one
        # atomic step per call), whatever the interleaving.
        answers = await asyncio.gather(
            *(_call(http, "GET", "/api/v1/users", None, first) for _ in range(12))
        )
        codes = sorted(r.status_code for r in answers)
        assert codes == [200] * 5 + [429] * 7
        r = await _call(http, "GET", "/api/v1/users", None, first)
        assert r.json()["error"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        # Another client keeps its own budget.
        r = await _call(http, "GET", "/api/v1/users", None, other)
        assert r.status_code == 200


# --- webhooks' events ------------------------------------------------------------------


async def test_writes_emit_the_consoles_events(api, db, acme):
    """Each write emits its webhook event in its own transaction (the console's store
    functions emit them, so the console and the API emit the same)."""
    pool_id = acme["pool"].id
    if await db.fetchval("SELECT to_regclass('webhook_endpoints') IS NOT NULL"):
        # The outbox keeps only events some endpoint subscribes to (sql/0008).
        await db.execute(
            """INSERT INTO webhook_endpoints (pool_id, url, events, secret_enc)
               VALUES ($1, 'https://hooks.example.com/in', $2, '\\x00')""",
            pool_id,
            [
                "user.created", "user.updated", "user.blocked", "user.unblocked",
                "user.deleted", "client.created", "client.deleted", "settings.updated",
            ],
        )  # fmt: skip
    await db.execute("DELETE FROM events WHERE pool_id = $1", pool_id)  # the fixture's clients
    uid = (await api.post("/api/v1/users", json={"nickname": "Ann"})).json()["id"]
    await api.patch(f"/api/v1/users/{uid}", json={"nickname": "Anna"})
    await api.post(f"/api/v1/users/{uid}/block")
    await api.post(f"/api/v1/users/{uid}/unblock")
    await api.delete(f"/api/v1/users/{uid}")
    made = (
        await api.post("/api/v1/clients", json={"name": "S", "redirect_uris": [REDIRECT]})
    ).json()
    await api.delete(f"/api/v1/clients/{made['client_id']}")
    await api.patch("/api/v1/settings", json={"qr_lifetime": 90, "name": "Acme"})
    # A refused write emits nothing.
    assert (await api.patch("/api/v1/settings", json={"qr_lifetime": 1})).status_code == 400
    rows = await db.fetch(
        "SELECT type, data::text AS data FROM events WHERE pool_id = $1 ORDER BY created_at",
        pool_id,
    )
    assert [(r["type"], json.loads(r["data"])) for r in rows] == [
        ("user.created", {"user_id": uid}),
        ("user.updated", {"user_id": uid, "fields": ["nickname"]}),
        ("user.blocked", {"user_id": uid}),
        ("user.unblocked", {"user_id": uid}),
        ("user.deleted", {"user_id": uid}),
        ("client.created", {"client_id": made["client_id"]}),
        ("client.deleted", {"client_id": made["client_id"]}),
        ("settings.updated", {"fields": ["qr_lifetime"]}),
    ]
    assert "Ann" not in str([r["data"] for r in rows])  # identifiers, no personal data


# --- webhooks ---------------------------------------------------------------------------


async def test_webhooks(api, db, acme):
    """Endpoints (secret shown once), the delivery log and replay: portal.webhooks'
    functions, as the console's."""
    pool_id, hook = acme["pool"].id, acme["webhook"]
    r = await api.get("/api/v1/webhooks")
    assert [w["id"] for w in r.json()["webhooks"]] == [hook]
    for bad in (
        {"url": "http://127.0.0.1:9/in", "events": ["user.created"]},
        {"url": "https://10.0.0.8/in", "events": ["user.created"]},
        {"url": HOOK, "events": ["no.such"]},
        {"url": HOOK},
    ):
        r = await api.post("/api/v1/webhooks", json=bad)
        assert r.status_code == 400, (bad, r.text)
    r = await api.post(
        "/api/v1/webhooks", json={"url": HOOK + "2", "events": ["user.deleted", "login.failed"]}
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["secret"].startswith("whsec_") and made["events"] == [
        "login.failed",
        "user.deleted",
    ]
    r = await api.patch(f"/api/v1/webhooks/{made['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = await api.post(f"/api/v1/webhooks/{made['id']}/secret")
    assert r.status_code == 200 and r.json()["secret"] not in (made["secret"], None)
    assert "secret" not in (await api.get(f"/api/v1/webhooks/{made['id']}")).json()
    # The fixture's endpoint has one delivery; its log, then a replay.
    r = await api.get(f"/api/v1/webhooks/{hook}/deliveries", params={"limit": "10"})
    [delivery] = r.json()["deliveries"]
    assert delivery["event_type"] == "user.created" and r.json()["next_cursor"] is None
    r = await api.get(f"/api/v1/webhooks/{hook}/deliveries/{delivery['id']}")
    assert r.status_code == 200 and r.json()["event_id"] == delivery["event_id"]
    jobs_before = await db.fetchval(
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'webhooks.deliver'"
    )
    r = await api.post(f"/api/v1/webhooks/{hook}/deliveries/{delivery['id']}/replay")
    assert r.status_code == 202 and r.json()["delivery_id"] == delivery["id"]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'webhooks.deliver'"
        )
        == jobs_before + 1
    )
    # A delivery is found only under its own endpoint.
    r = await api.get(f"/api/v1/webhooks/{made['id']}/deliveries/{delivery['id']}")
    assert r.status_code == 404
    r = await api.delete(f"/api/v1/webhooks/{made['id']}")
    assert r.status_code == 204
    assert (await api.get(f"/api/v1/webhooks/{made['id']}")).status_code == 404
    assert (await api.get("/api/v1/webhooks/not-an-id")).status_code == 404
    rows = await audit_rows(db, pool_id)
    assert [r["action"] for r in rows] == [
        "webhook.create",
        "webhook.update",
        "webhook.rotate_secret",
        "webhook.replay",
        "webhook.delete",
    ]
    assert made["secret"] not in str(rows)


# --- the audit trail ----------------------------------------------------------------------


async def test_audit_trail(api, db, acme):
    """The pool's trail through the API: filters, pagination; never another pool's."""
    for i in range(3):
        await api.patch("/api/v1/settings", json={"qr_lifetime": 100 + i})
    await api.post(f"/api/v1/users/{acme['user']}/block")
    r = await api.get("/api/v1/audit", params={"limit": "2"})
    assert r.status_code == 200
    first = r.json()
    assert [e["action"] for e in first["entries"]] == ["user.block", "settings.update"]
    entry = first["entries"][0]
    assert entry["actor"] == {"type": "client", "id": acme["mgmt"].client_id, "label": None}
    assert entry["target"] == acme["user"] and entry["pool"] == "acme"
    r = await api.get("/api/v1/audit", params={"limit": "2", "cursor": first["next_cursor"]})
    assert [e["after"] for e in r.json()["entries"]] == [
        {"qr_lifetime": 101},
        {"qr_lifetime": 100},
    ]
    assert r.json()["next_cursor"] is None
    r = await api.get("/api/v1/audit", params={"action": "user"})
    assert [e["action"] for e in r.json()["entries"]] == ["user.block"]
    r = await api.get("/api/v1/audit", params={"actor": f"client:{acme['mgmt'].client_id}"})
    assert len(r.json()["entries"]) == 4
    # Another pool's rows are not in this pool's trail.
    await db.execute(
        "INSERT INTO audit_log (pool_id, pool_slug, actor_type, actor_id, action) "
        "VALUES ($1, 'other', 'cli', 'cli', 'client.create')",
        acme["pool"].id + 1000,
    )
    r = await api.get("/api/v1/audit")
    assert len(r.json()["entries"]) == 4
    for bad in ({"cursor": "x"}, {"since": "soon"}, {"limit": "500"}):
        assert (await api.get("/api/v1/audit", params=bad)).status_code == 400


def test_every_route_is_in_the_refusal_table():
    """A route added to the API without a row in ROUTES would escape the refusal
    test (no token, another pool's, an OIDC token, a missing scope): not allowed."""
    names = {"user_id": "user", "client_id": "client", "endpoint_id": "webhook"}
    names |= {"delivery_id": "delivery", "identity_id": "1"}
    in_app = set()
    for route in mgmt.routes():
        path = route.path
        for param, placeholder in names.items():
            path = path.replace(
                "{" + param + "}", placeholder if placeholder == "1" else "{" + placeholder + "}"
            )
        in_app |= {(m, path) for m in route.methods if m != "HEAD"}
    assert in_app == {(method, template) for method, template, _, _ in ROUTES}
