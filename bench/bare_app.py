"""The baseline for benchmark 2: a bare Starlette app with one JSON route.

Served exactly like the portal (gunicorn, deploy/gunicorn.conf.py, the
portal's worker class and worker count):

    gunicorn -c deploy/gunicorn.conf.py --pythonpath bench bare_app:app
"""

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def ok(request):
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/", ok)])
