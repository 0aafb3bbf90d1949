"""The gunicorn worker class: uvicorn, without uvicorn's own proxy-header handling.

Which proxies to believe is decided in one place, the host router
(``PORTAL_TRUSTED_PROXIES``); uvicorn's default of trusting 127.0.0.1 would
otherwise rewrite the client address before the router could judge it.

A stopping worker (SIGTERM from a stop or a graceful reload) first tells the
app's waiters to answer (``PortalServer.shutdown``): uvicorn waits for every
response in flight to finish before it stops, and an SSE stream only ends
with its ticket, so without this one open stream would hold the worker until
gunicorn's ``graceful_timeout`` kills it. Ended cleanly, the browser's
EventSource reconnects (after the ``retry:`` the stream sent) to a live worker.

uvicorn parses HTTP itself, so gunicorn's ``limit_request_line``,
``limit_request_fields`` and ``limit_request_field_size`` would be ignored: the
worker hands them to the portal's protocol (``portal.web.protocol``), which
enforces them along with header and body deadlines.
"""

import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from portal.web import protocol as httpproto


class PortalServer(Server):
    async def shutdown(self, sockets=None) -> None:
        state = getattr(getattr(self, "lifespan", None), "state", None) or {}
        waiters = state.get("waiters")
        if waiters is not None:
            waiters.drain()
        await super().shutdown(sockets=sockets)


class PortalWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "proxy_headers": False, "server_header": False}  # noqa: RUF012

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.config.http = httpproto.protocol(
            max_request_line=self.cfg.limit_request_line,
            max_header_fields=self.cfg.limit_request_fields,
            max_header_field_size=self.cfg.limit_request_field_size,
        )

    async def _serve(self) -> None:  # UvicornWorker._serve, with PortalServer
        self.config.app = self.wsgi
        server = PortalServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
