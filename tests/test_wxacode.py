"""Mini-program codes (pools with ``qr_type = 'wxacode'``) over real HTTP, made by the
fake WeChat through the portal's cached access token."""

import asyncio
import hashlib
import io
import json

import httpx
import pytest
import segno
import zxingcpp
from PIL import Image

from portal.scan import wxacode
from portal.scan.qrimage import normalize_logo
from portal.tenants import pools

RED = (220, 20, 60)


def red_logo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 200), RED).save(out, "PNG")
    return normalize_logo(out.getvalue())


def decode(png: bytes) -> str:
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(results) == 1, "exactly one readable code"
    return results[0].text


async def change_pool(db, portal, assignment: str, *args) -> None:
    """A pool setting changed as the console does it: written, then announced."""
    await db.execute(f"UPDATE pools SET {assignment} WHERE slug = 'acme'", *args)
    await pools.announce_change(portal.state["hub"], "acme")
    for _ in range(100):
        if portal.state["pools"]._entries.get("acme") is None:
            return
        await asyncio.sleep(0.01)


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        created = await pools.create(
            conn, box, slug="acme", name="Acme", allow_http=True, qr_type="wxacode"
        )
    logo = red_logo()
    await db.execute(
        "UPDATE pools SET logo_png = $1, logo_sha256 = $2 WHERE id = $3",
        logo,
        hashlib.sha256(logo).hexdigest(),
        created.pool.id,
    )
    return created


@pytest.fixture
async def pc(portal, acme, fresh_fake):
    async with portal.client("acme") as client:
        yield client


@pytest.fixture
async def control(fresh_fake):
    async with httpx.AsyncClient(base_url=fresh_fake.url) as client:
        yield client


async def new_ticket(pc) -> dict:
    r = await pc.post("/api/qrcode")
    assert r.status_code == 201, r.text
    return r.json()


async def wxacode_calls(control) -> int:
    return (await control.get("/_fake/stats")).json()["calls"].get("/wxa/getwxacodeunlimit", 0)


async def test_the_image_is_a_mini_program_code_with_the_logo(pc, control):
    t = await new_ticket(pc)
    assert len(t["ticket"]) <= wxacode.SCENE_MAX
    r = await pc.get(f"/api/qrcode/{t['ticket']}.png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-qr-type"] == "wxacode"
    # The fake's code encodes the scene: the ticket, which the mini program reads back.
    assert decode(r.content) == t["ticket"]
    im = Image.open(io.BytesIO(r.content)).convert("RGB")
    assert im.getpixel((im.width // 2, im.height // 2)) == pytest.approx(RED, abs=3)
    # Around the logo, a white ring; far from the centre, the code's own black and white.
    ring = round(im.width * (wxacode._LOGO_RATIO / 2 + wxacode._RING / 2))
    assert im.getpixel((im.width // 2 + ring, im.height // 2)) == (255, 255, 255)
    assert im.getpixel((2, 2)) == (255, 255, 255)
    assert await wxacode_calls(control) == 1


async def test_the_image_is_cached_per_ticket(pc, control):
    t = await new_ticket(pc)
    first = await pc.get(f"/api/qrcode/{t['ticket']}.png")
    again = await asyncio.gather(*(pc.get(f"/api/qrcode/{t['ticket']}.png") for _ in range(5)))
    assert all(r.content == first.content for r in again)
    svg = await pc.get(f"/api/qrcode/{t['ticket']}.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "data:image/png;base64," in svg.text
    assert await wxacode_calls(control) == 1  # one call for seven images
    other = await new_ticket(pc)
    assert decode((await pc.get(f"/api/qrcode/{other['ticket']}.png")).content) == (other["ticket"])
    assert await wxacode_calls(control) == 2


async def test_concurrent_first_requests_make_one_call(pc, control):
    t = await new_ticket(pc)
    answers = await asyncio.gather(*(pc.get(f"/api/qrcode/{t['ticket']}.png") for _ in range(8)))
    assert {r.status_code for r in answers} == {200}
    assert await wxacode_calls(control) == 1


async def test_a_refused_access_token_is_refreshed_once(pc, control):
    t = await new_ticket(pc)
    await pc.get(f"/api/qrcode/{t['ticket']}.png")  # the token is now cached
    t = await new_ticket(pc)
    await control.post("/_fake/faults", json={"path": "/wxa/getwxacodeunlimit", "errcode": 40001})
    r = await pc.get(f"/api/qrcode/{t['ticket']}.png")
    assert r.status_code == 200 and decode(r.content) == t["ticket"]


async def _set_fault(control, case: str) -> None:
    if case == "41030":  # the login page is not published in this mini program
        r = await control.post("/_fake/wxacode", json={"pages": ["pages/index/index"]})
    elif case == "45009":  # today's quota is spent
        r = await control.post("/_fake/wxacode", json={"daily_quota": 0})
    elif case == "40169":
        r = await control.post(
            "/_fake/faults", json={"path": "/wxa/getwxacodeunlimit", "errcode": 40169}
        )
    else:  # WeChat down: every attempt answers -1
        r = await control.post(
            "/_fake/faults", json={"path": "/wxa/getwxacodeunlimit", "errcode": -1, "times": 3}
        )
    r.raise_for_status()


ERRORS = [
    ("41030", 502, "wxacode_invalid_page"),
    ("40169", 400, "wxacode_invalid_scene"),
    ("45009", 503, "wxacode_quota_exceeded"),
    ("-1", 502, "wxacode_unavailable"),
]


@pytest.mark.parametrize(("case", "status", "error"), ERRORS)
async def test_wechat_errors_are_clear_errors_without_fallback(
    pc, control, db, portal, case, status, error
):
    await change_pool(db, portal, "qr_fallback = false")
    await _set_fault(control, case)
    t = await new_ticket(pc)
    r = await pc.get(f"/api/qrcode/{t['ticket']}.png")
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error
    assert body["error_description"] and "access_token" not in body["error_description"]


@pytest.mark.parametrize(("case", "status", "error"), ERRORS)
async def test_wechat_errors_fall_back_to_the_link_qr(pc, control, portal, case, status, error):
    await _set_fault(control, case)
    t = await new_ticket(pc)
    r = await pc.get(f"/api/qrcode/{t['ticket']}.png")
    assert r.status_code == 200, r.text
    assert "x-qr-type" not in r.headers
    assert decode(r.content) == t["qrcode"]["content"]
    assert t["qrcode"]["content"] == f"http://localhost:{portal.port}/q/{t['ticket']}"
    # The refusal is remembered for the ticket: the next image does not ask WeChat again.
    calls = await wxacode_calls(control)
    assert (await pc.get(f"/api/qrcode/{t['ticket']}.svg")).status_code == 200
    assert await wxacode_calls(control) == calls


async def test_after_45009_wechat_is_not_asked_again_for_a_while(pc, control):
    await _set_fault(control, "45009")
    for _ in range(3):
        t = await new_ticket(pc)
        assert (await pc.get(f"/api/qrcode/{t['ticket']}.png")).status_code == 200
    assert await wxacode_calls(control) == 1


async def test_link_pools_never_call_wechat(pc, control, db, portal):
    await change_pool(db, portal, "qr_type = 'link'")
    t = await new_ticket(pc)
    r = await pc.get(f"/api/qrcode/{t['ticket']}.png")
    assert decode(r.content) == t["qrcode"]["content"]
    assert await wxacode_calls(control) == 0


async def test_set_qr_type(db, box):
    async with db.acquire() as conn:
        await pools.create(conn, box, slug="beta", name="Beta")
        pool = await pools.set_qr_type(conn, "beta", "wxacode", fallback=False)
        assert (pool.qr_type, pool.qr_fallback) == ("wxacode", False)
        pool = await pools.set_qr_type(conn, "beta", "link")
        assert (pool.qr_type, pool.qr_fallback) == ("link", False)
        with pytest.raises(pools.ValidationError):
            await pools.set_qr_type(conn, "beta", "barcode")
        assert await pools.set_qr_type(conn, "nope", "link") is None


async def test_cli_pool_create_and_set(db, portal_cli):
    def run(*args: str) -> dict:
        r = portal_cli(*args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    assert run("pool", "create", "gamma", "--name", "G", "--qr-type", "wxacode")["qr_type"] == (
        "wxacode"
    )
    assert run("pool", "set", "gamma", "--qr-type", "link", "--no-qr-fallback") == {
        "slug": "gamma",
        "qr_type": "link",
        "qr_fallback": False,
    }
    row = await db.fetchrow("SELECT qr_type, qr_fallback FROM pools WHERE slug = 'gamma'")
    assert tuple(row) == ("link", False)


@pytest.mark.parametrize("scale", [4, 10])
def test_composite_keeps_the_code_readable(scale):
    scene = "AbCdEfGhIjKlMnOpQrStUvWxYz012345"
    out = io.BytesIO()
    segno.make_qr(scene, error="h").save(out, kind="png", scale=scale, border=4)
    for logo in (None, red_logo()):
        assert decode(wxacode.composite(out.getvalue(), logo)) == scene
