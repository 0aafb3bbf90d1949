"""A pool's webhooks in the console (issue 19, part 3): endpoints (the secret shown
once), their delivery log with every attempt, replay, and the notice of an
endpoint the portal disabled for failing."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portal.console.common import Ctx, done, page, pool_path
from portal.console.trail import audited
from portal.errors import NotFound, PortalError
from portal.web import i18n
from portal.webhooks import EVENTS, store

_SECRET_FLASH = "secret"  # noqa: S105 (a flash kind: the layout never shows these)


def _error_text(ctx: Ctx, exc: PortalError) -> str:
    """The store's refusal in the page's language (its description when unknown)."""
    _ = i18n.translator(i18n.pick(ctx.request)[0])
    key = f"console.webhooks.err.{exc.error}"
    text = _(key, max=store.MAX_ENDPOINTS_PER_POOL)
    return exc.description if text == key else text


def _entered(form) -> dict:
    return {
        "url": str(form.get("url") or "")[:2100],
        "description": str(form.get("description") or "")[:300],
        "events": [str(e) for e in form.getlist("events")][:50],
    }


async def _endpoint_or_404(request: Request, ctx: Ctx) -> dict:
    assert ctx.pool is not None
    try:
        return await store.get_endpoint(
            request.state.db, ctx.pool.id, request.path_params["endpoint_id"]
        )
    except NotFound:
        raise HTTPException(404) from None


async def _list_page(ctx: Ctx, *, values=None, error: str | None = None, status=200) -> Response:
    assert ctx.pool is not None
    endpoints = await store.list_endpoints(ctx.request.state.db, ctx.pool.id)
    return await page(
        ctx,
        "console/webhooks.html",
        {
            "section": "webhooks",
            "endpoints": endpoints,
            "all_events": EVENTS,
            "values": values or {"url": "", "description": "", "events": []},
            "error": error,
            "max_endpoints": store.MAX_ENDPOINTS_PER_POOL,
        },
        status,
        get_path=pool_path(ctx.pool, "/webhooks"),
    )


async def list_get(request: Request, ctx: Ctx) -> Response:
    return await _list_page(ctx)


async def create_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None and ctx.form is not None
    entered = _entered(ctx.form)
    try:
        async with request.state.db.acquire() as conn, conn.transaction():
            endpoint, secret = await store.create_endpoint(
                conn,
                request.state.settings,
                request.state.box,
                ctx.pool.id,
                url=entered["url"],
                events=entered["events"],
                description=entered["description"],
            )
            await audited(
                conn,
                ctx,
                "webhook.create",
                endpoint["id"],
                after={k: endpoint[k] for k in ("url", "events", "description")},
            )
    except PortalError as exc:
        return await _list_page(ctx, values=entered, error=_error_text(ctx, exc), status=400)
    _store_secret(ctx, endpoint["id"], secret)
    return await done(
        ctx, pool_path(ctx.pool, f"/webhooks/{endpoint['id']}"), "ok", "console.webhooks.created"
    )


def _store_secret(ctx: Ctx, endpoint_id: str, secret: str) -> None:
    """The signing secret rides to the next page sealed in the session, shown once there."""
    box = ctx.request.state.box
    sealed = box.encrypt(secret, f"console-secret:{ctx.session.id}:{endpoint_id}").hex()
    ctx.session.flash(_SECRET_FLASH, "console.webhooks.secret_once", id=endpoint_id, sealed=sealed)


def _take_secret(ctx: Ctx, endpoint_id: str) -> str | None:
    secret = None
    for item in list(ctx.session.flashes):
        if item["kind"] == _SECRET_FLASH:
            ctx.session.flashes.remove(item)
            ctx.session.dirty = True
            if item["params"].get("id") == endpoint_id:
                secret = (
                    ctx.request.state.box.decrypt(
                        bytes.fromhex(item["params"]["sealed"]),
                        f"console-secret:{ctx.session.id}:{endpoint_id}",
                    )
                ).decode()
    return secret


def _before(request: Request) -> int | None:
    value = request.query_params.get("before", "")
    return int(value) if value.isdigit() and len(value) < 19 else None


async def detail_get(request: Request, ctx: Ctx, *, values=None, error=None, status=200):
    assert ctx.pool is not None
    endpoint = await _endpoint_or_404(request, ctx)
    db = request.state.db
    deliveries = await store.list_deliveries(
        db, ctx.pool.id, endpoint["id"], before=_before(request), limit=50
    )
    shown = request.query_params.get("delivery", "")
    delivery = None
    if shown.isdigit() and len(shown) < 19:
        try:
            delivery = await store.get_delivery(db, ctx.pool.id, int(shown))
        except NotFound:
            delivery = None
        if delivery is not None and delivery["endpoint_id"] != endpoint["id"]:
            delivery = None
    return await page(
        ctx,
        "console/webhook.html",
        {
            "section": "webhooks",
            "endpoint": endpoint,
            "secret": _take_secret(ctx, endpoint["id"]),
            "deliveries": deliveries,
            "delivery": delivery,
            "next_before": deliveries[-1]["id"] if len(deliveries) == 50 else None,
            "all_events": EVENTS,
            "values": values or endpoint,
            "error": error,
            "disable_after_days": request.state.settings.webhooks_disable_after_days,
        },
        status,
        get_path=pool_path(ctx.pool, f"/webhooks/{endpoint['id']}"),
    )


async def edit_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None and ctx.form is not None
    before = await _endpoint_or_404(request, ctx)
    entered = _entered(ctx.form)
    try:
        async with request.state.db.acquire() as conn, conn.transaction():
            after = await store.update_endpoint(
                conn,
                request.state.settings,
                ctx.pool.id,
                before["id"],
                url=entered["url"],
                events=entered["events"],
                description=entered["description"],
            )
            keys = ("url", "events", "description")
            await audited(
                conn,
                ctx,
                "webhook.update",
                before["id"],
                before={k: before[k] for k in keys},
                after={k: after[k] for k in keys},
            )
    except PortalError as exc:
        return await detail_get(
            request, ctx, values={**before, **entered}, error=_error_text(ctx, exc), status=400
        )
    return await done(
        ctx, pool_path(ctx.pool, f"/webhooks/{before['id']}"), "ok", "console.webhooks.saved"
    )


async def enable_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None and ctx.form is not None
    endpoint = await _endpoint_or_404(request, ctx)
    enable = ctx.form.get("enabled") == "1"
    async with request.state.db.acquire() as conn, conn.transaction():
        await store.update_endpoint(
            conn, request.state.settings, ctx.pool.id, endpoint["id"], enabled=enable
        )
        await audited(
            conn,
            ctx,
            "webhook.enable" if enable else "webhook.disable",
            endpoint["id"],
            before={"enabled": endpoint["enabled"]},
            after={"enabled": enable},
        )
    key = "console.webhooks.enabled_flash" if enable else "console.webhooks.disabled_flash"
    return await done(ctx, pool_path(ctx.pool, f"/webhooks/{endpoint['id']}"), "ok", key)


async def rotate_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    endpoint = await _endpoint_or_404(request, ctx)
    async with request.state.db.acquire() as conn, conn.transaction():
        secret = await store.rotate_secret(conn, request.state.box, ctx.pool.id, endpoint["id"])
        await audited(conn, ctx, "webhook.rotate_secret", endpoint["id"], after={"secret": secret})
    _store_secret(ctx, endpoint["id"], secret)
    return await done(
        ctx, pool_path(ctx.pool, f"/webhooks/{endpoint['id']}"), "ok", "console.webhooks.rotated"
    )


async def delete_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    endpoint = await _endpoint_or_404(request, ctx)
    async with request.state.db.acquire() as conn, conn.transaction():
        await store.delete_endpoint(conn, ctx.pool.id, endpoint["id"])
        await audited(conn, ctx, "webhook.delete", endpoint["id"], before={"url": endpoint["url"]})
    return await done(ctx, pool_path(ctx.pool, "/webhooks"), "ok", "console.webhooks.deleted")


async def replay_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    endpoint = await _endpoint_or_404(request, ctx)
    raw = request.path_params["delivery_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise HTTPException(404)
    delivery_id = int(raw)
    db = request.state.db
    try:
        delivery = await store.get_delivery(db, ctx.pool.id, delivery_id)
    except NotFound:
        raise HTTPException(404) from None
    if delivery["endpoint_id"] != endpoint["id"]:
        raise HTTPException(404)
    async with db.acquire() as conn, conn.transaction():
        await store.replay(conn, ctx.pool.id, delivery_id)
        await audited(conn, ctx, "webhook.replay", str(delivery_id))
    return await done(
        ctx,
        pool_path(ctx.pool, f"/webhooks/{endpoint['id']}?delivery={delivery_id}"),
        "ok",
        "console.webhooks.replayed",
    )
