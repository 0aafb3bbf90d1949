"""Mini-program codes (issue 9): the QR image of a ticket as a WeChat "wxacode"
(``wxacode.getUnlimited``, scene = the ticket, page = the login page), for pools
whose ``qr_type`` is ``wxacode``.

A mini program that cannot use the "scan a normal link QR code" rule (personal
accounts cannot) still opens from these. WeChat makes the image, through the
mini program's cached access token; it is cached per ticket so that a page
re-fetching the image does not spend WeChat's quota, and the pool's logo is
composited over its round centre. When WeChat cannot make one, the pool's
``qr_fallback`` decides: the link QR, or a clear error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging

from PIL import Image, ImageDraw
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from portal.errors import PortalError
from portal.scan import qrimage
from portal.stores.ratelimit import RateLimited
from portal.tenants import pools
from portal.tenants.pools import Pool
from portal.wechat.errors import ErrCode, WeChatError, WeChatUnavailable

log = logging.getLogger(__name__)

# The login mini program's confirm page (miniprogram/app.json); it reads the
# ticket from the `scene` option.
PAGE = "pages/login/index"
SCENE_MAX = 32  # WeChat's limit for `scene`
WIDTH = 430  # WeChat's default; 280 to 1280 px
# The logo spans this share of the image's width. A real wxacode has a round hole
# for the mini program's avatar, larger than this, so the logo sits inside it and
# hides the avatar's middle; a plain QR (the fake's, error correction H) keeps
# well over half of its correction budget with this much of its centre covered.
_LOGO_RATIO = 0.2
_RING = 0.03  # white ring around the logo, share of the width
# 45009 is WeChat's minute limit on mini-program codes (5000 a minute per AppID,
# "调用分钟频率受限"; its errmsg says "daily quota"): after one, this pool does not
# ask again until the minute has passed. Only this pool: pools sharing the
# platform's AppID each have their own budget (PORTAL_RATE_WXACODE), so one that
# is hammered cannot pause the others (issue 16).
_QUOTA_PAUSE = 60
_FAILURE_TTL = 30  # a refused ticket is not asked for again this soon


class WxacodeError(PortalError):
    status_code = 502
    error = "wxacode_unavailable"
    description = "WeChat could not make the mini-program code; try again shortly."


class WxacodeInvalidPage(WxacodeError):
    error = "wxacode_invalid_page"
    description = (
        f"The mini program has no published page {PAGE}: publish the login mini program "
        "(or switch the pool to link QR codes)."
    )


class WxacodeInvalidScene(WxacodeError):
    status_code = 400
    error = "wxacode_invalid_scene"
    description = f"This ticket cannot be a mini-program code (scene over {SCENE_MAX} characters)."


class WxacodeQuota(WxacodeError):
    status_code = 503
    error = "wxacode_quota_exceeded"
    description = "This site has used up its mini-program codes for now; try again in a minute."


class WxacodeIpNotWhitelisted(WxacodeError):
    """40164: WeChat refused this server's address (the mini program's IP whitelist)."""

    status_code = 503
    error = "wechat_ip_not_whitelisted"
    description = (
        "WeChat refused this server's address (not on the mini program's IP whitelist); "
        "the site's administrator must add it."
    )


_ERRORS: dict[int, type[WxacodeError]] = {
    ErrCode.IP_NOT_WHITELISTED: WxacodeIpNotWhitelisted,
    ErrCode.INVALID_PAGE: WxacodeInvalidPage,
    ErrCode.INVALID_SCENE: WxacodeInvalidScene,
    ErrCode.INVALID_SCENE_CHARS: WxacodeInvalidScene,
    ErrCode.DAILY_QUOTA: WxacodeQuota,
}


_BY_NAME = {cls.error: cls for cls in (WxacodeError, *_ERRORS.values())}


def wxacode_error(exc: WeChatError) -> WxacodeError:
    if isinstance(exc, WeChatUnavailable):
        return WxacodeError()
    return _ERRORS.get(exc.errcode, WxacodeError)()


def _cache_key(pool: Pool, ticket: str) -> str:
    return f"wxacode:{pool.id}:{ticket}"


def _quota_key(appid: str, pool: Pool) -> str:
    return f"wxacode:quota:{appid}:{pool.id}"


# One WeChat call per ticket at a time in this process, however many ask at once.
_inflight: dict[str, asyncio.Future[bytes]] = {}


async def png(request: Request, pool: Pool, ticket: str, logo: bytes | None) -> bytes:
    """The ticket's mini-program code with the pool's logo, as PNG (cached per ticket).

    Raises :class:`WxacodeError` when WeChat cannot make it."""
    redis = request.state.redis
    key = _cache_key(pool, ticket)
    cached = await redis.get(key)
    if cached is not None:
        if cached.startswith("!"):  # WeChat refused this ticket a moment ago
            raise _BY_NAME.get(cached[1:], WxacodeError)()
        return base64.b64decode(cached)
    if key in _inflight:
        return await asyncio.shield(_inflight[key])
    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    _inflight[key] = future
    try:
        image = await _make(request, pool, ticket, logo)
        future.set_result(image)
        # The ticket's TTL at most: the code is useless once the ticket is gone.
        with contextlib.suppress(RedisError):
            await redis.set(key, base64.b64encode(image).decode(), ex=pool.qr_lifetime)
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if nobody waits
        if isinstance(exc, WxacodeError):
            with contextlib.suppress(RedisError):
                await redis.set(key, "!" + exc.error, ex=min(_FAILURE_TTL, pool.qr_lifetime))
        raise
    finally:
        del _inflight[key]
    return image


async def _make(request: Request, pool: Pool, ticket: str, logo: bytes | None) -> bytes:
    if len(ticket) > SCENE_MAX:
        raise WxacodeInvalidScene()
    settings = request.state.settings
    if pool.mp_appid:
        appid = pool.mp_appid
        secret = await pools.mp_secret(request.state.db, request.state.box, pool)
    else:
        appid, secret = settings.default_mp_appid, settings.default_mp_secret
    if not appid or not secret:
        raise WxacodeError("No mini program is configured for this pool.")
    state = request.state
    # What a new code costs is counted first: the asking address's QR images
    # (a refusal is its own 429, never a fallback), then the pool's share of the
    # AppID's WeChat quota (a refusal is this pool's alone).
    await state.limits.check("qr_image", f"{pool.id}:{state.client_ip}", settings.rate_qr_image)
    redis = state.redis
    if await redis.exists(_quota_key(appid, pool)):
        raise WxacodeQuota()
    try:
        await state.limits.check("wxacode", str(pool.id), settings.rate_wxacode)
    except RateLimited:
        raise WxacodeQuota() from None
    try:
        code = await request.state.wechat.wxacode_unlimited(
            appid, secret, ticket, PAGE, width=WIDTH, check_path=True
        )
    except WeChatError as exc:
        log.warning("WeChat refused a mini-program code for pool %s: %s", pool.slug, exc)
        if exc.errcode == ErrCode.DAILY_QUOTA:
            await redis.set(_quota_key(appid, pool), "1", ex=_QUOTA_PAUSE)
        raise wxacode_error(exc) from None
    try:
        return await asyncio.to_thread(composite, code, logo, logo_shape=pool.logo_shape)
    except (OSError, ValueError):  # not an image after all
        raise WxacodeError() from None


def composite(code: bytes, logo: bytes | None, *, logo_shape: str = "round") -> bytes:
    """The mini-program code with ``logo`` over its centre on a white disc.

    The logo is always cut round here, whatever the pool's shape, to match the
    code's round centre; ``logo_shape`` is accepted for symmetry with qrimage."""
    with Image.open(io.BytesIO(code), formats=["PNG", "JPEG"]) as im:
        img = im.convert("RGBA")
    if logo is not None:
        side = min(img.size)
        logo_px = max(8, round(side * _LOGO_RATIO))
        disc_px = logo_px + 2 * round(side * _RING)
        disc = Image.new("RGBA", (disc_px, disc_px), (255, 255, 255, 0))
        ImageDraw.Draw(disc).ellipse((0, 0, disc_px - 1, disc_px - 1), fill=(255, 255, 255, 255))
        inset = (disc_px - logo_px) // 2
        disc.alpha_composite(qrimage._fit_logo(logo, logo_px, "round"), (inset, inset))
        img.alpha_composite(disc, ((img.width - disc_px) // 2, (img.height - disc_px) // 2))
    out = io.BytesIO()
    img.convert("RGB").save(out, "PNG", optimize=True)
    return out.getvalue()


def svg(image: bytes) -> str:
    """An SVG document showing the PNG (the wxacode is a raster image from WeChat)."""
    with Image.open(io.BytesIO(image)) as im:
        width, height = im.size
    data = base64.b64encode(image).decode()
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
        f' width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<image width="{width}" height="{height}" xlink:href="data:image/png;base64,{data}"/>'
        "</svg>"
    )


async def image_response(
    request: Request, pool: Pool, ticket: str, fmt: str, logo: bytes | None
) -> Response | None:
    """The image route's answer for a ``wxacode`` pool; None: fall back to the link QR."""
    try:
        image = await png(request, pool, ticket, logo)
    except WxacodeError:
        if pool.qr_fallback:
            return None
        raise
    headers = {"cache-control": f"private, max-age={pool.qr_lifetime}", "x-qr-type": "wxacode"}
    if fmt == "png":
        return Response(image, media_type="image/png", headers=headers)
    return Response(svg(image).encode(), media_type="image/svg+xml", headers=headers)
