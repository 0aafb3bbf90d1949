"""A pool's users (search, detail, block, unblock) and its login log (filters,
chart of logins per day, CSV export)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import date
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from portal.console import chart, store
from portal.console.common import Ctx, done, mask_phone, page, pool_path, security_headers
from portal.console.trail import audited
from portal.scan import phonecalls
from portal.web import i18n


def _param(request: Request, name: str, max_len: int = 100) -> str:
    """A query parameter as text PostgreSQL can take: NUL (which ``text`` cannot
    hold, and asyncpg would fail on) dropped, the length bounded."""
    return request.query_params.get(name, "").replace("\x00", "")[:max_len]


async def list_get(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    q = _param(request, "q")
    try:
        number = max(1, min(10_000, int(request.query_params.get("page", "1"))))
    except ValueError:
        number = 1
    rows, more = await store.search_users(request.state.db, ctx.pool.id, q, number)
    for row in rows:
        row["phone_masked"] = mask_phone(row["phone_number"])
    return await page(
        ctx,
        "console/users.html",
        {"section": "users", "users": rows, "q": q, "page": number, "more": more},
    )


async def _user_id(request: Request):
    user_id = store.parse_uuid(request.path_params["user_id"])
    if user_id is None:
        raise HTTPException(404)
    return user_id


async def detail_get(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    user = await store.user_detail(request.state.db, ctx.pool.id, await _user_id(request))
    if user is None:
        raise HTTPException(404)
    return await page(ctx, "console/user.html", {"section": "users", "user": user})


async def _set_blocked(request: Request, ctx: Ctx, blocked: bool) -> Response:
    assert ctx.pool is not None
    user_id = await _user_id(request)
    async with request.state.db.acquire() as conn, conn.transaction():
        revoked = await store.set_blocked(conn, request.state.redis, ctx.pool, user_id, blocked)
        action = "user.block" if blocked else "user.unblock"
        after = {"blocked": blocked, "logins_ended": revoked}
        await audited(conn, ctx, action, str(user_id), after=after)
    key = "console.flash.blocked" if blocked else "console.flash.unblocked"
    return await done(ctx, pool_path(ctx.pool, f"/users/{user_id}"), "ok", key, revoked=revoked)


async def block_post(request: Request, ctx: Ctx) -> Response:
    return await _set_blocked(request, ctx, True)


async def unblock_post(request: Request, ctx: Ctx) -> Response:
    return await _set_blocked(request, ctx, False)


# --- the login log ---------------------------------------------------------------


_DATE_FILTERS = ("since", "until")


def _filter(request: Request) -> tuple[store.LoginFilter, dict[str, str], list[str]]:
    """The log's filters, what was entered, and the fields that are not valid
    (a form error: they are ignored and named on the page)."""
    entered = {
        k: _param(request, k).strip()
        for k in ("result", "client_id", "user", "since", "until", "flagged")
    }
    days = {k: store.parse_day(entered[k]) if entered[k] else None for k in _DATE_FILTERS}
    flt = store.LoginFilter(
        result=entered["result"],
        client_id=entered["client_id"],
        user_id=store.parse_uuid(entered["user"]),
        since=days["since"],
        until=days["until"],
        flagged=entered["flagged"] == "1",
    )
    bad = [k for k in _DATE_FILTERS if entered[k] and days[k] is None]
    if entered["flagged"] not in ("", "1"):
        bad.append("flagged")
    if entered["user"] and flt.user_id is None:
        bad.append("user")
    return flt, entered, bad


async def logins_get(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    db = request.state.db
    flt, entered, bad = _filter(request)
    cursor = _param(request, "before", 80)
    before = store.parse_cursor(cursor)
    if cursor and before is None:
        bad.append("before")  # a hand-edited link: the first page, and say so
    rows, next_before = await store.login_events(db, ctx.pool.id, flt, before)
    query = {k: v for k, v in entered.items() if v and k not in bad}
    days = await store.logins_per_day(db, ctx.pool.id)
    phone_days = await phonecalls.per_day(db, ctx.pool.id)  # issue 17: what phone numbers cost
    return await page(
        ctx,
        "console/logins.html",
        {
            "section": "logins",
            "events": rows,
            "filters": entered,
            "bad": bad,
            "bad_date": any(k in bad for k in _DATE_FILTERS),
            "first_day": store.FIRST_DAY.isoformat(),
            "last_day": store.LAST_DAY.isoformat(),
            "results": await store.result_codes(db, ctx.pool.id),
            "clients": await store.list_clients(db, ctx.pool.id),
            "next_url": (
                "?" + urlencode({**query, "before": next_before}) if next_before else None
            ),
            "csv_url": pool_path(ctx.pool, "/logins.csv")
            + ("?" + urlencode(query) if query else ""),
            "chart": chart.build(days),
            "days": days,
            "phone_chart": chart.build(
                [(day, c["ok"], c["refused"] + c["quota"]) for day, c in phone_days]
            ),
            "phone_days": phone_days,
            "phone_quota": sum(c["quota"] for _, c in phone_days),
        },
    )


_CSV_COLUMNS = (
    "time",
    "result",
    "user_id",
    "nickname",
    "client_id",
    "appid",
    "openid",
    "ip",
    "user_agent",
    # issue 20: flagged as phishing, WeChat's launch scene, what was made of it, where from
    "flagged",
    "scene",
    "scan_source",
    "started_from",
)


_FORMULA_START = ("=", "+", "-", "@")
# What a spreadsheet may skip before it reads a formula: whitespace, and ";" (a
# cell separator in locales whose Excel splits on it).
_SKIPPED = " \t\r\n\f\v;\u00a0\u3000"


def csv_cell(value: object) -> str:
    """Text a spreadsheet shows as text (OWASP's CSV injection guidance): a cell
    starting with = + - @, a tab or a carriage return, also after leading
    whitespace or ";", would be read as a formula, so it gets a leading quote."""
    text = "" if value is None else str(value)
    if text[:1] in ("\t", "\r") or text.lstrip(_SKIPPED).startswith(_FORMULA_START):
        return "'" + text
    return text


async def logins_csv(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    flt, _, bad = _filter(request)
    if bad:
        # Checked before the first byte: a 200 already sent could only be cut off
        # later, a truncated file that may look complete.
        _ = i18n.translator(i18n.pick(request)[0])
        message = _("console.logins.csv_bad")
        if any(k in bad for k in _DATE_FILTERS):
            message += " " + _(
                "console.logins.bad_date",
                first=store.FIRST_DAY.isoformat(),
                last=store.LAST_DAY.isoformat(),
            )
        return security_headers(PlainTextResponse(message + "\n", status_code=400))
    db, pool_id = request.state.db, ctx.pool.id

    async def rows() -> AsyncIterator[str]:
        buffer = io.StringIO()
        # Every cell quoted: a ";" inside one never splits it where Excel's
        # separator is ";" (and so never starts a new cell with a formula).
        writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)
        buffer.write("\ufeff")  # Excel opens UTF-8 (Chinese nicknames) only with a BOM
        writer.writerow(_CSV_COLUMNS)
        async with db.acquire() as conn, conn.transaction(readonly=True):
            async for row in store.iter_login_events(conn, pool_id, flt):
                writer.writerow(
                    [
                        csv_cell(row["created_at"].isoformat()),
                        csv_cell(row["result"]),
                        csv_cell(row["user_id"]),
                        csv_cell(row["nickname"]),
                        csv_cell(row["client_id"]),
                        csv_cell(row["appid"]),
                        csv_cell(row["openid"]),
                        csv_cell(row["ip"]),
                        csv_cell(row["user_agent"]),
                        csv_cell("yes" if row["flagged"] else ""),
                        csv_cell(row["scene"]),
                        csv_cell(row["scan_source"]),
                        csv_cell(row["started_from"]),
                    ]
                )
                if buffer.tell() > 32_000:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    name = f"logins-{ctx.pool.slug}-{date.today().isoformat()}.csv"
    response = StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
    return security_headers(response)
