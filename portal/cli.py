"""The ``portal`` command (docs/design.md §4). Commands that create something print one
JSON object on stdout; errors go to stderr as ``portal: error: CODE: message``
with exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from portal.errors import PortalError
from portal.local import stores
from portal.settings import ConfigError, Settings
from portal.stores import migrations
from portal.stores import postgres as dbmod
from portal.stores.crypto import SecretBox
from portal.stores.embedded import EmbeddedError

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"


class CommandError(Exception):
    """Ends the command with ``CODE: message`` and exit status 2."""

    def __init__(self, message: str, *, error: str = "invalid_command") -> None:
        super().__init__(message)
        self.error = error


def error_line(exc: Exception) -> str:
    """One form for every error: ``code: message``, as the JSON APIs' error and
    error_description."""
    if isinstance(exc, PortalError):
        return f"{exc.error}: {exc.description}"
    if isinstance(exc, CommandError):
        return f"{exc.error}: {exc}"
    codes = (
        (ConfigError, "invalid_config"),
        (migrations.MigrationError, "migration_failed"),
        (EmbeddedError, "embedded_store_unavailable"),
    )
    code = next((code for kind, code in codes if isinstance(exc, kind)), "command_failed")
    return f"{code}: {exc}"


def read_password(stdin=None) -> str:
    """The password for ``--password-stdin``: one line of stdin, or, when stdin
    is a terminal, typed twice at a prompt that does not echo it."""
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        return stdin.readline().rstrip("\n")
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Password (again): ")
    except EOFError:
        raise CommandError("no password was typed", error="invalid_arguments") from None
    if again != first:
        raise CommandError(
            "the two passwords differ; nothing was created", error="password_mismatch"
        )
    return first


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False))


async def _with_conn(settings: Settings, fn, *, check_schema: bool = True):
    conn = await dbmod.connect(settings)
    try:
        if not check_schema:
            pass
        elif settings.is_dev:
            await migrations.migrate(conn)  # local use: keep the schema current
        elif todo := await migrations.pending(conn):
            names = ", ".join(m.name for m in todo)
            raise CommandError(
                f"the database schema is not current (pending: {names}); run `portal migrate`",
                error="migrations_pending",
            )
        return await fn(conn)
    finally:
        await conn.close()


async def _announce(settings: Settings, slug: str) -> None:
    """Tell running portal processes to forget what they cached about ``slug``."""
    from portal.stores import redis as redisconn
    from portal.stores.events import POOLS_CHANNEL, publish

    client = redisconn.connect(settings.redis_url, max_connections=2, socket_connect_timeout=3)
    try:
        await publish(client, POOLS_CHANNEL, json.dumps({"slug": slug}))
    except Exception as exc:
        print(
            f"warning: could not notify running processes ({type(exc).__name__})", file=sys.stderr
        )
    finally:
        await client.aclose()


async def _prove_mini_program(settings: Settings, appid: str, secret: str) -> None:
    """WeChat accepts this AppID and AppSecret (a stable-token call), or the
    command fails: only who has a mini program's AppSecret can claim it."""
    from portal.stores import redis as redisconn
    from portal.tenants import pools
    from portal.wechat.client import WeChatClient

    redis = redisconn.connect(settings.redis_url, max_connections=2, socket_connect_timeout=3)
    wechat = WeChatClient(settings.wechat_api_base, redis)
    try:
        await pools.prove_mini_program(wechat, appid, secret)
    finally:
        await wechat.aclose()
        await redis.aclose()


async def _audit(conn, pool_id: int | None, action: str, target: str, **changes) -> None:
    """The audit trail's row for a command's change (in its transaction): the
    actor is "cli", whoever has the server's shell (docs/architecture.md)."""
    from portal import audit

    await audit.record(
        conn, pool_id=pool_id, actor=audit.Actor.cli(), action=action, target=target, **changes
    )


async def _pool_or_fail(conn, slug: str):
    from portal.tenants import pools

    pool = await pools.get_by_slug(conn, slug)
    if pool is None:
        raise CommandError(f"no pool with slug {slug!r}", error="pool_not_found")
    return pool


# --- commands ----------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    with stores(dict(os.environ), dev=False) as settings:

        async def run(conn):
            return await migrations.migrate(conn)

        applied = asyncio.run(_with_conn(settings, run, check_schema=False))
    _print_json({"applied": applied})
    return 0


def pool_json(settings: Settings, created) -> dict[str, Any]:
    pool = created.pool
    url = settings.pool_url(pool.slug)
    out = {
        "slug": pool.slug,
        "name": pool.name,
        "url": url,
        "issuer": url,
        "default_client_id": created.default_client.client_id,
        "mp_appid": pool.mp_appid or settings.default_mp_appid or None,
        "callback_url": pool.callback_url,
        "qr_type": pool.qr_type,
    }
    if created.default_client_secret:
        out["default_client_secret"] = created.default_client_secret
    return out


def cmd_pool_create(args: argparse.Namespace) -> int:
    from portal.tenants import pools

    mp_secret = None
    if args.mp_secret_stdin:
        if not args.mp_appid:
            raise CommandError("--mp-secret-stdin needs --mp-appid", error="invalid_arguments")
        mp_secret = sys.stdin.readline().strip()
    elif args.mp_appid:
        raise CommandError(
            "--mp-appid needs --mp-secret-stdin (the secret is read from stdin)",
            error="invalid_arguments",
        )
    pools.validate_slug(args.slug)  # fail before starting anything
    with stores(dict(os.environ), dev=False) as settings:
        box = SecretBox(settings.secret_key)
        if args.mp_appid and mp_secret is not None:
            # As in the console: not the platform's AppID, then WeChat accepts the
            # secret, then (UNIQUE in the database) no other pool has the AppID.
            pools.validate_mini_program(
                args.mp_appid, mp_secret, default_appid=settings.default_mp_appid
            )
            asyncio.run(_prove_mini_program(settings, args.mp_appid, mp_secret))

        async def run(conn):
            async with conn.transaction():
                created = await pools.create(
                    conn,
                    box,
                    slug=args.slug,
                    name=args.name,
                    callback_url=args.callback_url,
                    mp_appid=args.mp_appid,
                    mp_secret=mp_secret,
                    allow_http=settings.is_dev,
                    qr_type=args.qr_type,
                    default_mp_appid=settings.default_mp_appid,
                )
                after = {"slug": args.slug, "name": created.pool.name, "mp_appid": args.mp_appid}
                await _audit(conn, created.pool.id, "pool.create", args.slug, after=after)
            return created

        created = asyncio.run(_with_conn(settings, run))
        asyncio.run(_announce(settings, created.pool.slug))
        _print_json(pool_json(settings, created))
    return 0


def cmd_pool_set(args: argparse.Namespace) -> int:
    from portal.tenants import pools

    with stores(dict(os.environ), dev=False) as settings:

        async def run(conn):
            old = await _pool_or_fail(conn, args.slug)
            async with conn.transaction():
                new = await pools.set_qr_type(conn, args.slug, args.qr_type, args.qr_fallback)
                await _audit(
                    conn,
                    old.id,
                    "pool.update",
                    args.slug,
                    before={"qr_type": old.qr_type, "qr_fallback": old.qr_fallback},
                    after={"qr_type": new.qr_type, "qr_fallback": new.qr_fallback},
                )
            return new

        pool = asyncio.run(_with_conn(settings, run))
        asyncio.run(_announce(settings, args.slug))
    _print_json({"slug": pool.slug, "qr_type": pool.qr_type, "qr_fallback": pool.qr_fallback})
    return 0


def cmd_pool_retention(args: argparse.Namespace) -> int:
    """A pool's retention periods (docs/privacy.md); what is not given stays."""
    from portal import audit, privacy

    with stores(dict(os.environ), dev=False) as settings:

        async def run(conn):
            pool = await _pool_or_fail(conn, args.slug)
            login_days = args.login_days or pool.login_retention_days
            ip_days = args.ip_days or pool.ip_retention_days
            await privacy.set_retention(conn, pool, login_days, ip_days, audit.Actor.cli())
            return login_days, ip_days

        login_days, ip_days = asyncio.run(_with_conn(settings, run))
        asyncio.run(_announce(settings, args.slug))
    _print_json(
        {"slug": args.slug, "login_retention_days": login_days, "ip_retention_days": ip_days}
    )
    return 0


def cmd_retention_run(args: argparse.Namespace) -> int:
    """Applies the retention periods now (the worker does it daily)."""
    from portal import privacy

    with stores(dict(os.environ), dev=False) as settings:

        async def run(conn):
            pool_id = (await _pool_or_fail(conn, args.pool)).id if args.pool else None
            return await privacy.apply_retention(conn, pool_id=pool_id)

        results = asyncio.run(_with_conn(settings, run))
    _print_json(
        {
            "pools": [
                {
                    "slug": r.slug,
                    "events_deleted": r.events_deleted,
                    "events_blanked": r.events_blanked,
                }
                for r in results
            ]
        }
    )
    return 0


def cmd_client_create(args: argparse.Namespace) -> int:
    from portal.tenants import clients

    if args.management:
        return _create_management_client(args)
    if not args.redirect_uri or args.scope:
        raise CommandError(
            "an application client needs --redirect-uri (--scope is for --management)",
            error="invalid_arguments",
        )
    with stores(dict(os.environ), dev=False) as settings:
        box = SecretBox(settings.secret_key)

        async def run(conn):
            pool = await _pool_or_fail(conn, args.slug)
            async with conn.transaction():
                made = await clients.create(
                    conn,
                    box,
                    pool_id=pool.id,
                    name=args.name,
                    redirect_uris=args.redirect_uri,
                    web_origins=args.origin,
                    post_logout_redirect_uris=args.post_logout_redirect_uri,
                    public=args.public,
                    allow_http=settings.is_dev,
                    registration=_registration(args),
                )
                client, secret = made
                after = {
                    "name": client.name,
                    "public": client.is_public,
                    "redirect_uris": client.redirect_uris,
                    "post_logout_redirect_uris": client.post_logout_redirect_uris,
                    "web_origins": client.web_origins,
                    "scopes": client.scopes,
                    "secret": secret,
                }
                await _audit(conn, pool.id, "client.create", client.client_id, after=after)
                return made

        client, secret = asyncio.run(_with_conn(settings, run))
    out: dict[str, Any] = {
        "client_id": client.client_id,
        "pool": args.slug,
        "name": client.name,
        "public": client.is_public,
        "redirect_uris": list(client.redirect_uris),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "web_origins": list(client.web_origins),
        **_registration_out(client),
    }
    if secret is not None:
        out["client_secret"] = secret
    _print_json(out)
    return 0


def _registration(args: argparse.Namespace) -> dict[str, Any]:
    """What ``clients.register`` takes, from the flags given (issue 18)."""
    out: dict[str, Any] = {}
    if args.response_type:
        out["response_types"] = args.response_type
    if args.require_par is not None:
        out["require_par"] = args.require_par
    if args.jwks is not None:
        text = args.jwks
        if text.startswith("@"):
            text = Path(text[1:]).read_text()
        out["jwks"] = text
    for name in ("jwks_uri", "backchannel_logout_uri", "frontchannel_logout_uri"):
        if getattr(args, name) is not None:
            out[name] = getattr(args, name)
    return out


def _registration_out(client) -> dict[str, Any]:
    return {
        "response_types": list(client.response_types),
        "require_pushed_authorization_requests": client.require_par,
        "jwks": client.jwks,
        "jwks_uri": client.jwks_uri,
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "frontchannel_logout_uri": client.frontchannel_logout_uri,
    }


def cmd_client_set(args: argparse.Namespace) -> int:
    """``portal client set SLUG CLIENT_ID [flags]``: change what a relying party
    registered beyond its URIs (response types, PAR, keys, logout URIs)."""
    from portal.tenants import clients

    registration = _registration(args)
    if not registration:
        raise CommandError("nothing to set", error="invalid_arguments")
    with stores(dict(os.environ), dev=False) as settings:

        async def run(conn):
            pool = await _pool_or_fail(conn, args.slug)
            client = await clients.get(conn, pool.id, args.client_id)
            if client is None or client.is_management:
                raise CommandError(f"no application client {args.client_id!r} in {args.slug}",
                                   error="not_found")  # fmt: skip
            async with conn.transaction():
                changed = await clients.register(
                    conn, client, allow_http=settings.is_dev, **registration
                )
                await _audit(conn, pool.id, "client.update", client.client_id,
                             before=_registration_out(client), after=_registration_out(changed))  # fmt: skip
            return changed

        client = asyncio.run(_with_conn(settings, run))
        asyncio.run(_announce(settings, args.slug))
    _print_json({"client_id": client.client_id, "pool": args.slug, **_registration_out(client)})
    return 0


def _registration_flags(p: argparse.ArgumentParser) -> None:
    """The flags of what a relying party registers (issue 18; docs/api.md)."""
    p.add_argument("--response-type", nargs="+", default=[], action="extend",
                   help='"code" (default), "id_token", "code id_token"')  # fmt: skip
    p.add_argument("--require-par", action=argparse.BooleanOptionalAction, default=None,
                   help="its authorization requests must be pushed first (RFC 9126)")  # fmt: skip
    p.add_argument("--jwks", help="its public JWK Set: JSON, or @FILE")
    p.add_argument("--jwks-uri", help="where its public JWK Set is served (https)")
    p.add_argument("--backchannel-logout-uri", help="Back-Channel Logout 1.0 endpoint")
    p.add_argument("--frontchannel-logout-uri", help="Front-Channel Logout 1.0 page")


def _create_management_client(args: argparse.Namespace) -> int:
    """``portal client create SLUG --management --name N --scope S...``: a client of
    the pool's management API (docs/api.md, "Management API"); no redirect URIs."""
    from portal.tenants import clients

    if args.redirect_uri or args.origin or args.post_logout_redirect_uri or args.public:
        raise CommandError(
            "a management client has no redirect URIs, origins or --public",
            error="invalid_arguments",
        )
    if not args.scope:
        raise CommandError(
            f"--management needs --scope (of: {' '.join(clients.MANAGEMENT_SCOPES)})",
            error="invalid_arguments",
        )
    with stores(dict(os.environ), dev=False) as settings:
        box = SecretBox(settings.secret_key)

        async def run(conn):
            pool = await _pool_or_fail(conn, args.slug)
            async with conn.transaction():
                client, secret = await clients.create_management(
                    conn, box, pool_id=pool.id, name=args.name, scopes=args.scope
                )
                after = {
                    "name": client.name,
                    "type": "management",
                    "scopes": client.management_scopes,
                    "secret": secret,
                }
                await _audit(conn, pool.id, "client.create", client.client_id, after=after)
                return client, secret

        client, secret = asyncio.run(_with_conn(settings, run))
    _print_json(
        {
            "client_id": client.client_id,
            "pool": args.slug,
            "name": client.name,
            "management": True,
            "scopes": list(client.management_scopes),
            "client_secret": secret,
        }
    )
    return 0


def cmd_admin_create(args: argparse.Namespace) -> int:
    from portal.tenants import admins

    if not args.password_stdin:
        raise CommandError(
            "the password is read from stdin: pass --password-stdin (in a terminal it asks)",
            error="invalid_arguments",
        )
    if not args.superadmin and not args.pool:
        raise CommandError(
            "an admin needs --pool SLUG (repeatable) or --superadmin; "
            "without either they could reach nothing",
            error="invalid_arguments",
        )
    password = read_password()
    with stores(dict(os.environ), dev=False) as settings:

        async def run(conn):
            async with conn.transaction():
                admin, slugs = await admins.create(
                    conn,
                    email=args.email,
                    password=password,
                    superadmin=args.superadmin,
                    pool_slugs=args.pool,
                )
                after = {"superadmin": admin.is_superadmin, "pools": slugs, "password": password}
                await _audit(conn, None, "admin.create", admin.email, after=after)
            return admin, slugs

        admin, slugs = asyncio.run(_with_conn(settings, run))
    _print_json(
        {"id": admin.id, "email": admin.email, "superadmin": admin.is_superadmin, "pools": slugs}
    )
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from portal.tenants import keys

    with stores(dict(os.environ), dev=False) as settings:
        box = SecretBox(settings.secret_key)

        async def run(conn):
            pool = await _pool_or_fail(conn, args.slug)
            async with conn.transaction():
                key = await keys.rotate(conn, box, pool.id)
                await _audit(conn, pool.id, "pool.key_rotate", args.slug, after={"kid": key.kid})
            return key

        key = asyncio.run(_with_conn(settings, run))
        asyncio.run(_announce(settings, args.slug))
    _print_json({"pool": args.slug, "kid": key.kid, "alg": key.alg})
    return 0


async def _with_wechat(settings: Settings, fn):
    """``fn(conn, box, wechat)`` with a database connection and a WeChat client."""
    from portal.stores import redis as redisconn
    from portal.wechat.client import WeChatClient

    box = SecretBox(settings.secret_key)
    redis = redisconn.connect(settings.redis_url, max_connections=2, socket_connect_timeout=3)
    wechat = WeChatClient(settings.wechat_api_base, redis)
    try:
        return await _with_conn(settings, lambda conn: fn(conn, box, wechat))
    finally:
        await wechat.aclose()
        await redis.aclose()


def cmd_mp_verify_file(args: argparse.Namespace) -> int:
    """The link rule's verification file WeChat handed out, served by every process."""
    from portal.tenants import linkrules, mpsetup

    with stores(dict(os.environ), dev=False) as settings:

        async def run(conn, box, wechat):
            mp = await mpsetup.resolve(conn, settings, box, args.pool)
            file = await linkrules.set_file(conn, mp.appid, args.name, args.content)
            return mpsetup.describe(mp, file)

        _print_json(asyncio.run(_with_wechat(settings, run)))
    return 0


def cmd_mp_prefix(args: argparse.Namespace) -> int:
    """A private mini program's link-rule prefix (its pool host's /q/ by default)."""
    from portal.tenants import linkrules

    with stores(dict(os.environ), dev=False) as settings:

        async def run(conn):
            pool = await _pool_or_fail(conn, args.slug)
            value = None if args.clear else args.prefix
            if value is None and not args.clear:
                raise CommandError("give PREFIX or --clear", error="invalid_arguments")
            return pool, await linkrules.set_prefix(conn, settings, pool, value)

        pool, prefix = asyncio.run(_with_conn(settings, run))
        asyncio.run(_announce(settings, args.slug))
    _print_json({"slug": pool.slug, "mp_appid": pool.mp_appid, "prefix": prefix})
    return 0


def cmd_mp_publish_rule(args: argparse.Namespace) -> int:
    """Add and publish the mini program's link rule through WeChat's API."""
    from portal.tenants import mpsetup
    from portal.wechat.errors import WeChatError

    with stores(dict(os.environ), dev=False) as settings:

        async def run(conn, box, wechat):
            mp = await mpsetup.resolve(conn, settings, box, args.pool)
            try:
                return await mpsetup.publish_rule(conn, wechat, mp)
            except WeChatError as exc:
                raise CommandError(
                    f"WeChat refused ({exc.errcode}): {exc.errmsg}", error="wechat_refused"
                ) from None

        _print_json(asyncio.run(_with_wechat(settings, run)))
    return 0


def cmd_mp_check(args: argparse.Namespace) -> int:
    """Checks a deployment's mini program; exit status 1 when something is to fix."""
    from portal.tenants import mpsetup

    with stores(dict(os.environ), dev=False) as settings:

        async def run(conn, box, wechat):
            mp = await mpsetup.resolve(conn, settings, box, args.pool)
            return await mpsetup.check(conn, settings, wechat, mp)

        report = asyncio.run(_with_wechat(settings, run))
    _print_json(report.json())
    for c in report.checks:
        if not c.ok:
            print(f"portal: to fix: {c.name}: {c.detail}; {c.fix}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_fake_wechat(args: argparse.Namespace) -> int:
    from portal.wechat import fake

    apps = {appid: secret for appid, secret, _ in args.app} if args.app else None
    bound = {appid: op for appid, _, op in args.app or () if op}
    print(f"fake WeChat API on http://{args.host}:{args.port}", file=sys.stderr)
    fake.serve(
        host=args.host,
        port=args.port,
        apps=apps,
        busy_rate=args.busy_rate,
        access_log=not args.quiet,
        bound=bound,
    )
    return 0


def _production_settings() -> tuple[dict[str, str], Settings]:
    """The environment (PORTAL_ENV defaulting to prod) and its settings, for the
    commands that run the portal as deployed (serve, worker)."""
    env = dict(os.environ)
    env.setdefault("PORTAL_ENV", "prod")
    try:
        return env, Settings.from_env(env)
    except ConfigError as exc:
        raise CommandError(str(exc), error="invalid_config") from None


def cmd_serve(args: argparse.Namespace) -> int:
    env, settings = _production_settings()
    if not settings.database_url or not settings.redis_url:
        raise CommandError(
            "portal serve needs DATABASE_URL and REDIS_URL (use `portal dev` locally)",
            error="invalid_config",
        )
    from portal.obs import logs

    try:  # JSON logs with request ids; gunicorn.conf.py applies them (and sets up metrics)
        logs.config_from_env(env)
    except ValueError as exc:
        raise CommandError(str(exc), error="invalid_config") from None
    argv = [sys.executable, "-m", "gunicorn", "-c", str(DEPLOY_DIR / "gunicorn.conf.py")]
    argv += ["--bind", f"{args.host}:{args.port}"]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    argv.append("portal.asgi:from_env()")
    os.execvpe(argv[0], argv, env)  # noqa: S606
    return 0  # not reached


def cmd_worker(args: argparse.Namespace) -> int:
    import logging.config

    env, settings = _production_settings()
    if not settings.database_url:
        raise CommandError(
            "portal worker needs DATABASE_URL (`portal dev` runs a worker itself)",
            error="invalid_config",
        )
    if args.concurrency < 1:
        raise CommandError("--concurrency must be at least 1")
    import asyncpg

    from portal import worker
    from portal.obs import logs

    try:
        logging.config.dictConfig(logs.config_from_env(env))
    except ValueError as exc:
        raise CommandError(str(exc), error="invalid_config") from None
    try:
        return worker.run(settings, concurrency=args.concurrency)
    except (dbmod.SchemaNotCurrent, dbmod.DatabaseUnreachable, OSError) as exc:
        raise CommandError(str(exc), error="database_not_ready") from None
    except asyncpg.PostgresError as exc:
        raise CommandError(f"{type(exc).__name__}: {exc}", error="database_not_ready") from None


def cmd_dev(args: argparse.Namespace) -> int:
    from portal.dev import server as devserver

    return devserver.run(host=args.host, port=args.port, wechat_port=args.wechat_port)


# --- parser --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from portal.wechat.fake import parse_app_arg

    parser = argparse.ArgumentParser(prog="portal", description="WeChat scan login portal")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "dev", help="run everything locally (embedded stores, fake WeChat, demo pool)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--wechat-port", type=int, default=None, help="fake WeChat port (default: port+1)"
    )
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("serve", help="production server (gunicorn with uvicorn workers)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=0, help="default: one per core")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run the background work (webhooks, retention, ...)")
    p.add_argument("--concurrency", type=int, default=20, help="jobs run at once (default: 20)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="apply the SQL migrations in sql/")
    p.set_defaults(func=cmd_migrate)

    pool = sub.add_parser("pool", help="user pools").add_subparsers(dest="action", required=True)
    p = pool.add_parser("create", help="create a user pool")
    p.add_argument("slug")
    p.add_argument("--name", required=True)
    p.add_argument("--callback-url")
    p.add_argument("--mp-appid", help="a private mini program's AppID")
    p.add_argument("--mp-secret-stdin", action="store_true", help="read its AppSecret from stdin")
    p.add_argument(
        "--qr-type",
        choices=("link", "wxacode"),
        default="link",
        help="link QR or mini-program code",
    )
    p.set_defaults(func=cmd_pool_create)
    p = pool.add_parser("set", help="change a pool's QR code type")
    p.add_argument("slug")
    p.add_argument("--qr-type", choices=("link", "wxacode"), required=True)
    p.add_argument(
        "--qr-fallback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show the link QR when WeChat cannot make a mini-program code (default: unchanged)",
    )
    p.set_defaults(func=cmd_pool_set)
    p = pool.add_parser("retention", help="how long a pool keeps login events, IPs and UAs")
    p.add_argument("slug")
    p.add_argument("--login-days", type=int, help="login events (default 180; unchanged if absent)")
    p.add_argument("--ip-days", type=int, help="their IP address and user agent (default 30)")
    p.set_defaults(func=cmd_pool_retention)

    retention = sub.add_parser("retention", help="personal data retention").add_subparsers(
        dest="action", required=True
    )
    p = retention.add_parser("run", help="delete and blank what is past its retention now")
    p.add_argument("--pool", help="one pool's slug (default: every pool)")
    p.set_defaults(func=cmd_retention_run)

    client = sub.add_parser("client", help="application clients").add_subparsers(
        dest="action", required=True
    )
    p = client.add_parser(
        "create", help="register an application (or, with --management, a management) client"
    )
    p.add_argument("slug")
    p.add_argument("--name", required=True)
    p.add_argument("--redirect-uri", nargs="+", default=[], action="extend")
    p.add_argument("--origin", nargs="+", default=[], action="extend", help="allowed web origins")
    p.add_argument("--post-logout-redirect-uri", nargs="+", default=[], action="extend")
    p.add_argument("--public", action="store_true", help="no secret: PKCE only (SPAs, the SDK)")
    p.add_argument(
        "--management",
        action="store_true",
        help="a management API client (client credentials); needs --scope",
    )
    p.add_argument(
        "--scope",
        nargs="+",
        default=[],
        action="extend",
        help="a management client's scopes: users:read users:write clients:read "
        "clients:write logins:read webhooks:write settings:write",
    )
    _registration_flags(p)
    p.set_defaults(func=cmd_client_create)
    p = client.add_parser("set", help="change an application client's registration")
    p.add_argument("slug")
    p.add_argument("client_id")
    _registration_flags(p)
    p.set_defaults(func=cmd_client_set)

    admin = sub.add_parser("admin", help="console admins").add_subparsers(
        dest="action", required=True
    )
    p = admin.add_parser("create", help="create a console admin")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--superadmin", action="store_true")
    p.add_argument("--pool", action="append", default=[], help="a pool slug (repeatable)")
    p.set_defaults(func=cmd_admin_create)

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="action", required=True)
    p = keys.add_parser(
        "rotate", help="new signing key; the old one stays in JWKS until its tokens expire"
    )
    p.add_argument("slug")
    p.set_defaults(func=cmd_keys_rotate)

    mp = sub.add_parser("mp", help="mini programs: link rules, checks").add_subparsers(
        dest="action", required=True
    )
    pool_help = "a pool's private mini program (default: the platform's)"
    p = mp.add_parser("verify-file", help="set the link rule's verification file")
    p.add_argument("name", help="the file's name as WeChat gives it, e.g. abc123.txt")
    p.add_argument("--content", required=True, help="the file's content")
    p.add_argument("--pool", help=pool_help)
    p.set_defaults(func=cmd_mp_verify_file)
    p = mp.add_parser("prefix", help="a private mini program's link-rule prefix")
    p.add_argument("slug")
    p.add_argument("prefix", nargs="?", help="https://HOST/q/ (default: the pool host's)")
    p.add_argument("--clear", action="store_true", help="back to the pool host's /q/")
    p.set_defaults(func=cmd_mp_prefix)
    p = mp.add_parser("publish-rule", help="add and publish the link rule with WeChat's API")
    p.add_argument("--pool", help=pool_help)
    p.set_defaults(func=cmd_mp_publish_rule)
    p = mp.add_parser("check", help="check the mini program's setup and print what to fix")
    p.add_argument("--pool", help=pool_help)
    p.set_defaults(func=cmd_mp_check)

    p = sub.add_parser("fake-wechat", help="run the fake WeChat API alone")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument(
        "--app",
        action="append",
        type=parse_app_arg,
        help="APPID:SECRET[:bound=OPENPLATFORM_ID] (repeatable; bound: the app returns unionids)",
    )
    p.add_argument("--busy-rate", type=float, default=0.0)
    p.add_argument("--quiet", action="store_true", help="no access log (a line per call)")
    p.set_defaults(func=cmd_fake_wechat)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (
        CommandError,
        PortalError,
        ConfigError,
        migrations.MigrationError,
        EmbeddedError,
    ) as exc:
        print(f"portal: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
