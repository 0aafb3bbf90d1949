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

from portal.scan.tickets import parse_event


class Waiter:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True when woken, False when ``timeout`` passed first."""
        if not self._event.is_set():
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except TimeoutError:
                return False
        self._event.clear()
        return True


class Waiters:
    def __init__(self) -> None:
        self._by_ticket: dict[str, set[Waiter]] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_ticket.values())

    @property
    def tickets(self) -> int:
        return len(self._by_ticket)

    @contextlib.contextmanager
    def watch(self, ticket: str) -> Iterator[Waiter]:
        """Register *before* reading the ticket, so no change slips in between."""
        waiter = Waiter()
        self._by_ticket.setdefault(ticket, set()).add(waiter)
        try:
            yield waiter
        finally:
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
