"""A tiny relying-party website for the hosted-page browser tests.

It is served by its own uvicorn server inside the test's event loop, so the
browser meets it on another origin than the portal (``http://localhost:PORT``
for the registered redirect URI; ``http://127.0.0.1:PORT`` is the same server
on a third origin, for what an unregistered site would see). It has no backend
logic: the test itself plays the RP's backend (PKCE, state, code exchange).

- ``/callback``: shows the query it received, one ``<dd id="q-NAME">`` per parameter.
- ``/popup?auth=URL&pool=ORIGIN``: a button that opens ``URL&response_mode=web_message``
  in a popup and shows the authorization response that the pool posts back, only
  when the message comes from ``ORIGIN``. Every ``message`` event the page gets,
  from anywhere, is also kept in ``window.received``.
- ``/post?auth=URL``: a button that sends the authorization request ``URL`` by POST.
- ``/avatar.png``: a small picture to use as a WeChat avatar.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.support import free_socket, serve_asgi

LOGIN_BUTTON = "Log in with WeChat"

_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>{title}</title></head>
<body><h1>{title}</h1>
"""

_POPUP_SCRIPT = """
<script>
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("config").textContent);
  window.received = [];  // every message event, whatever its origin
  window.addEventListener("message", function (event) {
    window.received.push({ origin: event.origin, data: event.data });
    // A real RP checks where the message comes from, and what it is.
    if (event.origin !== config.pool) return;
    var data = event.data;
    if (!data || data.type !== "authorization_response" || !data.response) return;
    var r = data.response;
    document.getElementById("code").textContent = r.code || "";
    document.getElementById("state").textContent = r.state || "";
    document.getElementById("iss").textContent = r.iss || "";
    document.getElementById("error").textContent = r.error || "";
    document.getElementById("result").textContent = r.code ? "logged in" : "failed";
  });
  document.getElementById("login").addEventListener("click", function () {
    window.open(config.auth + "&response_mode=web_message", "portal-login",
                "popup,width=520,height=720");
  });
})();
</script>
"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        _HEAD.format(title=html.escape(title)) + body + "</body></html>",
        headers={"cache-control": "no-store"},
    )


async def callback(request: Request) -> Response:
    items = "".join(
        f'<dt>{html.escape(k)}</dt><dd id="q-{html.escape(k)}">{html.escape(v)}</dd>'
        for k, v in request.query_params.multi_items()
    )
    return _page("Shop: callback", f'<dl id="query">{items}</dl>')


async def popup(request: Request) -> Response:
    config = {"auth": request.query_params["auth"], "pool": request.query_params["pool"]}
    # JSON inside <script type="application/json">: escape "<" so "</script>" cannot end it.
    data = json.dumps(config).replace("<", "\\u003c")
    body = (
        f'<script type="application/json" id="config">{data}</script>'
        f'<button type="button" id="login">{LOGIN_BUTTON}</button>'
        '<p id="result" role="status"></p>'
        '<dl><dt>code</dt><dd id="code"></dd><dt>state</dt><dd id="state"></dd>'
        '<dt>iss</dt><dd id="iss"></dd><dt>error</dt><dd id="error"></dd></dl>' + _POPUP_SCRIPT
    )
    return _page("Shop", body)


async def post_form(request: Request) -> Response:
    """The authorization request sent by POST (OIDC Core 3.1.2.1), as a form."""
    auth = urlsplit(request.query_params["auth"])
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in parse_qsl(auth.query)
    )
    action = html.escape(f"{auth.scheme}://{auth.netloc}{auth.path}")
    body = (
        f'<form method="post" action="{action}">{inputs}'
        f'<button type="submit">{LOGIN_BUTTON}</button></form>'
    )
    return _page("Shop", body)


def _avatar_png() -> bytes:
    image = Image.new("RGB", (96, 96), "#f4d35e")
    draw = ImageDraw.Draw(image)
    draw.ellipse((18, 12, 78, 72), fill="#ee964b")
    draw.ellipse((8, 66, 88, 140), fill="#0d3b66")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


_AVATAR = _avatar_png()


async def avatar(request: Request) -> Response:
    return Response(_AVATAR, media_type="image/png", headers={"cache-control": "max-age=3600"})


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/callback", callback),
            Route("/popup", popup),
            Route("/post", post_form),
            Route("/avatar.png", avatar),
        ]
    )


@dataclass(frozen=True)
class RPSite:
    port: int

    @property
    def origin(self) -> str:
        """The RP's own origin (its redirect URI and web origin are registered here)."""
        return f"http://localhost:{self.port}"

    @property
    def other_origin(self) -> str:
        """The same server on a third origin, which the pool knows nothing about."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def redirect_uri(self) -> str:
        return f"{self.origin}/callback"

    @property
    def avatar_url(self) -> str:
        return f"{self.origin}/avatar.png"


@contextlib.asynccontextmanager
async def run_rp_site() -> AsyncIterator[RPSite]:
    """The RP website over real HTTP, in the running event loop."""
    sock = free_socket()
    async with serve_asgi(create_app(), sock, name="the RP site", lifespan="off"):
        yield RPSite(sock.getsockname()[1])
