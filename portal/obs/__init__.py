"""Observability for production: structured logs with request ids (``logs``),
Prometheus metrics (``metrics``) and the per-request middleware tying both to
each request (``middleware``).

``logs`` never imports ``prometheus_client``: gunicorn's master imports it from
``deploy/gunicorn.conf.py``, and the metrics' storage mode is chosen once,
by ``PROMETHEUS_MULTIPROC_DIR``, when ``prometheus_client`` is first imported.
"""
