"""Phone-number calls per pool and day (issue 17, item 4).

WeChat's ``getPhoneNumber`` is paid (a success costs about ¥0.03 after a free
trial) and quota-limited: when the mini program's quota is spent, the button's
event carries ``errno 1400001`` instead of a code. Each pool sees what it costs
and when the quota ran out: ``ok`` (a number WeChat gave, a paid call),
``refused`` (a code WeChat refused) and ``quota`` (the button's 1400001, which the
mini program reports with the confirmation), counted per Beijing day (WeChat's
billing day) in ``phone_calls`` (sql/0012).
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg

from portal.errors import PortalError

log = logging.getLogger(__name__)

OUTCOMES = ("ok", "refused", "quota")
_DAY = "(now() AT TIME ZONE 'Asia/Shanghai')::date"


class PhoneQuotaExhausted(PortalError):
    status_code = 503
    error = "phone_quota_exhausted"
    description = (
        "This site cannot get phone numbers from WeChat right now (the mini program's "
        "phone-number quota is spent); try again later."
    )


async def record(db: asyncpg.Pool | asyncpg.Connection, pool_id: int, outcome: str) -> None:
    """Counts one call; a failure to count never fails the login."""
    assert outcome in OUTCOMES
    try:
        await db.execute(
            f"""INSERT INTO phone_calls (pool_id, day, outcome, calls) VALUES ($1, {_DAY}, $2, 1)
                ON CONFLICT (pool_id, day, outcome) DO UPDATE SET calls = phone_calls.calls + 1""",
            pool_id,
            outcome,
        )
    except (asyncpg.PostgresError, OSError):
        log.warning("could not count a phone-number call (%s) of pool %s", outcome, pool_id)


async def per_day(
    db: asyncpg.Pool | asyncpg.Connection, pool_id: int, days: int = 30
) -> list[tuple[dt.date, dict[str, int]]]:
    """The last ``days`` Beijing days, oldest first: each day's calls by outcome."""
    rows = await db.fetch(
        f"""SELECT day, outcome, calls FROM phone_calls
            WHERE pool_id = $1 AND day > {_DAY} - $2::int ORDER BY day""",
        pool_id,
        days,
    )
    today = await db.fetchval(f"SELECT {_DAY}")
    out = {today - dt.timedelta(days=i): dict.fromkeys(OUTCOMES, 0) for i in range(days)}
    for row in rows:
        if row["day"] in out:
            out[row["day"]][row["outcome"]] = row["calls"]
    return sorted(out.items())
