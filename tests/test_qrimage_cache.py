"""A ticket's QR image is rendered once, cached, served with cache headers, and
rendering is limited per address (issue 16, finding 4), over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections import Counter

import httpx
import pytest
import zxingcpp
from PIL import Image

from portal.scan import qrimage
from portal.tenants import pools
from tests.support import TRUST_LOCALHOST, forwarded_for, free_socket, run_portal


@pytest.fixture
async def running(db, redis_client, box, settings_factory):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="acme", name="Acme")
    sock = free_socket()
    settings = settings_factory(
        base_url=f"http://localhost:{sock.getsockname()[1]}", trusted_proxies=TRUST_LOCALHOST
    )
    async with run_portal(settings, sock=sock) as portal:
        yield portal


@pytest.fixture
def renders(monkeypatch) -> Counter:
    """How many times each kind of image was rendered (the real renderer, counted)."""
    counted: Counter = Counter()
    for name in ("render_png", "render_svg"):
        real = getattr(qrimage, name)

        def counting(*args, _real=real, _name=name, **kwargs):
            counted[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(qrimage, name, counting)
    return counted


async def test_an_image_is_rendered_once_and_kept_by_the_browser(running, renders, redis_client):
    limits = httpx.Limits(max_connections=100)
    async with running.client("acme", limits=limits) as acme:
        t = (await acme.post("/api/qrcode", json={})).json()
        png_url = f"/api/qrcode/{t['ticket']}.png"
        # Fifty browsers (or one attacker) at once, two workers' worth of formats.
        answers = await asyncio.gather(
            *(acme.get(png_url, headers=forwarded_for(f"198.51.100.{i}")) for i in range(50)),
            *(acme.get(f"/api/qrcode/{t['ticket']}.svg") for _ in range(10)),
        )
        assert {r.status_code for r in answers} == {200}
        assert renders == {"render_png": 1, "render_svg": 1}
        pngs = {r.content for r in answers if r.headers["content-type"] == "image/png"}
        assert len(pngs) == 1
        text = zxingcpp.read_barcodes(Image.open(io.BytesIO(pngs.pop())))[0].text
        assert text == t["qrcode"]["content"]
        # Cached in Redis for the ticket's life, not longer.
        keys = await redis_client.keys(f"qrimg:*:{t['ticket']}:*")
        assert len(keys) == 2
        assert 0 < await redis_client.ttl(keys[0]) <= t["expires_in"]
        # The browser may keep it for the ticket's life, and revalidates for nothing.
        r = answers[0]
        assert r.headers["etag"]
        directives = {d.strip() for d in r.headers["cache-control"].split(",")}
        assert {"private", "immutable"} <= directives
        max_age = next(int(d[8:]) for d in directives if d.startswith("max-age="))
        assert 0 < max_age <= t["expires_in"]
        again = await acme.get(png_url, headers={"if-none-match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == r.headers["etag"]
        assert renders == {"render_png": 1, "render_svg": 1}


async def test_a_new_logo_is_a_new_image(running, renders, db):
    from tests.test_wxacode import change_pool, red_logo

    async with running.client("acme") as acme:
        t = (await acme.post("/api/qrcode", json={})).json()
        before = await acme.get(f"/api/qrcode/{t['ticket']}.png")
        logo = red_logo()
        await change_pool(
            db,
            running,
            "logo_png = $1, logo_sha256 = $2",
            logo,
            hashlib.sha256(logo).hexdigest(),
        )
        after = await acme.get(f"/api/qrcode/{t['ticket']}.png")
        assert after.headers["etag"] != before.headers["etag"]
        assert after.content != before.content
        assert renders["render_png"] == 2


async def test_rendering_is_limited_per_address(running, renders):
    """Many tickets' images at once from one address: at most PORTAL_RATE_QR_IMAGE
    (120 a minute) are rendered; an image already made is still served."""
    limits = httpx.Limits(max_connections=100)
    async with running.client("acme", limits=limits) as acme:
        tickets = []
        for i in range(125):  # made from several addresses (the QR limit is per address)
            r = await acme.post(
                "/api/qrcode", json={}, headers=forwarded_for(f"192.0.2.{i // 100}")
            )
            tickets.append(r.json())
        attacker = forwarded_for("203.0.113.7")
        answers = await asyncio.gather(
            *(acme.get(f"/api/qrcode/{t['ticket']}.png", headers=attacker) for t in tickets)
        )
        codes = Counter(r.status_code for r in answers)
        assert codes == {200: 120, 429: 5}
        assert renders["render_png"] == 120
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.json()["error"] == "rate_limited" and int(refused.headers["retry-after"])
        # Another address gets a refused image rendered; the attacker, a made one.
        index = answers.index(refused)
        url = f"/api/qrcode/{tickets[index]['ticket']}.png"
        assert (await acme.get(url, headers=forwarded_for("203.0.113.8"))).status_code == 200
        assert (await acme.get(url, headers=attacker)).status_code == 200
