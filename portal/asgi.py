"""Entry point for gunicorn: ``portal.asgi:from_env()``."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from portal.app import create_app
from portal.settings import Settings


def from_env() -> Starlette:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return create_app(Settings.from_env())
