"""Time as the scheduler sees it: real seconds, optionally scaled.

``MUSICBUILD_TIME_SCALE`` (real seconds per virtual second, default 1) shrinks every wait the
scheduler makes (poll intervals, Retry-After, backoff, the 60 s rate window, job timeouts) so tests
and benchmarks can run a 90 s job or a 30 requests/minute limit in milliseconds against emulators
that use the same scale. Network timeouts are not scaled.
"""
from __future__ import annotations

import asyncio
import time
from typing import Mapping


class Clock:
    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError("time scale must be > 0")
        self.scale = scale
        self._t0 = time.monotonic()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Clock":
        raw = env.get("MUSICBUILD_TIME_SCALE")
        return cls(float(raw)) if raw else cls()

    def now(self) -> float:
        """Virtual seconds since this clock was made."""
        return (time.monotonic() - self._t0) / self.scale

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds * self.scale)
