"""What a client may be granted (issue 16, finding 6), as an admin sets it in
the console's client form; the token paths that obey it are tested in
test_oidc.py and test_scan_flow.py."""

from __future__ import annotations

import re

import pytest

from portal.tenants import admins, clients, pools
from tests.test_console import PASSWORD, Console


@pytest.fixture
async def console(portal, db, box):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="alpha", name="Alpha", allow_http=True)
        await admins.create(conn, email="a@example.com", password=PASSWORD, pool_slugs=["alpha"])
    admin = Console(portal)
    assert (await admin.login("a@example.com")).status_code == 303
    yield admin
    await admin.aclose()


def ticked(html: str) -> set[str]:
    return set(re.findall(r'name="scope" value="([a-z_]+)" checked', html))


async def test_the_client_form_sets_what_a_client_may_be_granted(console: Console, db):
    page = await console.get("/console/pools/alpha/clients")
    # A new client: everything ticked by default (offline_access: confidential only).
    assert ticked(page.text) == {"profile", "phone", "offline_access"}
    form = {"name": "Shop", "redirect_uris": "https://shop.example/cb", "scopes_form": "1"}
    r = await console.post("/console/pools/alpha/clients", {**form, "scope": ["profile"]})
    assert r.status_code == 303, r.text
    pool_id = await db.fetchval("SELECT id FROM pools WHERE slug = 'alpha'")
    shop = await clients.get(db, pool_id, r.headers["location"].rsplit("/", 1)[-1])
    assert shop.scopes == ("openid", "profile") and not shop.may_refresh
    assert ticked((await console.get(r.headers["location"])).text) == {"profile"}
    # Edited: phone and refresh tokens allowed.
    r = await console.post(f"/console/pools/alpha/clients/{shop.client_id}",
                           {**form, "scope": ["phone", "offline_access"]})  # fmt: skip
    assert r.status_code == 303, r.text
    shop = await clients.get(db, pool_id, shop.client_id)
    assert shop.scopes == ("openid", "phone", "offline_access") and shop.may_refresh
    # A public client never gets offline_access, whatever is ticked.
    r = await console.post("/console/pools/alpha/clients",
                           {**form, "public": "on", "scope": ["profile", "offline_access"]})  # fmt: skip
    assert r.status_code == 303, r.text
    spa = await clients.get(db, pool_id, r.headers["location"].rsplit("/", 1)[-1])
    assert spa.is_public and spa.scopes == ("openid", "profile") and not spa.may_refresh
    # A form without the field (an old page) changes nothing.
    r = await console.post(f"/console/pools/alpha/clients/{shop.client_id}",
                           {"name": "Shop 2", "redirect_uris": "https://shop.example/cb"})  # fmt: skip
    assert r.status_code == 303
    assert (await clients.get(db, pool_id, shop.client_id)).scopes == shop.scopes
