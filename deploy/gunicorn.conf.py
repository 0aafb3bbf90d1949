# gunicorn configuration for `portal serve` (and for running gunicorn directly:
#   gunicorn -c deploy/gunicorn.conf.py 'portal.asgi:from_env()').
#
# Signals (to the master): TERM/INT stop gracefully, HUP is a graceful reload
# (re-reads this file, starts new workers with the new code, then stops the old
# ones: each closes its SSE streams at once, see portal/web/server.py), TTIN/TTOU
# add/remove a worker. `systemctl reload portal` sends HUP.
import math
import multiprocessing
import os
import shutil
import tempfile

from portal.obs import logs


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, and a cgroup v2 CPU
    quota (a container's --cpus) when one is set; not the machine's count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = multiprocessing.cpu_count()
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


bind = os.environ.get("PORTAL_BIND", "127.0.0.1:8000")
# The portal is I/O-bound and async: one worker per core serves many
# thousands of connections each (SSE waiters included).
workers = int(os.environ.get("PORTAL_WORKERS") or usable_cores())
worker_class = "portal.web.server.PortalWorker"
# Workers answer the arbiter's heartbeat from their event loop, so a long SSE
# stream does not count against this.
timeout = 60
# On reload (HUP) or stop (TERM) a worker gets this long to finish what is in
# flight; SSE streams and long polls end at once (PortalServer.shutdown).
graceful_timeout = 30
keepalive = 5  # seconds an idle keep-alive connection is kept (uvicorn's timeout_keep_alive)
# Request head limits. uvicorn workers do not use gunicorn's parser: the portal's
# worker hands these to its protocol (portal/web/protocol.py), which answers 414
# (line) or 431 (headers), caps the whole head at 64 KiB, closes a connection
# whose head is not complete 15 s after it starts and answers 408 to a body not
# complete 60 s after its head (routes that read one: PORTAL_BODY_TIMEOUT, 30 s).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# Restart workers now and then to bound any slow growth, staggered by jitter.
max_requests = int(os.environ.get("PORTAL_MAX_REQUESTS", 0))
max_requests_jitter = 1000
# The heartbeat file on tmpfs: a disk-backed /tmp can stall it (containers).
_SHM = "/dev/shm"  # noqa: S108  # tmpfs, not a shared scratch directory
if os.path.isdir(_SHM):
    worker_tmp_dir = _SHM
forwarded_allow_ips = ""  # the app decides (PORTAL_TRUSTED_PROXIES), not gunicorn

# Logs: JSON lines on stderr with the request id (PORTAL_LOG_FORMAT=text for
# people), PORTAL_LOG_LEVEL, and one access line per request with
# PORTAL_ACCESS_LOG=1 (uvicorn's, its query string redacted). See portal/obs/logs.py.
accesslog = None  # the access lines go through logconfig_dict's handler instead
errorlog = "-"
logconfig_dict = logs.config_from_env()


# Prometheus multiprocess mode: every worker writes its metrics under
# PROMETHEUS_MULTIPROC_DIR and /metrics sums them. It must be set before any
# worker imports prometheus_client, so in the master: from the environment
# (systemd: /run/portal/metrics), else a temporary directory removed on exit.
def on_starting(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        _remove_orphans()
        path = tempfile.mkdtemp(prefix=f"portal-metrics-{os.getpid()}-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        os.environ["PORTAL_METRICS_DIR_TEMPORARY"] = "1"
    os.makedirs(path, exist_ok=True)
    # A fresh start, not a HUP reload: a previous run's values must not be summed in.
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def child_exit(server, worker):
    # A finished worker's live gauges (waiters connected) leave the sum; its counters stay.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get("PORTAL_METRICS_DIR_TEMPORARY"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def _remove_orphans():
    # Temporary directories of masters that were killed (on_exit never ran).
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        parts = name.split("-")
        if name.startswith("portal-metrics-") and len(parts) == 4 and parts[2].isdigit():
            try:
                os.kill(int(parts[2]), 0)
            except ProcessLookupError:
                shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
            except OSError:
                pass
