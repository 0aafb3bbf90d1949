"""The audit trail (issue 19, part 4): every change made by an admin in the
console, a management client through the API, the ``portal`` command or the
portal itself, recorded append-only in ``audit_log`` (sql/0010_audit_privacy.sql)
in the same transaction as the change, so a change that rolls back leaves no
row and a committed one always has its row.

Calling it (docs/architecture.md, "The audit trail")::

    from portal import audit

    async with conn.transaction():
        ...the change...
        await audit.record(
            conn,
            pool_id=pool.id,
            actor=audit.Actor.client(client_id, request),  # or .admin(admin, request), .cli()
            action="client.update",
            target=client_id,
            before=old_fields,
            after=new_fields,
        )

``before`` and ``after`` are dicts of fields; only the fields whose values
differ are kept. Secrets never reach the table: a field whose name says it is
one (``*secret*``, ``*password*``, ``*_hash``, ``*_enc``, ``*private*``, ``*token``,
``*key``)
is written as ``"[redacted]"``, and so is the personal data of a pool's users
(``nickname``, ``phone_number``, ``avatar_url``, ``openid``, ``unionid``...),
which would otherwise outlive the user's deletion here. A user is named by
their id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import asyncpg

__all__ = [
    "REDACTED",
    "Actor",
    "AuditFilter",
    "clean",
    "entry_json",
    "iter_entries",
    "query",
    "record",
]

REDACTED = "[redacted]"
ACTOR_TYPES = ("admin", "client", "cli", "system")
ACTION_RE = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")

# Field names that are, or hold, a secret: never written, whatever the caller passes.
_SECRET_RE = re.compile(
    r"(secret|password|passwd|credential|private|(^|_)token$|_hash$|^hash$|_enc$|(^|_)key$)",
    re.IGNORECASE,
)
# The personal data of a pool's users (PIPL): never copied into the trail, which
# outlives the user (their deletion erases it everywhere else).
PERSONAL_FIELDS = frozenset(
    {
        "nickname",
        "avatar_url",
        "avatar",
        "phone",
        "phone_number",
        "phone_country_code",
        "openid",
        "unionid",
        "ip",
        "user_agent",
    }
)
_MAX_TEXT = 1000
_MAX_UA = 500


class _HasState(Protocol):
    """A Starlette request, as far as the audit trail reads it."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def state(self) -> Any: ...


def _origin(request: _HasState | None) -> tuple[str | None, str | None]:
    if request is None:
        return None, None
    ip = getattr(request.state, "client_ip", None)
    ua = request.headers.get("user-agent") or None
    return ip, (ua[:_MAX_UA] if ua else None)


@dataclass(frozen=True)
class Actor:
    """Who made a change, and from where (the address the portal trusts as the
    client's, ``request.state.client_ip``, and the User-Agent header)."""

    type: str  # ACTOR_TYPES
    id: str  # admins.id, a management client's client_id, "cli", or the task's name
    label: str | None = None  # the admin's email at the time
    ip: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.type not in ACTOR_TYPES:
            raise ValueError(f"unknown actor type {self.type!r}")

    @classmethod
    def admin(cls, admin: Any, request: _HasState | None = None) -> Actor:
        """An admin in the console (``admin``: portal.tenants.admins.Admin)."""
        ip, ua = _origin(request)
        return cls("admin", str(admin.id), admin.email, ip, ua)

    @classmethod
    def client(cls, client_id: str, request: _HasState | None = None) -> Actor:
        """A management client calling the API with a client-credentials token."""
        ip, ua = _origin(request)
        return cls("client", client_id, None, ip, ua)

    @classmethod
    def cli(cls) -> Actor:
        """The ``portal`` command, run by whoever has the server's shell."""
        return cls("cli", "cli", None, None, None)

    @classmethod
    def system(cls, task: str) -> Actor:
        """The portal's own periodic work (``task``: e.g. "retention")."""
        return cls("system", task, None, None, None)


def _value(value: Any) -> Any:
    """A field's value as JSON."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:_MAX_TEXT]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[{len(bytes(value))} bytes]"
    if isinstance(value, Mapping):
        return {str(k): _field(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_value(v) for v in items]
    return str(value)[:_MAX_TEXT]


def _field(name: str, value: Any) -> Any:
    if value is not None and (_SECRET_RE.search(name) or name in PERSONAL_FIELDS):
        return REDACTED
    return _value(value)


def clean(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(before, after) as written: with both, only the fields that changed; secrets
    and users' personal data redacted (a changed secret shows as changed, never
    its value)."""
    if before is not None and after is not None:
        changed = [k for k in {**before, **after} if _value(before.get(k)) != _value(after.get(k))]
        before = {k: before.get(k) for k in changed}
        after = {k: after.get(k) for k in changed}
    out_before = {str(k): _field(str(k), v) for k, v in before.items()} if before else None
    out_after = {str(k): _field(str(k), v) for k, v in after.items()} if after else None
    return out_before, out_after


_INSERT = """
INSERT INTO audit_log (pool_id, pool_slug, actor_type, actor_id, actor_label, action, target,
                       before, after, ip, user_agent)
VALUES ($1, coalesce($2, (SELECT slug FROM pools WHERE id = $1)), $3, $4, $5, $6, $7, $8, $9,
        $10::inet, $11)
RETURNING id
"""


async def record(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    pool_id: int | None,
    actor: Actor,
    action: str,
    target: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    ip: str | None = None,
    ua: str | None = None,
    pool_slug: str | None = None,
) -> int:
    """Writes one row of the trail on ``conn`` (call it inside the change's
    transaction) and returns its id. ``pool_id`` None: a platform-wide change
    (an admin account, a pool's deletion after the fact). ``action``: a dotted
    name, ``noun.verb`` (``pool.update``, ``client.rotate_secret``,
    ``user.delete``...). ``ip``/``ua``: instead of the actor's."""
    if not ACTION_RE.match(action):
        raise ValueError(f"action {action!r} is not noun.verb")
    old, new = clean(before, after)
    agent = ua or actor.user_agent
    return await conn.fetchval(
        _INSERT,
        pool_id,
        pool_slug,
        actor.type,
        actor.id[:200],
        (actor.label or None) and actor.label[:200],
        action,
        target[:_MAX_TEXT] if target else None,
        old,
        new,
        ip or actor.ip,
        agent[:_MAX_UA] if agent else None,
    )


# --- reading it ------------------------------------------------------------------

PAGE = 50
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2999, 12, 31)


@dataclass(frozen=True)
class AuditFilter:
    """``actor``: ``admin``, ``client``, ``cli`` or ``system`` (every actor of that
    kind), ``TYPE:ID`` (one actor), or part of an admin's email or an actor id.
    ``action``: one action (``client.update``) or a noun (``client``: all of
    them). ``since``/``until``: days (UTC), ``until`` included."""

    actor: str = ""
    action: str = ""
    since: date | None = None
    until: date | None = None

    def where(self, pool_id: int | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if pool_id is not None:
            clauses.append(f"a.pool_id = {arg(pool_id)}")
        actor = self.actor.strip()
        if actor:
            kind, sep, ident = actor.partition(":")
            if actor in ACTOR_TYPES:
                clauses.append(f"a.actor_type = {arg(actor)}")
            elif sep and kind in ACTOR_TYPES:
                clauses.append(f"a.actor_type = {arg(kind)} AND a.actor_id = {arg(ident)}")
            else:
                like = "%" + actor.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                like += "%"
                clauses.append(f"(a.actor_id = {arg(actor)} OR a.actor_label ILIKE {arg(like)})")
        action = self.action.strip()
        if action:
            if "." in action:
                clauses.append(f"a.action = {arg(action)}")
            else:
                clauses.append(f"a.action LIKE {arg(action + '.%')}")
        if self.since is not None:
            clauses.append(f"a.created_at >= {arg(_midnight(self.since))}")
        if self.until is not None:
            clauses.append(f"a.created_at < {arg(_midnight(self.until + timedelta(days=1)))}")
        return (" AND ".join(clauses) or "true"), args


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


_COLUMNS = """a.id, a.created_at, a.pool_id, a.pool_slug, a.actor_type, a.actor_id,
    a.actor_label, a.action, a.target, a.before, a.after, host(a.ip) AS ip, a.user_agent"""


def cursor_of(row: Mapping[str, Any]) -> str:
    return str(row["id"])


def parse_cursor(value: str) -> int | None:
    """A page's cursor: the id of the last row shown (ids grow with time)."""
    return int(value) if re.fullmatch(r"[0-9]{1,18}", value or "") else None


async def query(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    pool_id: int | None,
    flt: AuditFilter = AuditFilter(),
    before: int | None = None,
    limit: int = PAGE,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the trail, newest first, and the cursor of the next page (None:
    the end). ``pool_id`` None: every pool and the platform (superadmins only;
    the caller checks). Keyset pagination on the id."""
    where, args = flt.where(pool_id)
    if before is not None:
        args.append(before)
        where += f" AND a.id < ${len(args)}"
    limit = max(1, min(limit, 500))
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM audit_log a WHERE {where} ORDER BY a.id DESC LIMIT {limit + 1}",
        *args,
    )
    page = [dict(r) for r in rows[:limit]]
    return page, (cursor_of(page[-1]) if len(rows) > limit else None)


async def iter_entries(
    conn: asyncpg.Connection, *, pool_id: int | None, flt: AuditFilter = AuditFilter()
) -> AsyncIterator[asyncpg.Record]:
    """Every matching row, newest first, through a server-side cursor (the caller
    holds a transaction): for the CSV export."""
    where, args = flt.where(pool_id)
    async for row in conn.cursor(
        f"SELECT {_COLUMNS} FROM audit_log a WHERE {where} ORDER BY a.id DESC",
        *args,
        prefetch=500,
    ):
        yield row


async def actions(conn: asyncpg.Pool | asyncpg.Connection, pool_id: int | None) -> list[str]:
    """The actions the trail holds (for a filter's choices)."""
    if pool_id is None:
        rows = await conn.fetch("SELECT DISTINCT action FROM audit_log ORDER BY action")
    else:
        rows = await conn.fetch(
            "SELECT DISTINCT action FROM audit_log WHERE pool_id = $1 ORDER BY action", pool_id
        )
    return [r["action"] for r in rows]


def entry_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row as the management API shows it."""
    return {
        "id": str(row["id"]),
        "time": row["created_at"].isoformat(),
        "pool": row["pool_slug"],
        "actor": {"type": row["actor_type"], "id": row["actor_id"], "label": row["actor_label"]},
        "action": row["action"],
        "target": row["target"],
        "before": row["before"],
        "after": row["after"],
        "ip": row["ip"],
        "user_agent": row["user_agent"],
    }
