"""Avatars uploaded by the mini program (portal/scan/avatars.py), over real HTTP."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from portal.scan import qrimage
from portal.tenants import pools
from tests.phone import Phone


def image_bytes(size=(300, 200), colour=(200, 30, 30), fmt="PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


@pytest.fixture
async def acme(db, box):
    async with db.acquire() as conn:
        return await pools.create(conn, box, slug="acme", name="Acme")


@pytest.fixture
async def phone(portal, fresh_fake):
    async with portal.client() as apex:
        p = Phone(apex, "avatar_amy")
        (await p.login()).raise_for_status()
        yield p


def _auth(phone: Phone) -> dict[str, str]:
    return {"authorization": f"Bearer {phone.token}"}


async def test_an_uploaded_avatar_is_reencoded_stored_once_and_served(phone, portal, db):
    jpeg = image_bytes(fmt="JPEG")
    r = await phone.client.post(
        "/api/mp/avatar", files={"avatar": ("tmp.jpg", jpeg, "image/jpeg")}, headers=_auth(phone)
    )
    assert r.status_code == 201, r.text
    url = r.json()["avatar_url"]
    assert url.startswith(f"{portal.settings.base_url}/avatars/") and url.endswith(".png")
    # The same picture again (as a raw body this time): the same avatar, stored once.
    again = await phone.client.post(
        "/api/mp/avatar",
        content=jpeg,
        headers={**_auth(phone), "content-type": "image/jpeg"},
    )
    assert again.status_code == 201 and again.json()["avatar_url"] == url
    assert await db.fetchval("SELECT count(*) FROM avatars") == 1
    served = await phone.client.get(url.removeprefix(portal.settings.base_url))
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert "immutable" in served.headers["cache-control"]
    im = Image.open(io.BytesIO(served.content))
    assert im.size == (qrimage.AVATAR_SIZE, qrimage.AVATAR_SIZE) and im.mode == "RGB"
    assert im.info.get("exif") is None
    red, green, blue = im.getpixel((66, 66))  # the picture itself, not a placeholder
    assert abs(red - 200) < 8 and green < 40 and blue < 40


async def test_bad_uploads_are_refused_and_store_nothing(phone, db):
    cases = [
        ({"files": {"avatar": ("x.gif", b"GIF89a....", "image/gif")}}, 400, "invalid_avatar"),
        ({"files": {"other": ("a.png", image_bytes(), "image/png")}}, 400, "invalid_avatar"),
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, None),
        (
            {"content": b"\x00" * 1_200_000, "headers": {"content-type": "image/png"}},
            413,
            "request_too_large",
        ),
    ]
    for kwargs, status, error in cases:
        headers = {**_auth(phone), **kwargs.pop("headers", {})}
        r = await phone.client.post("/api/mp/avatar", headers=headers, **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        assert set(r.json()) == {"error", "error_description"}
        if error:
            assert r.json()["error"] == error
    r = await phone.client.post(
        "/api/mp/avatar", files={"avatar": ("a.png", image_bytes(), "image/png")}
    )
    assert r.status_code == 401  # no session
    assert await db.fetchval("SELECT count(*) FROM avatars") == 0
    for name in ("nothere", "0" * 64):
        assert (await phone.client.get(f"/avatars/{name}.png")).status_code == 404


async def test_the_uploaded_avatar_reaches_the_pc_page_and_the_user(phone, portal, acme):
    async with portal.client("acme") as pc:
        t = (await pc.post("/api/qrcode", json={})).json()
        assert (await phone.scan(t["ticket"])).status_code == 200
        r = await phone.client.post(
            "/api/mp/avatar",
            files={"avatar": ("a.png", image_bytes(), "image/png")},
            headers=_auth(phone),
        )
        url = r.json()["avatar_url"]
        assert (await phone.confirm(t["ticket"], avatar_url=url)).status_code == 200
        status = await pc.get(f"/api/qrcode/{t['ticket']}/status?secret={t['secret']}")
        assert status.json()["scanned_by"]["avatar_url"] == url
        r = await pc.post(f"/api/qrcode/{t['ticket']}/exchange", json={"secret": t["secret"]})
        assert r.json()["user"]["avatar_url"] == url
