"""OpenID Connect endpoints of a pool, other than the authorization endpoint:
discovery, token, userinfo, revocation (RFC 7009), introspection (RFC 7662)
and RP-initiated logout. Errors use authlib's OAuth2 vocabulary."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from portal.oidc import clientauth, jar, sessions, tokens
from portal.oidc import logout as rp_logout
from portal.oidc.codes import CodeMismatch
from portal.scan import users
from portal.tenants.clients import Client
from portal.tenants.pools import Pool
from portal.web import cors, jsonapi
from portal.web.pages import render

SCOPES = ("openid", "profile", "phone", "offline_access")
MAX_FORM_BYTES = 16 * 1024
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
# What a logout confirmation page carries over to its form.
_LOGOUT_PARAMS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state", "ui_locales")


def quoted(text: str, max_len: int = 40) -> str:
    """Client input fit to quote in an OAuth2 ``error_description``, which RFC 6749
    §5.2 limits to printable ASCII without ``"`` and ``\\`` (authlib refuses the rest)."""
    safe = "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)
    return safe[:max_len] + ("..." if len(safe) > max_len else "")


def issuer(request: Request) -> str:
    return request.state.settings.pool_url(request.state.pool.slug)


async def discovery(request: Request) -> Response:
    iss = issuer(request)
    pool: Pool = request.state.pool
    # Built and encoded once per process until the pool changes (KeyCache.clear).
    key = ("discovery", pool.id, iss, pool.id_token_alg)
    return _public(request, request.state.keys.document(key, lambda: _metadata(iss, pool)))


def _metadata(iss: str, pool: Pool) -> dict:
    algs = sorted({pool.id_token_alg, "RS256"})
    return {
        "issuer": iss,
        "authorization_endpoint": f"{iss}/oidc/auth",
        "token_endpoint": f"{iss}/oidc/token",
        "userinfo_endpoint": f"{iss}/oidc/userinfo",
        "jwks_uri": f"{iss}/oidc/jwks",
        "revocation_endpoint": f"{iss}/oidc/revoke",
        "introspection_endpoint": f"{iss}/oidc/introspect",
        "end_session_endpoint": f"{iss}/oidc/logout",
        "scopes_supported": list(SCOPES),
        # Per client: its registration's response_types (never `token`, RFC 9700 §2.1.2).
        "response_types_supported": ["code", "id_token", "code id_token"],
        "response_modes_supported": ["query", "fragment", "form_post", "web_message"],
        "grant_types_supported": list(GRANTS),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": list(clientauth.METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(jar.ALGS),
        "revocation_endpoint_auth_methods_supported": list(clientauth.METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(jar.ALGS),
        "introspection_endpoint_auth_methods_supported": [
            m for m in clientauth.METHODS if m != "none"
        ],
        "introspection_endpoint_auth_signing_alg_values_supported": list(jar.ALGS),
        # RFC 9126: per client (require_pushed_authorization_requests), not for all.
        "pushed_authorization_request_endpoint": f"{iss}/oidc/par",
        "require_pushed_authorization_requests": False,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "amr",
            "at_hash",
            "sid",
            *tokens.USER_CLAIMS,
        ],
        # RFC 9101: signed request objects by value; by reference only PAR's request_uri.
        "request_parameter_supported": True,
        "request_object_signing_alg_values_supported": list(jar.ALGS),
        "request_uri_parameter_supported": False,
        "claims_parameter_supported": False,
        # Back- and Front-Channel Logout 1.0, per client (portal.oidc.logout).
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": True,
        "frontchannel_logout_session_supported": True,
        "authorization_response_iss_parameter_supported": True,  # RFC 9207
        "ui_locales_supported": ["zh-CN", "en"],
    }


async def jwks(request: Request) -> Response:
    # From the process's key cache: no query, no encoding per request.
    return _public(request, await request.state.keys.jwks(request.state.pool.id))


def _public(request: Request, document: tokens.Encoded) -> Response:
    """A public document, pre-encoded, cacheable: 304 when the client has it."""
    headers = {"cache-control": "public, max-age=300", "etag": document.etag}
    if _etag_matches(request.headers.get("if-none-match"), document.etag):
        return Response(status_code=304, headers=headers)
    return Response(document.body, media_type="application/json", headers=headers)


def _etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: If-None-Match compares weakly; ``*`` matches any."""
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


async def read_form(request: Request) -> FormData:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequestError(
            description="Send the request as application/x-www-form-urlencoded."
        )
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_FORM_BYTES:
        raise InvalidRequestError(description="The request body is too large.")
    # Capped as it is read too: a chunked body has no length to check first.
    form = await jsonapi.read_form(request, max_bytes=MAX_FORM_BYTES, max_fields=50)
    for name in form:
        if len(form.getlist(name)) > 1:
            raise InvalidRequestError(description=f"Parameter {quoted(name)} is repeated.")
    return form


def _issue_args(request: Request, client: Client, user: dict, scope: str, auth_time: int) -> dict:
    return {
        "key_cache": request.state.keys,
        "box": request.state.box,
        "issuer": issuer(request),
        "pool": request.state.pool,
        "client_pk": client.id,
        "client_id": client.client_id,
        "user": user,
        "scope": scope,
        "auth_time": auth_time,
    }


async def token(request: Request) -> Response:
    form = await read_form(request)
    client = await clientauth.authenticate(request, form)
    cors.check(request, client)  # a browser (the SDK's PKCE exchange): the client's origins only
    grant_type = form.get("grant_type")
    if client.is_management != (grant_type == "client_credentials") and grant_type in GRANTS:
        # A management client only ever gets management tokens; an application
        # client never does (RFC 6749 §5.2).
        raise UnauthorizedClientError(
            description=f"This client may not use the {grant_type} grant."
        )
    if grant_type == "client_credentials":
        body = await _client_credentials(request, form, client)
    elif grant_type == "authorization_code":
        body = await _authorization_code(request, form, client)
    elif grant_type == "refresh_token":
        body = await _refresh(request, form, client)
    elif not grant_type:
        raise InvalidRequestError(description="grant_type is required.")
    else:
        unsupported = UnsupportedGrantTypeError(quoted(str(grant_type)))
        unsupported.description = (
            f"The grant type {quoted(str(grant_type))} is not offered here; "
            "use authorization_code, refresh_token or client_credentials."
        )
        raise unsupported
    return JSONResponse(body, headers=NO_STORE)


GRANTS = ("authorization_code", "refresh_token", "client_credentials")


async def _client_credentials(request: Request, form: FormData, client: Client) -> dict:
    """A management API token (docs/api.md, "Management API"): the scopes asked,
    all of them registered for the client, or all it has when none are asked."""
    asked = str(form.get("scope") or "").split()
    if any(s not in client.management_scopes for s in asked):
        raise InvalidScopeError(description="The client is not registered for that scope.")
    scope = " ".join(s for s in client.management_scopes if not asked or s in asked)
    return await tokens.issue_client_token(
        request.state.keys,
        request.state.pool,
        issuer=issuer(request),
        client_id=client.client_id,
        scope=scope,
    )


_MISMATCH = {
    "client": "The code was issued to another client.",
    "redirect_uri": "redirect_uri does not match the authorization request.",
    "verifier_missing": "A valid code_verifier is required (PKCE).",
    "verifier_unexpected": "No code_challenge was sent for this code.",
    "verifier": "code_verifier does not match the code_challenge.",
}


async def _authorization_code(request: Request, form: FormData, client: Client) -> dict:
    pool: Pool = request.state.pool
    code = str(form.get("code") or "")
    if not code or len(code) > 100:
        raise InvalidRequestError(description="code is required.")
    verifier = str(form.get("code_verifier") or "")
    if not verifier:
        challenge = ""
    elif 43 <= len(verifier) <= 128:
        challenge = create_s256_code_challenge(verifier)
    else:
        challenge = "!"  # matches no challenge: "!" is no base64url character
    try:
        # The client is authenticated already; the code is spent only if this
        # attempt matches it (client, redirect_uri, verifier), in one atomic step.
        grant, replayed_family = await request.state.codes.redeem(
            pool.id,
            code,
            client_id=client.client_id,
            redirect_uri=str(form.get("redirect_uri") or ""),
            challenge=challenge,
        )
    except CodeMismatch as exc:
        raise InvalidGrantError(description=_MISMATCH[exc.what]) from None
    if grant is None:
        if replayed_family:
            # A code used twice was probably stolen: revoke what its first use issued,
            # and tell the client that login has ended (back-channel logout).
            async with request.state.db.acquire() as conn, conn.transaction():
                await tokens.revoke_family(conn, request.state.redis, pool, replayed_family)
                await rp_logout.notify(
                    conn, pool.id, client.client_id, sub=None, sid=replayed_family
                )
        raise InvalidGrantError(description="The code is invalid, expired or already used.")
    user = await users.get(request.state.db, pool.id, grant.user_id)
    if user is None or user["blocked"]:
        raise InvalidGrantError(description="The user can no longer log in.")
    # What the client's registration allows now (an admin may have narrowed it
    # since the authorization request).
    scope = client.granted(grant.scope.split())
    async with request.state.db.acquire() as conn, conn.transaction():
        issued = await tokens.issue(
            conn,
            **_issue_args(request, client, user, scope, grant.auth_time),
            nonce=grant.nonce,
            refresh="offline_access" in scope.split(),
            family_id=uuid.UUID(grant.family_id),
        )
    return issued.as_dict()


async def _refresh(request: Request, form: FormData, client: Client) -> dict:
    pool: Pool = request.state.pool
    presented = str(form.get("refresh_token") or "")
    if not presented or len(presented) > 200:
        raise InvalidRequestError(description="refresh_token is required.")
    if not client.may_refresh:
        # Refused before the token is looked at: it is neither spent nor revoked.
        raise UnauthorizedClientError(description="This client may not use refresh tokens.")
    asked = form.get("scope")
    wanted = str(asked).split() if asked else []
    # One statement (tokens.rotate_refresh): the token spent, its successor stored, the user read.
    rotation = await tokens.rotate_refresh(
        request.state.db,
        request.state.box,
        pool,
        client_pk=client.id,
        presented=presented,
        asked=wanted,
        # What a refresh may be granted: the client's registered scopes, of those asked.
        allowed=client.granted(wanted if asked else SCOPES).split(),
    )
    if rotation is None:
        raise InvalidGrantError(description="The refresh token is invalid.")
    if rotation.revoked:
        # Ended already (logout, revocation, a replay): nothing more to revoke.
        raise InvalidGrantError(description="The refresh token has been revoked.")
    if rotation.spent:
        # Reuse of a rotated token: someone holds a copy. End the whole login, and
        # tell the client (back-channel logout), in one transaction.
        async with request.state.db.acquire() as conn, conn.transaction():
            await tokens.revoke_family(conn, request.state.redis, pool, str(rotation.family_id))
            sub = str(rotation.user["id"]) if rotation.user else None
            await rp_logout.notify(
                conn, pool.id, client.client_id, sub=sub, sid=str(rotation.family_id)
            )
        raise InvalidGrantError(
            description="The refresh token was already used; the session is revoked."
        )
    if rotation.expired:
        raise InvalidGrantError(description="The refresh token has expired.")
    if not rotation.scope_ok:
        # Not spent: a bad request must not end the login.
        raise InvalidScopeError(description="A refresh cannot widen the scope.")
    user = rotation.user
    if user is None or user["blocked"]:
        raise InvalidGrantError(description="The user can no longer log in.")
    if rotation.refresh_token and await tokens.family_revoked(
        request.state.mux, str(rotation.family_id)
    ):
        # Ended (logout, block, a replay) while this refresh held the old token's
        # lock: that revocation could not see the successor stored here.
        await tokens.revoke_family(
            request.state.db, request.state.redis, pool, str(rotation.family_id)
        )
        raise InvalidGrantError(description="The refresh token has been revoked.")
    issued = await tokens.issue(
        request.state.db,
        **_issue_args(request, client, user, rotation.scope, rotation.auth_time),
        family_id=rotation.family_id,
        stored_refresh=rotation.refresh_token,
    )
    return issued.as_dict()


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return ""


def _invalid_token(request: Request, description: str) -> Response:
    realm = issuer(request)
    return JSONResponse(
        {"error": "invalid_token", "error_description": description},
        status_code=401,
        headers={
            "www-authenticate": f'Bearer realm="{realm}", error="invalid_token", '
            f'error_description="{description}"',
            **NO_STORE,
        },
    )


async def _access_claims(request: Request, token: str, *, management: bool = False) -> dict:
    """``management``: a management API token (audience the pool's API) instead."""
    iss = issuer(request)
    audience = tokens.api_audience(iss) if management else None
    state = request.state
    return await tokens.verify_access_token(
        state.keys, state.pool.id, state.mux, issuer=iss, token=token, audience=audience
    )


async def userinfo(request: Request) -> Response:
    token = _bearer(request)
    if request.method == "POST" and not token and request.headers.get("content-type"):
        form = await read_form(request)
        token = str(form.get("access_token") or "")
    if not token:
        # RFC 6750 §3.1: no credentials, so no error code: only the challenge
        # (and an empty JSON object, so that the answer is still JSON).
        return JSONResponse(
            {},
            status_code=401,
            headers={"www-authenticate": f'Bearer realm="{issuer(request)}"', **NO_STORE},
        )
    try:
        claims = await _access_claims(request, token)
    except tokens.InvalidToken:
        return _invalid_token(request, "The access token is invalid, expired or revoked.")
    # A browser-only client: from the origins of the client the token was issued to.
    await _check_origin(request, str(claims.get("client_id") or claims.get("aud")))
    user = await users.get(request.state.db, request.state.pool.id, claims["sub"])
    if user is None or user["blocked"]:
        return _invalid_token(request, "The user no longer exists or is blocked.")
    scopes = set(str(claims.get("scope", "")).split())
    return JSONResponse(
        {"sub": claims["sub"], **tokens.user_claims(user, scopes)}, headers=NO_STORE
    )


async def _check_origin(request: Request, client_id: str) -> None:
    if request.headers.get("origin") is None:
        return  # a server: no client to read
    client = await request.state.clients.get(request.state.pool.id, client_id)
    if client is None:
        cors.check(request, _NO_ORIGINS)  # a deleted client: no website may read
    else:
        cors.check(request, client)


class _NoOrigins:
    web_origins: tuple[str, ...] = ()


_NO_ORIGINS = _NoOrigins()


async def _find_refresh(request: Request, token: str) -> dict | None:
    row = await request.state.db.fetchrow(
        """SELECT r.family_id, r.scope, r.user_id, c.client_id, r.created_at, r.expires_at,
                  r.rotated_at IS NULL AND r.revoked_at IS NULL AND r.expires_at > now() AS active
           FROM refresh_tokens r JOIN clients c ON c.id = r.client_pk
           WHERE r.pool_id = $1 AND r.token_hash = $2""",
        request.state.pool.id,
        request.state.box.hash_secret(token),
    )
    return dict(row) if row else None


async def revoke(request: Request) -> Response:
    form = await read_form(request)
    client = await clientauth.authenticate(request, form)
    cors.check(request, client)  # revoke-on-signout from the client's own website
    token = str(form.get("token") or "")
    if not token:
        raise InvalidRequestError(description="token is required.")
    pool: Pool = request.state.pool
    hint = form.get("token_type_hint")
    order = (
        ("access_token", "refresh_token")
        if hint == "access_token"
        else ("refresh_token", "access_token")
    )
    for kind in order:
        if kind == "refresh_token" and len(token) <= 200:
            found = await _find_refresh(request, token)
            if found and found["client_id"] == client.client_id:
                async with request.state.db.acquire() as conn:
                    await tokens.revoke_family(
                        conn, request.state.redis, pool, str(found["family_id"])
                    )
                break
        if kind == "access_token":
            try:
                claims = await _access_claims(request, token, management=client.is_management)
            except tokens.InvalidToken:
                continue
            if claims.get("client_id") == client.client_id:
                await tokens.revoke_access_token(request.state.redis, claims)
                break
    # RFC 7009 §2.2: 200 whether or not the token was known.
    return Response(status_code=200, headers=NO_STORE)


async def introspect(request: Request) -> Response:
    form = await read_form(request)
    client = await clientauth.authenticate(request, form)
    if client.is_public:
        raise UnauthorizedClientError(
            description="Only confidential clients may introspect tokens."
        )
    token = str(form.get("token") or "")
    if not token:
        raise InvalidRequestError(description="token is required.")
    iss = issuer(request)
    # RFC 7662 §4: a client learns only about its own tokens. Another client's
    # token, valid or not, is {"active": false}, as if it did not exist.
    try:
        claims = await _access_claims(request, token)
        if claims.get("client_id") != client.client_id:
            raise tokens.InvalidToken("another client's")
        user = await users.get(request.state.db, request.state.pool.id, claims["sub"])
        if user is None or user["blocked"]:
            raise tokens.InvalidToken("user gone")
        body = {
            "active": True, "token_type": "Bearer", "scope": claims.get("scope"), "client_id": claims.get("client_id"),
            "sub": claims["sub"], "aud": claims.get("aud"), "iss": iss, "exp": claims["exp"], "iat": claims.get("iat"),
            "jti": claims.get("jti"),
        }  # fmt: skip
        return JSONResponse(body, headers=NO_STORE)
    except tokens.InvalidToken:
        pass
    found = await _find_refresh(request, token) if len(token) <= 200 else None
    if found and found["active"] and found["client_id"] == client.client_id:
        return JSONResponse(
            {
                "active": True,
                "token_type": "refresh_token",
                "scope": found["scope"],
                "client_id": found["client_id"],
                "sub": str(found["user_id"]),
                "iss": iss,
                "exp": int(found["expires_at"].timestamp()),
                "iat": int(found["created_at"].timestamp()),
            },
            headers=NO_STORE,
        )
    return JSONResponse({"active": False}, headers=NO_STORE)


async def logout(request: Request) -> Response:
    params = dict(request.query_params)
    if request.method == "POST":
        params.update(
            {k: str(v) for k, v in (await jsonapi.read_form(request, max_fields=20)).items()}
        )
    pool: Pool = request.state.pool
    hint = params.get("id_token_hint")
    client: Client | None = None
    sid = None
    claims: dict = {}
    if hint:
        key_set = await request.state.keys.public_set(pool.id)
        try:
            # An expired hint is fine (OIDC RP-Initiated Logout §2): only who and where matter.
            claims = jwt.decode(hint, key_set).claims
        except (JoseError, ValueError, TypeError):
            return render(
                request, "oidc_message.html", {"kind": "logout_bad_hint"}, status_code=400
            )
        if claims.get("iss") != issuer(request):
            return render(
                request, "oidc_message.html", {"kind": "logout_bad_hint"}, status_code=400
            )
        client = await request.state.clients.get(pool.id, str(claims.get("aud")))
        sid = claims.get("sid")
    if params.get("client_id") and client is not None and params["client_id"] != client.client_id:
        return render(request, "oidc_message.html", {"kind": "logout_bad_hint"}, status_code=400)
    if client is None and params.get("client_id"):
        client = await request.state.clients.get(pool.id, params["client_id"])
    target = params.get("post_logout_redirect_uri")
    session = await sessions.current(request)
    asked_by_user = (
        request.method == "POST" and sessions.check_logout_token(request, params.get("confirm"))
    ) or (hint is not None and session is not None and claims.get("sub") == session.user_id)
    if session is not None and not asked_by_user:
        # Nothing shows this browser's user asked to log out (a link or an image on
        # any site can open this URL): ask them, with a token only this page has.
        kept = {k: params[k] for k in _LOGOUT_PARAMS if params.get(k) and len(params[k]) <= 4096}
        page = render(
            request,
            "oidc_logout_confirm.html",
            {"params": kept, "confirm": sessions.logout_token(request)},
        )
        page.headers["cache-control"] = "no-store"
        return page
    # End the portal's own login session for this browser, and with it each
    # login it made at the pool's clients (their token families), telling each
    # client that registered how: back-channel (queued here, sent by the worker)
    # and front-channel (frames on the page below).
    # Each login with the person it is of: the session's, and the hint's (whose
    # person may differ when no session matches it).
    by_sub: dict[str, dict[str, str]] = {}
    session_logins = await sessions.end(request)
    if session is not None:
        by_sub[session.user_id] = session_logins
    if sid and client is not None and str(sid) not in session_logins:
        by_sub.setdefault(str(claims.get("sub") or ""), {})[str(sid)] = client.client_id
    logins = {login: c for group in by_sub.values() for login, c in group.items()}
    queued: list[int] = []
    if logins:
        async with request.state.db.acquire() as conn, conn.transaction():
            for login in logins:
                await tokens.revoke_family(conn, request.state.redis, pool, login)
            for sub, group in by_sub.items():
                if sub:
                    queued += await rp_logout.notify_logins(conn, pool.id, sub, group)
    # The clients told by back channel hear it before the person is sent on (at
    # most PORTAL_BACKCHANNEL_LOGOUT_WAIT seconds; the worker keeps retrying).
    await rp_logout.wait_first_attempts(
        request.state.db, queued, request.state.settings.backchannel_logout_wait
    )
    known = {c: await request.state.clients.get(pool.id, c) for c in set(logins.values())}
    frames = rp_logout.frontchannel_urls(issuer(request), logins, known)
    response: Response
    next_url = None
    if target and client is not None and target in client.post_logout_redirect_uris:
        query = urlencode({"state": params["state"]}) if params.get("state") else ""
        sep = "&" if "?" in target else "?"
        next_url = target + (sep + query if query else "")
        response = RedirectResponse(next_url, status_code=303)
    elif target:
        # Never redirect to an address the client did not register (open redirect).
        response = render(
            request, "oidc_message.html", {"kind": "logout_bad_redirect"}, status_code=400
        )
    else:
        response = render(request, "oidc_message.html", {"kind": "logged_out"})
    if frames and response.status_code != 400:
        # Front-Channel Logout 1.0 §4: the page frames each client's logout URI,
        # then goes on to the post-logout redirect URI, if any.
        response = render(
            request,
            "oidc_logged_out.html",
            {"frames": frames, "next_url": next_url},
            frame_sources=frames,
        )
    sessions.forget(request, response)  # the cookie's removal, on what is sent
    response.headers["cache-control"] = "no-store"
    return response


def routes() -> list[Route]:
    return [
        Route("/.well-known/openid-configuration", discovery, methods=["GET"]),
        # RFC 8414 §3: the same metadata (an OpenID Provider's is a superset).
        Route("/.well-known/oauth-authorization-server", discovery, methods=["GET"]),
        Route("/oidc/jwks", jwks, methods=["GET"]),
        Route("/oidc/token", token, methods=["POST"]),
        Route("/oidc/userinfo", jsonapi.Direct(userinfo), methods=["GET", "POST"]),
        Route("/oidc/revoke", revoke, methods=["POST"]),
        Route("/oidc/introspect", introspect, methods=["POST"]),
        Route("/oidc/logout", logout, methods=["GET", "POST"]),
    ]
