"""Redis key names that work on one server and on a Redis Cluster alike.

A Redis Cluster keeps each key in one of 16384 hash slots, spread over its
masters. A Lua script (or any multi-key command) may only touch keys of one
slot, and only the part of a key between the first ``{`` and ``}`` (its
*hash tag*) decides the slot. The keys a script touches together therefore
carry the same hash tag; on a single server the braces are just characters.

- **Tickets** live in their pool's slot. A ticket's id starts with its pool's
  tag (four characters derived from the pool id, ``pool_tag``), so the key is
  found from the id alone (the mini program knows nothing else) and the
  ticket creation script can count the pool's and the address's rate limits
  in the same slot (``qr_limit_keys``). A platform's pools spread over the
  masters; one pool's tickets share a master.
- **Ticket events** go to a shard channel of the same slot,
  ``portal:tickets:{TAG}`` (``SPUBLISH`` from inside the ticket scripts,
  ``sharded_script``), so a master publishes only its own pools' changes and
  only processes waiting on those pools hear them.
"""

from __future__ import annotations

import base64
import functools
import hashlib

TAG_LEN = 4  # characters of base64url: 24 bits, one of 16.7 M tags for 16384 slots
TICKETS_SHARD_PREFIX = "portal:tickets:"


@functools.lru_cache(maxsize=65536)  # every ticket made computes it (twice)
def pool_tag(pool_id: int) -> str:
    """The hash tag of a pool's tickets: four base64url characters, stable."""
    digest = hashlib.sha256(f"portal-pool:{pool_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:3]).decode()


def ticket_tag(ticket: str) -> str:
    return ticket[:TAG_LEN]


def ticket_key(ticket: str) -> str:
    """``ticket:{TAG}REST`` where the ticket id is TAG + REST."""
    return f"ticket:{{{ticket[:TAG_LEN]}}}{ticket[TAG_LEN:]}"


def ticket_channel(ticket: str) -> str:
    """The shard channel of a ticket's changes on a cluster."""
    return f"{TICKETS_SHARD_PREFIX}{{{ticket[:TAG_LEN]}}}"


def qr_limit_keys(pool_id: int, address: str) -> tuple[str, str]:
    """The ticket creation's rate-limit counters (per address and pool, per pool),
    in the slot of the pool's tickets."""
    tag = pool_tag(pool_id)
    return f"rl:qr:{{{tag}}}:{pool_id}:{address}", f"rl:qr_pool:{{{tag}}}:{pool_id}"


def sharded_script(script: str, channel: str) -> str:
    """A ticket script for a cluster: its ``PUBLISH`` on ``channel`` becomes an
    ``SPUBLISH`` on the shard channel of the ticket it works on (``KEYS[1]``)."""
    single = f"redis.call('PUBLISH', '{channel}'"
    if single not in script:
        return script
    return script.replace(
        single,
        f"redis.call('SPUBLISH', '{TICKETS_SHARD_PREFIX}' .. string.match(KEYS[1], '{{.-}}')",
    )
