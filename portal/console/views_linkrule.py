"""A pool's link rule on its settings page (issue 17): the QR prefix its codes
carry and, for a private mini program, its own prefix and the verification file
WeChat hands out for it (served on the pool host under ``/q/`` and at the root).
Pools on the platform's default mini program share its one rule, which the
platform admin sets up (``portal mp``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from portal.console.common import Ctx, done, pool_path
from portal.console.trail import audited
from portal.errors import PortalError
from portal.tenants import linkrules, pools


async def context(request: Request, pool: pools.Pool) -> dict[str, Any]:
    """What the settings page shows of the pool's link rule."""
    settings = request.state.settings
    prefix = linkrules.prefix(settings, pool)
    file = await linkrules.get_file(request.state.db, pool.mp_appid) if pool.mp_appid else None
    return {
        "private": pool.mp_appid is not None,
        "prefix": prefix,
        "custom": pool.mp_qr_prefix or "",
        "pool_prefix": f"{settings.pool_url(pool.slug)}/q/",
        "file_name": file.name if file else "",
        "file_urls": (
            [
                prefix.rsplit("/", 1)[0] + "/" + file.name,
                settings.pool_url(pool.slug) + "/" + file.name,
            ]
            if file
            else []
        ),
    }


async def post(request: Request, ctx: Ctx) -> Response:
    """Saves a private mini program's prefix (empty: the pool host's) and, when a
    name is given, its verification file. Refused for a pool on the default one."""
    assert ctx.pool is not None and ctx.form is not None
    pool = ctx.pool
    if pool.mp_appid is None:
        return await done(ctx, pool_path(pool) + "#link-rule", "error", "console.link.default_only")
    custom = str(ctx.form.get("prefix") or "").strip()
    name = str(ctx.form.get("file_name") or "").strip()
    content = str(ctx.form.get("file_content") or "").strip()
    state = request.state
    try:
        if name or content:
            linkrules.validate_file(name, content)
        async with state.db.acquire() as conn, conn.transaction():
            prefix = await linkrules.set_prefix(conn, state.settings, pool, custom or None)
            if name:
                await linkrules.set_file(conn, pool.mp_appid, name, content)
            await audited(
                conn,
                ctx,
                "pool.link_rule_set",
                pool.slug,
                before={"mp_qr_prefix": pool.mp_qr_prefix},
                after={"mp_qr_prefix": custom or None, **({"verify_file": name} if name else {})},
            )
    except PortalError as exc:
        key = {
            "qr_prefix_taken": "console.link.taken",
            "invalid_qr_prefix": "console.link.bad_prefix",
            "invalid_verify_file": "console.link.bad_file",
        }.get(exc.error, "console.link.bad_prefix")
        return await done(ctx, pool_path(pool) + "#link-rule", "error", key)
    await pools.announce_change(state.hub, pool.slug)
    return await done(
        ctx, pool_path(pool) + "#link-rule", "ok", "console.link.saved", prefix=prefix
    )
