"""The audit trail in the console (issue 19, part 4): a pool's trail with filters (actor, action, days) and its
CSV export, and the platform-wide trail for superadmins."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import date
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from portal import audit
from portal.console import store
from portal.console.common import Ctx, Forbidden, page, pool_path, security_headers
from portal.console.views_users import csv_cell
from portal.web import i18n


def _param(request: Request, name: str, max_len: int = 100) -> str:
    return request.query_params.get(name, "").replace("\x00", "")[:max_len]


_FILTERS = ("actor", "action", "since", "until")


def _filter(request: Request) -> tuple[audit.AuditFilter, dict[str, str], list[str]]:
    """(filter, entered values, names of the values that are not valid)."""
    entered = {k: _param(request, k).strip() for k in _FILTERS}
    bad: list[str] = []
    days: dict[str, date | None] = {}
    for k in ("since", "until"):
        days[k] = store.parse_day(entered[k]) if entered[k] else None
        if entered[k] and days[k] is None:
            bad.append(k)
    flt = audit.AuditFilter(
        actor=entered["actor"], action=entered["action"], since=days["since"], until=days["until"]
    )
    return flt, entered, bad


async def _trail_page(request: Request, ctx: Ctx, pool_id: int | None, base: str) -> Response:
    db = request.state.db
    flt, entered, bad = _filter(request)
    cursor = _param(request, "before", 20)
    before = audit.parse_cursor(cursor)
    if cursor and before is None:
        bad.append("before")
    rows, next_before = await audit.query(db, pool_id=pool_id, flt=flt, before=before)
    query = {k: v for k, v in entered.items() if v and k not in bad}
    return await page(
        ctx,
        "console/audit.html",
        {
            "section": "audit",
            "entries": rows,
            "filters": entered,
            "bad": bad,
            "platform": pool_id is None,
            "actions": await audit.actions(db, pool_id),
            "action_base": base,
            "first_day": store.FIRST_DAY.isoformat(),
            "last_day": store.LAST_DAY.isoformat(),
            "next_url": "?" + urlencode({**query, "before": next_before}) if next_before else None,
            "csv_url": base + ".csv" + ("?" + urlencode(query) if query else ""),
        },
    )


async def audit_get(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    return await _trail_page(request, ctx, ctx.pool.id, pool_path(ctx.pool, "/audit"))


async def platform_audit_get(request: Request, ctx: Ctx) -> Response:
    if not ctx.admin.is_superadmin:
        raise Forbidden()
    return await _trail_page(request, ctx, None, "/console/audit")


_CSV_COLUMNS = (
    "time",
    "pool",
    "actor_type",
    "actor_id",
    "actor",
    "action",
    "target",
    "before",
    "after",
    "ip",
    "user_agent",
)


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


async def _csv(request: Request, pool_id: int | None, name: str) -> Response:
    flt, _entered, bad = _filter(request)
    if bad:  # before the first byte (views_users.logins_csv says why)
        _ = i18n.translator(i18n.pick(request)[0])
        return security_headers(
            PlainTextResponse(_("console.logins.csv_bad") + "\n", status_code=400)
        )
    db = request.state.db

    async def rows() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)
        buffer.write("\ufeff")
        writer.writerow(_CSV_COLUMNS)
        async with db.acquire() as conn, conn.transaction(readonly=True):
            async for row in audit.iter_entries(conn, pool_id=pool_id, flt=flt):
                writer.writerow(
                    [
                        csv_cell(row["created_at"].isoformat()),
                        csv_cell(row["pool_slug"]),
                        csv_cell(row["actor_type"]),
                        csv_cell(row["actor_id"]),
                        csv_cell(row["actor_label"]),
                        csv_cell(row["action"]),
                        csv_cell(row["target"]),
                        csv_cell(_json(row["before"])),
                        csv_cell(_json(row["after"])),
                        csv_cell(row["ip"]),
                        csv_cell(row["user_agent"]),
                    ]
                )
                if buffer.tell() > 32_000:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    filename = f"audit-{name}-{date.today().isoformat()}.csv"
    response = StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
    return security_headers(response)


async def audit_csv(request: Request, ctx: Ctx) -> Response:
    assert ctx.pool is not None
    return await _csv(request, ctx.pool.id, ctx.pool.slug)


async def platform_audit_csv(request: Request, ctx: Ctx) -> Response:
    if not ctx.admin.is_superadmin:
        raise Forbidden()
    return await _csv(request, None, "platform")
