# gunicorn configuration for `portal serve` (and for running gunicorn directly:
#   gunicorn -c deploy/gunicorn.conf.py 'portal.asgi:from_env()').
import multiprocessing
import os

bind = os.environ.get("PORTAL_BIND", "127.0.0.1:8000")
# The portal is I/O-bound and async: one worker per core serves many
# thousands of connections each (SSE waiters included).
workers = int(os.environ.get("PORTAL_WORKERS", multiprocessing.cpu_count()))
worker_class = "portal.worker.PortalWorker"
# Workers answer the arbiter's heartbeat from their event loop, so a long SSE
# stream does not count against this.
timeout = 60
# On reload (SIGHUP) or stop (SIGTERM) a worker gets this long to finish.
graceful_timeout = 30
keepalive = 5
# Restart workers now and then to bound any slow growth, staggered by jitter.
max_requests = int(os.environ.get("PORTAL_MAX_REQUESTS", 0))
max_requests_jitter = 1000
accesslog = "-" if os.environ.get("PORTAL_ACCESS_LOG") else None
errorlog = "-"
forwarded_allow_ips = ""  # the app decides (PORTAL_TRUSTED_PROXIES), not gunicorn
