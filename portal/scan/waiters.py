"""Browsers waiting on a ticket, in this process.

The event hub hands every tickets-channel message to ``Waiters.handle_event``,
which wakes only the waiters of that ticket. A woken waiter re-reads the
ticket (one Redis script call), so a lost or reordered message can never show
a browser a wrong status, only a late one; and after a pub/sub reconnect every
waiter is woken to re-check, because messages published meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from portal.obs.metrics import WAITERS
from portal.scan.tickets import parse_event
from portal.stores import hashtags
from portal.stores.ratelimit import RateLimited

# Waiters (SSE streams, long polls) one ticket may have in one process. A page
# holds one, two while its EventSource reconnects; whoever has a ticket's
# secret must not hold thousands of connections with it.
MAX_PER_TICKET = 8
RETRY_AFTER_S = 5


class TooManyWaiters(RateLimited):
    def __init__(self, description: str = "") -> None:
        super().__init__(RETRY_AFTER_S)
        self.description = description or "This login is already followed by too many connections."


_PER_ADDRESS = "Too many connections from this address are waiting on logins."


class Waiter:
    """One browser waiting on one ticket.

    A bare future and a timer handle per wait, not a task: ten thousand
    idle waiters should cost memory for little more than their sockets.
    """

    __slots__ = ("_future", "_woken", "gone", "stopping")

    def __init__(self) -> None:
        self._future: asyncio.Future[bool] | None = None
        self._woken = False
        self.gone = False  # set by whoever notices the client went away
        self.stopping = False  # the process is stopping: answer now, end the stream

    def wake(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(True)
        else:
            self._woken = True  # remembered for the next wait

    async def wait(self, timeout: float) -> bool:
        """True when woken, False when ``timeout`` passed first."""
        if self._woken:
            self._woken = False
            return True
        loop = asyncio.get_running_loop()
        future = self._future = loop.create_future()
        timer = loop.call_later(max(timeout, 0), _expire, future)
        try:
            return await future
        finally:
            timer.cancel()
            self._future = None


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class Waiters:
    """``max_per_address``: waiters one client IP may hold in this process, over
    every ticket (``PORTAL_WAITERS_PER_IP``; 0: no cap). The per-ticket cap alone
    let one address hold thousands of streams with hundreds of tickets (issue 16)."""

    def __init__(self, max_per_address: int = 0) -> None:
        self._by_ticket: dict[str, set[Waiter]] = {}
        self._by_address: dict[str, int] = {}
        self.max_per_address = max_per_address
        self.draining = False

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_ticket.values())

    @property
    def tickets(self) -> int:
        return len(self._by_ticket)

    @contextlib.contextmanager
    def watch(self, ticket: str, address: str = "") -> Iterator[Waiter]:
        """Register *before* reading the ticket, so no change slips in between.
        ``TooManyWaiters`` (429) when the ticket has ``MAX_PER_TICKET`` already,
        or ``address`` (the client IP) ``max_per_address``."""
        group = self._by_ticket.get(ticket)
        if group is not None and len(group) >= MAX_PER_TICKET:
            raise TooManyWaiters()
        held = self._by_address.get(address, 0)
        if self.max_per_address > 0 and held >= self.max_per_address:
            raise TooManyWaiters(_PER_ADDRESS)
        waiter = Waiter()
        if self.draining:  # a request that came in on a connection still open
            waiter.stopping = waiter._woken = True
        self._by_ticket.setdefault(ticket, set()).add(waiter)
        self._by_address[address] = held + 1
        WAITERS.inc()
        try:
            yield waiter
        finally:
            WAITERS.dec()
            left = self._by_address.get(address, 1) - 1
            if left > 0:
                self._by_address[address] = left
            else:
                self._by_address.pop(address, None)
            group = self._by_ticket.get(ticket)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._by_ticket[ticket]

    def handle_event(self, message: dict) -> None:
        parsed = parse_event(message)
        if parsed is None:
            return
        for waiter in self._by_ticket.get(parsed[0], ()):
            waiter.wake()

    def wake_all(self) -> None:
        for group in self._by_ticket.values():
            for waiter in group:
                waiter.wake()

    def wake_tag(self, tag: str) -> None:
        """Wake the waiters of one pool tag's tickets (a Redis Cluster's hub now
        hears that tag's channel: a change may have been missed before)."""
        for ticket, group in self._by_ticket.items():
            if hashtags.ticket_tag(ticket) == tag:
                for waiter in group:
                    waiter.wake()

    def drain(self) -> None:
        """The process is stopping: every waiter answers at once (a long poll with
        the current status; an SSE stream ends, and EventSource reconnects to
        another process) instead of holding the shutdown for its timeout."""
        self.draining = True
        for group in self._by_ticket.values():
            for waiter in group:
                waiter.stopping = True
                waiter.wake()
