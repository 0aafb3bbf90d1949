"""A pool's application clients: create (the secret shown once), edit the URIs,
rotate the secret, delete."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portal.console import store
from portal.console.common import Ctx, done, lines, page, pool_path
from portal.console.trail import audited
from portal.errors import PortalError
from portal.tenants import clients, pools
from portal.web import i18n, validation

MAX_URIS = 50


def _t(request: Request):
    return i18n.translator(i18n.pick(request)[0])


def _scopes(form, public: bool) -> list[str] | None:
    """The scopes ticked on the form (None when the form has no such field: the
    default for a new client, unchanged for an edit). A public client never
    gets ``offline_access``: its refresh tokens would need no secret."""
    if not form.get("scopes_form"):
        return None
    ticked = {str(v) for v in form.getlist("scope")}
    if public:
        ticked.discard("offline_access")
    return clients.registered_scopes(ticked & set(clients.SCOPES), public=public)


def _parse(request: Request, form, public: bool | None = None) -> tuple[dict, dict, dict]:
    """(clean values, entered text, errors by field); ``public``: the client's
    type when editing (the form has it only when creating)."""
    _ = _t(request)
    allow_http = request.state.settings.is_dev
    entered = {
        "name": str(form.get("name") or ""),
        "redirect_uris": str(form.get("redirect_uris") or ""),
        "post_logout_redirect_uris": str(form.get("post_logout_redirect_uris") or ""),
        "web_origins": str(form.get("web_origins") or ""),
        "public": form.get("public") == "on" if public is None else public,
    }
    entered["scopes"] = _scopes(form, entered["public"])
    clean: dict = {"scopes": entered["scopes"]}
    errors: dict[str, str] = {}
    try:
        clean["name"] = validation.display_name(entered["name"])
    except PortalError:
        errors["name"] = _("console.err.name")
    checks = {
        "redirect_uris": lambda v: validation.redirect_uri(v, allow_http=allow_http),
        "post_logout_redirect_uris": lambda v: validation.redirect_uri(v, allow_http=allow_http),
        "web_origins": lambda v: validation.web_origin(v, allow_http=allow_http),
    }
    for field, check in checks.items():
        values = lines(entered[field])
        if len(values) > MAX_URIS:
            errors[field] = _("console.err.too_many", max=MAX_URIS)
            continue
        out = []
        for value in values:
            try:
                out.append(check(value))
            except PortalError:
                key = "console.err.origin" if field == "web_origins" else "console.err.uri"
                errors[field] = _(key, value=value)
                break
        clean[field] = list(dict.fromkeys(out))
    return clean, entered, errors


async def _list_page(ctx: Ctx, *, values=None, errors=None, status=200) -> Response:
    assert ctx.pool is not None
    items = await store.list_clients(ctx.request.state.db, ctx.pool.id)
    return await page(
        ctx,
        "console/clients.html",
        {
            "section": "clients",
            "clients": items,
            "values": values or {"public": False, "scopes": clients.SCOPES},
            "errors": errors or {},
            "management_scopes": clients.MANAGEMENT_SCOPES,
        },
        status,
        get_path=pool_path(ctx.pool, "/clients"),
    )


async def list_get(request: Request, ctx: Ctx) -> Response:
    return await _list_page(ctx)


async def create_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None and ctx.form is not None
    clean, entered, errors = _parse(request, ctx.form)
    if errors:
        return await _list_page(ctx, values=entered, errors=errors, status=400)
    async with request.state.db.acquire() as conn, conn.transaction():
        client, secret = await clients.create(
            conn,
            request.state.box,
            pool_id=ctx.pool.id,
            name=clean["name"],
            redirect_uris=clean["redirect_uris"],
            post_logout_redirect_uris=clean["post_logout_redirect_uris"],
            web_origins=clean["web_origins"],
            public=entered["public"],
            allow_http=request.state.settings.is_dev,
            scopes=clean["scopes"],
        )
        await audited(
            conn,
            ctx,
            "client.create",
            client.client_id,
            after={**clean, "public": entered["public"], "secret": secret},
        )
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    _store_secret(ctx, client.client_id, secret)
    return await done(
        ctx,
        pool_path(ctx.pool, f"/clients/{client.client_id}"),
        "ok",
        "console.flash.client_created",
    )


def _store_secret(ctx: Ctx, client_id: str, secret: str | None) -> None:
    """The secret rides to the next page inside the session (sealed), shown once there."""
    if secret:
        box = ctx.request.state.box
        sealed = box.encrypt(secret, f"console-secret:{ctx.session.id}:{client_id}").hex()
        ctx.session.flash(
            "secret", "console.client.secret_once", client_id=client_id, sealed=sealed
        )


async def _client(request: Request, ctx: Ctx) -> clients.Client:
    assert ctx.pool is not None
    client_id = request.path_params["client_id"]
    if len(client_id) > 64 or "\x00" in client_id:  # no client has one; PostgreSQL refuses it
        raise HTTPException(404)
    client = await clients.get(request.state.db, ctx.pool.id, client_id)
    if client is None:
        raise HTTPException(404)
    return client


def _oidc_values(client: clients.Client) -> dict:
    return {
        "response_types": client.response_types,
        "require_par": client.require_par,
        "jwks": json.dumps(client.jwks, indent=2) if client.jwks else "",
        "jwks_uri": client.jwks_uri or "",
        "backchannel_logout_uri": client.backchannel_logout_uri or "",
        "frontchannel_logout_uri": client.frontchannel_logout_uri or "",
    }


async def oidc_post(request: Request, ctx: Ctx) -> Response:
    """What a relying party registers beyond its URIs (issue 18): response types,
    PAR, its public keys, back- and front-channel logout URIs."""
    assert ctx.pool is not None and ctx.form is not None
    client = await _client(request, ctx)
    if client.is_management:
        raise HTTPException(404)
    _ = _t(request)
    form = ctx.form
    entered = {
        "response_types": [str(v) for v in form.getlist("response_type")],
        "require_par": form.get("require_par") == "on",
        "jwks": str(form.get("jwks") or "").strip(),
        **{
            k: str(form.get(k) or "").strip()
            for k in ("jwks_uri", "backchannel_logout_uri", "frontchannel_logout_uri")
        },
    }
    errors: dict[str, str] = {}
    if not entered["response_types"]:
        errors["response_types"] = _("console.oidc.err.response_types")
    if entered["jwks"] and entered["jwks_uri"]:
        errors["jwks"] = _("console.oidc.err.both")
    elif entered["jwks"]:
        try:
            clients.public_jwks(entered["jwks"])
        except PortalError as exc:
            errors["jwks"] = _("console.oidc.err.jwks", reason=str(exc))
    allow_http = request.state.settings.is_dev
    for field in ("jwks_uri", "backchannel_logout_uri", "frontchannel_logout_uri"):
        if entered[field]:
            try:
                validation.redirect_uri(entered[field], field=field, allow_http=allow_http)
            except PortalError:
                errors[field] = _("console.oidc.err.uri", value=entered[field][:200])
    if not errors:
        try:
            async with request.state.db.acquire() as conn, conn.transaction():
                changed = await clients.register(conn, client, allow_http=allow_http, **entered)
                await audited(conn, ctx, "client.update", client.client_id,
                              before=_oidc_values(client), after=_oidc_values(changed))  # fmt: skip
        except PortalError as exc:
            errors["response_types"] = str(exc)
    if errors:
        return await _detail_page(ctx, client, oidc_values=entered, oidc_errors=errors, status=400)
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(
        ctx, pool_path(ctx.pool, f"/clients/{client.client_id}"), "ok", "console.oidc.saved"
    )


async def _detail_page(
    ctx: Ctx,
    client,
    *,
    values=None,
    errors=None,
    status=200,
    oidc_values=None,
    oidc_errors=None,
) -> Response:
    box = ctx.request.state.box
    secret = None
    # Pull the one-time secret out of the flashes before the page pops them.
    for item in list(ctx.session.flashes):
        if item["kind"] == "secret":
            ctx.session.flashes.remove(item)
            ctx.session.dirty = True
            if item["params"].get("client_id") == client.client_id:
                secret = box.decrypt(
                    bytes.fromhex(item["params"]["sealed"]),
                    f"console-secret:{ctx.session.id}:{client.client_id}",
                ).decode()
    entered = values or {
        "name": client.name,
        "redirect_uris": "\n".join(client.redirect_uris),
        "post_logout_redirect_uris": "\n".join(client.post_logout_redirect_uris),
        "web_origins": "\n".join(client.web_origins),
        "scopes": client.scopes,
        "mname": client.name,
        "mscopes": client.management_scopes,
    }
    response = await page(
        ctx,
        "console/client.html",
        {
            "section": "clients",
            "client": client,
            "secret": secret,
            "values": entered,
            "errors": errors or {},
            "issuer": ctx.request.state.settings.pool_url(ctx.pool.slug) if ctx.pool else "",
            "management_scopes": clients.MANAGEMENT_SCOPES,
            "oidc_values": oidc_values or _oidc_values(client),
            "oidc_errors": oidc_errors or {},
        },
        status,
        get_path=pool_path(ctx.pool, f"/clients/{client.client_id}") if ctx.pool else None,
    )
    return response


async def detail_get(request: Request, ctx: Ctx) -> Response:
    return await _detail_page(ctx, await _client(request, ctx))


async def edit_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None and ctx.form is not None
    client = await _client(request, ctx)
    if client.is_management:
        return await _edit_management(request, ctx, client)
    clean, entered, errors = _parse(request, ctx.form, public=client.is_public)
    if entered["scopes"] is None:
        entered["scopes"] = client.scopes
    if (
        client.is_default
        and ctx.pool.callback_url
        and ctx.pool.callback_url not in clean.get("redirect_uris", [ctx.pool.callback_url])
    ):
        errors["redirect_uris"] = _t(request)(
            "console.err.callback_kept", url=ctx.pool.callback_url
        )
    if errors:
        return await _detail_page(ctx, client, values=entered, errors=errors, status=400)
    async with request.state.db.acquire() as conn, conn.transaction():
        await store.update_client(conn, ctx.pool.id, client.client_id, **clean)
        old = {k: getattr(client, k, None) for k in clean}
        await audited(conn, ctx, "client.update", client.client_id, before=old, after=clean)
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(
        ctx, pool_path(ctx.pool, f"/clients/{client.client_id}"), "ok", "console.flash.saved"
    )


async def rotate_get(request: Request, ctx: Ctx) -> Response:
    """Asks first: the old secret stops working at once (for the default client,
    the pool's own hosted-page backend with it)."""
    assert ctx.pool is not None
    client = await _client(request, ctx)
    if client.is_public:
        return await done(
            ctx, pool_path(ctx.pool, f"/clients/{client.client_id}"), "error", "console.err.public"
        )
    path = pool_path(ctx.pool, f"/clients/{client.client_id}/rotate")
    return await page(
        ctx, "console/client_rotate.html", {"section": "clients", "client": client}, get_path=path
    )


async def rotate_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None and ctx.form is not None
    client = await _client(request, ctx)
    if client.is_public:
        return await done(
            ctx, pool_path(ctx.pool, f"/clients/{client.client_id}"), "error", "console.err.public"
        )
    if ctx.form.get("confirm") != "yes":  # not from the confirmation page: ask there
        return await rotate_get(request, ctx)
    async with request.state.db.acquire() as conn, conn.transaction():
        secret = await store.rotate_client_secret(
            conn, request.state.box, ctx.pool.id, client.client_id
        )
        await audited(conn, ctx, "client.rotate_secret", client.client_id, after={"secret": secret})
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    _store_secret(ctx, client.client_id, secret)
    return await done(
        ctx, pool_path(ctx.pool, f"/clients/{client.client_id}"), "ok", "console.flash.rotated"
    )


async def delete_post(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    client = await _client(request, ctx)
    if client.is_default:
        return await done(
            ctx, pool_path(ctx.pool, f"/clients/{client.client_id}"), "error", "console.err.default"
        )
    async with request.state.db.acquire() as conn, conn.transaction():
        await store.delete_client(conn, ctx.pool.id, client.client_id)
        await audited(conn, ctx, "client.delete", client.client_id, before={"name": client.name})
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(
        ctx, pool_path(ctx.pool, "/clients"), "ok", "console.flash.client_deleted", name=client.name
    )


# --- management clients (docs/api.md, "Management API") ----------------------------


def _parse_management(request: Request, form) -> tuple[str, list[str], dict, dict]:
    """(name, scopes, entered values, errors by field) of a management client's form."""
    _ = _t(request)
    entered = {
        "mname": str(form.get("name") or ""),
        "mscopes": [str(v) for v in form.getlist("mscope")],
    }
    errors: dict[str, str] = {}
    name, scopes = "", []
    try:
        name = validation.display_name(entered["mname"])
    except PortalError:
        errors["mname"] = _("console.err.name")
    try:
        scopes = clients.management_scopes(entered["mscopes"])
    except PortalError:
        errors["mscopes"] = _("console.mclient.err_scopes")
    return name, scopes, entered, errors


def _mgmt_audit(name: str, scopes) -> dict:
    """A management client as the audit trail records it."""
    return {"name": name, "type": "management", "scopes": list(scopes)}


async def create_management_post(request: Request, ctx: Ctx) -> Response:
    """A management client: its secret is shown once, on its page."""
    assert ctx.pool is not None and ctx.form is not None
    name, scopes, entered, errors = _parse_management(request, ctx.form)
    if errors:
        values = {"public": False, "scopes": clients.SCOPES, **entered}
        return await _list_page(ctx, values=values, errors=errors, status=400)
    async with request.state.db.acquire() as conn, conn.transaction():
        client, secret = await clients.create_management(
            conn, request.state.box, pool_id=ctx.pool.id, name=name, scopes=scopes
        )
        await audited(
            conn,
            ctx,
            "client.create",
            client.client_id,
            after=_mgmt_audit(client.name, client.management_scopes),
        )
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    _store_secret(ctx, client.client_id, secret)
    return await done(
        ctx,
        pool_path(ctx.pool, f"/clients/{client.client_id}"),
        "ok",
        "console.flash.client_created",
    )


async def _edit_management(request: Request, ctx: Ctx, client: clients.Client) -> Response:
    """A management client's name and scopes (its live tokens lose a scope at once)."""
    assert ctx.pool is not None and ctx.form is not None
    name, scopes, entered, errors = _parse_management(request, ctx.form)
    if errors:
        return await _detail_page(ctx, client, values=entered, errors=errors, status=400)
    async with request.state.db.acquire() as conn, conn.transaction():
        await store.update_client(
            conn,
            ctx.pool.id,
            client.client_id,
            name=name,
            redirect_uris=[],
            post_logout_redirect_uris=[],
            web_origins=[],
            management_scopes=scopes,
        )
        await audited(
            conn,
            ctx,
            "client.update",
            client.client_id,
            before=_mgmt_audit(client.name, client.management_scopes),
            after=_mgmt_audit(name, scopes),
        )
    await pools.announce_change(request.state.hub, ctx.pool.slug)
    return await done(
        ctx, pool_path(ctx.pool, f"/clients/{client.client_id}"), "ok", "console.flash.saved"
    )
