import asyncio
import os
import secrets
import shutil
import subprocess
import sys

import asyncpg
import pytest

from portal.app import create_app
from portal.stores import migrations
from portal.stores.postgres import SchemaNotCurrent


@pytest.fixture
async def scratch_db(stores):
    """An empty database of its own, dropped afterwards."""
    name = f"scratch_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(stores.admin_database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield stores.scratch_database_url(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def tables(conn) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def test_applies_once_and_reapplying_is_a_no_op(scratch_db):
    conn = await asyncpg.connect(scratch_db)
    try:
        first = await migrations.migrate(conn)
        assert first == [m.name for m in migrations.load()]
        assert {"pools", "clients", "signing_keys", "users", "wechat_identities", "refresh_tokens",
                "admins", "pool_admins", "login_events", "schema_migrations"} <= await tables(conn)  # fmt: skip
        await conn.execute("INSERT INTO pools (slug, name) VALUES ('keep', 'Keep me')")
        assert await migrations.migrate(conn) == []
        assert await migrations.pending(conn) == []
        assert await conn.fetchval("SELECT name FROM pools WHERE slug = 'keep'") == "Keep me"
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(first)
    finally:
        await conn.close()


async def test_an_edited_landed_migration_is_refused(scratch_db, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(migrations.SQL_DIR, sql_dir)
    conn = await asyncpg.connect(scratch_db)
    try:
        await migrations.migrate(conn, sql_dir)
        first = sorted(sql_dir.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
        with pytest.raises(migrations.MigrationError, match="edited after it was applied"):
            await migrations.migrate(conn, sql_dir)
        with pytest.raises(migrations.MigrationError, match="edited"):
            await migrations.pending(conn, sql_dir)
    finally:
        await conn.close()


async def test_a_new_file_is_applied_after_the_landed_ones(scratch_db, tmp_path):
    sql_dir = tmp_path / "sql"
    shutil.copytree(migrations.SQL_DIR, sql_dir)
    conn = await asyncpg.connect(scratch_db)
    try:
        await migrations.migrate(conn, sql_dir)
        (sql_dir / "9999_extra.sql").write_text("CREATE TABLE extra (id int);")
        assert await migrations.migrate(conn, sql_dir) == ["9999_extra.sql"]
        # A failing migration leaves nothing behind: it runs in its own transaction.
        (sql_dir / "9998_broken.sql").write_text("CREATE TABLE half (id int); SELECT 1/0;")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrations.migrate(conn, sql_dir)
        assert "half" not in await tables(conn)
        assert not await conn.fetchval(
            "SELECT count(*) FROM schema_migrations WHERE version = 9998"
        )
    finally:
        await conn.close()


async def test_concurrent_migrators_take_turns(scratch_db):
    conns = [await asyncpg.connect(scratch_db) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrations.migrate(c) for c in conns))
        applied = [name for result in results for name in result]
        assert sorted(applied) == sorted(m.name for m in migrations.load())
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(applied)
    finally:
        for c in conns:
            await c.close()


def test_two_processes_migrating_at_once(scratch_db, secret_key, stores):
    env = {**os.environ, "DATABASE_URL": scratch_db, "REDIS_URL": stores.redis_url,
           "PORTAL_SECRET_KEY": secret_key, "PORTAL_ENV": "prod"}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "portal", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    import json

    applied = [json.loads(out)["applied"] for out, _ in outputs]
    # Exactly one of them applied everything; the other found nothing to do.
    assert sorted(map(len, applied)) == [0, len(migrations.load())]


async def test_the_app_refuses_to_start_on_an_unmigrated_database(scratch_db, settings_factory):
    app = create_app(settings_factory(database_url=scratch_db))
    with pytest.raises(SchemaNotCurrent, match="portal migrate"):
        async with app.router.lifespan_context(app):
            pass
