"""Settings for a command run on this machine (``portal dev``, ``portal migrate``,
``portal pool ...``): embedded PostgreSQL and Redis under ``PORTAL_DATA_DIR`` for
whichever of ``DATABASE_URL`` / ``REDIS_URL`` is unset, and the dev defaults
(a master key kept in the data dir, the fake WeChat's demo mini program).

Both the CLI and the dev server use it, so it lives beside them rather than in
either (the CLI runs the dev server; the dev server must not import the CLI).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from portal.settings import Settings, dev_secret_key


@contextlib.contextmanager
def stores(environ: dict[str, str], *, dev: bool) -> Iterator[Settings]:
    """Settings for a command; embedded stores under PORTAL_DATA_DIR for
    whichever of DATABASE_URL / REDIS_URL is unset (local use only).

    Raises ``ConfigError`` when the environment does not make valid settings.
    """
    from portal.stores.embedded import EmbeddedStores

    env = dict(environ)
    embedded_pg = not env.get("DATABASE_URL")
    embedded_redis = not env.get("REDIS_URL")
    local = dev or embedded_pg
    env.setdefault("PORTAL_ENV", "dev" if local else "prod")
    data_dir = Path(env.get("PORTAL_DATA_DIR", ".portal"))
    if not env.get("PORTAL_SECRET_KEY") and env["PORTAL_ENV"] == "dev":
        env["PORTAL_SECRET_KEY"] = dev_secret_key(data_dir)
    if env["PORTAL_ENV"] == "dev" and not env.get("PORTAL_DEFAULT_MP_APPID"):
        from portal.wechat.fake import DEMO_APPID, DEMO_SECRET

        env["PORTAL_DEFAULT_MP_APPID"] = DEMO_APPID
        env["PORTAL_DEFAULT_MP_SECRET"] = DEMO_SECRET
    with EmbeddedStores(data_dir, postgres=embedded_pg, redis=embedded_redis) as embedded:
        if embedded_pg:
            env["DATABASE_URL"] = embedded.database_url
        if embedded_redis:
            env["REDIS_URL"] = embedded.redis_url
        yield Settings.from_env(env)
