"""Client authentication at the token, revocation, introspection and PAR
endpoints: ``client_secret_basic``, ``client_secret_post``, the JWT assertions
of RFC 7523 (``private_key_jwt`` signed with a key of the client's registered
JWK Set, ``client_secret_jwt`` an HS256 keyed with its secret; ``portal.oidc.jar``)
and ``none`` (public clients, which must then prove possession with PKCE)."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from starlette.datastructures import FormData
from starlette.requests import Request

from portal.oidc import jar
from portal.tenants import clients
from portal.tenants.clients import Client

METHODS = (
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "none",
)


def _invalid(basic: bool, description: str) -> InvalidClientError:
    err = InvalidClientError(description=description)
    if basic:
        # RFC 6749 §5.2: 401 with a challenge when the client used the Authorization header.
        err.status_code = 401
        err.get_headers = lambda: [  # type: ignore[method-assign]
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            ("WWW-Authenticate", 'Basic realm="oidc"'),
        ]
    return err


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid(True, "Malformed Basic credentials.") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _invalid(True, "Malformed Basic credentials.")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


async def authenticate(request: Request, form: FormData) -> Client:
    """The calling client, authenticated, or InvalidClientError."""
    if form.get("client_assertion") is not None or form.get("client_assertion_type") is not None:
        return await _assertion(request, form)
    basic = _basic_credentials(request)
    if basic is not None:
        if form.get("client_secret"):
            raise InvalidRequestError(description="Use one client authentication method, not two.")
        client_id, secret = basic
        if form.get("client_id") not in (None, client_id):
            raise InvalidRequestError(description="client_id does not match the credentials.")
    else:
        client_id = str(form.get("client_id") or "")
        secret = str(form.get("client_secret") or "")
    if not client_id or len(client_id) > 64:
        raise _invalid(basic is not None, "Client authentication failed.")
    # Counted before the secret is checked: wrong guesses use up the budget too.
    state = request.state
    await state.limits.check(
        "client", f"{state.pool.id}:{client_id}:{state.client_ip}", state.settings.rate_token
    )
    client = await request.state.clients.get(request.state.pool.id, client_id)
    if client is None:
        raise _invalid(basic is not None, "Client authentication failed.")
    if client.is_public:
        if secret:
            raise _invalid(basic is not None, "A public client has no secret.")
        return client
    if not secret or not clients.verify_secret(request.state.box, client, secret):
        raise _invalid(basic is not None, "Client authentication failed.")
    return client


async def _assertion(request: Request, form: FormData) -> Client:
    """RFC 7523 §2.2: the client is who the assertion says, if its signature,
    audience, lifetime and single use check out."""
    if _basic_credentials(request) is not None or form.get("client_secret"):
        raise InvalidRequestError(description="Use one client authentication method, not two.")
    if form.get("client_assertion_type") != jar.ASSERTION_TYPE:
        raise InvalidRequestError(
            description=f"client_assertion_type must be {jar.ASSERTION_TYPE}."
        )
    token = str(form.get("client_assertion") or "")
    client_id = jar.assertion_subject(token)
    if client_id is None or form.get("client_id") not in (None, client_id):
        raise _invalid(False, "Client authentication failed.")
    state = request.state
    await state.limits.check(
        "client", f"{state.pool.id}:{client_id}:{state.client_ip}", state.settings.rate_token
    )
    client = await state.clients.get(state.pool.id, client_id)
    if client is None or client.is_public:
        raise _invalid(False, "Client authentication failed.")
    issuer = state.settings.pool_url(state.pool.slug)
    try:
        await jar.check_assertion(request, client, token, issuer)
    except jar.Invalid as exc:
        raise _invalid(False, f"Client authentication failed: {exc}.") from None
    return client
