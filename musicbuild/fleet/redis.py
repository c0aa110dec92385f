"""A fleet on one Redis (or Valkey) server: the request window, job slots, claims and the journal.

Keys (``mb:`` prefix; an account is ``fleet.account_id``: type + hash of base URL and key):

    mb:rate:<account>        sorted set: pyrate-limiter's sliding-window log of requests (fleet-wide)
    mb:block:<account>       set while the service asked the fleet to wait (429 Retry-After)
    mb:slots:<account>       sorted set: leased job slots (member = token, score = lease expiry, ms)
    mb:claim:<gen_key>       redis-py lock: the worker generating that key, leased and renewed
    mb:done:<gen_key>        its audio reached the shared cache (or ``failed:<message>``), short-lived
    mb:jr:<gen_key>          hash attempt -> journal record (JSON): the shared journal
    mb:worker:<id>           a live worker's heartbeat (its share of the limits if Redis goes away)
    mb:lat:<account>         the latest job latencies the fleet observed (each worker polls with them)

Leases (claims, slots, heartbeats) last ``MUSICBUILD_LEASE_SECONDS`` (default 30, scaled with
``MUSICBUILD_TIME_SCALE``) and are renewed every third of that, so a dead worker's slots and
claims come back within one lease. When Redis cannot be reached (at start or mid-build) the worker
warns and falls back to what is safe on its own: its share of every limit (divided by the workers
it last saw), the keys it already claimed, and no new claims; nothing is ever created twice.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from typing import Any, Mapping

from ..clock import Clock
from ..model import ProviderConfig
from ..providers.polling import LatencyModel
from ..providers.ratelimit import WINDOW, WINDOW_MARGIN, RateLimiter
from ..remote import _display_url
from . import Claim, LocalSlots, account_id

LEASE_ENV = "MUSICBUILD_LEASE_SECONDS"
SLOT_WAIT = 0.05  # real seconds between tries for a fleet job slot
ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
return 0
"""


def _errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError, asyncio.TimeoutError)


class RedisCoordination:
    def __init__(self, url: str, *, clock: Clock, fallback_mirror: Any = None, lease: float | None = None) -> None:
        self.url = url
        self.display = _display_url(url)
        self.clock = clock
        seconds = float(os.environ.get(LEASE_ENV) or 30.0) if lease is None else lease
        self.lease = max(0.2, seconds * clock.scale)  # real seconds
        self.worker = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.warnings: list[str] = []
        self.down = False
        self.workers_seen = 1
        self.mirror = RedisMirror(url, self)
        self._fallback_mirror = fallback_mirror
        self._claims: dict[str, Any] = {}  # gen_key -> redis-py async Lock
        self._slots: dict[str, tuple[str, int]] = {}  # token -> (key, max)
        self._limiters: dict[str, RedisLimiter] = {}
        self._slot_objs: dict[str, RedisSlots] = {}
        self._renewer: asyncio.Task[None] | None = None
        self.r: Any = None

    # -- life -------------------------------------------------------------------------------
    async def start(self) -> None:
        import redis.asyncio as aredis

        self.r = aredis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2, decode_responses=True)
        try:
            await self.r.ping()
            await self._heartbeat()
        except _errors() as exc:
            self.lost(exc)
            return
        self._renewer = asyncio.create_task(self._renew_forever())

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        if not self.down and self.r is not None:
            try:
                for gen_key in list(self._claims):
                    await self._release_claim(gen_key)
                await self.r.delete(f"mb:worker:{self.worker}")
            except _errors():
                pass
        if self.r is not None:
            await self.r.aclose()

    def lost(self, exc: BaseException) -> None:
        """Redis went away: warn once and go on with what is safe alone."""
        if self.down:
            return
        self.down = True
        self.mirror.enabled = False
        self.warnings.append(
            f"the coordinator {self.display} is unreachable ({type(exc).__name__}: {exc}); this worker goes on "
            f"alone: 1/{self.workers_seen} of each provider's limits, only the tracks it had claimed, no new claims")

    async def _heartbeat(self) -> None:
        ms = int(self.lease * 1000)
        await self.r.set(f"mb:worker:{self.worker}", "1", px=ms)
        count = 0
        async for _ in self.r.scan_iter(match="mb:worker:*", count=200):
            count += 1
        self.workers_seen = max(self.workers_seen, count)

    async def _renew_forever(self) -> None:
        while not self.down:
            await asyncio.sleep(self.lease / 3)
            try:
                await self._heartbeat()
                ms = int(self.lease * 1000)
                expiry = int(time.time() * 1000) + ms
                for token, (key, _) in list(self._slots.items()):
                    await self.r.zadd(key, {token: expiry}, xx=True)
                await self._renew_claims()
            except _errors() as exc:
                self.lost(exc)

    async def _renew_claims(self) -> None:
        from redis.exceptions import LockError

        for gen_key, lock in list(self._claims.items()):
            try:
                await lock.extend(self.lease, replace_ttl=True)
            except LockError:  # released meanwhile, or expired: `still_mine` says so before any create
                if self._claims.get(gen_key) is lock and not await lock.owned():
                    self._claims.pop(gen_key, None)

    # -- limits -----------------------------------------------------------------------------
    def limiter(self, cfg: ProviderConfig, clock: Clock, env: Mapping[str, str]) -> "RedisLimiter":
        account = account_id(cfg, env)
        if account not in self._limiters:
            self._limiters[account] = RedisLimiter(self, account, cfg.requests_per_minute, clock)
        return self._limiters[account]

    def latency_model(self, cfg: ProviderConfig, env: Mapping[str, str]) -> LatencyModel:
        return FleetLatency(self, account_id(cfg, env))

    def slots(self, cfg: ProviderConfig, env: Mapping[str, str]) -> "RedisSlots":
        account = account_id(cfg, env)
        if account not in self._slot_objs:
            self._slot_objs[account] = RedisSlots(self, account, cfg.max_concurrent)
        return self._slot_objs[account]

    # -- claims -----------------------------------------------------------------------------
    async def claim(self, gen_key: str) -> Claim:
        if gen_key in self._claims:
            return Claim("mine")
        if self.down:
            return Claim("unavailable")
        try:
            done = await self.r.get(f"mb:done:{gen_key}")
            if done and done.startswith("failed:"):
                return Claim("failed", done[7:])
            if done:  # its worker put the audio in the shared cache
                return Claim("taken", "done")
            lock = self.r.lock(f"mb:claim:{gen_key}", timeout=self.lease, blocking=False)
            if await lock.acquire(token=self.worker):
                self._claims[gen_key] = lock
                return Claim("mine")
            return Claim("taken")
        except _errors() as exc:
            self.lost(exc)
            return Claim("unavailable")

    async def still_mine(self, gen_key: str) -> bool:
        lock = self._claims.get(gen_key)
        if lock is None:
            return False
        if self.down:
            return True  # nobody can take it while Redis is away
        try:
            return bool(await lock.owned())
        except _errors() as exc:
            self.lost(exc)
            return True

    async def finish(self, gen_key: str, error: str | None = None) -> None:
        if gen_key not in self._claims or self.down:
            self._claims.pop(gen_key, None)
            return
        try:
            value = "ok" if error is None else "failed:" + error[:500]
            await self.r.set(f"mb:done:{gen_key}", value, px=int(self.lease * 1000) * 4)
            await self._release_claim(gen_key)
        except _errors() as exc:
            self.lost(exc)

    async def _release_claim(self, gen_key: str) -> None:
        from redis.exceptions import LockError

        lock = self._claims.pop(gen_key, None)
        if lock is not None:
            try:
                await lock.release()
            except LockError:  # expired meanwhile: nothing to release
                pass


class RedisLimiter:
    """The fleet-wide request window of one account (pyrate-limiter's Redis sliding-window log),
    with the 429 back-off shared by the fleet; a local share of the limit when Redis is away."""

    def __init__(self, coord: RedisCoordination, account: str, rpm: float, clock: Clock) -> None:
        self.coord, self.account, self.clock = coord, account, clock
        self.limit = max(1, int(rpm)) if rpm < 1e8 else 0
        self.window_ms = int(WINDOW * WINDOW_MARGIN * clock.scale * 1000)
        self._bucket: Any = None
        self._fallback: RateLimiter | None = None
        self._count = 0

    def _local(self) -> RateLimiter:
        if self._fallback is None:
            self._fallback = RateLimiter((self.limit or 1e9) / max(1, self.coord.workers_seen), self.clock)
            if self.limit:  # the fleet's requests of the last window are unknown now: let them age out first
                self._fallback.block(WINDOW * WINDOW_MARGIN)
        return self._fallback

    async def acquire(self) -> Any:
        if self.coord.down or not self.limit:
            return ("local", await self._local().acquire())
        from pyrate_limiter import Rate, RateItem, RedisBucket

        try:
            if self._bucket is None:
                self._bucket = await RedisBucket.init([Rate(self.limit, max(1, self.window_ms))], self.coord.r,
                                                      f"mb:rate:{self.account}")
            while True:
                blocked = await self.coord.r.pttl(f"mb:block:{self.account}")
                if blocked and blocked > 0:
                    await asyncio.sleep(blocked / 1000)
                    continue
                now = int(time.time() * 1000)
                name = f"{self.coord.worker}-{uuid.uuid4().hex[:10]}"
                decision = await self._bucket.put_decision(RateItem(name, now))
                if decision.failing_rate is None:
                    self._count = await self.coord.r.zcount(f"mb:rate:{self.account}", now - self.window_ms, now)
                    if self._count > 4 * self.limit:  # keep the log short
                        await self.coord.r.zremrangebyscore(f"mb:rate:{self.account}", 0, now - self.window_ms)
                    return ("fleet", name)
                wait_ms = decision.retry_after_ms if decision.retry_after_ms and decision.retry_after_ms > 0 else 50
                await asyncio.sleep(min(wait_ms, self.window_ms) / 1000)
        except _errors() as exc:
            self.coord.lost(exc)
            return ("local", await self._local().acquire())

    def release(self, slot: Any) -> None:
        """The answer is in: the request counts from now, the latest the service can have seen it
        (as ``RateLimiter`` does), so delays before it arrived never squeeze one more into a window."""
        kind, inner = slot
        if kind == "local":
            self._local().release(inner)
            return
        if self.coord.down:
            return

        async def restamp() -> None:  # pyrate-limiter names the log entry "<item name>:<id>:<n>"
            key = f"mb:rate:{self.account}"
            try:
                async for member, _ in self.coord.r.zscan_iter(key, match=f"{inner}:*", count=500):
                    await self.coord.r.zadd(key, {member: int(time.time() * 1000)}, xx=True)
            except _errors() as exc:
                self.coord.lost(exc)

        asyncio.get_running_loop().create_task(restamp())

    def block(self, seconds: float) -> None:
        self._local().block(seconds)
        if self.coord.down:
            return
        ms = max(1, int(seconds * self.clock.scale * 1000))

        async def tell_the_fleet() -> None:
            try:
                await self.coord.r.set(f"mb:block:{self.account}", "1", px=ms)
            except _errors() as exc:
                self.coord.lost(exc)

        asyncio.get_running_loop().create_task(tell_the_fleet())

    def pressure(self) -> float:
        if self.coord.down or not self.limit:
            return self._local().pressure()
        return self._count / self.limit


class FleetLatency(LatencyModel):
    """What the whole fleet has seen of an account's job latency: every worker's finished jobs
    are pushed to Redis and read back, so a worker's first polls use the fleet's experience."""

    def __init__(self, coord: RedisCoordination, account: str) -> None:
        super().__init__()
        self.coord, self.key = coord, f"mb:lat:{account}"
        if not coord.down:
            asyncio.get_running_loop().create_task(self._share(None))

    def add(self, lower: float, upper: float) -> None:
        super().add(lower, upper)
        if not self.coord.down:
            asyncio.get_running_loop().create_task(self._share((lower, upper)))

    async def _share(self, bracket: tuple[float, float] | None) -> None:
        try:
            if bracket is not None:
                await self.coord.r.lpush(self.key, json.dumps(bracket))
                await self.coord.r.ltrim(self.key, 0, self.RECENT - 1)
            seen = await self.coord.r.lrange(self.key, 0, self.RECENT - 1)
        except _errors() as exc:
            self.coord.lost(exc)
            return
        brackets = [tuple(json.loads(b)) for b in reversed(seen)]
        if brackets:
            self.brackets.clear()
            self.brackets.extend(brackets)  # type: ignore[arg-type]


class RedisSlots:
    """``max_concurrent`` for the whole fleet: leased slots in a sorted set; a local share when
    Redis is away."""

    def __init__(self, coord: RedisCoordination, account: str, limit: int) -> None:
        self.coord, self.key, self.limit = coord, f"mb:slots:{account}", max(1, limit)
        self._local: LocalSlots | None = None

    def _fallback(self) -> LocalSlots:
        if self._local is None:
            self._local = LocalSlots(max(1, self.limit // max(1, self.coord.workers_seen)))
        return self._local

    async def acquire(self) -> Any:
        while not self.coord.down:
            token = f"{self.coord.worker}:{uuid.uuid4().hex[:8]}"
            now = int(time.time() * 1000)
            try:
                ok = await self.coord.r.eval(ACQUIRE_SLOT, 1, self.key, now, now + int(self.coord.lease * 1000),
                                             token, self.limit)
            except _errors() as exc:
                self.coord.lost(exc)
                break
            if ok:
                self.coord._slots[token] = (self.key, self.limit)
                return token
            await asyncio.sleep(SLOT_WAIT)
        await self._fallback().acquire()
        return None

    def release(self, token: Any) -> None:
        if token is None:
            self._fallback().release(None)
            return
        self.coord._slots.pop(token, None)
        if self.coord.down:
            return

        async def free() -> None:
            try:
                await self.coord.r.zrem(self.key, token)
            except _errors() as exc:
                self.coord.lost(exc)

        asyncio.get_running_loop().create_task(free())


class RedisMirror:
    """The shared journal in Redis (``mb:jr:<gen_key>``), written synchronously: the intent must be
    in the fleet's journal before a create may leave."""

    def __init__(self, url: str, coord: RedisCoordination) -> None:
        self.url, self.coord = url, coord
        self.display = coord.display
        self.enabled = True
        self._r: Any = None

    def _client(self) -> Any:
        if self._r is None:
            import redis

            self._r = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2, decode_responses=True)
        return self._r

    def put(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            self._client().hset(f"mb:jr:{record['gen_key']}", str(record["attempt"]),
                                json.dumps(dict(record), sort_keys=True, separators=(",", ":")))
        except _errors() as exc:
            self.coord.lost(exc)

    def get(self, gen_key: str) -> list[dict[str, Any]]:
        if not self.enabled:
            return []
        try:
            values = self._client().hgetall(f"mb:jr:{gen_key}")
        except _errors() as exc:
            self.coord.lost(exc)
            return []
        out = []
        for raw in values.values():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out
