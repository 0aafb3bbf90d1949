"""A single-page app for the browser tests: one page served on its own origin."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route


def spa_app(issuer: str, client_id: str, script: str, body: str) -> Starlette:
    """The app's one page, ``/app``: its configuration (issuer, client id) as JSON,
    ``body``, then ``script``."""
    config = json.dumps({"issuer": issuer, "client_id": client_id}).replace("<", "\\u003c")

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<link rel="icon" href="data:,"><title>SPA</title></head><body>'
            f'<script type="application/json" id="config">{config}</script>'
            f"{body}<script>{script}</script></body></html>",
            headers={"cache-control": "no-store"},
        )

    return Starlette(routes=[Route("/app", page)])
