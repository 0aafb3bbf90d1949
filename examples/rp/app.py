"""The example website: a shop on its own origin that logs its users in with a
pool of the portal, in each of the three ways (docs/design.md §5):

- ``/sdk``: ``Portal.qrLogin`` draws the QR code inside the page;
- ``/component``: the ``<portal-login>`` element;
- ``/popup`` and ``/redirect``: the pool's hosted page, in a popup
  (``Portal.loginWithPopup``) or by redirect (``Portal.loginWithRedirect``,
  then ``Portal.handleRedirectCallback`` on ``/callback``).

Whatever way, the page ends by sending the ID token it got to this site's own
backend (``POST /api/login``), which trusts nothing the browser says: it checks
the token's signature against the pool's JWKS, its issuer, audience, expiry
and, for the OIDC flows, a nonce it issued itself and takes back once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import jinja2
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

HERE = Path(__file__).resolve().parent
NONCE_TTL = 600  # seconds a login started on a page may take
FRESH = 300  # an ID token from the QR API must be this recent (it carries no nonce)


@dataclass(frozen=True)
class Config:
    issuer: str  # the pool's URL, e.g. http://demo.localhost:8000
    client_id: str  # a public client with this site's origin and /callback registered
    site_url: str  # this site's own origin, e.g. http://localhost:8090

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        client_id = env.get("PORTAL_CLIENT_ID", "")
        if not client_id:
            raise SystemExit(
                "Set PORTAL_CLIENT_ID to the example client's id (`portal dev` prints it as "
                "'example client_id'; see examples/README.md)."
            )
        return cls(
            issuer=env.get("PORTAL_ISSUER", "http://demo.localhost:8000").rstrip("/"),
            client_id=client_id,
            site_url=env.get("EXAMPLE_URL", "http://localhost:8090").rstrip("/"),
        )

    @property
    def redirect_uri(self) -> str:
        return f"{self.site_url}/callback"


class LocalhostTransport(httpx.AsyncHTTPTransport):
    """Browsers resolve ``*.localhost`` to this machine; many resolvers do not. For
    a pool at ``demo.localhost``, connect to 127.0.0.1 and keep the Host header."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        original = request.url
        if original.host.endswith(".localhost"):
            request.url = original.copy_with(host="127.0.0.1")
        try:
            return await super().handle_async_request(request)
        finally:
            request.url = original


class Refused(Exception):
    def __init__(self, error: str, description: str, status: int = 401) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class Verifier:
    """Checks ID tokens from the pool; keeps the nonces this site issued."""

    def __init__(self, config: Config, http: httpx.AsyncClient) -> None:
        self.config = config
        self.http = http
        self._keys: KeySet | None = None
        self._keys_lock = asyncio.Lock()
        self._nonces: dict[str, float] = {}  # nonce -> expiry; a real site keeps it in its session
        self._seen: dict[str, float] = {}  # tokens already used here -> expiry

    def new_nonce(self) -> str:
        now = time.time()
        self._nonces = {n: exp for n, exp in self._nonces.items() if exp > now}
        nonce = secrets.token_urlsafe(16)
        self._nonces[nonce] = now + NONCE_TTL
        return nonce

    async def _jwks(self, refresh: bool = False) -> KeySet:
        async with self._keys_lock:
            if self._keys is None or refresh:
                try:
                    r = await self.http.get(f"{self.config.issuer}/oidc/jwks")
                    r.raise_for_status()
                except httpx.HTTPError as exc:
                    raise Refused("pool_unreachable", "Cannot fetch the pool's keys.", 502) from exc
                self._keys = KeySet.import_key_set(r.json())
            return self._keys

    async def verify(self, id_token: str, *, flow: str) -> dict:
        try:
            try:
                token = jwt.decode(id_token, await self._jwks())
            except (JoseError, ValueError):
                # A new signing key (rotation): fetch the key set again, once.
                token = jwt.decode(id_token, await self._jwks(refresh=True))
        except (JoseError, ValueError) as exc:
            raise Refused("invalid_token", "The ID token's signature is not the pool's.") from exc
        claims = token.claims
        checks: dict = {
            "iss": {"essential": True, "value": self.config.issuer},
            "aud": {"essential": True, "value": self.config.client_id},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "sub": {"essential": True},
        }
        try:
            JWTClaimsRegistry(**checks).validate(claims)
        except JoseError as exc:
            raise Refused(
                "invalid_token", f"The ID token is not valid here ({exc.error})."
            ) from exc
        now = time.time()
        if flow in ("popup", "redirect"):
            # The nonce this backend put in the authorization request, usable once.
            if self._nonces.pop(str(claims.get("nonce")), 0) < now:
                raise Refused("invalid_nonce", "The ID token does not answer a login started here.")
        elif claims["iat"] < now - FRESH:
            raise Refused("stale_token", "The ID token is too old.")
        digest = hashlib.sha256(id_token.encode()).hexdigest()
        self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
        if digest in self._seen:
            raise Refused("replayed_token", "This ID token was already used.")
        self._seen[digest] = float(claims["exp"])
        return claims


def create_app(config: Config, transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    http = httpx.AsyncClient(transport=transport or LocalhostTransport(), timeout=10)
    verifier = Verifier(config, http)
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True
    )

    def page(request: Request, name: str, **context: object) -> HTMLResponse:
        # The shop's pages are written in English; ?lang=zh-CN shows the widget in Chinese.
        lang = "zh-CN" if request.query_params.get("lang", "en").startswith("zh") else "en"
        browser = {
            "lang": lang,  # the page tells the widget its language (else: the browser's)
            "issuer": config.issuer,
            "clientId": config.client_id,
            "redirectUri": config.redirect_uri,
            **context.pop("browser", {}),  # type: ignore[dict-item]
        }
        html = templates.get_template(name).render(
            config=config,
            lang=lang,
            # For <script type="application/json">: "<" escaped so nothing can end the script.
            browser_json=json.dumps(browser).replace("<", "\\u003c"),
            **context,
        )
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def index(request: Request) -> Response:
        return page(request, "index.html")

    async def sdk(request: Request) -> Response:
        auto = request.query_params.get("autoRefresh") == "1"
        return page(request, "sdk.html", browser={"autoRefresh": auto})

    async def component(request: Request) -> Response:
        return page(request, "component.html")

    async def popup(request: Request) -> Response:
        return page(request, "popup.html", browser={"nonce": verifier.new_nonce()})

    async def redirect(request: Request) -> Response:
        return page(request, "redirect.html", browser={"nonce": verifier.new_nonce()})

    async def callback(request: Request) -> Response:
        return page(request, "callback.html")

    async def login(request: Request) -> Response:
        try:
            body = await request.json()
            id_token, flow = str(body["id_token"]), str(body.get("flow", ""))
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        try:
            claims = await verifier.verify(id_token, flow=flow)
        except Refused as exc:
            return JSONResponse(
                {"error": exc.error, "error_description": exc.description}, status_code=exc.status
            )
        # Here a real site starts its own session for the user claims["sub"].
        return JSONResponse(
            {
                "sub": claims["sub"],
                "nickname": claims.get("nickname", ""),
                "picture": claims.get("picture", ""),
                "flow": flow,
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await http.aclose()

    return Starlette(
        routes=[
            Route("/", index),
            Route("/sdk", sdk),
            Route("/component", component),
            Route("/popup", popup),
            Route("/redirect", redirect),
            Route("/callback", callback),
            Route("/api/login", login, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        lifespan=lifespan,
    )
