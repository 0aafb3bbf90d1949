"""Personal data in the console (issue 19, part 5; docs/privacy.md): delete or
export one user, a pool's retention periods, and a whole pool's deletion
(superadmins, with the slug typed out). The work is portal/privacy's; each change
has its audit row."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portal import privacy
from portal.console import store
from portal.console.common import Ctx, Forbidden, done, pool_path, security_headers
from portal.console.trail import who
from portal.errors import NotFound, ValidationError
from portal.tenants import pools


def _user_id(request: Request):
    user_id = store.parse_uuid(request.path_params["user_id"])
    if user_id is None:
        raise HTTPException(404)
    return user_id


async def user_delete(request: Request, ctx: Ctx) -> Response:
    """Erases the user (privacy.delete_user), once the admin ticked the box that
    says they understand it cannot be undone."""
    assert ctx.pool is not None and ctx.form is not None
    user_id = _user_id(request)
    if ctx.form.get("confirm") != "yes":
        if await store.user_detail(request.state.db, ctx.pool.id, user_id) is None:
            raise HTTPException(404)  # another pool's user: as if there were none
        return await done(
            ctx, pool_path(ctx.pool, f"/users/{user_id}"), "error", "console.privacy.confirm_first"
        )
    try:
        async with request.state.db.acquire() as conn:
            await privacy.delete_user(conn, request.state.redis, ctx.pool, user_id, who(ctx))
    except NotFound:
        raise HTTPException(404) from None
    return await done(ctx, pool_path(ctx.pool, "/users"), "ok", "console.privacy.user_deleted")


async def user_export(request: Request, ctx: Ctx) -> Response:
    """One user's data as a JSON file (a POST: the export is recorded, and only
    the console's own form may ask for it)."""
    assert ctx.pool is not None
    user_id = _user_id(request)
    try:
        async with request.state.db.acquire() as conn:
            data = await privacy.export_user(conn, ctx.pool, user_id, who(ctx))
    except NotFound:
        raise HTTPException(404) from None
    body = json.dumps(data, ensure_ascii=False, indent=2)
    name = f"user-{ctx.pool.slug}-{user_id}.json"
    response = Response(
        body,
        media_type="application/json; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
    return security_headers(response)


def _days(value: object) -> int | None:
    text = str(value or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    return int(text)


async def retention_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None and ctx.form is not None
    login_days = _days(ctx.form.get("login_retention_days"))
    ip_days = _days(ctx.form.get("ip_retention_days"))
    to = pool_path(ctx.pool) + "#retention"
    if login_days is None or ip_days is None:
        return await done(ctx, to, "error", "console.privacy.retention_bad")
    try:
        privacy.check_retention(login_days, ip_days)
    except ValidationError:
        return await done(ctx, to, "error", "console.privacy.retention_bad")
    async with request.state.db.acquire() as conn:
        await privacy.set_retention(conn, ctx.pool, login_days, ip_days, who(ctx))
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(ctx, to, "ok", "console.privacy.retention_saved")


async def pool_delete(request: Request, ctx: Ctx) -> Response:
    """Deletes the pool and everything in it; superadmins only, with its slug
    typed into the form."""
    assert ctx.pool is not None and ctx.form is not None
    if not ctx.admin.is_superadmin:
        raise Forbidden()
    typed = str(ctx.form.get("confirm_slug") or "")
    try:
        async with request.state.db.acquire() as conn:
            await privacy.delete_pool(conn, ctx.pool, typed, who(ctx))
    except privacy.ConfirmationMismatch:
        return await done(
            ctx, pool_path(ctx.pool) + "#delete-pool", "error", "console.privacy.pool_confirm"
        )
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(ctx, "/console/", "ok", "console.privacy.pool_deleted", slug=ctx.pool.slug)
