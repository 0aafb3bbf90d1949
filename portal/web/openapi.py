"""``GET /openapi.json``: the OpenAPI 3.1 description of every JSON route (docs/design.md §5, §6).

The document is Python data built here, next to nothing else, so that a change
to a route is a change to one readable table. It is written for the people and
tools that integrate with the portal: each operation lists its parameters, its
body, every status it answers and, for each error status, the exact ``error``
codes it can send (as an ``enum``, so that a client generator and the tests see
the same contract). ``tests/test_openapi.py`` keeps it true: it walks the app's
routes against the document and validates real responses against it, and
``tests/test_fuzz.py`` fuzzes every operation with schemathesis.

Where an operation is served matters as much as what it does: pool routes live
on ``{scheme}://{slug}.{apex}`` (server variables, defaulting to this
deployment's apex), the mini-program API on a pool host *and* on the apex, and
``/healthz``, ``/readyz`` and this document on the apex (the probes on any
host). ``servers`` at the top is the pool host; paths that differ say so.

HTML pages (``/``, ``/oidc/auth``, ``/oidc/auth/complete``, ``/oidc/logout``,
``/q/{ticket}``, the console), the SDK script, images other than the QR code,
``/metrics`` (Prometheus text) and the dev tools are not JSON and are left out.

The document depends only on the scheme and apex of ``PORTAL_BASE_URL``; it is
built once per process and served as pre-encoded bytes.
"""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.settings import Settings

OPENAPI_VERSION = "3.1.0"
PATH = "/openapi.json"
TICKET_STATUSES = ["pending", "scanned", "confirmed", "cancelled", "expired"]

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


def _object(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """A JSON object; extra members are allowed, as clients must ignore what they
    do not know (the portal may add fields)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
SECONDS = {"type": "integer", "minimum": 0, "description": "seconds"}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        **_object(
            {
                "error": {"type": "string", "description": "a stable, machine-readable code"},
                "error_description": {"type": "string", "description": "for people, in English"},
            }
        ),
        "description": "Every error of every JSON route (docs/design.md §5).",
    },
    "QrCode": _object(
        {
            "ticket": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_-]{16,32}$",
                "description": "URL-safe, at most 32 characters (WeChat's scene), ≥ 128 random bits",
            },
            "secret": {
                "type": "string",
                "description": "Only ever returned here: the key to the ticket's status and exchange.",
            },
            "expires_in": SECONDS,
            "qrcode": _object(
                {
                    "content": {
                        "type": "string",
                        "format": "uri",
                        "description": "the text in the QR: {pool url}/q/{ticket}",
                    },
                    "png": {"type": "string", "format": "uri"},
                    "svg": {"type": "string", "format": "uri"},
                }
            ),
        },
        {
            "dev_phone_url": {
                "type": "string",
                "format": "uri",
                "description": "Only when the portal runs with PORTAL_ENV=dev (never in "
                "production): the phone simulator on the apex, `/dev/phone?url=...`, with "
                "this code's content filled in.",
            }
        },
    ),
    "Scanner": _object(
        {"nickname": _nullable(STRING), "avatar_url": _nullable(STRING)},
    ),
    "TicketStatus": _object(
        {
            "status": {"type": "string", "enum": TICKET_STATUSES},
            "expires_in": {**SECONDS, "description": "seconds left; 0 once final"},
            "scanned_by": {
                "oneOf": [_ref("Scanner"), {"type": "null"}],
                "description": "who logged in, once `confirmed`; while `scanned`, what the "
                "pool's `scan_reveal` setting allows of a returning user (default: nothing, "
                "null; `avatar`: the avatar only; `profile`: nickname and avatar)",
            },
        },
        {
            "number": {
                "type": "integer",
                "minimum": 10,
                "maximum": 99,
                "description": "number matching (the pool's `number_match`), while `scanned` "
                "only: show it; the person picks it among three on the phone",
            }
        },
    ),
    "User": _object(
        {
            "id": {"type": "string", "description": "stable per user per pool (the `sub`)"},
            "nickname": _nullable(STRING),
            "avatar_url": _nullable(STRING),
            "phone_number": _nullable(STRING),
            "phone_country_code": _nullable(STRING),
            "created_at": {"type": "string", "format": "date-time"},
        }
    ),
    "TokenResponse": _object(
        {
            "id_token": {"type": "string", "description": "a signed JWT (RS256 or ES256)"},
            "access_token": STRING,
            "token_type": {"const": "Bearer"},
            "expires_in": SECONDS,
            "scope": STRING,
        },
        {"refresh_token": {"type": "string", "description": "with `offline_access`"}},
    ),
    "Exchange": {
        "allOf": [_ref("TokenResponse"), _object({"user": _ref("User")})],
    },
    "MpSession": _object({"session_token": STRING, "expires_in": SECONDS}),
    "Scanned": _object(
        {
            "status": {"const": "scanned"},
            "pool": _object({"name": STRING, "logo_url": {"type": "string", "format": "uri"}}),
            "client": {
                "oneOf": [_object({"name": STRING}), {"type": "null"}],
                "description": "null for the pool's default client",
            },
            "expires_in": SECONDS,
            "phone_required": {
                "type": "boolean",
                "description": "the pool wants a phone number: show the getPhoneNumber button",
            },
        },
        {
            "context": {
                **_ref("LoginContext"),
                "description": "where the login was started: show it on the confirm screen",
            },
            "scan_source": {
                "type": "string",
                "enum": ["ok", "warned", "unknown"],
                "description": "how the QR code reached the phone against where the ticket "
                "was made: `warned` (a computer's QR code from an image or the album, or a "
                "link for a ticket not made on a phone browser) needs a clear warning; "
                "`unknown` when no `scene` was sent",
            },
            "number_choices": {
                "type": "array",
                "items": {"type": "integer", "minimum": 10, "maximum": 99},
                "minItems": 3,
                "maxItems": 3,
                "description": "number matching: the three numbers to offer; confirm with "
                "the one picked",
            },
        },
    ),
    "LoginContext": _object(
        {
            "browser": _nullable(STRING),
            "os": _nullable(STRING),
            "device": _nullable({"type": "string", "enum": ["pc", "mobile", "wechat"]}),
            "location": {
                **_nullable(STRING),
                "description": "province and city (offline ip2region database); null "
                "when unknown (private address, no database)",
            },
            "site": {**_nullable(STRING), "description": "the website's host that asked"},
            "client": {
                **_nullable(STRING),
                "description": "the client's name (null: the pool's own page)",
            },
            "started_s_ago": _nullable(SECONDS),
        }
    ),
    "AppLink": _object(
        {
            "url": {
                "type": "string",
                "description": "`weixin://dl/business/?t=…` (URL Scheme) or "
                "`https://wxaurl.cn/…` (URL Link): opens the mini program's confirm page "
                "for this ticket",
            },
            "kind": {"type": "string", "enum": ["scheme", "url_link"]},
            "expires_in": SECONDS,
        }
    ),
    "Discovery": _object(
        {
            "issuer": {"type": "string", "format": "uri"},
            "authorization_endpoint": {"type": "string", "format": "uri"},
            "token_endpoint": {"type": "string", "format": "uri"},
            "userinfo_endpoint": {"type": "string", "format": "uri"},
            "jwks_uri": {"type": "string", "format": "uri"},
            "revocation_endpoint": {"type": "string", "format": "uri"},
            "introspection_endpoint": {"type": "string", "format": "uri"},
            "end_session_endpoint": {"type": "string", "format": "uri"},
            "scopes_supported": {"type": "array", "items": STRING},
            "response_types_supported": {"type": "array", "items": STRING},
            "response_modes_supported": {"type": "array", "items": STRING},
            "grant_types_supported": {"type": "array", "items": STRING},
            "subject_types_supported": {"type": "array", "items": STRING},
            "id_token_signing_alg_values_supported": {"type": "array", "items": STRING},
            "token_endpoint_auth_methods_supported": {"type": "array", "items": STRING},
            "code_challenge_methods_supported": {"type": "array", "items": STRING},
            "claims_supported": {"type": "array", "items": STRING},
        }
    ),
    "Jwks": _object(
        {
            "keys": {
                "type": "array",
                "items": _object(
                    {"kty": {"enum": ["RSA", "EC"]}, "kid": STRING},
                    {"use": {"const": "sig"}, "alg": {"enum": ["RS256", "ES256"]}},
                ),
            }
        }
    ),
    "UserInfo": _object(
        {"sub": STRING},
        {
            # A claim without a value is left out, never null (OIDC Core §5.3.2).
            "name": {"type": "string", "description": "the WeChat nickname, with scope `profile`"},
            "nickname": STRING,
            "preferred_username": {
                "type": "string",
                "description": "the WeChat nickname: neither unique nor stable (key on `sub`)",
            },
            "picture": STRING,
            "updated_at": {
                "type": "integer",
                "description": "seconds since the epoch when the profile last changed",
            },
            "phone_number": {
                "type": "string",
                "pattern": "^\\+[1-9][0-9]{1,14}$",
                "description": "E.164, with scope `phone`",
            },
            "phone_number_verified": {"type": "boolean"},
        },
    ),
    "Introspection": {
        "oneOf": [
            _object({"active": {"const": False}}),
            _object(
                {
                    "active": {"const": True},
                    "token_type": {"enum": ["Bearer", "refresh_token"]},
                    "scope": STRING,
                    "client_id": STRING,
                    "sub": STRING,
                    "iss": STRING,
                    "exp": INTEGER,
                },
                {"aud": {}, "iat": INTEGER, "jti": STRING},
            ),
        ]
    },
}

# Parameters and bodies used by several operations.
TICKET_PARAM = {
    "name": "ticket",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "the `ticket` from `POST /api/qrcode`",
}
SECRET_PARAMS = [
    {
        "name": "X-Ticket-Secret",
        "in": "header",
        "schema": STRING,
        "description": "the ticket's `secret` (this or the `secret` query parameter)",
    },
    {
        "name": "secret",
        "in": "query",
        "schema": STRING,
        "description": "the ticket's `secret`, for clients that cannot set headers (EventSource)",
    },
]
RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer"},
        "description": "seconds to wait before trying again",
    }
}
# RFC 7009 §2.1: only a hint; an unknown one is ignored, as the search covers both kinds.
TOKEN_TYPE_HINT = {"type": "string", "examples": ["access_token", "refresh_token"]}
# What an authorization request may carry, pushed (RFC 9126) as at /oidc/auth.
PAR_FIELDS = ("response_type", "redirect_uri", "scope", "state", "nonce", "code_challenge",
              "code_challenge_method", "response_mode", "prompt", "max_age", "request")  # fmt: skip

CLIENT_AUTH_FIELDS = {
    "client_id": {"type": "string", "description": "`client_secret_post` and `none`"},
    "client_secret": {"type": "string", "description": "`client_secret_post`"},
    # RFC 7523 (issue 18): private_key_jwt and client_secret_jwt.
    "client_assertion_type": {
        "type": "string",
        "enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
    },
    "client_assertion": {
        "type": "string",
        "description": "`private_key_jwt` (signed with a key of the client's registered "
        "JWK Set) or `client_secret_jwt` (HS256 keyed with its secret): iss and sub the "
        "client_id, aud the issuer or the endpoint, exp, a jti used once",
    },
}

# What a status means, for the responses' descriptions.
_REASONS = {
    400: "The request is not valid.",
    401: "Not authenticated.",
    403: "Not allowed.",
    404: "Not found.",
    409: "Conflict with the ticket's state.",
    410: "The ticket is final or expired.",
    408: "The request body did not arrive in time.",
    411: "A Content-Length is required.",
    413: "The request body is too large.",
    415: "Unsupported media type.",
    429: "Rate limited: see Retry-After.",
    502: "WeChat failed.",
    503: "PostgreSQL or Redis is not answering: retry after Retry-After.",
}


def _json(schema: Schema, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(codes: dict[int, list[str]]) -> dict[str, dict]:
    """Error responses: the design's shape, with each status's possible codes."""
    out = {}
    for status, names in sorted(codes.items()):
        schema = {"allOf": [_ref("Error"), {"properties": {"error": {"enum": sorted(names)}}}]}
        response = _json(schema, _REASONS[status])
        if status in (429, 503):
            response["headers"] = RETRY_AFTER
        out[str(status)] = response
    return out


def _merge(*codes: dict[int, list[str]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for one in codes:
        for status, names in one.items():
            out.setdefault(status, [])
            out[status] += [n for n in names if n not in out[status]]
    return out


# Errors shared by families of routes.
STORES = {503: ["temporarily_unavailable"]}  # any route that reads PostgreSQL or Redis
POOL_HOST = {404: ["pool_not_found"]}  # a Host of no pool (unknown slug)
# Any route that reads a body: capped in size and in time as it is read (portal/web/jsonapi.py).
BODY = {408: ["request_timeout"], 413: ["request_too_large"]}
JSON_BODY = {400: ["invalid_request"], 415: ["unsupported_media_type"], **BODY}
# A ticket path segment that does not name a ticket of this pool; `not_found` when
# the segment itself (e.g. an encoded "/") makes the path match no route.
TICKET = {404: ["ticket_not_found", "not_found"]}
MP_SESSION = {401: ["invalid_session"]}
WECHAT = {
    429: ["wechat_rate_limited"],
    502: ["wechat_unavailable", "wechat_error"],
    503: ["wechat_ip_not_whitelisted"],  # the server's address is not on the app's IP whitelist
}
# The token, revocation and introspection endpoints: a form body and a client.
OAUTH_CLIENT = {400: ["invalid_request", "invalid_client"], 401: ["invalid_client"], **BODY}
RATE = {429: ["rate_limited"]}


def _userinfo_errors(codes: dict[int, list[str]]) -> dict[str, dict]:
    """Userinfo's errors: its 401 without any token is ``{}`` (RFC 6750 §3.1)."""
    out = _errors(codes)
    schema = out["401"]["content"]["application/json"]["schema"]
    out["401"]["content"]["application/json"]["schema"] = {
        "oneOf": [schema, {"type": "object", "maxProperties": 0}]
    }
    out["401"]["headers"] = {
        "WWW-Authenticate": {
            "description": 'Bearer realm="<issuer>", with error="invalid_token" for a bad token',
            "schema": STRING,
        }
    }
    return out


USERINFO_NOTE = (
    'Without any token: 401 with only `WWW-Authenticate: Bearer realm="<issuer>"` and the '
    "body `{}` (RFC 6750 §3.1: no error code when no credentials were sent). A bad, expired "
    "or revoked token: 401 `invalid_token`. A browser may call it from the web origins of the "
    "client the token was issued to (CORS; `WWW-Authenticate` is exposed); another origin is "
    "403 `origin_not_allowed`. Claims without a value are left out."
)


def _op(
    summary: str,
    tags: list[str],
    responses: dict,
    *,
    description: str = "",
    parameters: list | None = None,
    body: dict | None = None,
    security: list | None = None,
    op_id: str,
) -> dict:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": tags}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    if security is not None:
        op["security"] = security
    op["responses"] = responses
    return op


def _form_body(properties: dict[str, Schema], required: list[str] | None = None) -> dict:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": schema}},
    }


def _paths() -> dict[str, dict]:
    qr = ["QR API"]
    mp = ["Mini-program API"]
    oidc = ["OpenID Connect"]
    ops = ["Operations"]
    image_errors = _errors(_merge({403: ["origin_not_allowed"]}, TICKET, RATE, POOL_HOST, STORES))
    mp_ticket_errors = _merge(MP_SESSION, TICKET, {403: ["wrong_mini_program"]}, POOL_HOST, STORES)

    def image(fmt: str, media: str) -> dict:
        return {
            "get": _op(
                f"The ticket's QR code as {fmt.upper()}",
                qr,
                {
                    "200": {
                        "description": "The QR (error correction H), the pool's logo in its "
                        "centre. With `ETag` and `Cache-Control: private, max-age=<the ticket's "
                        "remaining seconds>, immutable`.",
                        "content": {media: {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "304": {"description": "`If-None-Match` names this image's ETag."},
                    **image_errors,
                },
                description="Rendered once per ticket and format, then served from the cache. "
                "Renders (and mini-program codes) are rate limited per client address and "
                "pool (`PORTAL_RATE_QR_IMAGE`): 429 `rate_limited` with `Retry-After`.",
                parameters=[TICKET_PARAM],
                op_id=f"qrcodeImage{fmt.title()}",
            )
        }

    return {
        "/api/qrcode": {
            "post": _op(
                "Create a QR login ticket",
                qr,
                {
                    "201": _json(_ref("QrCode"), "A new pending ticket."),
                    **_errors(
                        _merge(
                            JSON_BODY,
                            {400: ["invalid_client"], 403: ["origin_not_allowed"]},
                            RATE,
                            POOL_HOST,
                            STORES,
                        )
                    ),
                },
                description="From a browser on another origin, only a registered web origin "
                "of the client (403 `origin_not_allowed` otherwise). Rate limited per client "
                "address and pool (`PORTAL_RATE_QR`).",
                body={
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "client_id": {
                                        "type": ["string", "null"],
                                        "maxLength": 64,
                                        "description": "absent, null or empty: the pool's "
                                        "default client",
                                    }
                                },
                            }
                        }
                    },
                },
                op_id="createQrCode",
            )
        },
        "/api/qrcode/{ticket}.png": image("png", "image/png"),
        "/api/qrcode/{ticket}.svg": image("svg", "image/svg+xml"),
        "/api/qrcode/{ticket}/status": {
            "get": _op(
                "Read a ticket's status, or wait for it to change (long poll)",
                qr,
                {
                    "200": _json(_ref("TicketStatus"), "The ticket's status now."),
                    **_errors(
                        _merge(
                            {400: ["invalid_request"]},
                            {403: ["invalid_secret", "origin_not_allowed"]},
                            TICKET,
                            POOL_HOST,
                            STORES,
                            RATE,  # with wait: too many waiting on this ticket or address
                        )
                    ),
                },
                parameters=[
                    TICKET_PARAM,
                    *SECRET_PARAMS,
                    {
                        "name": "wait",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 30},
                        "description": "with `known`: hold the request up to this many seconds "
                        "until the status differs from `known`",
                    },
                    {
                        "name": "known",
                        "in": "query",
                        "schema": {"type": "string", "examples": TICKET_STATUSES},
                        "description": "the status the caller already has (any other value "
                        "answers at once)",
                    },
                ],
                op_id="qrcodeStatus",
            )
        },
        "/api/qrcode/{ticket}/events": {
            "get": _op(
                "Follow a ticket's status as Server-Sent Events",
                qr,
                {
                    "200": {
                        "description": "`event: status` with the TicketStatus JSON at once and at "
                        "every change; comments keep the stream alive; it ends after a final status.",
                        "content": {
                            "text/event-stream": {
                                # OpenAPI 3.1: the schema of one event.
                                "schema": _object(
                                    {
                                        "event": {"const": "status"},
                                        "data": {
                                            "type": "string",
                                            "contentMediaType": "application/json",
                                            "contentSchema": _ref("TicketStatus"),
                                        },
                                    }
                                )
                            }
                        },
                    },
                    **_errors(
                        _merge(
                            {403: ["invalid_secret", "origin_not_allowed"]},
                            TICKET,
                            POOL_HOST,
                            STORES,
                            RATE,  # too many waiting on this ticket, or from this address
                        )
                    ),
                },
                parameters=[TICKET_PARAM, *SECRET_PARAMS],
                op_id="qrcodeEvents",
            )
        },
        "/api/qrcode/{ticket}/exchange": {
            "post": _op(
                "Exchange a confirmed ticket for the user and tokens (once)",
                qr,
                {
                    "200": _json(
                        _ref("Exchange"),
                        "The user and OIDC tokens, with the scopes the client is registered "
                        "for; `refresh_token` only for a confidential client registered for "
                        "`offline_access`.",
                    ),
                    **_errors(
                        _merge(
                            JSON_BODY,
                            {400: ["invalid_grant"]},
                            {403: ["invalid_secret", "origin_not_allowed"]},
                            TICKET,
                            POOL_HOST,
                            STORES,
                        )
                    ),
                },
                description="Only when `confirmed`, only once: a second call, or a ticket "
                "not confirmed, is 400 `invalid_grant`.",
                parameters=[TICKET_PARAM],
                body={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["secret"],
                                "properties": {"secret": {"type": "string", "maxLength": 100}},
                            }
                        }
                    },
                },
                op_id="qrcodeExchange",
            )
        },
        "/api/qrcode/{ticket}/applink": {
            "post": _op(
                "A link that opens the mini program for this ticket on the phone itself",
                qr,
                {
                    "200": _json(_ref("AppLink"), "The link; the same for this ticket and kind."),
                    **_errors(
                        _merge(
                            JSON_BODY,
                            {403: ["invalid_secret", "origin_not_allowed"]},
                            TICKET,
                            {410: ["ticket_expired"]},
                            {503: ["applink_unavailable", "applink_quota_exceeded"]},
                            POOL_HOST,
                            STORES,
                        )
                    ),
                },
                description="For a phone browser outside WeChat: WeChat's URL Scheme "
                "(`kind: scheme`, the default; the browser stays on the page) or URL Link "
                "(`url_link`) of the pool's mini program, opening its confirm page with "
                "this ticket (launch scene 1065 or 1194). Keep following the ticket and "
                "check it again when the page becomes visible. 503 `applink_unavailable`: "
                "the mini program may not make links (a personal account's) or WeChat "
                "refused; `applink_quota_exceeded`: the day's links are spent. Then show "
                "the QR code as before.",
                parameters=[TICKET_PARAM],
                body={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["secret"],
                                "properties": {
                                    "secret": {"type": "string", "maxLength": 100},
                                    "kind": {"type": "string", "enum": ["scheme", "url_link"]},
                                },
                            }
                        }
                    },
                },
                op_id="qrcodeAppLink",
            )
        },
        "/api/mp/session": {
            "servers": [{"$ref": "pool"}, {"$ref": "apex"}],
            "post": _op(
                "Open a mini-program session from a wx.login code",
                mp,
                {
                    "200": _json(_ref("MpSession"), "A session token for the bearer routes."),
                    **_errors(
                        _merge(
                            JSON_BODY,
                            {
                                400: ["invalid_appid", "invalid_code", "code_used"],
                                403: ["wechat_risky_user"],
                            },
                            RATE,
                            WECHAT,
                            STORES,
                        )
                    ),
                },
                description="WeChat's errors map to 400 `invalid_code` (40029), `code_used` "
                "(40163), 502 `wechat_unavailable` (network, -1), 429 `wechat_rate_limited` "
                "(45011), 403 `wechat_risky_user` (40226); any other WeChat error is 502 "
                "`wechat_error`. Rate limited per AppID and address (`PORTAL_RATE_MP_SESSION`).",
                body={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["appid", "code"],
                                "properties": {
                                    "appid": {"type": "string", "maxLength": 64},
                                    "code": {
                                        "type": "string",
                                        "maxLength": 256,
                                        "description": "from wx.login",
                                    },
                                },
                            }
                        }
                    },
                },
                security=[],
                op_id="mpSession",
            ),
        },
        "/api/mp/avatar": {
            "servers": [{"$ref": "pool"}, {"$ref": "apex"}],
            "post": _op(
                "Upload the avatar the user chose (wx.uploadFile)",
                mp,
                {
                    "201": _json(
                        _object({"avatar_url": {"type": "string", "format": "uri"}}),
                        "The stored avatar (a 132 px PNG); send it as `avatar_url` on confirm.",
                    ),
                    **_errors(
                        _merge(
                            MP_SESSION,
                            {400: ["invalid_avatar", "invalid_request"]},
                            {411: ["length_required"]},
                            BODY,
                            {415: ["unsupported_media_type"]},
                            RATE,
                            STORES,
                        )
                    ),
                },
                description="A PNG or JPEG of at most 1 MB, as the multipart field `avatar` or "
                "as the raw body.",
                body={
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["avatar"],
                                "properties": {"avatar": {"type": "string", "format": "binary"}},
                            },
                            "encoding": {"avatar": {"contentType": "image/png, image/jpeg"}},
                        },
                        "image/png": {"schema": {"type": "string", "format": "binary"}},
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                security=[{"mpSession": []}],
                op_id="mpAvatar",
            ),
        },
        "/api/mp/tickets/{ticket}/scan": {
            "servers": [{"$ref": "pool"}, {"$ref": "apex"}],
            "post": _op(
                "Scan a ticket",
                mp,
                {
                    "200": _json(_ref("Scanned"), "Scanned: ask the user to confirm."),
                    **_errors(
                        _merge(
                            mp_ticket_errors,
                            JSON_BODY,
                            {403: ["scan_source_refused"]},
                            {409: ["ticket_taken"], 410: ["ticket_expired"]},
                        )
                    ),
                },
                description="Scanning again by the same user is harmless. 403 "
                "`wrong_mini_program`: the ticket's pool is served by another mini program. "
                "`scene` is WeChat's launch scene (`wx.getEnterOptionsSync().scene`); a "
                "computer's QR code opened from an image or the album (1012, 1013, 1048, "
                "1049) is warned about, or refused with 403 `scan_source_refused` when the "
                "pool's `scan_source_policy` is `refuse` (the ticket stays pending).",
                parameters=[TICKET_PARAM],
                body={
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "scene": {"type": "integer", "minimum": 1000, "maximum": 9999},
                                },
                            }
                        }
                    },
                },
                security=[{"mpSession": []}],
                op_id="mpScan",
            ),
        },
        "/api/mp/tickets/{ticket}/confirm": {
            "servers": [{"$ref": "pool"}, {"$ref": "apex"}],
            "post": _op(
                "Confirm the login (only the user who scanned)",
                mp,
                {
                    "200": _json(_object({"status": {"const": "confirmed"}}), "Confirmed."),
                    **_errors(
                        _merge(
                            MP_SESSION,
                            JSON_BODY,
                            {400: ["invalid_phone_code", "phone_required", "nickname_refused"]},
                            {400: ["number_required"], 403: ["number_mismatch"]},
                            {403: ["not_scanner", "signup_disabled", "user_blocked"]},
                            mp_ticket_errors,
                            {409: ["ticket_not_scanned"], 410: ["ticket_expired"]},
                            {503: ["phone_quota_exhausted"]},
                            WECHAT,
                        )
                    ),
                },
                description="`phone_errno` 1400001 (the getPhoneNumber button's event when the "
                "mini program's phone-number quota is spent) is counted for the pool; a pool "
                "that requires a phone number, with none on file, then answers 503 "
                "`phone_quota_exhausted`, any other logs in without a number. "
                "`phone_code` (from the getPhoneNumber button) is exchanged with "
                "WeChat for the phone number. A pool that requires a phone number, with none on "
                "file for this user, answers 400 `phone_required`; a login-only pool refuses a "
                "new user with 403 `signup_disabled`.",
                parameters=[TICKET_PARAM],
                body={
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "phone_code": {"type": "string", "maxLength": 256},
                                    "number": {
                                        "type": "integer",
                                        "description": "number matching: the number picked; "
                                        "a wrong one cancels the login (403 `number_mismatch`)",
                                    },
                                    "phone_errno": {"type": "integer"},
                                    "nickname": {"type": "string", "maxLength": 64},
                                    "avatar_url": {
                                        "type": "string",
                                        "maxLength": 1000,
                                        "format": "uri",
                                        "description": "an absolute http(s) URL, e.g. from "
                                        "`POST /api/mp/avatar`",
                                    },
                                },
                            }
                        }
                    },
                },
                security=[{"mpSession": []}],
                op_id="mpConfirm",
            ),
        },
        "/api/mp/tickets/{ticket}/cancel": {
            "servers": [{"$ref": "pool"}, {"$ref": "apex"}],
            "post": _op(
                "Cancel the login",
                mp,
                {
                    "200": _json(_object({"status": {"const": "cancelled"}}), "Cancelled."),
                    **_errors(
                        _merge(
                            mp_ticket_errors,
                            JSON_BODY,
                            {403: ["not_scanner"], 410: ["ticket_expired"]},
                        )
                    ),
                },
                description="Only the WeChat user who scanned the ticket may cancel it: a "
                "pending ticket, or one scanned by someone else, is 403 `not_scanner` and "
                "stays as it is. `reason: not_me` (“this wasn't me”) also flags the "
                "attempt in the pool's login log and emits `login.suspicious`.",
                parameters=[TICKET_PARAM],
                body={
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"reason": {"type": "string", "enum": ["not_me"]}},
                            }
                        }
                    },
                },
                security=[{"mpSession": []}],
                op_id="mpCancel",
            ),
        },
        "/.well-known/openid-configuration": {
            "get": _op(
                "OpenID Provider metadata",
                oidc,
                {
                    "200": _json(_ref("Discovery"), "The pool's metadata; issuer = the pool URL."),
                    **_errors(POOL_HOST),
                },
                description="Public: `Access-Control-Allow-Origin: *` for every origin, "
                "never with credentials; `OPTIONS` answers preflights (204).",
                op_id="oidcDiscovery",
            )
        },
        "/.well-known/oauth-authorization-server": {
            "get": _op(
                "OAuth 2.0 Authorization Server Metadata (RFC 8414)",
                oidc,
                {
                    "200": _json(_ref("Discovery"), "The same document as the OpenID metadata."),
                    **_errors(POOL_HOST),
                },
                description="The OpenID Provider metadata, unchanged (RFC 8414 §3 allows an "
                "OpenID Provider's metadata here); public like it.",
                op_id="oauthMetadata",
            )
        },
        "/oidc/jwks": {
            "get": _op(
                "The pool's public signing keys",
                oidc,
                {
                    "200": _json(_ref("Jwks"), "The active key and retired ones still in use."),
                    **_errors(_merge(POOL_HOST, STORES)),
                },
                description="Public: `Access-Control-Allow-Origin: *`, never with credentials.",
                op_id="oidcJwks",
            )
        },
        "/oidc/token": {
            "post": _op(
                "Token endpoint: authorization_code (PKCE S256) and refresh_token (rotating)",
                oidc,
                {
                    "200": _json(
                        {"anyOf": [_ref("TokenResponse"), _ref("ClientToken")]},
                        "Tokens (`client_credentials`: an access token only).",
                    ),
                    **_errors(
                        _merge(
                            OAUTH_CLIENT,
                            {
                                400: [
                                    "invalid_grant",
                                    "unsupported_grant_type",
                                    "invalid_scope",
                                    "unauthorized_client",
                                ],
                                403: ["origin_not_allowed"],
                            },
                            RATE,
                            POOL_HOST,
                            STORES,
                        )
                    ),
                },
                description="Client authentication by `client_secret_basic`, "
                "`client_secret_post`, or `none` with PKCE for public clients (401 with "
                "`WWW-Authenticate` when Basic credentials fail). A reused refresh token "
                "revokes its whole login. A code is spent only by a request that matches it "
                "(client, `redirect_uri`, `code_verifier`). Scopes are cut to what the client "
                "is registered for; `refresh_token` grants are for confidential clients "
                "registered for `offline_access` (else 400 `unauthorized_client`). "
                "`client_credentials` is for management clients only (and they for it only): "
                "a management API token with the `scope` asked, or all the client's.",
                body=_form_body(
                    {
                        "grant_type": {
                            "enum": ["authorization_code", "refresh_token", "client_credentials"]
                        },
                        "code": STRING,
                        "redirect_uri": STRING,
                        "code_verifier": {"type": "string", "minLength": 43, "maxLength": 128},
                        "refresh_token": STRING,
                        "scope": STRING,
                        **CLIENT_AUTH_FIELDS,
                    },
                    ["grant_type"],
                ),
                security=[{"clientBasic": []}, {}],
                op_id="oidcToken",
            )
        },
        "/oidc/userinfo": {
            "get": _op(
                "The user's claims for an access token",
                oidc,
                {
                    "200": _json(_ref("UserInfo"), "Claims by the token's scopes."),
                    **_userinfo_errors(
                        _merge(
                            {401: ["invalid_token"], 403: ["origin_not_allowed"]},
                            POOL_HOST,
                            STORES,
                        )
                    ),
                },
                description=USERINFO_NOTE,
                security=[{"accessToken": []}],
                op_id="oidcUserinfo",
            ),
            "post": _op(
                "The user's claims for an access token (token in the header or the form)",
                oidc,
                {
                    "200": _json(_ref("UserInfo"), "Claims by the token's scopes."),
                    **_userinfo_errors(
                        _merge(
                            {
                                400: ["invalid_request"],
                                401: ["invalid_token"],
                                403: ["origin_not_allowed"],
                            },
                            BODY,
                            POOL_HOST,
                            STORES,
                        )
                    ),
                },
                body={
                    "required": False,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {"type": "object", "properties": {"access_token": STRING}}
                        }
                    },
                },
                description=USERINFO_NOTE,
                security=[{"accessToken": []}, {}],
                op_id="oidcUserinfoPost",
            ),
        },
        "/oidc/revoke": {
            "post": _op(
                "Revoke a refresh or access token (RFC 7009)",
                oidc,
                {
                    "200": {"description": "Revoked, or the token was not known (RFC 7009 §2.2)."},
                    **_errors(
                        _merge(OAUTH_CLIENT, {403: ["origin_not_allowed"]}, RATE, POOL_HOST, STORES)
                    ),
                },
                description="Revoking a refresh token ends its whole login (every token of it). "
                "A browser may call it from the authenticating client's registered web "
                "origins (CORS); another origin is 403 `origin_not_allowed`.",
                body=_form_body(
                    {
                        "token": STRING,
                        "token_type_hint": TOKEN_TYPE_HINT,
                        **CLIENT_AUTH_FIELDS,
                    },
                    ["token"],
                ),
                security=[{"clientBasic": []}, {}],
                op_id="oidcRevoke",
            )
        },
        "/oidc/par": {
            "post": _op(
                "Push an authorization request (RFC 9126)",
                oidc,
                {
                    "201": _json(
                        _object({"request_uri": STRING, "expires_in": INTEGER}),
                        "Kept for expires_in (60) seconds: the browser opens "
                        "/oidc/auth?client_id=...&request_uri=... once.",
                    ),
                    **_errors(
                        _merge(
                            OAUTH_CLIENT,
                            {
                                400: [
                                    "invalid_request_object",
                                    "unsupported_response_type",
                                    "unauthorized_client",
                                    "invalid_scope",
                                ],
                                403: ["origin_not_allowed"],
                            },
                            RATE,
                            POOL_HOST,
                            STORES,
                        )
                    ),
                },
                description="The client authenticates as at the token endpoint; the request "
                "(its parameters, or a signed `request` object, RFC 9101) is checked as "
                "/oidc/auth would. A client registered with "
                "require_pushed_authorization_requests can start a login no other way.",
                body=_form_body({name: STRING for name in PAR_FIELDS} | CLIENT_AUTH_FIELDS),
                security=[{"clientBasic": []}, {}],
                op_id="oidcPushedAuthorizationRequest",
            )
        },
        "/oidc/introspect": {
            "post": _op(
                "Introspect a token (RFC 7662), for confidential clients: only the "
                "caller's own tokens are active",
                oidc,
                {
                    "200": _json(
                        _ref("Introspection"), "Whether the token is active, and its claims."
                    ),
                    **_errors(
                        _merge(
                            OAUTH_CLIENT,
                            {400: ["unauthorized_client"]},
                            RATE,
                            POOL_HOST,
                            STORES,
                        )
                    ),
                },
                body=_form_body(
                    {
                        "token": STRING,
                        "token_type_hint": TOKEN_TYPE_HINT,
                        **CLIENT_AUTH_FIELDS,
                    },
                    ["token"],
                ),
                security=[{"clientBasic": []}, {}],
                op_id="oidcIntrospect",
            )
        },
        **_mgmt_paths(),
        "/healthz": {
            "servers": [{"$ref": "apex"}, {"$ref": "pool"}],
            "get": _op(
                "Liveness: the process answers",
                ops,
                {"200": _json(_object({"status": {"const": "ok"}}), "Alive.")},
                description="Answered on any host, by IP address too (load balancers).",
                op_id="healthz",
            ),
        },
        "/readyz": {
            "servers": [{"$ref": "apex"}, {"$ref": "pool"}],
            "get": _op(
                "Readiness: PostgreSQL and Redis answer",
                ops,
                {
                    "200": _json(
                        _object(
                            {
                                "status": {"const": "ok"},
                                "postgres": {"const": "ok"},
                                "redis": {"const": "ok"},
                            }
                        ),
                        "Ready.",
                    ),
                    "503": {
                        **_json(
                            {
                                "allOf": [
                                    _ref("Error"),
                                    _object(
                                        {
                                            "error": {"const": "not_ready"},
                                            "postgres": {"enum": ["ok", "unavailable"]},
                                            "redis": {"enum": ["ok", "unavailable"]},
                                        }
                                    ),
                                ]
                            },
                            "A store is not answering.",
                        ),
                        "headers": RETRY_AFTER,
                    },
                },
                description="Answered on any host, by IP address too (load balancers).",
                op_id="readyz",
            ),
        },
        PATH: {
            "servers": [{"$ref": "apex"}],
            "get": _op(
                "This document",
                ops,
                {"200": _json({"type": "object", "required": ["openapi"]}, "OpenAPI 3.1.")},
                op_id="openapi",
            ),
        },
    }


# --- the management API (docs/api.md, "Management API"; portal/mgmt) ----------------

MGMT_SCHEMAS: dict[str, Schema] = {
    "ClientToken": _object(
        {
            "access_token": {
                "type": "string",
                "description": "a JWT typed at+jwt, audience `{pool url}/api/v1`",
            },
            "token_type": {"const": "Bearer"},
            "expires_in": SECONDS,
            "scope": {"type": "string", "description": "the management scopes granted"},
        }
    ),
    "ManagedUser": _object(
        {
            "id": {"type": "string", "format": "uuid"},
            "nickname": _nullable(STRING),
            "avatar_url": _nullable(STRING),
            "phone_number": _nullable({"type": "string", "description": "digits, national"}),
            "phone_country_code": _nullable(STRING),
            "blocked": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "last_login_at": _nullable({"type": "string", "format": "date-time"}),
        },
        {
            "identities": {"type": "array", "items": _ref("Identity")},
            "active_tokens": {
                "type": "integer",
                "description": "live refresh tokens (logins that can still refresh)",
            },
        },
    ),
    "UserProfile": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "nickname": _nullable({"type": "string", "maxLength": 64}),
            "avatar_url": _nullable({"type": "string", "format": "uri", "maxLength": 500}),
            "phone_number": _nullable({"type": "string", "pattern": "^[0-9]{5,15}$"}),
            "phone_country_code": _nullable({"type": "string", "pattern": "^[0-9]{1,3}$"}),
        },
    },
    "Identity": _object(
        {
            "id": INTEGER,
            "appid": STRING,
            "openid": STRING,
            "unionid": _nullable(STRING),
            "created_at": {"type": "string", "format": "date-time"},
            "last_login_at": _nullable({"type": "string", "format": "date-time"}),
        }
    ),
    "ManagedClient": _object(
        {
            "client_id": STRING,
            "name": STRING,
            "type": {"enum": ["application", "management"]},
            "public": {"type": "boolean"},
            "default": {"type": "boolean"},
            "scopes": {"type": "array", "items": STRING},
        },
        {
            "redirect_uris": {"type": "array", "items": STRING},
            "post_logout_redirect_uris": {"type": "array", "items": STRING},
            "web_origins": {"type": "array", "items": STRING},
            "client_secret": {
                "type": "string",
                "description": "only when created or rotated: shown once, stored as a hash",
            },
        },
    ),
    "ClientInput": {
        "type": "object",
        "properties": {
            "type": {"enum": ["application", "management"], "default": "application"},
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "public": {"type": "boolean", "description": "application clients only"},
            "scopes": {
                "type": "array",
                "items": STRING,
                "description": "application: openid, profile, phone, offline_access; "
                "management: the management scopes",
            },
            "redirect_uris": {"type": "array", "items": STRING, "maxItems": 50},
            "post_logout_redirect_uris": {"type": "array", "items": STRING, "maxItems": 50},
            "web_origins": {"type": "array", "items": STRING, "maxItems": 50},
        },
    },
    "LoginEvent": _object(
        {
            "id": INTEGER,
            "created_at": {"type": "string", "format": "date-time"},
            "result": {
                "type": "string",
                "description": "`success`, `signup`, or the error code that refused it",
            },
            "user_id": _nullable(STRING),
            "client_id": _nullable(STRING),
            "appid": _nullable(STRING),
            "openid": _nullable(STRING),
            "ip": _nullable(STRING),
            "user_agent": _nullable(STRING),
        }
    ),
    "PoolSettings": _object(
        {
            "slug": STRING,
            "url": {"type": "string", "format": "uri"},
            "name": STRING,
            "callback_url": _nullable(STRING),
            "phone_required": {"type": "boolean"},
            "login_only": {"type": "boolean"},
            "link_by_phone": {"type": "boolean"},
            "qr_fallback": {"type": "boolean"},
            "number_match": {"type": "boolean"},
            "id_token_alg": {"enum": ["RS256", "ES256"]},
            "qr_type": {"enum": ["link", "wxacode"]},
            "scan_reveal": {"enum": ["none", "avatar", "profile"]},
            "scan_source_policy": {"enum": ["warn", "refuse"]},
            "logo_shape": {"enum": ["square", "round"]},
            "qr_lifetime": INTEGER,
            "id_token_ttl": INTEGER,
            "access_token_ttl": INTEGER,
            "refresh_token_ttl": INTEGER,
            "login_retention_days": INTEGER,
            "ip_retention_days": INTEGER,
            "mp_appid": _nullable(STRING),
        }
    ),
    "WebhookEndpoint": _object(
        {
            "id": {"type": "string", "format": "uuid"},
            "url": {"type": "string", "format": "uri"},
            "description": STRING,
            "events": {"type": "array", "items": STRING},
            "enabled": {"type": "boolean"},
            "disabled_reason": _nullable({"enum": ["failing", "admin"]}),
            "created_at": {"type": "string", "format": "date-time"},
        },
        {
            "secret": {
                "type": "string",
                "description": "the signing secret (whsec_…): only when created or rotated",
            },
        },
    ),
    "AuditEntry": _object(
        {
            "id": STRING,
            "time": {"type": "string", "format": "date-time"},
            "pool": _nullable(STRING),
            "actor": _object(
                {
                    "type": {"enum": ["admin", "client", "cli", "system"]},
                    "id": STRING,
                    "label": _nullable(STRING),
                }
            ),
            "action": STRING,
            "target": _nullable(STRING),
            "before": _nullable({"type": "object"}),
            "after": _nullable({"type": "object"}),
            "ip": _nullable(STRING),
            "user_agent": _nullable(STRING),
        }
    ),
    "WebhookInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "maxLength": 2000, "description": "https, a public address"},
            "events": {"type": "array", "items": STRING, "minItems": 1},
            "description": {"type": "string", "maxLength": 200},
            "enabled": {"type": "boolean", "description": "not when creating"},
        },
    },
    "WebhookDelivery": _object(
        {
            "id": INTEGER,
            "endpoint_id": STRING,
            "event_id": {"type": "string", "description": "the webhook-id of every attempt"},
            "event_type": STRING,
            "status": STRING,
            "attempts": INTEGER,
        },
        {
            "attempts_log": {
                "type": "array",
                "items": {
                    "type": "object",
                    "description": "attempted_at, status_code, error, latency_ms, "
                    "response_excerpt, replay",
                },
            }
        },
    ),
    "SettingsInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "callback_url": _nullable(STRING),
            "phone_required": {"type": "boolean"},
            "login_only": {"type": "boolean"},
            "link_by_phone": {"type": "boolean"},
            "qr_fallback": {"type": "boolean"},
            "number_match": {
                "type": "boolean",
                "description": "the PC shows a number the person picks on the phone",
            },
            "id_token_alg": {"enum": ["RS256", "ES256"]},
            "qr_type": {"enum": ["link", "wxacode"]},
            "scan_reveal": {"enum": ["none", "avatar", "profile"]},
            "scan_source_policy": {
                "enum": ["warn", "refuse"],
                "description": "a QR scanned from an image or the album: warn, or refuse",
            },
            "logo_shape": {"enum": ["square", "round"]},
            "qr_lifetime": {"type": "integer", "minimum": 30, "maximum": 600},
            "id_token_ttl": {"type": "integer", "minimum": 60, "maximum": 86400},
            "access_token_ttl": {"type": "integer", "minimum": 60, "maximum": 86400},
            "refresh_token_ttl": {"type": "integer", "minimum": 3600, "maximum": 31536000},
            "login_retention_days": {
                "type": "integer",
                "minimum": 1,
                "maximum": 3650,
                "description": "days login events are kept (docs/privacy.md)",
            },
            "ip_retention_days": {
                "type": "integer",
                "minimum": 1,
                "maximum": 3650,
                "description": "days their IP address and user agent are kept (at most "
                "login_retention_days)",
            },
            "mp_appid": _nullable({"type": "string", "pattern": "^wx[0-9a-zA-Z]{16}$"}),
            "mp_secret": {
                "type": "string",
                "pattern": "^[0-9A-Za-z]{16,64}$",
                "description": "write-only: checked with WeChat, stored encrypted, never shown",
            },
        },
    },
}

# Every management call: a bearer token of the pool's client credentials grant.
MGMT_AUTH = {401: ["invalid_token"], 403: ["insufficient_scope"], **RATE}
NO_WEBHOOK = {404: ["not_found"]}
NO_DELIVERY = {404: ["not_found", "delivery_not_found"]}
WEBHOOK_INPUT = {
    400: ["invalid_url", "url_not_public", "invalid_events", "invalid_description"],
}


def _mgmt_op(
    summary: str,
    scope: str,
    ok: dict[str, dict],
    codes: dict[int, list[str]],
    *,
    op_id: str,
    parameters: list | None = None,
    body: Schema | None = None,
    description: str = "",
) -> dict:
    responses = {**ok, **_errors(_merge(MGMT_AUTH, codes, POOL_HOST, STORES))}
    responses["401"]["headers"] = {
        "WWW-Authenticate": {"description": 'Bearer realm="<issuer>", error=...', "schema": STRING}
    }
    return _op(
        summary,
        ["Management API"],
        responses,
        description=(description + " " if description else "") + f"Scope: `{scope}`.",
        parameters=parameters,
        body={"required": True, "content": {"application/json": {"schema": body}}}
        if body
        else None,
        security=[{"managementToken": [scope]}],
        op_id=op_id,
    )


def _mgmt_paths() -> dict[str, dict]:
    user = {"name": "user_id", "in": "path", "required": True, "schema": STRING}
    client = {"name": "client_id", "in": "path", "required": True, "schema": STRING}
    identity = {"name": "identity_id", "in": "path", "required": True, "schema": STRING}
    cursor = {
        "name": "cursor",
        "in": "query",
        "schema": STRING,
        "description": "`next_cursor` of the previous page (absent: the first page)",
    }
    no_user = {404: ["user_not_found", "not_found"]}
    no_client = {404: ["client_not_found", "not_found"]}
    endpoint = {"name": "endpoint_id", "in": "path", "required": True, "schema": STRING}
    delivery = {"name": "delivery_id", "in": "path", "required": True, "schema": STRING}
    deleted = {"204": {"description": "Done."}}

    def page(name: str, item: str) -> Schema:
        return _object(
            {
                name: {"type": "array", "items": _ref(item)},
                "next_cursor": _nullable(STRING),
            }
        )

    return {
        "/api/v1/users": {
            "get": _mgmt_op(
                "List and search users, newest first",
                "users:read",
                {"200": _json(page("users", "ManagedUser"), "A page of users.")},
                {400: ["invalid_request", "invalid_cursor"]},
                parameters=[
                    {
                        "name": "q",
                        "in": "query",
                        "schema": {"type": "string", "maxLength": 100},
                        "description": "a user id, digits of a phone number, or part of a nickname",
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                    },
                    cursor,
                ],
                op_id="mgmtListUsers",
            ),
            "post": _mgmt_op(
                "Create a user (no WeChat identity yet)",
                "users:write",
                {"201": _json(_ref("ManagedUser"), "Created.")},
                JSON_BODY,
                body=_ref("UserProfile"),
                description="With `link_by_phone`, the first scan of the person with this "
                "phone number logs in as this user.",
                op_id="mgmtCreateUser",
            ),
        },
        "/api/v1/users/{user_id}": {
            "parameters": [user],
            "get": _mgmt_op(
                "A user, with their WeChat identities",
                "users:read",
                {"200": _json(_ref("ManagedUser"), "The user.")},
                no_user,
                op_id="mgmtGetUser",
            ),
            "patch": _mgmt_op(
                "Update a user's profile (null clears a field)",
                "users:write",
                {"200": _json(_ref("ManagedUser"), "The user as now.")},
                _merge(JSON_BODY, no_user),
                body=_ref("UserProfile"),
                op_id="mgmtUpdateUser",
            ),
            "delete": _mgmt_op(
                "Delete a user and their personal data (PIPL)",
                "users:write",
                deleted,
                no_user,
                description="Their WeChat identities, phone number, nickname, avatar (if no "
                "one else uses it) and refresh tokens are erased and their logins end; their "
                "login events keep only a pseudonym (docs/privacy.md). Their next scan "
                "registers a new user.",
                op_id="mgmtDeleteUser",
            ),
        },
        "/api/v1/users/{user_id}/block": {
            "parameters": [user],
            "post": _mgmt_op(
                "Block a user: their logins end, and they cannot log in",
                "users:write",
                {"200": _json(_ref("ManagedUser"), "The user as now.")},
                no_user,
                op_id="mgmtBlockUser",
            ),
        },
        "/api/v1/users/{user_id}/unblock": {
            "parameters": [user],
            "post": _mgmt_op(
                "Unblock a user",
                "users:write",
                {"200": _json(_ref("ManagedUser"), "The user as now.")},
                no_user,
                op_id="mgmtUnblockUser",
            ),
        },
        "/api/v1/users/{user_id}/export": {
            "parameters": [user],
            "get": _mgmt_op(
                "Everything kept about a user, as JSON (access and portability)",
                "users:read",
                {
                    "200": _json(
                        _object(
                            {
                                "format": {"const": "portal.user-export.v1"},
                                "pool": STRING,
                                "exported_at": {"type": "string", "format": "date-time"},
                                "user": _ref("ManagedUser"),
                                "wechat_identities": {"type": "array", "items": {"type": "object"}},
                                "login_events": {"type": "array", "items": {"type": "object"}},
                                "active_logins": {"type": "array", "items": {"type": "object"}},
                                "retention": {"type": "object"},
                            }
                        ),
                        "The user's data (docs/privacy.md); the export is audit-logged.",
                    )
                },
                no_user,
                op_id="mgmtExportUser",
            ),
        },
        "/api/v1/users/{user_id}/identities": {
            "parameters": [user],
            "get": _mgmt_op(
                "A user's WeChat identities",
                "users:read",
                {
                    "200": _json(
                        _object({"identities": {"type": "array", "items": _ref("Identity")}}),
                        "The identities.",
                    )
                },
                no_user,
                op_id="mgmtListIdentities",
            ),
        },
        "/api/v1/users/{user_id}/identities/{identity_id}": {
            "parameters": [user, identity],
            "delete": _mgmt_op(
                "Unlink a WeChat identity from a user",
                "users:write",
                deleted,
                {404: ["identity_not_found", "user_not_found", "not_found"]},
                description="The next scan with that identity registers (or links) anew.",
                op_id="mgmtUnlinkIdentity",
            ),
        },
        "/api/v1/clients": {
            "get": _mgmt_op(
                "The pool's clients, application and management",
                "clients:read",
                {
                    "200": _json(
                        _object({"clients": {"type": "array", "items": _ref("ManagedClient")}}),
                        "The clients.",
                    )
                },
                {},
                op_id="mgmtListClients",
            ),
            "post": _mgmt_op(
                "Register a client; its secret is in this answer only",
                "clients:write",
                {"201": _json(_ref("ManagedClient"), "Created, with `client_secret`.")},
                _merge(JSON_BODY, {400: ["invalid_scope"]}),
                body=_ref("ClientInput"),
                op_id="mgmtCreateClient",
            ),
        },
        "/api/v1/clients/{client_id}": {
            "parameters": [client],
            "get": _mgmt_op(
                "A client",
                "clients:read",
                {"200": _json(_ref("ManagedClient"), "The client.")},
                no_client,
                op_id="mgmtGetClient",
            ),
            "patch": _mgmt_op(
                "Update a client (fields left out stay)",
                "clients:write",
                {"200": _json(_ref("ManagedClient"), "The client as now.")},
                _merge(JSON_BODY, no_client, {400: ["invalid_scope", "callback_kept"]}),
                body=_ref("ClientInput"),
                op_id="mgmtUpdateClient",
            ),
            "delete": _mgmt_op(
                "Delete a client (not the pool's default client)",
                "clients:write",
                deleted,
                _merge(no_client, {409: ["default_client"]}),
                op_id="mgmtDeleteClient",
            ),
        },
        "/api/v1/clients/{client_id}/secret": {
            "parameters": [client],
            "post": _mgmt_op(
                "Rotate a client's secret: the old one stops working at once",
                "clients:write",
                {"200": _json(_ref("ManagedClient"), "The client, with its new `client_secret`.")},
                _merge(no_client, {409: ["public_client"]}),
                op_id="mgmtRotateClientSecret",
            ),
        },
        "/api/v1/logins": {
            "get": _mgmt_op(
                "The login log, newest first",
                "logins:read",
                {"200": _json(page("login_events", "LoginEvent"), "A page of 50 events.")},
                {400: ["invalid_request", "invalid_cursor"]},
                parameters=[
                    {
                        "name": "since",
                        "in": "query",
                        "schema": {"type": "string", "format": "date"},
                        "description": "first day (UTC), included",
                    },
                    {
                        "name": "until",
                        "in": "query",
                        "schema": {"type": "string", "format": "date"},
                        "description": "last day (UTC), included",
                    },
                    {"name": "user_id", "in": "query", "schema": STRING},
                    {"name": "client_id", "in": "query", "schema": STRING},
                    {
                        "name": "result",
                        "in": "query",
                        "schema": STRING,
                        "description": "`ok` (success, signup), `refused`, or one result code",
                    },
                    cursor,
                ],
                op_id="mgmtListLogins",
            ),
        },
        "/api/v1/webhooks": {
            "get": _mgmt_op(
                "The pool's webhook endpoints",
                "webhooks:write",
                {
                    "200": _json(
                        _object({"webhooks": {"type": "array", "items": _ref("WebhookEndpoint")}}),
                        "The endpoints.",
                    )
                },
                {},
                op_id="mgmtListWebhooks",
            ),
            "post": _mgmt_op(
                "Register a webhook endpoint; its signing secret is in this answer only",
                "webhooks:write",
                {"201": _json(_ref("WebhookEndpoint"), "Created, with `secret`.")},
                _merge(JSON_BODY, WEBHOOK_INPUT),
                body=_ref("WebhookInput"),
                description="`url` and `events` are required (docs/webhooks.md lists the "
                "events). An address that is not public is refused.",
                op_id="mgmtCreateWebhook",
            ),
        },
        "/api/v1/webhooks/{endpoint_id}": {
            "parameters": [endpoint],
            "get": _mgmt_op(
                "A webhook endpoint",
                "webhooks:write",
                {"200": _json(_ref("WebhookEndpoint"), "The endpoint.")},
                NO_WEBHOOK,
                op_id="mgmtGetWebhook",
            ),
            "patch": _mgmt_op(
                "Update a webhook endpoint (fields left out stay; enabling clears its failures)",
                "webhooks:write",
                {"200": _json(_ref("WebhookEndpoint"), "The endpoint as now.")},
                _merge(JSON_BODY, WEBHOOK_INPUT, NO_WEBHOOK),
                body=_ref("WebhookInput"),
                op_id="mgmtUpdateWebhook",
            ),
            "delete": _mgmt_op(
                "Delete a webhook endpoint",
                "webhooks:write",
                deleted,
                NO_WEBHOOK,
                op_id="mgmtDeleteWebhook",
            ),
        },
        "/api/v1/webhooks/{endpoint_id}/secret": {
            "parameters": [endpoint],
            "post": _mgmt_op(
                "Rotate an endpoint's signing secret",
                "webhooks:write",
                {"200": _json(_object({"id": STRING, "secret": STRING}), "The new secret.")},
                NO_WEBHOOK,
                op_id="mgmtRotateWebhookSecret",
            ),
        },
        "/api/v1/webhooks/{endpoint_id}/deliveries": {
            "parameters": [endpoint],
            "get": _mgmt_op(
                "An endpoint's deliveries, newest first",
                "webhooks:write",
                {"200": _json(page("deliveries", "WebhookDelivery"), "A page of deliveries.")},
                _merge({400: ["invalid_request", "invalid_cursor"]}, NO_WEBHOOK),
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                    },
                    cursor,
                ],
                op_id="mgmtListWebhookDeliveries",
            ),
        },
        "/api/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}": {
            "parameters": [endpoint, delivery],
            "get": _mgmt_op(
                "A delivery and every attempt (status, latency, response excerpt)",
                "webhooks:write",
                {"200": _json(_ref("WebhookDelivery"), "The delivery.")},
                NO_DELIVERY,
                op_id="mgmtGetWebhookDelivery",
            ),
        },
        "/api/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay": {
            "parameters": [endpoint, delivery],
            "post": _mgmt_op(
                "Send a delivery again: the same webhook-id and payload, signed anew",
                "webhooks:write",
                {
                    "202": _json(
                        _object({"delivery_id": INTEGER, "status": {"const": "pending"}}),
                        "Queued.",
                    )
                },
                NO_DELIVERY,
                op_id="mgmtReplayWebhookDelivery",
            ),
        },
        "/api/v1/audit": {
            "get": _mgmt_op(
                "The pool's audit trail, newest first",
                "settings:write",
                {"200": _json(page("entries", "AuditEntry"), "A page of the trail.")},
                {400: ["invalid_request", "invalid_cursor"]},
                description="Every change by an admin (console), a management client (API) "
                "or the command line: who, what (the changed fields before and after; secrets "
                "and users' personal data never), when, from which address and user agent.",
                parameters=[
                    {
                        "name": "actor",
                        "in": "query",
                        "schema": {"type": "string", "maxLength": 200},
                        "description": "`admin`, `client`, `cli`, `system`, `TYPE:ID`, or part "
                        "of an admin's email",
                    },
                    {
                        "name": "action",
                        "in": "query",
                        "schema": {"type": "string", "maxLength": 100},
                        "description": "one action (`client.update`) or a noun (`client`)",
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "schema": {"type": "string", "format": "date"},
                    },
                    {
                        "name": "until",
                        "in": "query",
                        "schema": {"type": "string", "format": "date"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                    },
                    cursor,
                ],
                op_id="mgmtListAudit",
            ),
        },
        "/api/v1/settings": {
            "get": _mgmt_op(
                "The pool's settings (the AppSecret is never shown)",
                "settings:write",
                {"200": _json(_ref("PoolSettings"), "The settings.")},
                {},
                op_id="mgmtGetSettings",
            ),
            "patch": _mgmt_op(
                "Change the pool's settings (fields left out stay)",
                "settings:write",
                {"200": _json(_ref("PoolSettings"), "The settings as now.")},
                _merge(
                    JSON_BODY,
                    {
                        400: [
                            "invalid_appid",
                            "invalid_secret",
                            "mp_appid_reserved",
                            "mp_secret_refused",
                            "secret_required",
                            "invalid_retention",
                        ],
                        409: ["mp_appid_taken"],
                    },
                    WECHAT,
                ),
                body=_ref("SettingsInput"),
                description="A private mini program (`mp_appid` with `mp_secret`) is saved "
                "only when WeChat accepts the AppSecret, as in the console.",
                op_id="mgmtUpdateSettings",
            ),
        },
    }


def _resolve_servers(paths: dict[str, dict], servers: dict[str, dict]) -> dict[str, dict]:
    """``{"$ref": name}`` in a path's servers stands for one of ``servers``:
    written once, used by several paths."""
    for item in paths.values():
        if "servers" in item:
            item["servers"] = [servers[s["$ref"]] for s in item["servers"]]
    return paths


def _version() -> str:
    try:
        return metadata.version("wechat-scan-portal")
    except metadata.PackageNotFoundError:  # running from a bare checkout
        return "0"


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document for a deployment (its scheme and apex host)."""
    return _document(settings.scheme, settings.apex_netloc)


@functools.cache
def _document(scheme: str, apex: str) -> dict[str, Any]:
    servers = {
        "pool": {
            "url": scheme + "://{slug}.{apex}",
            "description": "A user pool's host: the QR API, OpenID Connect, the mini-program API.",
            "variables": {
                "slug": {"default": "demo", "description": "the pool's slug"},
                "apex": {"default": apex, "description": "the portal's apex host (and port)"},
            },
        },
        "apex": {
            "url": scheme + "://{apex}",
            "description": "The portal's apex host: the mini-program API, probes, this document.",
            "variables": {"apex": {"default": apex, "description": "the portal's apex host"}},
        },
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "WeChat scan login portal",
            "version": _version(),
            "summary": "Log in to a website by scanning a QR code with WeChat; OpenID Connect.",
            "description": (
                'Every error of every route is JSON `{"error", "error_description"}`; each '
                "operation lists the codes it can answer. Any route may also answer 503 "
                "`temporarily_unavailable` (with `Retry-After`) while PostgreSQL or Redis is "
                "down, and a Host that names no pool answers 404 `pool_not_found`.\n\n"
                "Ticket statuses: `pending` → `scanned` → `confirmed` (then exchanged once); "
                "`pending`/`scanned` → `cancelled`; any non-final → `expired`. `confirmed`, "
                "`cancelled` and `expired` are final."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [servers["pool"]],
        "tags": [
            {"name": "QR API", "description": "The PC side: hosted page, SDK and component."},
            {"name": "Mini-program API", "description": "The WeChat side of a scan login."},
            {"name": "OpenID Connect", "description": "Issuer = the pool URL."},
            {"name": "Operations", "description": "Probes and this document."},
            {
                "name": "Management API",
                "description": "A pool's users, clients, login log and settings, for a "
                "management client (client credentials).",
            },
        ],
        "paths": _resolve_servers(_paths(), servers),
        "components": {
            "schemas": {**SCHEMAS, **MGMT_SCHEMAS},
            "securitySchemes": {
                "mpSession": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`session_token` from `POST /api/mp/session`",
                },
                "clientBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "`client_secret_basic`: client_id and secret, form-encoded",
                },
                "accessToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an access token from `/oidc/token` or the ticket exchange",
                },
                "managementToken": {
                    "type": "oauth2",
                    "description": "a management client's token: `grant_type=client_credentials` "
                    "at the pool's `/oidc/token` (docs/api.md, section Management API)",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": "/oidc/token",
                            "scopes": {
                                "users:read": "read users, their identities and exports",
                                "users:write": "create, update, block, unblock, delete users; "
                                "unlink identities",
                                "clients:read": "read clients",
                                "clients:write": "create, update, rotate, delete clients",
                                "logins:read": "read the login log",
                                "webhooks:write": "manage webhook endpoints and deliveries",
                                "settings:write": "read and change the pool's settings",
                            },
                        }
                    },
                },
            },
        },
    }


@functools.cache
def _encoded(scheme: str, apex: str) -> bytes:
    return orjson.dumps(_document(scheme, apex))


async def openapi_json(request: Request) -> Response:
    settings: Settings = request.state.settings
    return Response(
        _encoded(settings.scheme, settings.apex_netloc),
        media_type="application/json",
        headers={"cache-control": "public, max-age=300", "access-control-allow-origin": "*"},
    )


def routes() -> list[Route]:
    return [Route(PATH, openapi_json, methods=["GET"])]
