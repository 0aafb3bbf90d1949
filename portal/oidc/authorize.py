"""The authorization endpoint: the pool's hosted login page (docs/design.md §5).

The client and the exact ``redirect_uri`` are checked first; until both are
known good, errors are shown on a page and never sent anywhere (a redirect to
an unchecked address would make the portal an open redirector). After that,
errors go back to the client by its ``response_mode``.

The page shows a QR ticket bound to the client; the authorization request is
kept in Redis under that ticket. When the ticket is confirmed, the page posts
the ticket and its secret to ``/oidc/auth/complete``, which consumes the
ticket once, issues a 60-second code and answers by ``query`` (303 redirect),
``form_post`` (auto-submitted form) or ``web_message`` (``postMessage`` to the
opener, only to the origin of the registered redirect URI, for the popup).
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from urllib.parse import urlencode, urlsplit

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from portal.errors import PortalError
from portal.oidc import clientauth, jar, sessions, tokens
from portal.oidc.codes import AuthRequest, CodeGrant, peek_request, save_request, take_request
from portal.oidc.endpoints import NO_STORE, issuer, read_form
from portal.scan import users
from portal.scan.qrapi import TICKET_RE, started_at
from portal.scan.tickets import RETENTION_S
from portal.tenants import clients, linkrules
from portal.tenants.clients import Client
from portal.tenants.pools import Pool
from portal.web import cors, i18n, jsonapi
from portal.web.pages import lang_switch_url, render

RESPONSE_MODES = ("query", "fragment", "form_post", "web_message")
_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9_-]{43,128}$")
_MAX_PARAM = 2000


class AuthError(Exception):
    """An error to send back to the (already validated) redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        self.error = error
        self.description = description


def _page_error(request: Request, kind: str, status_code: int = 400) -> Response:
    return render(request, "oidc_message.html", {"kind": kind}, status_code=status_code)


def origin_of(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def respond(request: Request, req: AuthRequest, params: dict[str, str]) -> Response:
    """Deliver the authorization response (a code or an error) to the client."""
    params = {**params, "iss": issuer(request)}  # RFC 9207: lets the client detect mix-up
    if req.state is not None:
        params["state"] = req.state
    headers = {"cache-control": "no-store", "referrer-policy": "no-referrer"}
    if req.response_mode in ("form_post", "web_message"):
        # Silent authentication (prompt=none in a hidden iframe of the client's
        # site): this page may be framed by exactly the redirect URI's origin,
        # the one place the response is for (frame-ancestors; docs/security.md).
        request.scope["portal_framable"] = True
    if req.response_mode == "form_post":
        response = render(
            request,
            "oidc_form_post.html",
            {"action": req.redirect_uri, "params": params},
            form_target=req.redirect_uri,  # form-action: exactly this origin
            frame_ancestor=req.redirect_uri,
        )
        response.headers.update(headers)
        return response
    if req.response_mode == "web_message":
        context = {"target_origin": origin_of(req.redirect_uri), "params": params}
        response = render(
            request, "oidc_web_message.html", context, frame_ancestor=req.redirect_uri
        )
        response.headers.update(headers)
        return response
    if req.response_mode == "fragment":
        # The default for responses with an ID token: never sent to the client's server.
        return RedirectResponse(
            req.redirect_uri + "#" + urlencode(params), status_code=303, headers=headers
        )
    sep = "&" if urlsplit(req.redirect_uri).query else "?"
    return RedirectResponse(
        req.redirect_uri + sep + urlencode(params), status_code=303, headers=headers
    )


def _param(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is not None and len(value) > _MAX_PARAM:
        raise AuthError("invalid_request", f"{name} is too long.")
    return value or None


def _validate(params: dict[str, str], client: Client) -> tuple[AuthRequest, str | None]:
    """The authorization request (after client and redirect_uri checked), and ``prompt``."""
    response_type = clients.response_type(params.get("response_type") or "")
    # OAuth 2.0 Multiple Response Types §5: an ID token goes in the fragment by
    # default, and never in the query (OIDC Core §3.3.2.5).
    default_mode = "query" if response_type in ("code", None) else "fragment"
    mode = params.get("response_mode") or default_mode
    redirect_uri = params["redirect_uri"]
    # From here the redirect URI is trusted; errors use it, in the asked mode if valid.
    usable = mode in RESPONSE_MODES and not (mode == "query" and default_mode == "fragment")
    partial = AuthRequest(client.client_id, redirect_uri, "", _param(params, "state"), None, None,
                          mode if usable else default_mode)  # fmt: skip
    try:
        if mode not in RESPONSE_MODES:
            raise AuthError(
                "invalid_request", f"response_mode must be one of {', '.join(RESPONSE_MODES)}."
            )
        # OIDC Core §3.1.2.6: each parameter has its own error code.
        if params.get("request_uri"):
            raise AuthError("request_uri_not_supported", "request_uri is not supported.")
        if response_type is None:
            raise AuthError(
                "unsupported_response_type",
                "response_type must be code, id_token or code id_token.",
            )
        if response_type not in client.response_types:
            raise AuthError(
                "unauthorized_client",
                f"This client is not registered for response_type={response_type}.",
            )
        if not usable:
            raise AuthError(
                "invalid_request",
                "An ID token is never sent in the query: use fragment or form_post.",
            )
        nonce = _param(params, "nonce")
        if "id_token" in response_type and not nonce:
            # OIDC Core §3.2.2.1: an ID token from the front channel must be tied to the request.
            raise AuthError("invalid_request", "nonce is required when an ID token is asked for.")
        asked = (params.get("scope") or "").split()
        if "openid" not in asked:
            raise AuthError("invalid_scope", "The openid scope is required.")
        # Only what the client is registered for (RFC 6749 §3.3: the token
        # response's `scope` says what was granted).
        scope = client.granted(asked)
        challenge = _param(params, "code_challenge")
        method = params.get("code_challenge_method")
        if challenge:
            if (method or "plain") != "S256":
                raise AuthError("invalid_request", "Only code_challenge_method=S256 is supported.")
            if not _CHALLENGE_RE.match(challenge):
                raise AuthError("invalid_request", "code_challenge is malformed.")
        elif client.is_public and "code" in response_type:
            raise AuthError(
                "invalid_request", "PKCE (code_challenge with S256) is required for this client."
            )
        elif method:
            raise AuthError("invalid_request", "code_challenge_method without code_challenge.")
        max_age = params.get("max_age")
        if max_age is not None and not (max_age.isdigit() and len(max_age) < 10):
            raise AuthError("invalid_request", "max_age must be a whole number of seconds.")
        prompt = params.get("prompt")
        if prompt and not set(prompt.split()) <= {"none", "login", "consent", "select_account"}:
            raise AuthError("invalid_request", "Unsupported prompt value.")
        if prompt and "none" in prompt.split() and len(prompt.split()) > 1:
            raise AuthError("invalid_request", "prompt=none cannot be combined with other values.")
    except AuthError as exc:
        exc.request = partial  # type: ignore[attr-defined]
        raise
    req = AuthRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scope=scope,
        state=partial.state,
        nonce=nonce,
        code_challenge=challenge if "code" in response_type else None,
        response_mode=mode,
        max_age=int(max_age) if max_age is not None else None,
        response_type=response_type,
    )
    return req, prompt


async def _answer(
    request: Request, req: AuthRequest, user_id: str, auth_time: int, user: dict | None = None
) -> tuple[dict[str, str], str]:
    """The successful response's parameters for ``req.response_type``: a code, an
    ID token (with the code's ``c_hash`` in the hybrid flow), or both; and the
    new login's id (``sid``: the token family), which the pool's session keeps
    for logout."""
    family_id = str(uuid.uuid4())
    params: dict[str, str] = {}
    types = req.response_type.split()
    if "code" in types:
        params["code"] = await _issue_code(request, req, user_id, auth_time, family_id)
    if "id_token" in types:
        pool: Pool = request.state.pool
        if user is None:
            user = await users.get(request.state.db, pool.id, user_id)
        client = await request.state.clients.get(pool.id, req.client_id)
        params["id_token"] = await tokens.front_id_token(
            request.state.keys,
            issuer=issuer(request),
            pool=pool,
            client_id=req.client_id,
            user=user or {"id": user_id},
            scope=client.granted(req.scope.split()) if client else "openid",
            auth_time=auth_time,
            nonce=req.nonce or "",
            family_id=family_id,
            code=params.get("code"),
        )
    return params, family_id


async def _issue_code(
    request: Request, req: AuthRequest, user_id: str, auth_time: int, family_id: str
) -> str:
    grant = CodeGrant(
        client_id=req.client_id,
        redirect_uri=req.redirect_uri,
        scope=req.scope,
        nonce=req.nonce,
        code_challenge=req.code_challenge,
        user_id=user_id,
        auth_time=auth_time,
        family_id=family_id,
    )
    return await request.state.codes.issue(request.state.pool.id, grant)


async def authorize(request: Request) -> Response:
    if request.method == "POST":
        form = await jsonapi.read_form(request, max_fields=40)
        params = {k: str(v) for k, v in form.items()}
    else:
        params = dict(request.query_params)
    pool: Pool = request.state.pool
    client_id = params.get("client_id")
    client = (
        await request.state.clients.get(pool.id, client_id)
        if client_id and len(client_id) <= 64
        else None
    )
    if client is None or client.is_management:  # a management client logs nobody in
        return _page_error(request, "unknown_client")
    # RFC 9126: a pushed request by reference, checked when it was pushed, used once.
    request_uri = params.get("request_uri") or ""
    pushed = request_uri.startswith(jar.PAR_PREFIX)
    if pushed:
        stored = await jar.pushed(request, request_uri)
        if stored is None or stored.get("client_id") != client.client_id:
            return _page_error(request, "bad_request_uri")
        params = stored
    elif client.require_par:
        # Not even a signed request object by value: only what was pushed.
        return _early_error(
            request, client, params, "invalid_request",
            "This client must push its authorization requests (PAR) first.",
        )  # fmt: skip
    elif params.get("request"):
        # RFC 9101: the signed request object's parameters, and only those.
        try:
            params = await jar.request_object(request, client, params["request"], issuer(request))
        except jar.Invalid as exc:
            return _early_error(request, client, params, "invalid_request_object", str(exc))
    if not params.get("redirect_uri"):
        # Required (OIDC Core §3.1.2.1), even for a client with one registered URI:
        # registration here says nothing of a default (docs/api.md).
        return _page_error(request, "missing_redirect_uri")
    if params["redirect_uri"] not in client.redirect_uris:
        return _page_error(request, "bad_redirect_uri")
    try:
        req, prompt = _validate(params, client)
    except AuthError as exc:
        return respond(
            request, exc.request, {"error": exc.error, "error_description": exc.description}
        )  # type: ignore[attr-defined]
    if pushed:
        # The page's "new QR code" and language links repeat the request: by a
        # request_uri of their own (this one is spent), valid while a code can be.
        ttl = request.state.pool.qr_lifetime + jar.PAR_TTL
        params = {
            "client_id": client.client_id,
            "request_uri": await jar.push(request, params, ttl),
        }
    return await _login_or_page(request, client, req, prompt, params)


def _early_error(
    request: Request, client: Client, params: dict[str, str], error: str, description: str
) -> Response:
    """An error found before the request's own parameters are known good: to the
    redirect URI named beside it if the client registered that one, else a page."""
    redirect_uri = params.get("redirect_uri")
    if not redirect_uri or redirect_uri not in client.redirect_uris:
        return _page_error(request, "bad_request_object")
    response_type = clients.response_type(params.get("response_type") or "") or "code"
    mode = params.get("response_mode")
    if mode not in RESPONSE_MODES or (mode == "query" and response_type != "code"):
        mode = "query" if response_type == "code" else "fragment"
    state = _bounded(params.get("state"))
    req = AuthRequest(client.client_id, redirect_uri, "", state, None, None, mode)
    return respond(request, req, {"error": error, "error_description": description})


def _bounded(value: str | None) -> str | None:
    return value if value and len(value) <= _MAX_PARAM else None


# Client authentication fields: not part of a pushed authorization request.
_AUTH_FIELDS = ("client_secret", "client_assertion", "client_assertion_type")


async def par(request: Request) -> Response:
    """``POST /oidc/par`` (RFC 9126): the client authenticates, its request is
    checked as the authorization endpoint would, and kept 60 seconds under a
    ``request_uri`` that the browser then takes to ``/oidc/auth``."""
    form = await read_form(request)
    client = await clientauth.authenticate(request, form)
    cors.check(request, client)
    if client.is_management:
        raise InvalidRequestError(description="A management client logs nobody in.")
    params = {k: str(v) for k, v in form.items() if k not in _AUTH_FIELDS}
    if "request_uri" in params:
        raise InvalidRequestError(description="request_uri cannot be pushed.")
    if params.get("request"):
        try:
            params = await jar.request_object(request, client, params["request"], issuer(request))
        except jar.Invalid as exc:
            raise jar.InvalidRequestObject(description=str(exc)) from None
    params["client_id"] = client.client_id
    if not params.get("redirect_uri"):
        raise InvalidRequestError(description="redirect_uri is required.")
    if params["redirect_uri"] not in client.redirect_uris:
        raise InvalidRequestError(description="redirect_uri is not registered for this client.")
    try:
        _validate(params, client)
    except AuthError as exc:
        return JSONResponse(
            {"error": exc.error, "error_description": exc.description},
            status_code=400,
            headers=NO_STORE,
        )
    uri = await jar.push(request, params)
    return JSONResponse(
        {"request_uri": uri, "expires_in": jar.PAR_TTL}, status_code=201, headers=NO_STORE
    )


async def _login_or_page(
    request: Request,
    client: Client,
    req: AuthRequest,
    prompt: str | None,
    params: dict[str, str] | None = None,
) -> Response:
    pool: Pool = request.state.pool
    prompts = set((prompt or "").split())
    session = await sessions.current(request)
    too_old = (
        session is not None
        and req.max_age is not None
        and time.time() - session.auth_time > req.max_age
    )
    if session and "login" not in prompts and not too_old:
        user = await users.get(request.state.db, pool.id, session.user_id)
        if user is not None and not user["blocked"]:
            answer, sid = await _answer(request, req, session.user_id, session.auth_time, user)
            await sessions.add_login(request, req.client_id, sid)
            return respond(request, req, answer)
    if "none" in prompts:
        # OIDC Core §3.1.2.1: a login older than max_age must be redone, and
        # prompt=none forbids showing the page that would redo it.
        description = (
            "The user's login is older than max_age allows; they must log in again."
            if too_old
            else "The user is not logged in."
        )
        return respond(request, req, {"error": "login_required", "error_description": description})
    # Counted against the same limits as POST /api/qrcode (issue 16); a refusal
    # is a 429 page (error.rate_limited) with Retry-After.
    new = await request.state.tickets.create(
        pool_id=pool.id,
        client_id=client.client_id,
        lifetime=pool.qr_lifetime,
        address=request.state.client_ip,
        hosted=True,
        # The website that asked is the one the login returns to (issue 20).
        **started_at(request, urlsplit(req.redirect_uri).hostname or ""),
    )
    bound, cookie = sessions.browser_binding(request)
    req = dataclasses.replace(req, browser=bound)
    await save_request(
        request.state.redis, pool.id, new.ticket, req, pool.qr_lifetime + RETENTION_S
    )
    response = _hosted_page(
        request, client, new.ticket, new.secret, new.expires_in, params, req.redirect_uri
    )
    if cookie is not None:
        sessions.set_browser_cookie(request, response, cookie)
    return response


def _hosted_page(
    request: Request,
    client: Client | None,
    ticket: str,
    secret: str,
    expires_in: int,
    params: dict[str, str] | None,
    redirect_uri: str = "",
) -> Response:
    """``redirect_uri``: where the completed login 303s to; the page's form-action
    must allow its origin (browsers check redirects after a form post too)."""
    base = request.state.settings.pool_url(request.state.pool.slug)
    ua = request.headers.get("user-agent", "")
    extra = {}
    if params is not None:
        # The same authorization request as a link, whether it came by GET or POST:
        # a new QR code and the language switch must not lose it.
        again = "/oidc/auth?" + urlencode({k: v for k, v in params.items() if k != "lang"})
        switch = lang_switch_url(request, i18n.pick(request)[0], params)
        extra = {"reload_url": again, "switch_url": switch}
    # WeChat's desktop apps say MicroMessenger too, but there is no phone to long-press on.
    desktop_wechat = "WindowsWechat" in ua or "MacWechat" in ua
    response = render(
        request,
        "oidc_login.html",
        {
            "client": client,
            "ticket": ticket,
            "secret": secret,
            "expires_in": expires_in,
            "png_url": f"{base}/api/qrcode/{ticket}.png",
            "content_url": linkrules.content(request.state.settings, request.state.pool, ticket),
            "in_wechat": "MicroMessenger" in ua and not desktop_wechat,
            "on_phone": any(m in ua for m in ("Mobile", "Android", "iPhone"))
            and not desktop_wechat,
            "reload_url": str(request.url),
            **extra,
        },
        form_target=redirect_uri or None,
    )
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    return response


async def complete(request: Request) -> Response:
    """The hosted page's script posts here once the ticket is confirmed."""
    form = await jsonapi.read_form(request, max_bytes=4096, max_fields=10)
    ticket, secret = str(form.get("ticket") or ""), str(form.get("secret") or "")
    pool: Pool = request.state.pool
    if not TICKET_RE.match(ticket) or not secret or len(secret) > 100:
        return _page_error(request, "login_incomplete")
    pending = await peek_request(request.state.redis, pool.id, ticket)
    if pending is None:
        return _page_error(request, "login_incomplete")
    if not sessions.same_browser(request, pending.browser):
        # Checked before the ticket is spent: the page in the right browser still can.
        return _page_error(request, "login_other_browser", 403)
    try:
        won = await request.state.tickets.exchange(ticket, secret, hosted=True)
    except PortalError:
        return _page_error(request, "login_incomplete")
    req = await take_request(request.state.redis, pool.id, ticket)
    if req is None or won.pool_id != pool.id or won.client_id != req.client_id:
        return _page_error(request, "login_incomplete")
    if not req.redirect_uri:
        # The pool's own page with no callback URL configured: just say who logged in.
        user = await users.get(request.state.db, pool.id, won.user_id)
        response = render(request, "oidc_message.html", {"kind": "logged_in", "user": user})
    else:
        answer, login = await _answer(request, req, won.user_id, won.auth_time)
        response = respond(request, req, answer)
    sid = await sessions.start(request, response, won.user_id, won.auth_time)
    if req.redirect_uri:
        await sessions.add_login(request, req.client_id, login, cookie=sid)
    return response


async def pool_root(request: Request) -> Response:
    """``GET /``: the hosted page for the pool's default client; after login the
    browser goes to the pool's callback URL with a code its backend exchanges.

    Login CSRF (issue 16, finding 5): the tenant's site starts the login at
    ``/?state=<a value kept in its own session>`` and the callback gets ``code``,
    ``state`` and ``iss``; its backend refuses a callback whose ``state`` is not
    the one it stored (README). A code obtained by someone else (an attacker
    who scanned with their own phone and sends the callback link to a victim)
    then carries the attacker's state, or none. ``nonce`` is carried into the ID
    token. Without ``state`` the page still works, for old integrations: the
    portal cannot tell their callbacks apart, only their backend can."""
    pool: Pool = request.state.pool
    client = await request.state.clients.default(pool.id)
    if client is None:
        return _page_error(request, "unknown_client", 404)
    redirect_uri = pool.callback_url or ""
    state, nonce = request.query_params.get("state"), request.query_params.get("nonce")
    if any(v is not None and len(v) > _MAX_PARAM for v in (state, nonce)):
        return _page_error(request, "bad_request")
    scope = client.granted(("openid", "profile", "phone"))
    req = AuthRequest(
        client.client_id, redirect_uri, scope, state or None, nonce or None, None, "query"
    )
    if redirect_uri and redirect_uri not in client.redirect_uris:
        return _page_error(request, "bad_redirect_uri", 500)
    return await _login_or_page(request, client, req, "login" if not redirect_uri else None)


def routes() -> list[Route]:
    return [
        Route("/", pool_root, methods=["GET"]),
        Route("/oidc/auth", authorize, methods=["GET", "POST"]),
        Route("/oidc/auth/complete", complete, methods=["POST"]),
        Route("/oidc/par", par, methods=["POST"]),
    ]
