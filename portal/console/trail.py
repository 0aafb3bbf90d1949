"""What every console form records in the audit trail (portal/audit): the
signed-in admin, from the request's address and user agent, in the change's
transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from portal import audit
from portal.console.common import Ctx


def who(ctx: Ctx) -> audit.Actor:
    """The signed-in admin, with the request's address and user agent."""
    return audit.Actor.admin(ctx.admin, ctx.request)


async def audited(
    conn: asyncpg.Connection,
    ctx: Ctx,
    action: str,
    target: str | None = None,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    pool_id: int | None = None,
) -> None:
    """One row of the trail for a console form's change (call it in the change's
    transaction). ``pool_id``: the context's pool unless given."""
    await audit.record(
        conn,
        pool_id=pool_id if pool_id is not None else (ctx.pool.id if ctx.pool else None),
        actor=who(ctx),
        action=action,
        target=target,
        before=before,
        after=after,
    )
