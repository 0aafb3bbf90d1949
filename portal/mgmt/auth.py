"""Who calls the management API, and what they may do.

Every call carries a bearer access token of the pool's client credentials grant
(``/oidc/token``, ``grant_type=client_credentials``, a management client): it
must be signed by this pool's keys, issued by this pool, for this pool's API
(``aud``), unexpired and unrevoked; its client must still exist as a management
client of this pool; and the scope a route needs must be both in the token and
still registered for the client (an admin who narrows a client narrows its live
tokens at once). Then the call counts against the client's rate limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from portal.errors import PortalError
from portal.oidc import tokens
from portal.tenants.clients import Client


class InvalidToken(PortalError):
    """RFC 6750 §3.1: 401 with a ``Bearer`` challenge."""

    status_code = 401
    error = "invalid_token"
    description = "The access token is missing, invalid, expired or revoked."

    def __init__(self, realm: str, description: str | None = None) -> None:
        super().__init__(description)
        challenge = f'Bearer realm="{realm}"'
        self.headers = {"www-authenticate": f'{challenge}, error="invalid_token"'}


class InsufficientScope(PortalError):
    """RFC 6750 §3.1: 403, naming the scope the route needs."""

    status_code = 403
    error = "insufficient_scope"

    def __init__(self, realm: str, scope: str) -> None:
        super().__init__(f"This call needs the scope {scope}.")
        self.headers = {
            "www-authenticate": f'Bearer realm="{realm}", error="insufficient_scope", '
            f'scope="{scope}"'
        }


@dataclass(frozen=True)
class Caller:
    """The management client of a verified token, and the scopes it holds now."""

    client: Client
    scopes: frozenset[str]

    @property
    def client_id(self) -> str:
        return self.client.client_id


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip() and len(value) <= 8192:
        return value.strip()
    return ""


async def caller(request: Request, scope: str) -> Caller:
    """The caller of ``request``, allowed ``scope``; else InvalidToken (401),
    InsufficientScope (403) or RateLimited (429)."""
    state = request.state
    pool = state.pool
    issuer = state.settings.pool_url(pool.slug)
    token = _bearer(request)
    if not token:
        raise InvalidToken(issuer, "A bearer access token is required.")
    try:
        claims = await tokens.verify_access_token(
            state.keys,
            pool.id,
            state.mux,
            issuer=issuer,
            token=token,
            audience=tokens.api_audience(issuer),
        )
    except tokens.InvalidToken:
        raise InvalidToken(issuer) from None
    client_id = str(claims.get("client_id") or "")
    client = await state.clients.get(pool.id, client_id) if client_id else None
    if client is None or not client.is_management:
        # Deleted since (or never a management client of this pool).
        raise InvalidToken(issuer, "The client of this token is no longer registered.")
    held = frozenset(str(claims.get("scope") or "").split()) & frozenset(client.management_scopes)
    # Counted once the token is known to be this client's: per client, over every
    # process and address (a client's own budget is not another's to spend).
    await state.limits.check("mgmt", f"{pool.id}:{client.client_id}", state.settings.rate_mgmt)
    if scope not in held:
        raise InsufficientScope(issuer, scope)
    return Caller(client, held)
