"""Avatars a user picks in the mini program.

WeChat's ``chooseAvatar`` hands the mini program a temporary file on the
phone, not a URL, so the mini program uploads it (``wx.uploadFile``) before it
confirms a login:

- ``POST /api/mp/avatar`` (the mini-program session as bearer; the image as
  the multipart field ``avatar``, or as the raw body with an ``image/png`` or
  ``image/jpeg`` type; at most 1 MB) → 201 ``{"avatar_url"}``. The image is
  decoded with the logo's guards (PNG/JPEG only, no decompression bombs),
  centre-cropped and re-encoded as a 132 px PNG without metadata, and stored
  once per content.
- ``GET /avatars/{sha256}.png`` serves it, cacheable for good (the name is the
  content's hash).

The returned URL is what the confirmation then sends as ``avatar_url``. Uploads
count against the mini-program session rate limit of the caller's address.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portal.errors import PortalError
from portal.scan import contentsec, qrimage
from portal.scan.mpapi import mp_secret_for_appid, mp_user
from portal.web.jsonapi import BodyTooLarge, read_body, read_form

MAX_BYTES = 1_000_000
# Shown while an avatar waits for content security (the mini program's placeholder).
PLACEHOLDER = Path(__file__).resolve().parent.parent / "static" / "avatar-pending.png"
_NAME_RE = re.compile(r"^[0-9a-f]{64}$")


class InvalidAvatar(PortalError):
    error = "invalid_avatar"
    description = "The avatar must be a PNG or JPEG image."


async def _image_bytes(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise PortalError("Send the image with a Content-Length.", status_code=411,
                          error="length_required")  # fmt: skip
    if int(declared) > MAX_BYTES + 64 * 1024:  # the image and a multipart envelope
        raise BodyTooLarge("The avatar must be at most 1 MB.")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await read_form(
            request, max_bytes=MAX_BYTES + 64 * 1024, max_fields=5, max_files=1,
            max_part_size=MAX_BYTES,
        )  # fmt: skip
        try:
            upload = form.get("avatar")
            if not isinstance(upload, UploadFile):
                raise InvalidAvatar("Send the image as the multipart field 'avatar'.")
            return await upload.read()
        finally:
            await form.close()
    if ctype in ("image/png", "image/jpeg"):
        return await read_body(request, MAX_BYTES + 64 * 1024)
    raise PortalError(
        "Send the image as multipart/form-data, image/png or image/jpeg.",
        error="unsupported_media_type",
        status_code=415,
    )


async def upload(request: Request) -> Response:
    user = await mp_user(request)
    state = request.state
    await state.limits.check(
        "mp_avatar", f"{user['appid']}:{state.client_ip}", state.settings.rate_mp_session
    )
    data = await _image_bytes(request)
    try:
        png = await asyncio.to_thread(qrimage.normalize_avatar, data, max_bytes=MAX_BYTES)
    except qrimage.LogoError as exc:
        raise InvalidAvatar(str(exc)) from None
    name = hashlib.sha256(png).hexdigest()
    # Stored, and with content security on, pending until WeChat passes it (issue 17).
    secret = await mp_secret_for_appid(request, user["appid"])
    await contentsec.submit_avatar(request, user["appid"], secret, user["openid"], name, png)
    return JSONResponse(
        {"avatar_url": f"{state.settings.base_url}/avatars/{name}.png"},
        status_code=201,
        headers={"cache-control": "no-store"},
    )


async def serve(request: Request) -> Response:
    name = request.path_params["name"]
    if not _NAME_RE.match(name):
        raise HTTPException(404)
    row = await request.state.db.fetchrow("SELECT png, status FROM avatars WHERE sha256 = $1", name)
    if row is None or row["status"] == "risky":  # refused by content security: gone
        raise HTTPException(404)
    if row["status"] == "pending":  # not checked yet: the placeholder, for now
        return Response(
            _placeholder(), media_type="image/png", headers={"cache-control": "no-cache"}
        )
    png = row["png"]
    return Response(
        png,
        media_type="image/png",
        # nosniff, as on every response, comes from the middleware (portal/web/headers.py).
        headers={"cache-control": "public, max-age=31536000, immutable"},
    )


@functools.cache
def _placeholder() -> bytes:
    return PLACEHOLDER.read_bytes()


def routes() -> list[Route]:
    return [
        Route("/api/mp/avatar", upload, methods=["POST"]),
        Route("/avatars/{name}.png", serve, methods=["GET", "HEAD"]),
    ]
