"""The management API of a pool, ``https://{pool}/api/v1/...`` (issue 19, part 2;
docs/api.md, "Management API"): users, their identities, clients, the login
log and the pool's settings, for a management client with a client credentials
token (``auth.py``). Its writes are the console's (``portal.console.store``),
each recorded in the audit trail.
"""

from __future__ import annotations

from starlette.routing import Route

from portal.mgmt import views

PREFIX = "/api/v1"


def routes() -> list[Route]:
    p = PREFIX
    get, post, patch, delete = ["GET"], ["POST"], ["PATCH"], ["DELETE"]
    return [
        # users
        Route(p + "/users", views.list_users, methods=get),
        Route(p + "/users", views.create_user, methods=post),
        Route(p + "/users/{user_id}", views.get_user, methods=get),
        Route(p + "/users/{user_id}", views.update_user, methods=patch),
        Route(p + "/users/{user_id}", views.delete_user, methods=delete),
        Route(p + "/users/{user_id}/block", views.block_user, methods=post),
        Route(p + "/users/{user_id}/unblock", views.unblock_user, methods=post),
        Route(p + "/users/{user_id}/export", views.export_user, methods=get),
        # identities
        Route(p + "/users/{user_id}/identities", views.list_identities, methods=get),
        Route(
            p + "/users/{user_id}/identities/{identity_id}", views.unlink_identity, methods=delete
        ),
        # clients
        Route(p + "/clients", views.list_clients, methods=get),
        Route(p + "/clients", views.create_client, methods=post),
        Route(p + "/clients/{client_id}", views.get_client, methods=get),
        Route(p + "/clients/{client_id}", views.update_client, methods=patch),
        Route(p + "/clients/{client_id}", views.delete_client, methods=delete),
        Route(p + "/clients/{client_id}/secret", views.rotate_client_secret, methods=post),
        # the login log
        Route(p + "/logins", views.list_logins, methods=get),
        # the audit trail
        Route(p + "/audit", views.list_audit, methods=get),
        # settings
        Route(p + "/settings", views.get_settings, methods=get),
        Route(p + "/settings", views.update_settings, methods=patch),
        # webhooks (issue 19, part 3): portal.webhooks' functions, scope webhooks:write
        Route(p + "/webhooks", views.list_webhooks, methods=get),
        Route(p + "/webhooks", views.create_webhook, methods=post),
        Route(p + "/webhooks/{endpoint_id}", views.get_webhook, methods=get),
        Route(p + "/webhooks/{endpoint_id}", views.update_webhook, methods=patch),
        Route(p + "/webhooks/{endpoint_id}", views.delete_webhook, methods=delete),
        Route(p + "/webhooks/{endpoint_id}/secret", views.rotate_webhook_secret, methods=post),
        Route(p + "/webhooks/{endpoint_id}/deliveries", views.list_webhook_deliveries, methods=get),
        Route(
            p + "/webhooks/{endpoint_id}/deliveries/{delivery_id}",
            views.get_webhook_delivery,
            methods=get,
        ),
        Route(
            p + "/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay",
            views.replay_webhook_delivery,
            methods=post,
        ),
    ]
