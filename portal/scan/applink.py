"""Log in on the phone itself (issue 20): a link that opens the pool's mini program
at its confirm page for one ticket, from a phone's browser outside WeChat.

WeChat makes two kinds (docs/design.md §5, ``POST /api/qrcode/{ticket}/applink``):
a URL Scheme (``weixin://dl/business/?t=…``, ``generatescheme``, launch scene
1065), which the browser hands to WeChat and stays on the login page, and a URL
Link (``https://wxaurl.cn/…``, ``generate_urllink``, scene 1194), an https page
that opens WeChat. Both carry ``ticket=…`` in the page's query, are for
non-personal mini programs only (40002), and are counted against a daily quota
of the mini program (45009). One link per ticket and kind, kept while the ticket
lives, so a page that asks again costs WeChat nothing; an AppID that may not make
links is remembered for an hour.
"""

from __future__ import annotations

import logging

from starlette.requests import Request

from portal.errors import PortalError
from portal.scan.tickets import FINAL, TicketExpired, TicketState
from portal.tenants import pools
from portal.tenants.pools import Pool
from portal.wechat.errors import ErrCode, WeChatError

log = logging.getLogger(__name__)

KINDS = ("scheme", "url_link")
PAGE = "pages/login/index"  # the mini program's confirm page (miniprogram/app.json)
_OFF_S = 3600  # how long an AppID refused links (a personal account's) is not asked again
_QUOTA_S = 600  # how long a spent daily quota is not asked again


class AppLinkUnavailable(PortalError):
    status_code = 503
    error = "applink_unavailable"
    description = "This site cannot open WeChat from the browser: scan the QR code instead."


class AppLinkQuota(AppLinkUnavailable):
    error = "applink_quota_exceeded"
    description = "WeChat's links for this site are used up for today: scan the QR code instead."


def _cache_key(ticket: str, kind: str) -> str:
    return f"applink:{kind}:{ticket}"


def _off_key(appid: str) -> str:
    return f"applink:off:{appid}"


def _quota_key(appid: str) -> str:
    return f"applink:quota:{appid}"


async def link(request: Request, pool: Pool, state: TicketState, kind: str) -> str:
    """The ticket's link of ``kind``, made once per ticket."""
    if state.status in FINAL:
        raise TicketExpired()
    redis = request.state.redis
    cached = await redis.get(_cache_key(state.ticket, kind))
    if cached:
        return cached
    settings = request.state.settings
    if pool.mp_appid:
        appid = pool.mp_appid
        secret = await pools.mp_secret(request.state.db, request.state.box, pool)
    else:
        appid, secret = settings.default_mp_appid, settings.default_mp_secret
    if not appid or not secret:
        raise AppLinkUnavailable()
    if await redis.exists(_off_key(appid)):
        raise AppLinkUnavailable()
    if await redis.exists(_quota_key(appid)):
        raise AppLinkQuota()
    make = (
        request.state.wechat.generate_scheme
        if kind == "scheme"
        else request.state.wechat.generate_urllink
    )
    try:
        url = await make(appid, secret, path=PAGE, query=f"ticket={state.ticket}", days=1)
    except WeChatError as exc:
        log.warning("WeChat refused a %s for pool %s: %s", kind, pool.slug, exc)
        if exc.errcode == ErrCode.LINK_NO_PERMISSION:
            await redis.set(_off_key(appid), "1", ex=_OFF_S)
        if exc.errcode in (ErrCode.DAILY_QUOTA, ErrCode.LINK_LONG_QUOTA):
            await redis.set(_quota_key(appid), "1", ex=_QUOTA_S)
            raise AppLinkQuota() from None
        raise AppLinkUnavailable() from None
    ttl = max(1, state.expires_in + 5)
    await redis.set(_cache_key(state.ticket, kind), url, ex=ttl)
    return url
