"""``create_app(settings)``: the one Starlette application serving every host."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict

import asyncpg
import jinja2
import redis.asyncio as aioredis
from authlib.oauth2.rfc6749.errors import OAuth2Error
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal.console import routes as console_routes
from portal.dev.tools import dev_routes
from portal.errors import PortalError
from portal.mgmt import routes as mgmt_routes
from portal.obs import metrics
from portal.obs.metrics import MetricsAccess
from portal.obs.middleware import Observability
from portal.oidc import authorize, endpoints
from portal.oidc.codes import Codes
from portal.oidc.tokens import KeyCache
from portal.scan import avatars, contentsec, mpapi, qpage, qrapi
from portal.scan.tickets import Tickets
from portal.scan.waiters import Waiters
from portal.settings import ConfigError, Settings
from portal.stores import postgres as dbmod
from portal.stores import redis as redisconn
from portal.stores.crypto import SecretBox
from portal.stores.events import (
    POOLS_CHANNEL,
    TICKETS_CHANNEL,
    EventHub,
    ShardedEventHub,
    event_hub,
)
from portal.stores.ratelimit import RateLimiter
from portal.stores.redismux import ClusterMultiplexer, Multiplexer, multiplexer
from portal.tenants.clients import ClientCache
from portal.tenants.pools import PoolCache
from portal.web import openapi, sdk
from portal.web.cors import CORSMiddleware
from portal.web.hosts import HostRouter
from portal.web.pages import (
    STORE_UNAVAILABLE,
    http_error_handler,
    make_environment,
    oauth2_error_handler,
    portal_error_handler,
    render,
    server_error_handler,
    store_unavailable_handler,
)
from portal.wechat.client import WeChatClient

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"


# The errors a request's own handler answers (the rest are 500s).
EXCEPTION_HANDLERS: dict = {
    PortalError: portal_error_handler,
    OAuth2Error: oauth2_error_handler,
    HTTPException: http_error_handler,
    **dict.fromkeys(STORE_UNAVAILABLE, store_unavailable_handler),
}


class State(TypedDict):
    settings: Settings
    db: asyncpg.Pool
    redis: aioredis.Redis
    hub: EventHub | ShardedEventHub
    pools: PoolCache
    box: SecretBox
    templates: jinja2.Environment
    tickets: Tickets
    codes: Codes
    waiters: Waiters
    keys: KeyCache
    clients: ClientCache
    logos: qrapi.LogoCache
    wechat: WeChatClient
    limits: RateLimiter
    mux: Multiplexer | ClusterMultiplexer  # the process's pipelined Redis connection(s)


def redis_client(settings: Settings) -> aioredis.Redis:
    options: dict = {
        "decode_responses": True,
        "socket_connect_timeout": 5,
        "health_check_interval": 15,
    }
    if not settings.redis_url.startswith("unix:"):
        options["socket_keepalive"] = True
    # A burst (thousands of browsers opening their streams at once) waits for a
    # free connection instead of failing with "Too many connections".
    return redisconn.connect(
        settings.redis_url, max_connections=settings.redis_pool_max, timeout=5, **options
    )


class Site(BaseRoute):
    """Routes for one kind of host; the host router has already said which."""

    def __init__(self, site: str, routes: Sequence[BaseRoute]) -> None:
        self.site = site
        self.router = Router(routes=list(routes))

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] in ("http", "websocket") and scope.get("portal_site") == self.site:
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: object):
        return self.router.url_path_for(name, **path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.router(scope, receive, send)


class FastLane:
    """The requests of every login (``Direct`` routes: ticket creation,
    status reads, the exchange, the mini program's session, scan and confirm;
    and the SSE stream, ``qrapi.Events``) and userinfo, found and called here, the
    innermost middleware, instead of through Starlette's exception middleware,
    router, site router and per-route wrappers: each of those layers costs
    every request a few microseconds (these come by the thousand per second),
    and every open stream the memory of its frames (ten thousand are open).

    It does what the skipped layers would: the scope gets the route, endpoint
    and path parameters (the metrics read the route), and an exception is
    answered by the same handler (``EXCEPTION_HANDLERS``, looked up along the
    exception's classes) or raised on to the request middleware. A request
    whose path or method no lane route takes goes the usual way.
    ``tests/test_fastlane.py`` checks that the lane picks, for each of its
    routes, the route the router would have picked."""

    def __init__(self, app: ASGIApp, sites: Sequence[Site], handlers: dict) -> None:
        self.app = app
        self.handlers = handlers
        self.exact: dict[tuple[str, str], Route] = {}
        self.patterned: dict[str, list[Route]] = {}
        for site in sites:
            for r in site.router.routes:
                if isinstance(r, Route) and isinstance(r.endpoint, qrapi.Direct | qrapi.Events):
                    if r.param_convertors:
                        self.patterned.setdefault(site.site, []).append(r)
                    else:
                        self.exact[(site.site, r.path)] = r

    def route(self, scope: Scope) -> tuple[Route | None, dict]:
        """The lane's route for this request's site and path (None: the router's
        business), and its path parameters."""
        site, path = scope.get("portal_site"), scope["path"]
        route = self.exact.get((site, path))  # type: ignore[arg-type]
        if route is not None:
            return route, {}
        for r in self.patterned.get(site, ()):  # type: ignore[arg-type]
            m = r.path_regex.match(path)
            if m:
                convert = r.param_convertors
                return r, {k: convert[k].convert(v) for k, v in m.groupdict().items()}
        return None, {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route, params = self.route(scope)
            if route is not None and scope["method"] in route.methods:  # type: ignore[operator]
                scope["route"] = route
                scope["endpoint"] = endpoint = route.endpoint
                scope["path_params"] = params
                if isinstance(endpoint, qrapi.Direct):
                    await self._respond(endpoint, scope, receive, send)
                else:
                    await self._stream(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _respond(self, direct: qrapi.Direct, scope: Scope, receive: Receive, send: Send):
        request = Request(scope, receive)
        try:
            response = await direct.endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    async def _stream(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """An ASGI endpoint (the SSE stream): an error before its response began
        is answered by its handler; one after can only end the response."""
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await app(scope, receive, send_started)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None or started:
                raise
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)

    def _handler(self, exc: Exception):
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None


# --- routes every site has -------------------------------------------------


async def favicon(request: Request) -> Response:
    # Browsers ask for /favicon.ico by themselves; the pages name the SVG one.
    return FileResponse(STATIC_DIR / "default-logo.svg", media_type="image/svg+xml",
                        headers={"cache-control": "public, max-age=86400"})  # fmt: skip


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = request.state

    async def pg() -> None:
        async with state.db.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")

    checks = {"postgres": pg(), "redis": state.redis.ping()}
    result: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, timeout=2)
            result[name] = "ok"
        except Exception as exc:
            log.warning("readiness: %s is not answering (%s)", name, type(exc).__name__)
            result[name] = "unavailable"
    if all(v == "ok" for v in result.values()):
        return JSONResponse({"status": "ok", **result})
    down = ", ".join(k for k, v in result.items() if v != "ok")
    return JSONResponse(
        {"error": "not_ready", "error_description": f"not answering: {down}", **result},
        status_code=503,
        headers={"retry-after": "5"},
    )


# --- apex ------------------------------------------------------------------


async def apex_home(request: Request) -> Response:
    return render(request, "apex.html")


# --- pool host -------------------------------------------------------------


async def pool_logo(request: Request) -> Response:
    pool = request.state.pool
    if pool.logo_sha256 is None:
        return FileResponse(
            STATIC_DIR / "default-logo.svg", headers={"cache-control": "public, max-age=3600"}
        )
    etag = f'"{pool.logo_sha256}"'
    headers = {"etag": etag, "cache-control": "public, max-age=300"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    png = await request.state.logos.get(request, pool)
    if png is None:  # removed under us; the cache will hear of it
        raise HTTPException(404)
    return Response(png, media_type="image/png", headers=headers)


async def host_error(request: Request) -> Response:
    raise request.state.host_error


def routes(settings: Settings) -> list[BaseRoute]:
    common: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/favicon.ico", favicon),
    ]
    apex = [
        *common,
        Route("/", apex_home),
        *openapi.routes(),  # the JSON APIs' description, on the apex only
        *mpapi.routes(),
        *avatars.routes(),
        *console_routes(),
        *qpage.apex_routes(),  # the default mini program's link rule and its file
        *contentsec.routes(),  # WeChat's message push: content security results
    ]
    if settings.is_dev:  # in production every /dev/* path is a 404
        apex += dev_routes()
    # Routes are tried in order: the QR API, by far the busiest, goes first.
    pool = [
        *qrapi.routes(),
        *sdk.routes(),
        *mpapi.routes(),
        *avatars.routes(),
        *authorize.routes(),
        *endpoints.routes(),
        *mgmt_routes(),  # the management API, /api/v1
        Route("/logo", pool_logo),
        *common,
        *qpage.pool_routes(),  # /q/{ticket}, a private mini program's verification file
    ]
    # A host with no portal behind it still gets its error page's stylesheet and icon.
    errors = [
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/favicon.ico", favicon),
        Route(
            "/{path:path}",
            host_error,
            methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        ),
    ]
    return [Site("apex", apex), Site("pool", pool), Site("host_error", errors)]


def create_app(settings: Settings) -> Starlette:
    box = SecretBox(settings.secret_key)
    templates = make_environment()
    try:
        metrics_access = MetricsAccess.from_env()  # PORTAL_METRICS_ALLOW / _TOKEN
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        db = await dbmod.create_pool(settings)
        redis = None
        hub = None
        wechat = None
        mux = None
        try:
            await dbmod.check_schema(db)
            redis = redis_client(settings)
            await redis.ping()
            pools = PoolCache(db, ttl=settings.pool_cache_ttl)
            waiters = Waiters(max_per_address=settings.waiters_per_ip)
            keys = KeyCache(db, box)
            client_cache = ClientCache(db)
            hub = event_hub(redis)  # on a Redis Cluster: shard channels (ShardedEventHub)
            hub.on(POOLS_CHANNEL, pools.handle_event)
            hub.on(POOLS_CHANNEL, keys.clear)
            hub.on(POOLS_CHANNEL, client_cache.clear)
            mux = multiplexer(redis)  # on a Redis Cluster: one connection per master
            tickets = Tickets(
                redis, box, mux, per_address=settings.rate_qr, per_pool=settings.rate_qr_pool
            )
            hub.on(TICKETS_CHANNEL, tickets.handle_event)  # before the waiters re-read
            hub.on(TICKETS_CHANNEL, waiters.handle_event)
            tickets.follow = hub.follow  # a cluster's hub subscribes to the pools held
            hub.on_followed(tickets.forget_tag)
            hub.on_followed(waiters.wake_tag)
            # Messages published while the subscription was down are lost: re-check everything.
            hub.on_reconnect(pools.clear)
            hub.on_reconnect(keys.clear)
            hub.on_reconnect(client_cache.clear)
            hub.on_reconnect(tickets.forget_all)
            hub.on_reconnect(waiters.wake_all)
            await hub.start()
            wechat = WeChatClient(settings.wechat_api_base, redis)
            # What startup built lives as long as the process: keep it out of the
            # garbage collector's passes, which then only look at requests' objects.
            gc.freeze()
            yield State(
                settings=settings,
                db=db,
                redis=redis,
                hub=hub,
                pools=pools,
                box=box,
                templates=templates,
                tickets=tickets,
                codes=Codes(redis, box),
                waiters=waiters,
                keys=keys,
                clients=client_cache,
                logos=qrapi.LogoCache(),
                wechat=wechat,
                limits=RateLimiter(redis, mux),
                mux=mux,
            )
        finally:
            metrics.TALLY.flush()  # what this process counted last, before it goes
            if wechat is not None:
                await wechat.aclose()
            if hub is not None:
                await hub.stop()
            if mux is not None:
                await mux.aclose()
            if redis is not None:
                with contextlib.suppress(Exception):
                    await redis.aclose()
            await db.close()

    sites = routes(settings)
    return Starlette(
        debug=False,
        routes=sites,
        # CORS inside the host router: it needs the pool. Observability between the
        # two: it sees the route the router matches, and CORS's preflight answers.
        middleware=[
            Middleware(HostRouter, settings=settings),
            Middleware(Observability, settings=settings, access=metrics_access),
            Middleware(CORSMiddleware),
            Middleware(
                FastLane,
                sites=[s for s in sites if isinstance(s, Site)],
                handlers=EXCEPTION_HANDLERS,
            ),
        ],
        # Unhandled errors: Observability answers them (500 with the request id).
        exception_handlers={**EXCEPTION_HANDLERS, Exception: server_error_handler},
        lifespan=lifespan,
    )
