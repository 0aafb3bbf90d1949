"""The management API's handlers (docs/api.md, "Management API").

Thin: check the caller (``auth.caller``, with the scope the route needs), parse,
call the console's store functions (one implementation of each write for the
console and the API), record the change in the audit trail in the same
transaction, answer JSON.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from portal import audit, privacy
from portal.console import store
from portal.console.views_pool import LIMITS
from portal.errors import NotFound, ValidationError
from portal.mgmt.auth import Caller, caller
from portal.tenants import clients, keys, pools
from portal.tenants.pools import APPID_RE, APPSECRET_RE, Pool
from portal.web import validation
from portal.web.jsonapi import read_json
from portal.webhooks import store as webhooks_store

NO_STORE = {"cache-control": "no-store"}
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
MAX_URIS = 50
_PHONE_RE = re.compile(r"^[0-9]{5,15}$")
_COUNTRY_RE = re.compile(r"^[0-9]{1,3}$")


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def answer(content: Any, status_code: int = 200) -> Response:
    return JSONResponse(_json(content), status_code=status_code, headers=NO_STORE)


def _pool(request: Request) -> Pool:
    return request.state.pool


def _actor(request: Request, who: Caller) -> audit.Actor:
    return audit.Actor.client(who.client_id, request)


async def _announce(request: Request) -> None:
    """Every process drops its cached pool, clients and keys (as the console does)."""
    await pools.announce_change(request.state.hub, _pool(request).slug)


def _single(request: Request) -> None:
    """A query parameter given twice is refused, not one of its values picked."""
    for name in request.query_params:
        if len(request.query_params.getlist(name)) > 1:
            raise ValidationError(f"The parameter {name[:40]} is repeated.")


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "")
    if not raw:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
    return int(raw)


def _query(request: Request, name: str, max_len: int = 100) -> str:
    value = request.query_params.get(name, "")
    if len(value) > max_len or "\x00" in value:
        raise ValidationError(f"{name} must be at most {max_len} characters.")
    return value


# --- users -----------------------------------------------------------------


def _user_cursor(row: dict) -> str:
    raw = f"{row['created_at'].isoformat()}~{row['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_user_cursor(value: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        when, _, ident = raw.partition("~")
        moment = datetime.fromisoformat(when)
        user_id = store.parse_uuid(ident)
        if moment.tzinfo is None or user_id is None:
            raise ValueError(value)
        return moment, user_id
    except (ValueError, UnicodeDecodeError, binascii.Error, OverflowError):
        raise ValidationError("cursor is not one this API gave.", error="invalid_cursor") from None


def _user_id(request: Request) -> uuid.UUID:
    user_id = store.parse_uuid(request.path_params["user_id"])
    if user_id is None:
        raise NotFound("No such user.", error="user_not_found")
    return user_id


async def list_users(request: Request) -> Response:
    await caller(request, "users:read")
    _single(request)
    q = _query(request, "q")
    cursor = request.query_params.get("cursor")
    after = _parse_user_cursor(cursor[:200]) if cursor else None
    limit = _limit(request)
    rows, more = await store.users_after(request.state.db, _pool(request).id, q, after, limit)
    return answer({"users": rows, "next_cursor": _user_cursor(rows[-1]) if more else None})


async def get_user(request: Request) -> Response:
    await caller(request, "users:read")
    user = await store.user_detail(request.state.db, _pool(request).id, _user_id(request))
    if user is None:
        raise NotFound("No such user.", error="user_not_found")
    user.pop("logins", None)  # the login log has its own route
    user["identities"] = await store.identities_of(request.state.db, _pool(request).id, user["id"])
    return answer(user)


def _profile(data: dict[str, Any]) -> dict[str, Any]:
    """The profile fields present in ``data``, validated (null clears one)."""
    unknown = set(data) - set(store.PROFILE_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown field: {sorted(unknown)[0][:40]}.")
    out: dict[str, Any] = {}
    for name in store.PROFILE_FIELDS:
        if name not in data:
            continue
        value = data[name]
        if value is None or value == "":
            out[name] = None
            continue
        if not isinstance(value, str) or "\x00" in value:
            raise ValidationError(f"{name} must be a string.")
        if name == "nickname":
            if len(value.strip()) > 64:
                raise ValidationError("nickname must be at most 64 characters.")
            out[name] = value.strip() or None
        elif name == "avatar_url":
            if len(value) > 500:
                raise ValidationError("avatar_url must be at most 500 characters.")
            out[name] = validation.redirect_uri(value, field="avatar_url")
        elif name == "phone_number":
            if not _PHONE_RE.match(value):
                raise ValidationError("phone_number must be 5 to 15 digits (no country code).")
            out[name] = value
        elif name == "phone_country_code":
            if not _COUNTRY_RE.match(value):
                raise ValidationError("phone_country_code must be 1 to 3 digits (86 for China).")
            out[name] = value
    return out


async def create_user(request: Request) -> Response:
    who = await caller(request, "users:write")
    profile = _profile(await read_json(request, optional=True))
    pool = _pool(request)
    async with request.state.db.acquire() as conn, conn.transaction():
        user = await store.create_user(conn, pool.id, profile)
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=_actor(request, who),
            action="user.create",
            target=str(user["id"]),
            after=profile,
        )
    return answer(user, 201)


async def update_user(request: Request) -> Response:
    who = await caller(request, "users:write")
    user_id = _user_id(request)
    changes = _profile(await read_json(request))
    pool = _pool(request)
    async with request.state.db.acquire() as conn, conn.transaction():
        before, after = await store.update_user(conn, pool.id, user_id, changes)
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=_actor(request, who),
            action="user.update",
            target=str(user_id),
            before={k: before[k] for k in changes},
            after={k: after[k] for k in changes},
        )
    return answer(after)


async def _set_blocked(request: Request, blocked: bool) -> Response:
    who = await caller(request, "users:write")
    user_id = _user_id(request)
    pool = _pool(request)
    async with request.state.db.acquire() as conn, conn.transaction():
        try:
            await store.set_blocked(conn, request.state.redis, pool, user_id, blocked)
        except NotFound:
            raise NotFound("No such user.", error="user_not_found") from None
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=_actor(request, who),
            action="user.block" if blocked else "user.unblock",
            target=str(user_id),
            after={"blocked": blocked},
        )
        user = await store.user_detail(conn, pool.id, user_id)
        assert user is not None
        user.pop("logins", None)
        user["identities"] = await store.identities_of(conn, pool.id, user_id)
    return answer(user)


async def block_user(request: Request) -> Response:
    return await _set_blocked(request, True)


async def unblock_user(request: Request) -> Response:
    return await _set_blocked(request, False)


async def delete_user(request: Request) -> Response:
    """PIPL's deletion (portal.privacy, as the console): identities, phone,
    nickname, avatar and refresh tokens erased, login events kept with a
    pseudonym only; audit-logged there."""
    who = await caller(request, "users:write")
    user_id = _user_id(request)
    async with request.state.db.acquire() as conn:
        await privacy.delete_user(
            conn, request.state.redis, _pool(request), user_id, _actor(request, who)
        )
    return Response(status_code=204, headers=NO_STORE)


async def export_user(request: Request) -> Response:
    """Everything the pool keeps about one person, as JSON (PIPL's rights of access
    and portability; portal.privacy, as the console); audit-logged there."""
    who = await caller(request, "users:read")
    user_id = _user_id(request)
    async with request.state.db.acquire() as conn:
        data = await privacy.export_user(conn, _pool(request), user_id, _actor(request, who))
    return answer(data)


# --- identities --------------------------------------------------------------


async def list_identities(request: Request) -> Response:
    await caller(request, "users:read")
    pool = _pool(request)
    user_id = _user_id(request)
    if await store.user_detail(request.state.db, pool.id, user_id) is None:
        raise NotFound("No such user.", error="user_not_found")
    return answer({"identities": await store.identities_of(request.state.db, pool.id, user_id)})


async def unlink_identity(request: Request) -> Response:
    who = await caller(request, "users:write")
    user_id = _user_id(request)
    raw = request.path_params["identity_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound("No such identity.", error="identity_not_found")
    pool = _pool(request)
    async with request.state.db.acquire() as conn, conn.transaction():
        gone = await store.unlink_identity(conn, pool.id, user_id, int(raw))
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=_actor(request, who),
            action="user.unlink_identity",
            target=str(user_id),
            before={"identity_id": gone["id"], "appid": gone["appid"]},
        )
    return Response(status_code=204, headers=NO_STORE)


# --- clients -------------------------------------------------------------------


def _client_json(client: clients.Client) -> dict[str, Any]:
    out: dict[str, Any] = {
        "client_id": client.client_id,
        "name": client.name,
        "type": "management" if client.is_management else "application",
        "public": client.is_public,
        "default": client.is_default,
    }
    if client.is_management:
        out["scopes"] = list(client.management_scopes)
    else:
        out.update(
            scopes=list(client.scopes),
            redirect_uris=list(client.redirect_uris),
            post_logout_redirect_uris=list(client.post_logout_redirect_uris),
            web_origins=list(client.web_origins),
        )
    return out


async def _client(request: Request) -> clients.Client:
    client_id = request.path_params["client_id"]
    client = None
    if len(client_id) <= 64 and "\x00" not in client_id:
        client = await clients.get(request.state.db, _pool(request).id, client_id)
    if client is None:
        raise NotFound("No such client.", error="client_not_found")
    return client


def _strings(data: dict[str, Any], name: str, check) -> list[str] | None:
    if name not in data:
        return None
    values = data[name]
    if values is None:
        return []
    if not isinstance(values, list) or len(values) > MAX_URIS:
        raise ValidationError(f"{name} must be a list of at most {MAX_URIS} strings.")
    out = []
    for value in values:
        if not isinstance(value, str) or len(value) > 2000 or "\x00" in value:
            raise ValidationError(f"{name} must be a list of strings.")
        out.append(check(value))
    return list(dict.fromkeys(out))


def _scopes(data: dict[str, Any]) -> list[str] | None:
    if "scopes" not in data:
        return None
    values = data["scopes"]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValidationError("scopes must be a list of strings.")
    return values


def _uri_checks(request: Request) -> dict[str, Any]:
    allow_http = request.state.settings.is_dev
    return {
        "redirect_uris": lambda v: validation.redirect_uri(v, allow_http=allow_http),
        "post_logout_redirect_uris": lambda v: validation.redirect_uri(
            v, field="post_logout_redirect_uri", allow_http=allow_http
        ),
        "web_origins": lambda v: validation.web_origin(v, allow_http=allow_http),
    }


async def list_clients(request: Request) -> Response:
    await caller(request, "clients:read")
    found = await store.list_clients(request.state.db, _pool(request).id)
    return answer({"clients": [_client_json(c) for c in found]})


async def get_client(request: Request) -> Response:
    await caller(request, "clients:read")
    return answer(_client_json(await _client(request)))


async def create_client(request: Request) -> Response:
    who = await caller(request, "clients:write")
    data = await read_json(request)
    pool = _pool(request)
    kind = data.get("type", "application")
    name = data.get("name")
    if not isinstance(name, str):
        raise ValidationError("name is required.")
    scopes = _scopes(data)
    async with request.state.db.acquire() as conn, conn.transaction():
        if kind == "management":
            if set(data) - {"type", "name", "scopes"}:
                raise ValidationError("A management client has a name and scopes only.")
            client, secret = await clients.create_management(
                conn, request.state.box, pool_id=pool.id, name=name, scopes=scopes or []
            )
        elif kind == "application":
            public = data.get("public", False)
            if not isinstance(public, bool):
                raise ValidationError("public must be true or false.")
            checks = _uri_checks(request)
            uris = {k: _strings(data, k, check) or [] for k, check in checks.items()}
            client, secret = await clients.create(
                conn,
                request.state.box,
                pool_id=pool.id,
                name=name,
                public=public,
                allow_http=request.state.settings.is_dev,
                scopes=scopes,
                **uris,
            )
        else:
            raise ValidationError("type must be application or management.")
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=_actor(request, who),
            action="client.create",
            target=client.client_id,
            after=_client_json(client),
        )
    await _announce(request)
    body = _client_json(client)
    if secret:
        body["client_secret"] = secret  # shown this once
    return answer(body, 201)


async def update_client(request: Request) -> Response:
    who = await caller(request, "clients:write")
    client = await _client(request)
    data = await read_json(request)
    pool = _pool(request)
    name = data.get("name", client.name)
    if not isinstance(name, str):
        raise ValidationError("name must be a string.")
    scopes = _scopes(data)
    fields: dict[str, Any] = {"name": validation.display_name(name)}
    if client.is_management:
        if set(data) - {"name", "scopes"}:
            raise ValidationError("A management client has a name and scopes only.")
        fields.update(redirect_uris=[], post_logout_redirect_uris=[], web_origins=[])
        if scopes is not None:
            fields["management_scopes"] = clients.management_scopes(scopes)
    else:
        allowed = {"name", "scopes", *_uri_checks(request)}
        if set(data) - allowed:
            raise ValidationError(f"Unknown field: {sorted(set(data) - allowed)[0][:40]}.")
        for key, check in _uri_checks(request).items():
            given = _strings(data, key, check)
            fields[key] = list(getattr(client, key)) if given is None else given
        if scopes is not None:
            fields["scopes"] = clients.registered_scopes(scopes, public=client.is_public)
        if (
            client.is_default
            and pool.callback_url
            and pool.callback_url not in fields["redirect_uris"]
        ):
            raise ValidationError(
                "The default client keeps the pool's callback URL among its redirect URIs.",
                error="callback_kept",
            )
    async with request.state.db.acquire() as conn, conn.transaction():
        await store.update_client(conn, pool.id, client.client_id, **fields)
        updated = await clients.get(conn, pool.id, client.client_id)
        assert updated is not None
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=_actor(request, who),
            action="client.update",
            target=client.client_id,
            before=_client_json(client),
            after=_client_json(updated),
        )
    await _announce(request)
    return answer(_client_json(updated))


async def rotate_client_secret(request: Request) -> Response:
    who = await caller(request, "clients:write")
    client = await _client(request)
    pool = _pool(request)
    async with request.state.db.acquire() as conn, conn.transaction():
        secret = await store.rotate_client_secret(
            conn, request.state.box, pool.id, client.client_id
        )
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=_actor(request, who),
            action="client.rotate_secret",
            target=client.client_id,
        )
    await _announce(request)
    return answer({**_client_json(client), "client_secret": secret})


async def delete_client(request: Request) -> Response:
    who = await caller(request, "clients:write")
    client = await _client(request)
    pool = _pool(request)
    async with request.state.db.acquire() as conn, conn.transaction():
        await store.delete_client(conn, pool.id, client.client_id)
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=_actor(request, who),
            action="client.delete",
            target=client.client_id,
            before=_client_json(client),
        )
    await _announce(request)
    return Response(status_code=204, headers=NO_STORE)


# --- login events -----------------------------------------------------------------


def _days(params) -> dict[str, Any]:
    """``since`` and ``until`` (whole UTC days, as the console's filters) that were given."""
    days = {}
    for name in ("since", "until"):
        if name in params:
            day = store.parse_day(params[name][:20])
            if day is None:
                raise ValidationError(f"{name} must be a day, YYYY-MM-DD (UTC).")
            days[name] = day
    return days


async def list_logins(request: Request) -> Response:
    await caller(request, "logins:read")
    _single(request)
    params = request.query_params
    days = _days(params)
    user_id = None
    if "user_id" in params:
        user_id = store.parse_uuid(params["user_id"])
        if user_id is None:
            raise ValidationError("user_id is not a user id.")
    result = _query(request, "result", 64)
    flt = store.LoginFilter(
        result=result,
        client_id=_query(request, "client_id", 64),
        user_id=user_id,
        since=days.get("since"),
        until=days.get("until"),
    )
    before = None
    if params.get("cursor"):
        before = store.parse_cursor(params["cursor"][:100])
        if before is None:
            raise ValidationError("cursor is not one this API gave.", error="invalid_cursor")
    rows, more = await store.login_events(request.state.db, _pool(request).id, flt, before)
    for row in rows:
        row.pop("nickname", None)
    return answer({"login_events": rows, "next_cursor": more})


# --- settings -----------------------------------------------------------------------

_BOOLEANS = ("phone_required", "login_only", "link_by_phone", "qr_fallback", "number_match")
_RETENTION = ("login_retention_days", "ip_retention_days")
_CHOICES = {
    "id_token_alg": keys.ALGORITHMS,
    "qr_type": pools.QR_TYPES,
    "scan_reveal": pools.SCAN_REVEALS,
    "scan_source_policy": pools.SCAN_SOURCE_POLICIES,
    "logo_shape": ("square", "round"),
}


def _settings_json(request: Request, pool: Pool) -> dict[str, Any]:
    return {
        "slug": pool.slug,
        "url": request.state.settings.pool_url(pool.slug),
        "name": pool.name,
        "callback_url": pool.callback_url,
        **{k: getattr(pool, k) for k in _BOOLEANS},
        **{k: getattr(pool, k) for k in _CHOICES},
        **{k: getattr(pool, k) for k in LIMITS},
        # PIPL (portal.privacy): days login events are kept, and their IP and user agent.
        "login_retention_days": pool.login_retention_days,
        "ip_retention_days": pool.ip_retention_days,
        # The AppSecret is write-only: never shown.
        "mp_appid": pool.mp_appid,
    }


async def get_settings(request: Request) -> Response:
    await caller(request, "settings:write")
    return answer(_settings_json(request, _pool(request)))


def _setting_changes(request: Request, data: dict[str, Any]) -> dict[str, Any]:
    """The pool settings in ``data``, validated as the console's form is."""
    changes: dict[str, Any] = {}
    allowed = {"name", "callback_url", *_BOOLEANS, *_CHOICES, *LIMITS, *_RETENTION}
    allowed |= {"mp_appid", "mp_secret"}
    unknown = set(data) - allowed
    if unknown:
        raise ValidationError(f"Unknown or read-only field: {sorted(unknown)[0][:40]}.")
    if "name" in data:
        if not isinstance(data["name"], str):
            raise ValidationError("name must be a string.")
        changes["name"] = validation.display_name(data["name"])
    if "callback_url" in data:
        url = data["callback_url"]
        if url in (None, ""):
            changes["callback_url"] = None
        elif isinstance(url, str) and len(url) <= 2000:
            changes["callback_url"] = validation.redirect_uri(
                url, field="callback_url", allow_http=request.state.settings.is_dev
            )
        else:
            raise ValidationError("callback_url must be a URL.")
    for flag in _BOOLEANS:
        if flag in data:
            if not isinstance(data[flag], bool):
                raise ValidationError(f"{flag} must be true or false.")
            changes[flag] = data[flag]
    for name, options in _CHOICES.items():
        if name in data:
            if data[name] not in options:
                raise ValidationError(f"{name} must be one of: {', '.join(options)}.")
            changes[name] = data[name]
    for name, (low, high) in LIMITS.items():
        if name in data:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValidationError(f"{name} must be a whole number from {low} to {high}.")
            changes[name] = value
    for name in _RETENTION:
        value = data.get(name)
        if name in data and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValidationError(f"{name} must be a whole number of days.")
    return changes


async def update_settings(request: Request) -> Response:
    who = await caller(request, "settings:write")
    data = await read_json(request)
    changes = _setting_changes(request, data)
    pool = _pool(request)
    state = request.state
    mp = "mp_appid" in data or "mp_secret" in data
    appid = data.get("mp_appid", pool.mp_appid) if mp else None
    secret = data.get("mp_secret") if mp else None
    if mp:
        if appid is not None and (not isinstance(appid, str) or not APPID_RE.match(appid)):
            raise ValidationError("mp_appid is not a mini program's AppID.", error="invalid_appid")
        if secret is not None and (not isinstance(secret, str) or not APPSECRET_RE.match(secret)):
            raise ValidationError("mp_secret is not an AppSecret.", error="invalid_secret")
        if appid is not None and secret is not None:
            # As the console: not the platform's, and WeChat accepts the AppSecret.
            pools.validate_mini_program(
                appid, secret, default_appid=state.settings.default_mp_appid
            )
            await pools.prove_mini_program(state.wechat, appid, secret)
    retention = None
    if any(k in data for k in _RETENTION):
        retention = (
            data.get("login_retention_days", pool.login_retention_days),
            data.get("ip_retention_days", pool.ip_retention_days),
        )
        privacy.check_retention(*retention)
    before = _settings_json(request, pool)
    async with state.db.acquire() as conn, conn.transaction():
        updated = await store.update_pool(conn, state.box, pool, changes)
        if retention is not None:  # audit-logged there, as from the console
            await privacy.set_retention(conn, updated, *retention, _actor(request, who))
            updated = await pools.get_by_id(conn, pool.id) or updated
        if mp:
            await store.set_mini_program(conn, state.box, updated, appid, secret)
            updated = await pools.get_by_id(conn, pool.id) or updated
        after = _settings_json(request, updated)
        changed = [k for k in after if after[k] != before[k] and k not in _RETENTION]
        if changed or secret is not None:
            await audit.record(
                conn,
                pool_id=pool.id,
                actor=_actor(request, who),
                action="settings.update",
                target=pool.slug,
                before={k: before[k] for k in changed},
                after={
                    **{k: after[k] for k in changed},
                    **({"mp_secret": "set"} if secret is not None else {}),
                },
            )
    await _announce(request)
    return answer(after)


# --- webhooks (issue 19 part 3: portal.webhooks' functions, as the console's) ----------


def _endpoint_json(endpoint: dict[str, Any]) -> dict[str, Any]:
    return webhooks_store.as_json(endpoint)


def _delivery_id(request: Request) -> int:
    raw = request.path_params["delivery_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound("No such delivery.", error="delivery_not_found")
    return int(raw)


def _webhook_fields(data: dict[str, Any], *, create: bool) -> dict[str, Any]:
    allowed = {"url", "events", "description"} | (set() if create else {"enabled"})
    unknown = set(data) - allowed
    if unknown:
        raise ValidationError(f"Unknown field: {sorted(unknown)[0][:40]}.")
    fields: dict[str, Any] = {}
    for name in ("url", "description"):
        if name in data:
            if not isinstance(data[name], str) or "\x00" in data[name]:
                raise ValidationError(f"{name} must be a string.")
            fields[name] = data[name]
    if "events" in data:
        events = data["events"]
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise ValidationError("events must be a list of event names.")
        fields["events"] = events
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise ValidationError("enabled must be true or false.")
        fields["enabled"] = data["enabled"]
    if create and ("url" not in fields or "events" not in fields):
        raise ValidationError("url and events are required.")
    return fields


async def _webhook_audit(
    conn, request: Request, who: Caller, action: str, target: str, **changes: Any
) -> None:
    await audit.record(
        conn,
        pool_id=_pool(request).id,
        actor=_actor(request, who),
        action=action,
        target=target,
        **changes,
    )


def _webhook_view(endpoint: dict[str, Any]) -> dict[str, Any]:
    return {k: endpoint[k] for k in ("url", "events", "description", "enabled")}


async def list_webhooks(request: Request) -> Response:
    await caller(request, "webhooks:write")
    async with request.state.db.acquire() as conn:
        found = await webhooks_store.list_endpoints(conn, _pool(request).id)
    return answer({"webhooks": [_endpoint_json(e) for e in found]})


async def create_webhook(request: Request) -> Response:
    who = await caller(request, "webhooks:write")
    fields = _webhook_fields(await read_json(request), create=True)
    state = request.state
    async with state.db.acquire() as conn, conn.transaction():
        endpoint, secret = await webhooks_store.create_endpoint(
            conn, state.settings, state.box, _pool(request).id, **fields
        )
        await _webhook_audit(
            conn, request, who, "webhook.create", endpoint["id"], after=_webhook_view(endpoint)
        )
    return answer({**_endpoint_json(endpoint), "secret": secret}, 201)  # shown this once


async def get_webhook(request: Request) -> Response:
    await caller(request, "webhooks:write")
    async with request.state.db.acquire() as conn:
        endpoint = await webhooks_store.get_endpoint(
            conn, _pool(request).id, request.path_params["endpoint_id"]
        )
    return answer(_endpoint_json(endpoint))


async def update_webhook(request: Request) -> Response:
    who = await caller(request, "webhooks:write")
    endpoint_id = request.path_params["endpoint_id"]
    fields = _webhook_fields(await read_json(request), create=False)
    state = request.state
    pool_id = _pool(request).id
    async with state.db.acquire() as conn, conn.transaction():
        before = await webhooks_store.get_endpoint(conn, pool_id, endpoint_id)
        after = await webhooks_store.update_endpoint(
            conn, state.settings, pool_id, endpoint_id, **fields
        )
        await _webhook_audit(
            conn,
            request,
            who,
            "webhook.update",
            after["id"],
            before=_webhook_view(before),
            after=_webhook_view(after),
        )
    return answer(_endpoint_json(after))


async def rotate_webhook_secret(request: Request) -> Response:
    who = await caller(request, "webhooks:write")
    endpoint_id = request.path_params["endpoint_id"]
    state = request.state
    async with state.db.acquire() as conn, conn.transaction():
        secret = await webhooks_store.rotate_secret(conn, state.box, _pool(request).id, endpoint_id)
        await _webhook_audit(conn, request, who, "webhook.rotate_secret", endpoint_id)
    return answer({"id": endpoint_id, "secret": secret})


async def delete_webhook(request: Request) -> Response:
    who = await caller(request, "webhooks:write")
    endpoint_id = request.path_params["endpoint_id"]
    async with request.state.db.acquire() as conn, conn.transaction():
        before = await webhooks_store.get_endpoint(conn, _pool(request).id, endpoint_id)
        await webhooks_store.delete_endpoint(conn, _pool(request).id, endpoint_id)
        await _webhook_audit(
            conn, request, who, "webhook.delete", before["id"], before=_webhook_view(before)
        )
    return Response(status_code=204, headers=NO_STORE)


async def list_webhook_deliveries(request: Request) -> Response:
    """An endpoint's deliveries, newest first, by cursor (the last delivery's id)."""
    await caller(request, "webhooks:write")
    _single(request)
    limit = _limit(request)
    cursor = request.query_params.get("cursor")
    before = None
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
            raise ValidationError("cursor is not one this API gave.", error="invalid_cursor")
        before = int(cursor)
    async with request.state.db.acquire() as conn:
        rows = await webhooks_store.list_deliveries(
            conn,
            _pool(request).id,
            request.path_params["endpoint_id"],
            before=before,
            limit=limit + 1,
        )
    page = rows[:limit]
    more = len(rows) > limit
    return answer({"deliveries": page, "next_cursor": str(page[-1]["id"]) if more else None})


async def _endpoint_delivery(conn, request: Request) -> dict[str, Any]:
    """The delivery of the path, if it is the path's endpoint's (else not found)."""
    pool_id = _pool(request).id
    endpoint = await webhooks_store.get_endpoint(conn, pool_id, request.path_params["endpoint_id"])
    delivery = await webhooks_store.get_delivery(conn, pool_id, _delivery_id(request))
    if delivery["endpoint_id"] != endpoint["id"]:
        raise NotFound("No such delivery.", error="delivery_not_found")
    return delivery


async def get_webhook_delivery(request: Request) -> Response:
    """A delivery with every attempt (status, latency, response excerpt)."""
    await caller(request, "webhooks:write")
    async with request.state.db.acquire() as conn:
        delivery = await _endpoint_delivery(conn, request)
    return answer(delivery)


async def replay_webhook_delivery(request: Request) -> Response:
    """Send a delivery again (the same webhook-id and payload, signed anew)."""
    who = await caller(request, "webhooks:write")
    async with request.state.db.acquire() as conn, conn.transaction():
        delivery = await _endpoint_delivery(conn, request)
        await webhooks_store.replay(conn, _pool(request).id, delivery["id"])
        await _webhook_audit(
            conn,
            request,
            who,
            "webhook.replay",
            delivery["endpoint_id"],
            after={"delivery_id": delivery["id"]},
        )
    return answer({"delivery_id": delivery["id"], "status": "pending"}, 202)


# --- the audit trail (portal.audit, as the console's page) --------------------------------


async def list_audit(request: Request) -> Response:
    """The pool's audit trail, newest first: who changed what, when, from where."""
    await caller(request, "settings:write")
    _single(request)
    params = request.query_params
    days = _days(params)
    flt = audit.AuditFilter(
        actor=_query(request, "actor", 200),
        action=_query(request, "action", 100),
        since=days.get("since"),
        until=days.get("until"),
    )
    before = None
    if "cursor" in params:
        before = audit.parse_cursor(params["cursor"])
        if before is None:
            raise ValidationError("cursor is not one this API gave.", error="invalid_cursor")
    rows, more = await audit.query(
        request.state.db, pool_id=_pool(request).id, flt=flt, before=before, limit=_limit(request)
    )
    return answer({"entries": [audit.entry_json(r) for r in rows], "next_cursor": more})
