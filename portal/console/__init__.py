"""The tenant admin console on the apex host (docs/design.md §1, §6).

``routes()`` is every console route; the isolation test walks this same list,
so a route added here is tested for other pools' 404 without anyone adding it
to the test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from portal.console import (
    messages,  # noqa: F401  (registers the console's texts)
    messages_oidc,  # noqa: F401  (the OpenID Connect registration's texts)
    messages_privacy,  # noqa: F401  (the audit trail's and personal data's texts)
    messages_webhooks,  # noqa: F401  (the webhooks' texts)
    views_audit,
    views_auth,
    views_clients,
    views_linkrule,
    views_pool,
    views_privacy,
    views_users,
    views_webhooks,
)
from portal.console.common import Ctx, NotSignedIn, context, login_redirect

View = Callable[[Request, Ctx], Awaitable[Response]]


def guarded(view: View, *, pool: bool = True, files: int = 0) -> Callable:
    async def endpoint(request: Request) -> Response:
        try:
            ctx = await context(request, pool=pool, files=files)
        except NotSignedIn:
            return login_redirect(request)
        try:
            return await view(request, ctx)
        finally:
            if ctx.form is not None:
                await ctx.form.close()  # an uploaded file's temporary file

    endpoint.__name__ = view.__name__
    endpoint.__qualname__ = f"console.{view.__module__.rsplit('.', 1)[-1]}.{view.__name__}"
    return endpoint


async def _to_index(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=308)


def routes() -> list[Route]:
    p = "/console/pools/{slug}"
    get, post = ["GET"], ["POST"]
    return [
        Route("/console", _to_index, methods=get),
        Route("/console/login", views_auth.login_get, methods=get),
        Route("/console/login", views_auth.login_post, methods=post),
        Route("/console/logout", guarded(views_auth.logout, pool=False), methods=post),
        Route("/console/", guarded(views_auth.index, pool=False), methods=get),
        Route("/console/pools", guarded(views_auth.create_pool, pool=False), methods=post),
        # settings
        Route(p, guarded(views_pool.settings_get), methods=get),
        Route(p, guarded(views_pool.settings_post), methods=post),
        Route(p + "/logo", guarded(views_pool.logo_post, files=1), methods=post),
        Route(p + "/logo/delete", guarded(views_pool.logo_delete), methods=post),
        Route(p + "/logo.png", guarded(views_pool.logo_png), methods=get),
        Route(p + "/qr-preview.png", guarded(views_pool.qr_preview), methods=get),
        Route(p + "/mini-program", guarded(views_pool.mp_post), methods=post),
        Route(p + "/mini-program/test", guarded(views_pool.mp_test), methods=post),
        Route(p + "/link-rule", guarded(views_linkrule.post), methods=post),
        Route(p + "/keys/rotate", guarded(views_pool.rotate_key), methods=post),
        Route(p + "/admins", guarded(views_pool.add_admin), methods=post),
        Route(p + "/admins/{admin_id}/remove", guarded(views_pool.remove_admin), methods=post),
        # clients
        Route(p + "/clients", guarded(views_clients.list_get), methods=get),
        Route(p + "/clients", guarded(views_clients.create_post), methods=post),
        # before /clients/{client_id}, which would take "management" for an id
        Route(
            p + "/clients/management",
            guarded(views_clients.create_management_post),
            methods=post,
        ),
        Route(p + "/clients/{client_id}", guarded(views_clients.detail_get), methods=get),
        Route(p + "/clients/{client_id}", guarded(views_clients.edit_post), methods=post),
        Route(p + "/clients/{client_id}/oidc", guarded(views_clients.oidc_post), methods=post),
        Route(p + "/clients/{client_id}/rotate", guarded(views_clients.rotate_get), methods=get),
        Route(p + "/clients/{client_id}/rotate", guarded(views_clients.rotate_post), methods=post),
        Route(p + "/clients/{client_id}/delete", guarded(views_clients.delete_post), methods=post),
        # users
        Route(p + "/users", guarded(views_users.list_get), methods=get),
        Route(p + "/users/{user_id}", guarded(views_users.detail_get), methods=get),
        Route(p + "/users/{user_id}/block", guarded(views_users.block_post), methods=post),
        Route(p + "/users/{user_id}/unblock", guarded(views_users.unblock_post), methods=post),
        # logins
        Route(p + "/logins", guarded(views_users.logins_get), methods=get),
        Route(p + "/logins.csv", guarded(views_users.logins_csv), methods=get),
        # audit trail and personal data (issue 19, parts 4 and 5)
        Route(p + "/audit", guarded(views_audit.audit_get), methods=get),
        Route(p + "/audit.csv", guarded(views_audit.audit_csv), methods=get),
        Route("/console/audit", guarded(views_audit.platform_audit_get, pool=False), methods=get),
        Route(
            "/console/audit.csv", guarded(views_audit.platform_audit_csv, pool=False), methods=get
        ),
        Route(p + "/users/{user_id}/delete", guarded(views_privacy.user_delete), methods=post),
        Route(p + "/users/{user_id}/export", guarded(views_privacy.user_export), methods=post),
        Route(p + "/retention", guarded(views_privacy.retention_post), methods=post),
        Route(p + "/delete", guarded(views_privacy.pool_delete), methods=post),
        # webhooks (issue 19, part 3)
        Route(p + "/webhooks", guarded(views_webhooks.list_get), methods=get),
        Route(p + "/webhooks", guarded(views_webhooks.create_post), methods=post),
        Route(p + "/webhooks/{endpoint_id}", guarded(views_webhooks.detail_get), methods=get),
        Route(p + "/webhooks/{endpoint_id}", guarded(views_webhooks.edit_post), methods=post),
        Route(
            p + "/webhooks/{endpoint_id}/enable", guarded(views_webhooks.enable_post), methods=post
        ),
        Route(
            p + "/webhooks/{endpoint_id}/rotate", guarded(views_webhooks.rotate_post), methods=post
        ),
        Route(
            p + "/webhooks/{endpoint_id}/delete", guarded(views_webhooks.delete_post), methods=post
        ),
        Route(
            p + "/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay",
            guarded(views_webhooks.replay_post),
            methods=post,
        ),
    ]


__all__ = ["NotSignedIn", "routes"]
