"""The gunicorn worker class: uvicorn, without uvicorn's own proxy-header handling.

Which proxies to believe is decided in one place, the host router
(``PORTAL_TRUSTED_PROXIES``); uvicorn's default of trusting 127.0.0.1 would
otherwise rewrite the client address before the router could judge it.
"""

from uvicorn_worker import UvicornWorker


class PortalWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "proxy_headers": False, "server_header": False}  # noqa: RUF012
