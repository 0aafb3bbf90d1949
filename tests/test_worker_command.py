"""``portal dev`` runs the background work itself (issue 19, part 1): an event
committed while it runs reaches a webhook receiver on localhost, and Ctrl-C still
stops everything quietly, the worker included."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest
from standardwebhooks import Webhook

from portal import jobs
from portal.settings import Settings
from portal.stores.crypto import SecretBox
from portal.webhooks import store
from tests.devcommand import DevCommand, dev_env, scratch_database
from tests.test_webhooks import running_receiver


@pytest.fixture
async def dev_db(stores):
    async with scratch_database(stores) as url:
        yield url


async def test_portal_dev_delivers_webhooks_and_stops(tmp_path, stores, dev_db):
    data_dir = tmp_path / ".portal"
    dev = DevCommand(
        dev_env(data_dir, DATABASE_URL=dev_db, REDIS_URL=stores.redis_url), tmp_path / "dev.log"
    )
    try:
        await dev.ready()
        secret_key = (data_dir / "secret_key").read_text().strip()
        settings = Settings(env="dev", secret_key=secret_key, database_url=dev_db)
        conn = await asyncpg.connect(dev_db)
        try:
            pool_id = await conn.fetchval("SELECT id FROM pools WHERE slug = 'demo'")
            async with running_receiver() as receiver:
                _, secret = await store.create_endpoint(
                    conn,
                    settings,
                    SecretBox(secret_key),
                    pool_id,
                    url=receiver.url,
                    events=["user.created"],
                )
                async with conn.transaction():
                    await jobs.emit(conn, pool_id, "user.created", {"user_id": "u-9"})
                await asyncio.wait_for(receiver.got_one.wait(), timeout=30)
                headers, body = receiver.received[0]
                assert Webhook(secret).verify(body, headers)["data"] == {"user_id": "u-9"}
        finally:
            await conn.close()
        status = await asyncio.to_thread(dev.interrupt, 40)
    finally:
        with contextlib.suppress(Exception):
            dev.kill()
    out = dev.output
    assert status == 0, out
    assert "Traceback" not in out, out
