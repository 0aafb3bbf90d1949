"""The audit trail (portal/audit, issue 19 part 4) on real PostgreSQL: written in
the change's transaction, append-only whatever the caller tries, only changed
fields kept, secrets and users' personal data never written, filters and pages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from portal import audit
from portal.tenants import pools


@pytest.fixture
async def pool_id(db, box) -> int:
    async with db.acquire() as conn:
        created = await pools.create(conn, box, slug="acme", name="Acme")
    return created.pool.id


async def test_written_with_the_change_or_not_at_all(db, pool_id):
    actor = audit.Actor.cli()
    async with db.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await conn.execute("UPDATE pools SET name = 'Gone' WHERE id = $1", pool_id)
                await audit.record(
                    conn,
                    pool_id=pool_id,
                    actor=actor,
                    action="pool.update",
                    before={"name": "Acme"},
                    after={"name": "Gone"},
                )
                raise RuntimeError("the change fails after its audit row")
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 0
        async with conn.transaction():
            await conn.execute("UPDATE pools SET name = 'Acme 2' WHERE id = $1", pool_id)
            await audit.record(
                conn,
                pool_id=pool_id,
                actor=actor,
                action="pool.update",
                target="acme",
                before={"name": "Acme", "qr_lifetime": 120},
                after={"name": "Acme 2", "qr_lifetime": 120},
            )
        row = await conn.fetchrow("SELECT * FROM audit_log")
    assert row["pool_slug"] == "acme"
    assert (row["actor_type"], row["actor_id"]) == ("cli", "cli")
    # Only what changed.
    assert row["before"] == {"name": "Acme"} and row["after"] == {"name": "Acme 2"}
    assert row["created_at"] > datetime.now(UTC) - timedelta(minutes=1)


async def test_append_only(db, pool_id):
    async with db.acquire() as conn:
        await audit.record(conn, pool_id=pool_id, actor=audit.Actor.cli(), action="pool.update")
        for statement in (
            "UPDATE audit_log SET action = 'pool.nothing'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(statement)
        # A pool's deletion leaves its trail (no foreign key to cascade through).
        await conn.execute("DELETE FROM pools WHERE id = $1", pool_id)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1


async def test_secrets_and_personal_data_never_written(db, pool_id):
    secret = "s3cr3t-" + uuid.uuid4().hex
    async with db.acquire() as conn:
        await audit.record(
            conn,
            pool_id=pool_id,
            actor=audit.Actor.cli(),
            action="client.rotate_secret",
            target="c123",
            before={"secret_hash": "old-" + secret, "name": "Web"},
            after={"secret_hash": "new-" + secret, "name": "Web"},
        )
        await audit.record(
            conn,
            pool_id=pool_id,
            actor=audit.Actor.cli(),
            action="pool.mini_program_set",
            after={
                "mp_appid": "wx00000000000000b2",
                "mp_secret": secret,
                "password": secret,
                "client_secret": secret,
                "private_jwk_enc": secret.encode(),
                "refresh_token": secret,
                "session_key": secret,
            },
        )
        await audit.record(
            conn,
            pool_id=pool_id,
            actor=audit.Actor.cli(),
            action="user.update",
            target=str(uuid.uuid4()),
            before={"nickname": "Alice Li", "phone_number": "13800138000", "blocked": False},
            after={"nickname": "Alice W", "phone_number": "13900139000", "blocked": True},
        )
        text = await conn.fetchval("SELECT string_agg(t::text, ' ') FROM audit_log t")
        rows = await conn.fetch("SELECT before, after FROM audit_log ORDER BY id")
    assert secret not in text
    for personal in ("Alice", "13800138000", "13900139000"):
        assert personal not in text
    # A changed secret shows as changed; settings whose names mention tokens are not secrets.
    assert rows[0]["after"] == {"secret_hash": audit.REDACTED}
    assert rows[1]["after"]["mp_appid"] == "wx00000000000000b2"
    assert rows[1]["after"]["mp_secret"] == audit.REDACTED
    assert rows[2]["after"] == {
        "nickname": audit.REDACTED,
        "phone_number": audit.REDACTED,
        "blocked": True,
    }
    assert audit.clean(None, {"id_token_ttl": 60, "access_token_ttl": 60})[1] == {
        "id_token_ttl": 60,
        "access_token_ttl": 60,
    }


async def test_filters_and_pages(db, pool_id, box):
    async with db.acquire() as conn:
        other = (await pools.create(conn, box, slug="other", name="Other")).pool.id

        class Admin:
            id = 7
            email = "ops@example.com"

        for i in range(7):
            await audit.record(
                conn,
                pool_id=pool_id,
                actor=audit.Actor.admin(Admin()),
                action="client.update" if i % 2 else "user.block",
                target=f"t{i}",
            )
        await audit.record(
            conn, pool_id=other, actor=audit.Actor.client("cm1"), action="user.block"
        )
        await audit.record(conn, pool_id=None, actor=audit.Actor.cli(), action="admin.create")

    rows, cursor = await audit.query(db, pool_id=pool_id, limit=3)
    assert [r["target"] for r in rows] == ["t6", "t5", "t4"]
    rows, cursor = await audit.query(
        db, pool_id=pool_id, before=audit.parse_cursor(cursor), limit=3
    )
    assert [r["target"] for r in rows] == ["t3", "t2", "t1"] and cursor is not None
    rows, cursor = await audit.query(
        db, pool_id=pool_id, before=audit.parse_cursor(cursor), limit=3
    )
    assert [r["target"] for r in rows] == ["t0"] and cursor is None

    def flt(**kw):
        return audit.AuditFilter(**kw)

    async def targets(pool, **kw):
        return [
            r["target"] or r["action"]
            for r in (await audit.query(db, pool_id=pool, flt=flt(**kw)))[0]
        ]

    assert await targets(pool_id, action="client") == ["t5", "t3", "t1"]
    assert await targets(pool_id, action="user.block") == ["t6", "t4", "t2", "t0"]
    assert await targets(pool_id, actor="ops@") == [f"t{i}" for i in range(6, -1, -1)]
    assert await targets(pool_id, actor="admin:7", action="client") == ["t5", "t3", "t1"]
    assert await targets(pool_id, actor="client") == []  # the other pool's client
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    assert await targets(pool_id, since=tomorrow) == []
    assert len(await targets(pool_id, until=tomorrow)) == 7
    # Platform-wide (superadmins): every pool and the platform's own rows.
    assert len((await audit.query(db, pool_id=None, flt=flt(actor="cli")))[0]) == 1
    assert len((await audit.query(db, pool_id=None, flt=flt(action="user")))[0]) == 5
    entry = audit.entry_json((await audit.query(db, pool_id=other))[0][0])
    assert entry["actor"] == {"type": "client", "id": "cm1", "label": None}
    assert entry["pool"] == "other" and entry["action"] == "user.block"


def test_action_names_checked():
    with pytest.raises(ValueError):
        audit.Actor("root", "x")
