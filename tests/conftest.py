"""Fixtures: real PostgreSQL, Redis and fake WeChat for every test.

With DATABASE_URL / REDIS_URL set, the suite uses those servers: it creates
(and drops) its own database on the PostgreSQL server, and FLUSHES the Redis
database given in REDIS_URL, so point that at a spare database number
(e.g. redis://localhost:6379/15). Unset, it starts embedded servers in a
temporary directory and stops them at the end.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from portal.settings import Settings
from portal.stores import migrations
from portal.stores import postgres as dbmod
from portal.stores.crypto import SecretBox
from portal.stores.embedded import EmbeddedStores, remove_data_dir
from portal.wechat import fake
from tests import leakcheck, rediscluster
from tests.support import free_socket, run_portal

# Every log line of the run is scanned for secrets (tests/leakcheck.py).
pytest_configure = leakcheck.pytest_configure
pytest_collection_modifyitems = leakcheck.pytest_collection_modifyitems
pytest_unconfigure = leakcheck.pytest_unconfigure

TABLES = (
    "avatars, login_events, pool_admins, admins, refresh_tokens, wechat_identities, users, "
    "signing_keys, clients, pools, mp_verify_files"
)

# The audit trail refuses TRUNCATE (append-only, sql/0010_audit_privacy.sql): only
# the suite lifts that, for a moment, in one transaction.
AUDIT_RESET = """BEGIN;
ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_truncate;
TRUNCATE audit_log RESTART IDENTITY;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_truncate;
COMMIT;"""


def database_url_with_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@dataclass(frozen=True)
class Stores:
    admin_database_url: str  # a database to run CREATE/DROP DATABASE from
    database_url: str  # the suite's own, migrated database
    redis_url: str

    def scratch_database_url(self, name: str) -> str:
        return database_url_with_name(self.admin_database_url, name)


@pytest.fixture(scope="session")
def _store_urls() -> Iterator[tuple[str, str]]:
    db_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if os.environ.get("PORTAL_TEST_REDIS") == "cluster":  # on a Redis Cluster: make test-cluster
        yield from rediscluster.store_urls(db_url)
        return
    data_dir = None
    if db_url and redis_url:
        yield db_url, redis_url
        return
    data_dir = Path(tempfile.mkdtemp(prefix="portal-test-"))
    try:
        with EmbeddedStores(data_dir, postgres=not db_url, redis=not redis_url) as embedded:
            yield db_url or embedded.database_url, redis_url or embedded.redis_url
    finally:
        remove_data_dir(data_dir)


@pytest.fixture(scope="session")
async def stores(_store_urls: tuple[str, str]) -> AsyncIterator[Stores]:
    admin_url, redis_url = _store_urls
    name = f"portal_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    test_url = database_url_with_name(admin_url, name)
    conn = await asyncpg.connect(test_url)
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()
    try:
        yield Stores(admin_url, test_url, redis_url)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
def fake_wechat() -> Iterator[fake.RunningFake]:
    apps = {
        fake.DEMO_APPID: fake.DEMO_SECRET,
        "wx00000000000000b2": "secretofthesecondapp000000000000",
    }
    leakcheck.register(*apps.values())
    with fake.run_in_thread(apps) as running:
        yield running


@pytest.fixture
async def fresh_fake(fake_wechat: fake.RunningFake) -> fake.RunningFake:
    """The fake WeChat with its codes, tokens, faults and counters reset."""
    async with httpx.AsyncClient() as client:
        (await client.post(f"{fake_wechat.url}/_fake/reset")).raise_for_status()
    return fake_wechat


@pytest.fixture(scope="session")
def secret_key() -> str:
    return secrets.token_urlsafe(48)  # token_urlsafe values are registered as secrets


@pytest.fixture(scope="session")
def box(secret_key: str) -> SecretBox:
    return SecretBox(secret_key)


def make_settings(
    stores: Stores, fake_wechat: fake.RunningFake, secret_key: str, **overrides
) -> Settings:
    values = {
        "base_url": "http://localhost:8000",
        "database_url": stores.database_url,
        "redis_url": stores.redis_url,
        "secret_key": secret_key,
        "env": "prod",
        "wechat_api_base": fake_wechat.url,
        "default_mp_appid": fake.DEMO_APPID,
        "default_mp_secret": fake.DEMO_SECRET,
        "db_pool_min": 1,
        "db_pool_max": 5,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_factory(stores: Stores, fake_wechat: fake.RunningFake, secret_key: str):
    def factory(**overrides) -> Settings:
        return make_settings(stores, fake_wechat, secret_key, **overrides)

    return factory


@pytest.fixture
async def db(stores: Stores) -> AsyncIterator[asyncpg.Pool]:
    """The suite's database, emptied before the test."""
    pool = await asyncpg.create_pool(
        stores.database_url, min_size=1, max_size=5, init=dbmod._init_connection
    )
    await pool.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    # Background jobs (procrastinate, sql/0007): none left over from another test
    # (a job names rows by ids that RESTART IDENTITY hands out again).
    await pool.execute(
        "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_periodic_defers "
        "RESTART IDENTITY CASCADE"
    )
    await pool.execute(AUDIT_RESET)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def redis_client(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    """The suite's Redis, flushed before the test."""
    client = await rediscluster.flushed_client(stores.redis_url)  # one server or a cluster
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def portal(db, redis_client, settings_factory):
    """A running portal over real HTTP on clean stores; its base URL has the real port."""
    sock = free_socket()
    settings = settings_factory(base_url=f"http://localhost:{sock.getsockname()[1]}")
    async with run_portal(settings, sock=sock) as running:
        yield running


@pytest.fixture
async def pc(portal, acme):
    """The PC browser's client for the pool ``acme`` (each test module defines ``acme``)."""
    async with portal.client("acme") as client:
        yield client


@pytest.fixture
async def apex(portal):
    """A client for the portal's apex host (where the phone's mini-program API is too)."""
    async with portal.client() as client:
        yield client


@pytest.fixture
def portal_cli(db, stores, secret_key, fake_wechat):
    """Runs ``portal ARGS...`` as a real subprocess against the test stores (production
    mode); ``.env`` is its environment. A private mini program's secret is checked
    with the fake WeChat."""
    env = {
        **os.environ,
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "PORTAL_SECRET_KEY": secret_key,
        "PORTAL_ENV": "prod",
        "PORTAL_BASE_URL": "https://login.example.com",
        "PORTAL_DEFAULT_MP_APPID": fake.DEMO_APPID,
        "WECHAT_API_BASE": fake_wechat.url,
    }

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "portal", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    run.env = env
    return run
