"""The sliding request window of one provider account (SPEC 5), apart from ``http.py`` so that a
build whose providers make no requests (the local synthesizer) never imports httpx, though every
build imports the fleet coordination that makes limiters."""
from __future__ import annotations

import asyncio
import collections

from ..clock import Clock

WINDOW = 60.0
WINDOW_MARGIN = 1.01  # clocks differ a little: keep clear of the service's window edge


class RateLimiter:
    """At most ``limit`` requests in any ``WINDOW`` seconds, as the *service* counts them, FIFO.

    The service sees a request somewhere between our taking a slot and our reading the answer, and
    an event loop busy with other work can widen that gap. So a slot counts from the moment its
    answer arrived (``release``), the latest the service can have seen it: then the request that
    reuses the slot is sent a full window after the service saw the one before, whatever the delays.
    """

    def __init__(self, limit: float, clock: Clock) -> None:
        self.limit = max(1, int(limit)) if limit < 1e8 else 0  # 0: unlimited
        self.clock = clock
        self.slots: collections.deque[list[float]] = collections.deque()  # [time, answered]
        self.blocked_until = 0.0
        self.waiting = 0
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()

    def pressure(self) -> float:
        """How full the window is (0..1+), counting requests waiting for a slot."""
        if not self.limit:
            return 0.0
        self._expire(self.clock.now())
        return (len(self.slots) + self.waiting) / self.limit

    def _expire(self, now: float) -> None:
        while self.slots and self.slots[0][1] and self.slots[0][0] <= now - WINDOW * WINDOW_MARGIN:
            self.slots.popleft()

    async def acquire(self) -> list[float]:
        """Wait for a slot; pass what it returns to ``release`` once the answer (or error) is in."""
        self.waiting += 1
        try:
            async with self._lock:
                while True:
                    now = self.clock.now()
                    self._expire(now)
                    wait = self.blocked_until - now
                    if self.limit and len(self.slots) >= self.limit:
                        oldest = self.slots[0]
                        wait = max(wait, oldest[0] + WINDOW * WINDOW_MARGIN - now if oldest[1] else 1.0)
                    if wait <= 0:
                        slot = [now, 0.0]
                        if self.limit:
                            self.slots.append(slot)
                        return slot
                    self._released.clear()
                    try:  # an answer arriving may free the oldest slot sooner
                        await asyncio.wait_for(self._released.wait(), wait * self.clock.scale)
                    except asyncio.TimeoutError:
                        pass
        finally:
            self.waiting -= 1

    def release(self, slot: list[float]) -> None:
        slot[0], slot[1] = self.clock.now(), 1.0
        self._released.set()

    def block(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, self.clock.now() + seconds)
