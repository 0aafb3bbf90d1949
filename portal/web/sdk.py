"""``GET /sdk/v1/portal.js`` on a pool host: the JavaScript SDK and the
``<portal-login>`` element (docs/design.md §5), served from ``static/sdk/portal.js``.

The file is read and gzipped once per process. ``/sdk/v1/portal.js`` is cached
for an hour and revalidated by its strong ETag; ``?v=<VERSION>`` (the content
hash, see ``version()``) is immutable for a year, so a site that pins it never
asks again. The script finds its pool from its own ``src``, so it is the same
file on every pool host.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SOURCE = Path(__file__).resolve().parents[1] / "static" / "sdk" / "portal.js"
PATH = "/sdk/v1/portal.js"
SHORT_CACHE = "public, max-age=3600, stale-while-revalidate=86400"
LONG_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    version: str  # the content hash: ``?v=`` pins it


@functools.cache
def asset() -> Asset:
    body = SOURCE.read_bytes()
    # mtime=0: the same bytes (and ETag) from every process and machine.
    gzipped = gzip.compress(body, compresslevel=9, mtime=0)
    return Asset(body, gzipped, hashlib.sha256(body).hexdigest()[:16])


def version() -> str:
    return asset().version


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


def _etag_matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    return header.strip() == "*" or etag in [t.strip() for t in header.split(",")]


async def portal_js(request: Request) -> Response:
    js = asset()
    gz = _accepts_gzip(request)
    # A strong ETag names the bytes sent: the gzipped body has its own.
    etag = f'"{js.version}-gz"' if gz else f'"{js.version}"'
    headers = {
        "etag": etag,
        "cache-control": LONG_CACHE if request.query_params.get("v") == js.version else SHORT_CACHE,
        "vary": "Accept-Encoding",
        # Any website includes it; "*" also allows <script crossorigin integrity=...>.
        "access-control-allow-origin": "*",
        "cross-origin-resource-policy": "cross-origin",
    }
    if _etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    if gz:
        headers["content-encoding"] = "gzip"
    return Response(
        js.gzipped if gz else js.body,
        media_type="text/javascript; charset=utf-8",
        headers=headers,
    )


def routes() -> list[Route]:
    return [Route(PATH, portal_js, methods=["GET", "HEAD"])]
