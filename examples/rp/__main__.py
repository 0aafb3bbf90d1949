"""``python -m examples.rp``: the example website, by default on http://localhost:8090."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import uvicorn

from examples.rp.app import Config, create_app


def main() -> None:
    config = Config.from_env(os.environ)
    port = urlsplit(config.site_url).port or 80
    print(f"example website: {config.site_url}/  (pool {config.issuer}, client {config.client_id})")
    uvicorn.run(create_app(config), host="127.0.0.1", port=port, log_level="info")


if __name__ == "__main__":
    main()
