"""Background work, once (issue 19 part 1): procrastinate, on the PostgreSQL we run.

Request side (any layer above the stores, in the caller's asyncpg transaction):

* ``await jobs.emit(conn, pool_id, "user.created", {"user_id": ...})``: the
  transactional outbox. The event and what it causes (webhook deliveries) commit
  or roll back with the change.
* ``await jobs.defer(conn, "oidc.backchannel_logout", sid=...)``: queue any task.

Worker side: ``tasks = jobs.Tasks()`` and ``@tasks.task("feature.name")`` or
``@tasks.periodic("feature.name", cron=...)`` in a feature's ``tasks.py``, listed
in ``portal/worker.py``; ``jobs.resources()`` gives a task the settings and the
asyncpg pool. docs/architecture.md ("Background work") says more.
"""

from portal.jobs.outbox import DEFAULT_QUEUE, defer, emit
from portal.jobs.runtime import (
    Resources,
    Tasks,
    create_app,
    exponential,
    resources,
    retry_stalled_jobs,
    set_resources,
)

__all__ = [
    "DEFAULT_QUEUE",
    "Resources",
    "Tasks",
    "create_app",
    "defer",
    "emit",
    "exponential",
    "resources",
    "retry_stalled_jobs",
    "set_resources",
]
