"""The slots a track holds while it works: a CPU slot (renders and materialization) and a job's
global and provider slots, each released exactly once."""
from __future__ import annotations

import asyncio
from typing import Any


class CpuSlot:
    """A track's CPU slot: taken once (before a local render, or before materializing), released
    when the track's work ends, so rendered audio never waits in memory for a core."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore
        self.held = False

    async def acquire(self) -> None:
        if not self.held:
            await self.semaphore.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.semaphore.release()


class HeldSlots:
    """A global (-j) slot and a provider slot, released once: as soon as the service says the job
    is finished (downloads come from a CDN and do not count), or when the track's work ends."""

    def __init__(self, *pools: Any) -> None:
        self.pools = pools  # LocalSlots, or a fleet's leased slots
        self.held: list[tuple[Any, Any]] = []

    async def acquire(self) -> None:
        for pool in self.pools:
            token = await pool.acquire()
            self.held.append((pool, token))

    def release(self) -> None:
        while self.held:
            pool, token = self.held.pop()
            pool.release(token)
