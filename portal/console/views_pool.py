"""A pool's settings page and its actions: general settings, logo, mini program,
signing keys, admins. Every change announces itself on the pools channel, so
every process drops its cached pool, clients and keys at once."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portal.console import store, views_linkrule
from portal.console.common import MAX_FILE_BYTES, Ctx, Forbidden, done, page, pool_path
from portal.console.trail import audited
from portal.errors import PortalError
from portal.scan import qrimage
from portal.tenants import admins, keys, linkrules, pools
from portal.tenants.pools import APPID_RE, APPSECRET_RE, Pool
from portal.web import i18n, validation
from portal.wechat.client import WeChatError, WeChatUnavailable
from portal.wechat.errors import ErrCode, whitelist_ip

log = logging.getLogger(__name__)

LOGO_MAX_BYTES = MAX_FILE_BYTES

# (field, minimum, maximum), in seconds, as the schema's CHECKs allow.
LIMITS = {
    "qr_lifetime": (30, 600),
    "id_token_ttl": (60, 86400),
    "access_token_ttl": (60, 86400),
    "refresh_token_ttl": (3600, 31536000),
}


def _t(request: Request):
    return i18n.translator(i18n.pick(request)[0])


def _values(pool: Pool) -> dict[str, Any]:
    return {
        "name": pool.name,
        "callback_url": pool.callback_url or "",
        "phone_required": pool.phone_required,
        "login_only": pool.login_only,
        "link_by_phone": pool.link_by_phone,
        "id_token_alg": pool.id_token_alg,
        "qr_type": pool.qr_type,
        "qr_fallback": pool.qr_fallback,
        "scan_reveal": pool.scan_reveal,
        "scan_source_policy": pool.scan_source_policy,
        "number_match": pool.number_match,
        **{k: str(getattr(pool, k)) for k in LIMITS},
    }


async def _settings_page(
    ctx: Ctx,
    *,
    values: dict | None = None,
    errors: dict | None = None,
    mp: dict | None = None,
    status: int = 200,
) -> Response:
    request, pool = ctx.request, ctx.pool
    assert pool is not None
    db = request.state.db
    data = {
        "section": "settings",
        "values": values or _values(pool),
        "errors": errors or {},
        "mp": mp
        or {"mode": "private" if pool.mp_appid else "default", "appid": pool.mp_appid or ""},
        "limits": LIMITS,
        "algorithms": keys.ALGORITHMS,
        "qr_types": pools.QR_TYPES,
        "scan_reveals": pools.SCAN_REVEALS,
        "scan_source_policies": pools.SCAN_SOURCE_POLICIES,
        "signing_keys": await store.signing_keys(db, pool.id),
        "pool_admins": await store.admins_of_pool(db, pool.id),
        "pool_url": request.state.settings.pool_url(pool.slug),
        "default_appid": request.state.settings.default_mp_appid,
        "logo_max_kb": LOGO_MAX_BYTES // 1024,
        "link_rule": await views_linkrule.context(request, pool),  # issue 17
    }
    return await page(ctx, "console/settings.html", data, status, get_path=pool_path(pool))


async def settings_get(request: Request, ctx: Ctx) -> Response:
    return await _settings_page(ctx)


def _parse_settings(request: Request, form) -> tuple[dict[str, Any], dict[str, Any], dict]:
    """(changes, entered values, errors by field)."""
    _ = _t(request)
    entered = {
        "name": str(form.get("name") or ""),
        "callback_url": str(form.get("callback_url") or "").strip(),
        "phone_required": form.get("phone_required") == "on",
        "login_only": form.get("login_only") == "on",
        "link_by_phone": form.get("link_by_phone") == "on",
        "id_token_alg": str(form.get("id_token_alg") or ""),
        "qr_type": str(form.get("qr_type") or ""),
        "qr_fallback": form.get("qr_fallback") == "on",
        "scan_reveal": str(form.get("scan_reveal") or ""),
        "scan_source_policy": str(form.get("scan_source_policy") or ""),
        "number_match": form.get("number_match") == "on",
        **{k: str(form.get(k) or "").strip() for k in LIMITS},
    }
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    try:
        changes["name"] = validation.display_name(entered["name"])
    except PortalError:
        errors["name"] = _("console.err.name")
    if entered["callback_url"]:
        try:
            changes["callback_url"] = validation.redirect_uri(
                entered["callback_url"],
                field="callback_url",
                allow_http=request.state.settings.is_dev,
            )
        except PortalError:
            errors["callback_url"] = _("console.err.url")
    else:
        changes["callback_url"] = None
    for flag in ("phone_required", "login_only", "link_by_phone"):
        changes[flag] = entered[flag]
    for name, (low, high) in LIMITS.items():
        text = entered[name]
        if text.isdigit() and low <= int(text) <= high:
            changes[name] = int(text)
        else:
            errors[name] = _("console.err.range", min=low, max=high)
    if entered["qr_type"] in pools.QR_TYPES:
        changes["qr_type"] = entered["qr_type"]
        changes["qr_fallback"] = entered["qr_fallback"]
    else:
        errors["qr_type"] = _("console.err.choice")
    if entered["scan_reveal"] in pools.SCAN_REVEALS:
        changes["scan_reveal"] = entered["scan_reveal"]
    else:
        errors["scan_reveal"] = _("console.err.choice")
    if entered["scan_source_policy"] in pools.SCAN_SOURCE_POLICIES:
        changes["scan_source_policy"] = entered["scan_source_policy"]
    elif entered["scan_source_policy"]:  # left out (an older form): unchanged
        errors["scan_source_policy"] = _("console.err.choice")
    changes["number_match"] = entered["number_match"]
    if entered["id_token_alg"] in keys.ALGORITHMS:
        changes["id_token_alg"] = entered["id_token_alg"]
    else:
        errors["id_token_alg"] = _("console.err.choice")
    return changes, entered, errors


async def settings_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None and ctx.form is not None
    changes, entered, errors = _parse_settings(request, ctx.form)
    if errors:
        return await _settings_page(ctx, values=entered, errors=errors, status=400)
    async with request.state.db.acquire() as conn, conn.transaction():
        await store.update_pool(conn, request.state.box, ctx.pool, changes)
        old = {k: getattr(ctx.pool, k) for k in changes}
        await audited(conn, ctx, "pool.update", ctx.pool.slug, before=old, after=changes)
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(ctx, pool_path(ctx.pool), "ok", "console.flash.saved")


async def logo_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None and ctx.form is not None
    _ = _t(request)
    upload = ctx.form.get("logo")
    shape = str(ctx.form.get("logo_shape") or ctx.pool.logo_shape)
    if shape not in qrimage.LOGO_SHAPES:
        return await _settings_page(ctx, errors={"logo": _("console.err.choice")}, status=400)
    png = None
    if isinstance(upload, UploadFile) and upload.filename:
        data = await upload.read(LOGO_MAX_BYTES + 1)
        try:
            # Decoding and re-encoding is CPU work: off the event loop.
            png = await asyncio.to_thread(qrimage.normalize_logo, data, max_bytes=LOGO_MAX_BYTES)
        except qrimage.LogoError as exc:
            message = _(f"console.err.{exc.code}", kb=LOGO_MAX_BYTES // 1024)
            return await _settings_page(ctx, errors={"logo": message}, status=400)
    elif not ctx.pool.has_logo and shape == ctx.pool.logo_shape:
        return await _settings_page(ctx, errors={"logo": _("console.err.logo_missing")}, status=400)
    async with request.state.db.acquire() as conn, conn.transaction():
        if png is not None:
            await store.set_logo(conn, ctx.pool.id, png)
        if shape != ctx.pool.logo_shape:
            await store.update_pool(conn, request.state.box, ctx.pool, {"logo_shape": shape})
        await audited(
            conn,
            ctx,
            "pool.logo_set",
            ctx.pool.slug,
            before={"logo_sha256": ctx.pool.logo_sha256, "logo_shape": ctx.pool.logo_shape},
            after={
                "logo_sha256": hashlib.sha256(png).hexdigest() if png else ctx.pool.logo_sha256,
                "logo_shape": shape,
            },
        )
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(ctx, pool_path(ctx.pool) + "#logo", "ok", "console.flash.logo_saved")


async def logo_delete(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    async with request.state.db.acquire() as conn, conn.transaction():
        await store.set_logo(conn, ctx.pool.id, None)
        await audited(
            conn,
            ctx,
            "pool.logo_remove",
            ctx.pool.slug,
            before={"logo_sha256": ctx.pool.logo_sha256},
            after={"logo_sha256": None},
        )
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(ctx, pool_path(ctx.pool) + "#logo", "ok", "console.flash.logo_removed")


async def _pool_logo(request: Request, pool: Pool) -> bytes | None:
    return await request.state.logos.get(request, pool)


async def logo_png(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    png = await _pool_logo(request, ctx.pool)
    if png is None:
        raise HTTPException(404)
    return Response(png, media_type="image/png", headers={"cache-control": "private, no-cache"})


async def qr_preview(request: Request, ctx: Ctx) -> Response:
    """A sample QR with the pool's logo, as the login page would show it."""
    assert ctx.pool is not None
    pool = ctx.pool
    png = await _pool_logo(request, pool)
    content = linkrules.content(request.state.settings, pool, "console-preview-sample-ticket")
    image = await asyncio.to_thread(qrimage.render_png, content, png, logo_shape=pool.logo_shape)
    return Response(image, media_type="image/png", headers={"cache-control": "private, no-cache"})


def _parse_mp(request: Request, ctx: Ctx) -> tuple[str | None, str | None, dict, dict]:
    """(appid or None for the default, secret or None to keep, entered, errors)."""
    assert ctx.form is not None
    _ = _t(request)
    mode = str(ctx.form.get("mode") or "")
    appid = str(ctx.form.get("appid") or "").strip()
    secret = str(ctx.form.get("secret") or "").strip()
    entered = {"mode": mode, "appid": appid}  # never the secret
    errors: dict[str, str] = {}
    if mode == "default":
        return None, None, entered, errors
    if mode != "private":
        errors["mode"] = _("console.err.choice")
        return None, None, entered, errors
    if not APPID_RE.match(appid):
        errors["appid"] = _("console.err.appid")
    if secret and not APPSECRET_RE.match(secret):
        errors["secret"] = _("console.err.secret")
    elif not secret and appid != (ctx.pool.mp_appid if ctx.pool else None):
        errors["secret"] = _("console.err.secret_required")
    return appid, secret or None, entered, errors


def _mp_error(request: Request, exc: PortalError) -> dict[str, str]:
    """The form's error for a private mini program that cannot be saved."""
    _ = _t(request)
    if isinstance(exc, pools.MiniProgramReserved):
        return {"appid": _("console.err.appid_default")}
    if isinstance(exc, pools.MiniProgramTaken):
        return {"appid": _("console.err.appid_taken")}
    if isinstance(exc, pools.MiniProgramRefused):
        if exc.errcode == 40013:
            return {"appid": _("console.err.appid_refused")}
        if exc.errcode == 40125:
            return {"secret": _("console.err.secret_refused")}
        if exc.errcode == ErrCode.IP_NOT_WHITELISTED:  # not the AppSecret: this server
            ip = exc.ip
            return {
                "appid": _("console.mp.test_ip", ip=ip) if ip else _("console.mp.test_ip_unknown")
            }
        return {"secret": _("console.err.mp_refused", code=exc.errcode)}
    if exc.error == "wechat_unavailable":
        return {"secret": _("console.err.mp_unavailable")}
    return {"appid": _("console.err.appid")}


async def mp_post(request: Request, ctx: Ctx) -> Response:
    """A private mini program is saved only when it is not the platform's,
    WeChat accepts its AppSecret, and no other pool has it (in that order: who
    does not have the AppSecret does not learn whether a pool uses the AppID)."""
    assert ctx.pool is not None
    appid, secret, entered, errors = _parse_mp(request, ctx)
    if errors:
        return await _settings_page(ctx, mp=entered, errors=errors, status=400)
    state = request.state
    try:
        if appid is not None and secret is not None:
            pools.validate_mini_program(
                appid, secret, default_appid=state.settings.default_mp_appid
            )
            await pools.prove_mini_program(state.wechat, appid, secret)
        async with state.db.acquire() as conn, conn.transaction():
            await store.set_mini_program(conn, state.box, ctx.pool, appid, secret)
            await audited(
                conn,
                ctx,
                "pool.mini_program_set",
                ctx.pool.slug,
                before={"mp_appid": ctx.pool.mp_appid},
                after={"mp_appid": appid, **({"mp_secret": secret} if secret else {})},
            )
    except PortalError as exc:
        return await _settings_page(
            ctx, mp=entered, errors=_mp_error(request, exc), status=exc.status_code
        )
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(ctx, pool_path(ctx.pool) + "#mp", "ok", "console.flash.mp_saved")


async def mp_test(request: Request, ctx: Ctx) -> Response:
    """Asks WeChat for an access token with the entered (or stored) AppID and
    AppSecret: the answer says whether they are right. Nothing is saved."""
    assert ctx.pool is not None
    _ = _t(request)
    appid, secret, entered, errors = _parse_mp(request, ctx)
    if errors:
        return await _settings_page(ctx, mp=entered, errors=errors, status=400)
    settings = request.state.settings
    if appid is None:
        appid, secret = settings.default_mp_appid, settings.default_mp_secret
    elif secret is None:
        secret = await pools.mp_secret(request.state.db, request.state.box, ctx.pool)
    if not appid or not secret:
        entered["test"] = ("error", _("console.mp.test_none"))
        return await _settings_page(ctx, mp=entered, status=400)
    try:
        await request.state.wechat.check_credentials(appid, secret)
    except WeChatUnavailable:
        entered["test"] = ("error", _("console.mp.test_unavailable"))
    except WeChatError as exc:
        if exc.errcode == ErrCode.IP_NOT_WHITELISTED:
            # WeChat names the address it saw: the one to add to the whitelist.
            ip = whitelist_ip(exc.errmsg)
            message = _("console.mp.test_ip", ip=ip) if ip else _("console.mp.test_ip_unknown")
            entered["test"] = ("error", message)
            return await _settings_page(ctx, mp=entered)
        key = {40125: "console.mp.test_bad_secret", 40013: "console.mp.test_bad_appid"}.get(
            exc.errcode, "console.mp.test_failed"
        )
        entered["test"] = ("error", _(key, code=exc.errcode))
    else:
        entered["test"] = ("ok", _("console.mp.test_ok"))
    return await _settings_page(ctx, mp=entered)


async def rotate_key(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    async with request.state.db.acquire() as conn, conn.transaction():
        key = await keys.rotate(conn, request.state.box, ctx.pool.id)
        await audited(conn, ctx, "pool.key_rotate", ctx.pool.slug, after={"kid": key.kid})
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(
        ctx, pool_path(ctx.pool) + "#keys", "ok", "console.flash.key_rotated", kid=key.kid
    )


async def add_admin(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None and ctx.form is not None
    _ = _t(request)
    if not ctx.admin.is_superadmin:
        raise Forbidden()
    email = str(ctx.form.get("email") or "").strip()
    password = str(ctx.form.get("password") or "")
    try:
        async with request.state.db.acquire() as conn, conn.transaction():
            created = await store.add_pool_admin(conn, ctx.pool.id, email, password or None)
            await audited(
                conn, ctx, "pool.admin_add", email.lower(), after={"new_account": created}
            )
    except PortalError as exc:
        key = {
            "invalid_email": "console.err.email",
            "weak_password": "console.err.password",
            "password_required": "console.err.password_required",
        }.get(exc.error, "console.err.email")
        return await _settings_page(
            ctx,
            errors={"admin": _(key, min=admins.MIN_PASSWORD)},
            values={**_values(ctx.pool), "admin_email": email},
            status=400,
        )
    key = "console.flash.admin_created" if created else "console.flash.admin_added"
    return await done(ctx, pool_path(ctx.pool) + "#admins", "ok", key, email=email.lower())


async def remove_admin(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    raw = request.path_params["admin_id"]
    if not (raw.isascii() and raw.isdigit()) or int(raw) > 2**62:  # "²".isdigit() too
        raise HTTPException(404)
    members = {a["id"] for a in await store.admins_of_pool(request.state.db, ctx.pool.id)}
    if int(raw) not in members:  # someone of another pool: as if they did not exist
        raise HTTPException(404)
    if not ctx.admin.is_superadmin:
        raise Forbidden()
    async with request.state.db.acquire() as conn, conn.transaction():
        if await store.remove_pool_admin(conn, ctx.pool.id, int(raw)):
            await audited(conn, ctx, "pool.admin_remove", f"admin:{int(raw)}")
    return await done(ctx, pool_path(ctx.pool) + "#admins", "ok", "console.flash.admin_removed")
