"""The mini-program API (docs/design.md §5): the WeChat side of a scan login.

Valid on the apex and on every pool host: a mini program serves many pools
and knows only the ticket it scanned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import secrets
import time

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portal import jobs
from portal.errors import PortalError, ServiceUnavailable
from portal.scan import contentsec, origin, phonecalls, users
from portal.scan.qrapi import TICKET_RE, Direct
from portal.scan.tickets import (
    FINAL,
    NotScanned,
    NumberMismatch,
    Origin,
    ScanRefused,
    TicketExpired,
    TicketNotFound,
    TicketState,
)
from portal.stores.crypto import random_token
from portal.tenants import pools
from portal.tenants.pools import Pool
from portal.web.jsonapi import optional_str, read_json, required_str
from portal.web.validation import redirect_uri
from portal.wechat.errors import PHONE_QUOTA_ERRNO, ErrCode, WeChatError, WeChatUnavailable

log = logging.getLogger(__name__)

SESSION_TTL = 7200


class InvalidSession(PortalError):
    status_code = 401
    error = "invalid_session"
    description = "The mini-program session is missing or expired; log in again with wx.login."


class WrongMiniProgram(PortalError):
    status_code = 403
    error = "wrong_mini_program"
    description = "This QR code belongs to a site served by another mini program."


class ScanSourceRefused(PortalError):
    status_code = 403
    error = "scan_source_refused"
    description = (
        "This site accepts a computer's QR code only when it is scanned with the camera, "
        "not from an image or the album."
    )


def _scene(data: dict) -> int | None:
    """WeChat's launch scene the mini program reports (wx.getEnterOptionsSync), if any."""
    scene = data.get("scene")
    if scene is None:
        return None
    if isinstance(scene, str) and scene.isdigit():
        scene = int(scene)
    if isinstance(scene, bool) or not isinstance(scene, int) or not 1000 <= scene <= 9999:
        raise PortalError("scene must be WeChat's launch scene, a number such as 1011.")
    return scene


def _choices() -> tuple[str, ...]:
    """Number matching: a two-digit number, then it and two others in random order."""
    numbers = [str(n) for n in range(10, 100)]
    picked: list[str] = []
    while len(picked) < 3:
        n = secrets.choice(numbers)
        if n not in picked:
            picked.append(n)
    answer = picked[0]
    offered = picked[:]
    for i in range(2, 0, -1):  # Fisher-Yates with the system's randomness
        j = secrets.randbelow(i + 1)
        offered[i], offered[j] = offered[j], offered[i]
    return (answer, *offered)


def _context(request: Request, found: Origin, client_name: str | None) -> dict:
    return origin.describe(found, xdb=request.state.settings.ip2region_xdb, client_name=client_name)


def _event(
    request: Request,
    pool: Pool,
    client_id: str,
    who: dict,
    found: Origin | None,
    context: dict | None,
    *,
    flagged: bool = False,
) -> users.LoginEvent:
    return users.LoginEvent(
        pool_id=pool.id,
        client_id=client_id,
        appid=who["appid"],
        openid=who["openid"],
        ip=request.state.client_ip,
        user_agent=request.headers.get("user-agent"),
        scene=found.scene if found else None,
        scan_source=found.source if found else None,
        flagged=flagged,
        started_from=origin.summary(context) if context else None,
    )


_WECHAT_ERRORS: dict[int, tuple[int, str, str]] = {
    ErrCode.INVALID_CODE: (400, "invalid_code", "The wx.login code is not valid."),
    ErrCode.CODE_USED: (
        400,
        "code_used",
        "The wx.login code was already used; call wx.login again.",
    ),
    ErrCode.MINUTE_QUOTA: (
        429,
        "wechat_rate_limited",
        "WeChat is rate limiting this mini program; try again shortly.",
    ),
    ErrCode.HIGH_RISK_USER: (403, "wechat_risky_user", "WeChat refused this account as high risk."),
    ErrCode.IP_NOT_WHITELISTED: (
        503,
        "wechat_ip_not_whitelisted",
        "WeChat refused this server's address (not on the mini program's IP whitelist); "
        "the site's administrator must add it.",
    ),
}


def wechat_error(exc: WeChatError) -> PortalError:
    if isinstance(exc, WeChatUnavailable):
        return PortalError(
            "WeChat is not answering; try again shortly.",
            error="wechat_unavailable",
            status_code=502,
        )
    status, error, description = _WECHAT_ERRORS.get(
        exc.errcode, (502, "wechat_error", f"WeChat refused the request (errcode {exc.errcode}).")
    )
    return PortalError(description, error=error, status_code=status)


def _session_key(request: Request, token: str) -> str:
    return f"mps:{request.state.box.hash_secret(token)}"


async def mp_secret_for_appid(request: Request, appid: str) -> str | None:
    settings = request.state.settings
    if settings.default_mp_appid and appid == settings.default_mp_appid:
        return settings.default_mp_secret
    # One pool at most: mp_appid is UNIQUE (sql/0004_mp_appid_unique.sql).
    row = await request.state.db.fetchrow(
        "SELECT id, mp_secret_enc FROM pools WHERE mp_appid = $1", appid
    )
    if row is None:
        return None
    return request.state.box.decrypt(
        row["mp_secret_enc"], pools.mp_secret_context(row["id"])
    ).decode()


async def session(request: Request) -> Response:
    data = await read_json(request)
    appid = required_str(data, "appid", max_len=64)
    code = required_str(data, "code", max_len=256)
    state = request.state
    await state.limits.check(
        "mp_session", f"{appid}:{state.client_ip}", state.settings.rate_mp_session
    )
    secret = await mp_secret_for_appid(request, appid)
    if secret is None:
        raise PortalError(
            "This mini program is not registered with the portal.", error="invalid_appid"
        )
    try:
        wx = await request.state.wechat.code2session(appid, secret, code)
    except WeChatError as exc:
        raise wechat_error(exc) from None
    token = random_token(32)
    record = {"appid": appid, "openid": wx.openid, "unionid": wx.unionid}
    await request.state.mux.execute(
        "SET", _session_key(request, token), json.dumps(record), "EX", SESSION_TTL
    )
    return JSONResponse(
        {"session_token": token, "expires_in": SESSION_TTL}, headers={"cache-control": "no-store"}
    )


async def mp_user(request: Request) -> dict:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(token) > 200:
        raise InvalidSession()
    # Every scan, confirm and cancel reads it: over the shared connection (redismux).
    raw = await request.state.mux.execute("GET", _session_key(request, token.strip()))
    if raw is None:
        raise InvalidSession()
    return json.loads(raw)


async def _ticket_pool(request: Request) -> tuple[str, Pool, object]:
    ticket = request.path_params["ticket"]
    if not TICKET_RE.match(ticket):
        raise TicketNotFound()
    state = await request.state.tickets.state(ticket)
    pool = await request.state.pools.get_by_id(state.pool_id)
    if pool is None:
        raise TicketNotFound()
    return ticket, pool, state


def pool_appid(request: Request, pool: Pool) -> str:
    return pool.mp_appid or request.state.settings.default_mp_appid


async def scan(request: Request) -> Response:
    who = await mp_user(request)
    data = await read_json(request, optional=True)
    scene = _scene(data)
    ticket, pool, state = await _ticket_pool(request)
    if who["appid"] != pool_appid(request, pool):
        raise WrongMiniProgram()
    # What the PC page may learn before confirmation is the pool's choice
    # (scan_reveal, issue 16): by default nothing, so someone who scans and
    # declines gives nothing away. A new user has nothing to show anyway.
    known = None
    if pool.scan_reveal != "none" or pool.phone_required:
        known = await request.state.db.fetchrow(
            """SELECT u.nickname, u.avatar_url, u.phone_number FROM wechat_identities i
               JOIN users u ON u.id = i.user_id
               WHERE i.pool_id = $1 AND i.appid = $2 AND i.openid = $3""",
            pool.id,
            who["appid"],
            who["openid"],
        )
    client = await request.state.clients.get(pool.id, state.client_id)
    client_name = client.name if client and not client.is_default else None
    try:
        scanned_at_ms, found = await request.state.tickets.scan(
            ticket,
            who["appid"],
            who["openid"],
            nickname=(known and pool.scan_reveal == "profile" and known["nickname"]) or "",
            avatar_url=(known and pool.scan_reveal != "none" and known["avatar_url"]) or "",
            scene=scene,
            scene_kind=origin.scene_kind(scene),
            policy=pool.scan_source_policy,
            number=_choices() if pool.number_match else (),
        )
    except ScanRefused as refused:
        # A computer's QR code opened from an image or the album (a forwarded
        # screenshot, issue 20), which this pool refuses: recorded, ticket untouched.
        context = _context(request, refused.origin, client_name)
        event = _event(request, pool, state.client_id, who, refused.origin, context)
        await users.record_event(request.state.db, event, ScanSourceRefused.error)
        raise ScanSourceRefused() from None
    base = request.state.settings.pool_url(pool.slug)
    state = dataclasses.replace(state, status="scanned", now_ms=scanned_at_ms)
    body = {
        "status": "scanned",
        "pool": {
            "name": pool.name,
            "logo_url": f"{base}/logo?v={pool.logo_sha256 or 'default'}",
        },
        "client": {"name": client_name} if client_name else None,
        "expires_in": state.expires_in,
        # A number on file is not asked for again (each one WeChat gives is paid for).
        "phone_required": pool.phone_required and not (known and known["phone_number"]),
        # Where the login was started, and whether the QR code reached this phone as
        # expected ('warned': a computer's QR code from an image or the album).
        "context": _context(request, found, client_name),
        "scan_source": found.source,
    }
    if found.choices:
        body["number_choices"] = [int(n) for n in found.choices]
    return JSONResponse(body)


async def confirm(request: Request) -> Response:
    who = await mp_user(request)
    data = await read_json(request, optional=True)
    phone_code = optional_str(data, "phone_code", max_len=256)
    # The phone button's errno when it gave no code: 1400001, the quota is spent (issue 17).
    phone_errno = data.get("phone_errno")
    if phone_errno is not None and (
        isinstance(phone_errno, bool) or not isinstance(phone_errno, int)
    ):
        raise PortalError("phone_errno must be the phone button's errno, a whole number.")
    number = data.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
        raise PortalError("number must be the number picked, a whole number.")
    nickname = optional_str(data, "nickname", max_len=64)
    avatar_url = optional_str(data, "avatar_url", max_len=1000)
    if avatar_url:
        avatar_url = redirect_uri(avatar_url, field="avatar_url", allow_http=True)
    ticket, pool, state = await _ticket_pool(request)
    appid, openid = who["appid"], who["openid"]
    if appid != pool_appid(request, pool):
        raise WrongMiniProgram()
    # Check the ticket before asking WeChat for the phone (each phone code works once).
    if state.status == "pending":
        raise NotScanned()
    if state.status in FINAL:
        raise TicketExpired()
    if phone_errno == PHONE_QUOTA_ERRNO and not phone_code:
        # WeChat gave no number (the mini program's quota is spent): counted for the
        # pool's chart; a pool that needs one cannot log this user in now.
        await phonecalls.record(request.state.db, pool.id, "quota")
        if pool.phone_required and not await _phone_on_file(request, pool, appid, openid):
            raise phonecalls.PhoneQuotaExhausted()
    if nickname and request.state.settings.content_security:  # msgSecCheck (issue 17)
        secret = await mp_secret_for_appid(request, appid)
        nickname = await contentsec.check_nickname(request, appid, secret, openid, nickname)
    tickets = request.state.tickets
    db = request.state.db
    # Only one confirmation wins the ticket; decided here, before WeChat is asked for
    # a phone number and before the login is written. With number matching, a wrong
    # number cancels the ticket here (issue 20).
    try:
        claim, found = await tickets.claim(
            ticket, appid, openid, number="" if number is None else str(number)
        )
    except NumberMismatch as exc:
        context = _context(request, exc.origin, None) if exc.origin else None
        event = _event(request, pool, state.client_id, who, exc.origin, context, flagged=True)
        await users.record_suspicious(db, event, exc.error)
        raise
    try:
        profile = users.Profile(who.get("unionid"), None, nickname, avatar_url)
        await _confirm_claimed(request, ticket, pool, state, who, profile, phone_code, claim, found)
    except BaseException:
        with contextlib.suppress(Exception):
            await tickets.release(ticket, claim)  # the scanner may confirm again
        raise
    return JSONResponse({"status": "confirmed"})


async def _confirm_claimed(
    request: Request,
    ticket: str,
    pool: Pool,
    state: TicketState,
    who: dict,
    profile: users.Profile,
    phone_code: str | None,
    claim: str,
    found: Origin,
) -> None:
    """The confirmation once the ticket is claimed: the phone number (asked of
    WeChat only now), the login, then the ticket confirmed."""
    appid, openid = who["appid"], who["openid"]
    tickets = request.state.tickets
    phone = None
    if phone_code and not await _phone_on_file(request, pool, appid, openid):
        secret = await mp_secret_for_appid(request, appid)
        try:
            # With the scanner's openid: WeChat checks the code was minted for them.
            info = await request.state.wechat.phone_number(appid, secret, phone_code, openid=openid)
        except WeChatError as exc:
            if exc.errcode in (ErrCode.INVALID_CODE, ErrCode.CODE_USED):
                await phonecalls.record(request.state.db, pool.id, "refused")
                raise PortalError(
                    "The phone number code is not valid.", error="invalid_phone_code"
                ) from None
            raise wechat_error(exc) from None
        phone = users.Phone(info.pure_phone_number, str(info.country_code or "86"))
        await phonecalls.record(request.state.db, pool.id, "ok")  # a paid call
    db = request.state.db
    client = await request.state.clients.get(pool.id, state.client_id)
    client_name = client.name if client and not client.is_default else None
    context = _context(request, found, client_name)
    event = _event(request, pool, state.client_id, who, found, context)
    try:
        profile = dataclasses.replace(profile, phone=phone)
        result = await users.login(db, pool, profile, event)
    except (asyncpg.PostgresConnectionError, OSError):
        raise ServiceUnavailable() from None
    user = result.user
    # The user's row is committed: only now may a browser learn "confirmed"
    # (it exchanges the ticket at once and reads the user).
    try:
        await tickets.confirm(
            ticket,
            appid,
            openid,
            claim=claim,
            user_id=str(user["id"]),
            auth_time=int(time.time()),
            nickname=user["nickname"] or "",
            avatar_url=user["avatar_url"] or "",
        )
    except PortalError as exc:
        # The ticket ended during the login (its time ran out, or the page
        # cancelled it): a user created for this login goes again, and the
        # login's event says how it ended.
        if result.created:
            await db.execute(_UNREGISTER, user["id"])
        await users.mark_event(db, result.event_id, exc.error)
        raise
    users.count(result.result)


# A user registered by a login that did not complete goes again; the pool's
# webhooks, told of user.created, are told of user.deleted.
_UNREGISTER = """WITH gone AS (DELETE FROM users WHERE id = $1 RETURNING pool_id, id)
INSERT INTO events (pool_id, type, data)
SELECT pool_id, 'user.deleted', jsonb_build_object('user_id', id) FROM gone"""


async def _phone_on_file(request: Request, pool: Pool, appid: str, openid: str) -> bool:
    """The scanner's user already has a verified number: WeChat is not asked
    (and paid) for it again; the code is left unspent."""
    return bool(
        await request.state.db.fetchval(
            """SELECT u.phone_number IS NOT NULL FROM wechat_identities i
               JOIN users u ON u.id = i.user_id
               WHERE i.pool_id = $1 AND i.appid = $2 AND i.openid = $3""",
            pool.id,
            appid,
            openid,
        )
    )


async def _emit_cancelled(db, pool_id: int, client_id: str | None, reason: str | None) -> None:
    """login.cancelled for the pool's webhooks (the person said no on the phone);
    a failure to write it never fails the request."""
    try:
        await jobs.emit(
            db,
            pool_id,
            "login.cancelled",
            {"client_id": client_id, "reason": reason or "cancelled"},
        )
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("could not record a cancelled login (%s)", type(exc).__name__)


async def cancel(request: Request) -> Response:
    who = await mp_user(request)
    data = await read_json(request, optional=True)
    reason = optional_str(data, "reason", max_len=32)
    if reason not in (None, "not_me"):
        raise PortalError("reason must be not_me, or left out.")
    ticket, pool, state = await _ticket_pool(request)
    if who["appid"] != pool_appid(request, pool):
        raise WrongMiniProgram()
    found = await request.state.tickets.cancel(ticket, who["appid"], who["openid"])
    await _emit_cancelled(request.state.db, pool.id, state.client_id, reason)
    if reason == "not_me":
        # "This wasn't me" (issue 20): someone else started this login and sent the
        # QR code; the attempt is flagged for the pool's login log.
        client = await request.state.clients.get(pool.id, state.client_id)
        client_name = client.name if client and not client.is_default else None
        context = _context(request, found, client_name)
        event = _event(request, pool, state.client_id, who, found, context, flagged=True)
        await users.record_suspicious(request.state.db, event, "not_me")
    return JSONResponse({"status": "cancelled"})


def routes() -> list[Route]:
    return [
        Route("/api/mp/session", Direct(session), methods=["POST"]),
        Route("/api/mp/tickets/{ticket}/scan", Direct(scan), methods=["POST"]),
        Route("/api/mp/tickets/{ticket}/confirm", Direct(confirm), methods=["POST"]),
        Route("/api/mp/tickets/{ticket}/cancel", cancel, methods=["POST"]),
    ]
