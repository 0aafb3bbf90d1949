"""The SDK's route (portal/web/sdk.py): where it is served, how it is cached, its size."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest

from portal.tenants import pools
from portal.web import sdk

GZIP_BUDGET = 10 * 1024  # a user-facing budget: docs/sdk.md


@pytest.fixture
async def pc(portal, db, box):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme", allow_http=True)
    async with portal.client("acme") as client:
        yield client


async def test_served_on_a_pool_host(pc):
    r = await pc.get(sdk.PATH, headers={"accept-encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.content == sdk.SOURCE.read_bytes()
    assert "content-encoding" not in r.headers
    etag = r.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")  # strong
    assert r.headers["cache-control"].startswith("public, max-age=3600")
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["vary"] == "Accept-Encoding"
    assert b"window.Portal" in r.content

    again = await pc.get(sdk.PATH, headers={"accept-encoding": "identity", "if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag

    head = await pc.head(sdk.PATH, headers={"accept-encoding": "identity"})
    assert head.status_code == 200 and head.headers["etag"] == etag


async def test_gzip_when_accepted_and_under_budget(pc):
    async with pc.stream("GET", sdk.PATH, headers={"accept-encoding": "gzip, br"}) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == sdk.SOURCE.read_bytes()
    assert len(raw) < GZIP_BUDGET, f"the SDK is {len(raw)} bytes gzipped"
    assert r.headers["etag"] != f'"{sdk.version()}"'  # other bytes, other strong ETag
    refused = await pc.get(sdk.PATH, headers={"accept-encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


async def test_the_versioned_url_is_immutable(pc):
    r = await pc.get(sdk.PATH, params={"v": sdk.version()})
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    stale = await pc.get(sdk.PATH, params={"v": "0" * 16})  # an old version: not pinned
    assert stale.headers["cache-control"].startswith("public, max-age=3600")


async def test_only_on_pool_hosts(portal):
    async with portal.client() as apex:
        assert (await apex.get(sdk.PATH)).status_code == 404


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to parse the SDK")
def test_the_sdk_parses():
    subprocess.run(["node", "--check", str(sdk.SOURCE)], check=True, timeout=30)
