"""Webhooks (issue 19, part 3; docs/webhooks.md): a pool's endpoints, the events
they subscribe to, signed deliveries with retries, the delivery log and replay.

Events are emitted in the transaction of the change (``portal.jobs.emit``); the
outbox's trigger (sql/0008) makes one delivery per subscribed endpoint and
queues ``webhooks.deliver`` (``tasks.py``), which signs per the Standard
Webhooks specification and POSTs through the SSRF-guarded client
(``portal.web.outbound``). ``store.py`` is what the console and the management
API call.
"""

EVENTS: tuple[str, ...] = (
    "user.created",
    "user.updated",
    "user.blocked",
    "user.unblocked",
    "user.deleted",
    "login.succeeded",
    "login.failed",
    "login.cancelled",
    "login.suspicious",
    "client.created",
    "client.deleted",
    "settings.updated",
)
