"""What every hosted (async job) provider shares: submit, journal, poll, download (SPEC 4, 5).

An adapter implements three small methods: ``submit`` (one create request, returns the job id and
whatever polling needs), ``poll`` (one status request, returns a ``JobStatus``) and, if its files
need it, ``clip_urls``/``download``. This base turns them into ``generate``/``resume``:

- the job id reaches the journal (``on_job``) the moment the service returns it, and an intent
  record is written before the create is sent, so a crash in between is reported as ambiguous
  instead of silently paying twice;
- polling adapts to the latency this provider has shown in this build and to how full its rate
  window is: with requests to spare it polls every ``min_poll`` seconds once jobs are due; when
  requests are scarce it polls once near the slow end of the observed latencies;
- results are downloaded at once (URLs expire), size-bounded and checked to be audio.
"""
from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping

from ..clock import Clock
from ..errors import ProviderError
from ..model import Clip, Generation, ProviderConfig, TrackSpec
from .base import OnJob, Provider
from .http import AmbiguousCreate, ProviderHTTP, RateLimiter, create_sent, last_sent, retries

MAX_DOWNLOAD_BYTES = 512 * 2**20


class RemoteJobFailed(ProviderError):
    """The service ran the job and reports it failed: the journal entry is done with."""


@dataclass
class JobStatus:
    state: str  # "pending" | "done" | "failed"
    urls: list[str] = field(default_factory=list)
    error: str | None = None
    cost_usd: float | None = None  # actual charge if the service reports it


@dataclass
class Submitted:
    job_id: str
    poll: dict[str, Any] = field(default_factory=dict)  # extra state polling needs, journaled
    cost_usd: float | None = None  # charged at create (prepaid services)
    status: JobStatus | None = None  # set when the create answered with the finished result


class LatencyModel:
    """What this build has seen of one provider's job latency.

    Each finished job gives a bracket: it was last seen pending at ``lower`` seconds (0 if its
    first poll found it done) and was done at ``upper``. Only the most recent jobs count: the first
    ones learn with coarse polls and their loose brackets should age out.
    """

    RECENT = 32

    def __init__(self) -> None:
        self.brackets: collections.deque[tuple[float, float]] = collections.deque(maxlen=self.RECENT)

    def add(self, lower: float, upper: float) -> None:
        self.brackets.append((lower, upper))

    @staticmethod
    def _q(values: Iterable[float], q: float) -> float | None:
        s = sorted(values)
        return s[min(len(s) - 1, int(q * len(s)))] if s else None

    def early(self, step: float) -> float | None:
        """Hardly any job is done before then. Jobs found done at their first poll say nothing about
        how early they finished, so their upper bound minus a poll step caps the estimate: without
        it the estimate only ever grows (censoring) and quick jobs wait for slow ones' schedule."""
        if not self.brackets:
            return None
        uppers = self._q((hi for _, hi in self.brackets), 0.05) - step  # type: ignore[operator]
        seen = [lo for lo, _ in self.brackets if lo > 0]
        return max(0.0, min(uppers, self._q(seen, 0.05)) if len(seen) >= 3 else uppers / 2)

    def late(self) -> float | None:
        """Most jobs are done by then. Midpoints, because an upper bound is loose when a poll came
        late (rate limited); aiming too early is self-correcting: it observes a pending job."""
        return self._q(((lo + hi) / 2 for lo, hi in self.brackets), 0.8)


class HostedProvider(Provider):
    idempotent_create: ClassVar[bool] = False
    min_poll: ClassVar[float] = 1.0  # the service's minimum poll spacing (AIgateway: 3 s)

    def __init__(self, config: ProviderConfig, env: Mapping[str, str], client: Any = None,
                 clock: Clock | None = None, limiter: RateLimiter | None = None) -> None:
        super().__init__(config, env, client)
        self.clock = clock or Clock.from_env(env)
        self.limiter = limiter or RateLimiter(config.requests_per_minute, self.clock)
        self.latency = LatencyModel()
        self._sleeping: dict[int, float] = {}  # jobs waiting to poll -> when they were submitted
        self._last_early = -1e9
        self.bind(client)

    def bind(self, client: Any) -> None:
        self.client = client
        self.http = ProviderHTTP(self.config.name, self.type, self.config.base_url or "", self.config.api_key_env,
                                 self.env, self.limiter, client, self.clock)

    # -- what adapters implement -------------------------------------------------------------
    async def submit(self, spec: TrackSpec, gen_key: str) -> Submitted:
        raise NotImplementedError

    async def poll(self, job: Mapping[str, Any]) -> JobStatus:
        raise NotImplementedError

    def price_usd(self, spec: TrackSpec, status: JobStatus, submitted_cost: float | None) -> float:
        if status.cost_usd is not None:
            return status.cost_usd
        if submitted_cost is not None:
            return submitted_cost
        return self.estimate_cost(spec)

    # -- the job lifecycle -------------------------------------------------------------------
    async def generate(self, spec: TrackSpec, gen_key: str, on_job: OnJob,
                       on_remote_done: Callable[[float], None] = lambda cost: None) -> Generation:
        on_job({"state": "submitting"})
        create_sent.set(False)
        retries.set(0)
        try:
            submitted = await self.submit(spec, gen_key)
        except AmbiguousCreate:
            raise  # the intent stays journaled: the next build reports it instead of paying twice
        except ProviderError:
            on_job(None)  # the service answered "no" (or nothing was sent): nothing was started
            raise
        except BaseException:  # interrupted: keep the intent if the create may have left
            if not create_sent.get():
                on_job(None)
            raise
        job = {"state": "submitted", "job_id": submitted.job_id, "submitted_cost": submitted.cost_usd,
               "model": spec.model, **submitted.poll}
        on_job(job)
        if submitted.status is not None:  # a synchronous service answered with the result
            on_remote_done(self.price_usd(spec, submitted.status, submitted.cost_usd))
            return await self._collect(spec, job, submitted.status)
        return await self._finish(spec, job, on_remote_done, fresh=True)

    async def resume(self, spec: TrackSpec, gen_key: str, job: Mapping[str, Any],
                     on_remote_done: Callable[[float], None] = lambda cost: None) -> Generation:
        if job.get("state") != "submitted":
            if self.idempotent_create:  # the service deduplicates: sending again returns the same job
                return await self.generate(spec, gen_key, lambda entry: None, on_remote_done)
            raise AmbiguousCreate(
                f"an earlier build sent a create request to {self.name} for this track and was stopped "
                "before the answer arrived: it may have started a paid job. Check the provider's dashboard; "
                "`musicbuild build --force <track>` submits again")
        retries.set(0)
        return await self._finish(spec, dict(job), on_remote_done, fresh=False)

    async def _finish(self, spec: TrackSpec, job: dict[str, Any], on_remote_done: Callable[[float], None],
                      fresh: bool) -> Generation:
        try:
            status = await asyncio.wait_for(self._wait(job, fresh),
                                            timeout=self.config.timeout * self.clock.scale)
        except asyncio.TimeoutError:
            raise ProviderError(f"{self.name}: job {job['job_id']} not finished after {self.config.timeout:g} s; "
                                "it stays journaled and the next build resumes it", retryable=True) from None
        on_remote_done(self.price_usd(spec, status, job.get("submitted_cost")))
        return await self._collect(spec, job, status)

    async def _collect(self, spec: TrackSpec, job: Mapping[str, Any], status: JobStatus) -> Generation:
        if status.state == "failed":
            raise RemoteJobFailed(f"{self.name}: job {job['job_id']} failed: {status.error or 'no reason given'}")
        clips = [await self.fetch(url) for url in status.urls]
        if not clips:
            raise ProviderError(f"{self.name}: job {job['job_id']} finished without any audio")
        return Generation(clips=tuple(clips), provider=self.name, model=str(job.get("model", spec.model)),
                          job_id=str(job["job_id"]), cost_usd=self.price_usd(spec, status, job.get("submitted_cost")),
                          attempts=1 + retries.get())

    async def _wait(self, job: Mapping[str, Any], fresh: bool) -> JobStatus:
        start = self.clock.now()
        polls, last_pending, last_poll = 0, 0.0, None
        self._sleeping[id(job)] = start
        try:
            while True:
                delay = self.next_poll_delay(self.clock.now() - start, polls, last_poll)
                await self._sleep_until_due(id(job), start, delay)
                status = await self.poll(job)
                polls += 1
                elapsed = last_poll = last_sent.get() - start  # when the service looked, not when we heard back
                if status.state == "pending":
                    last_pending = elapsed
                    continue
                if fresh and status.state == "done":
                    self.latency.add(last_pending, elapsed)
                return status
        finally:
            self._sleeping.pop(id(job), None)

    async def _sleep_until_due(self, key: int, start: float, delay: float) -> None:
        """Sleep ``delay``, but poll early while the rate window is mostly idle and this is the
        oldest job waiting: a finished job nobody has asked about holds a concurrency slot, so
        spare requests are best spent on the job most likely done."""
        deadline = self.clock.now() + delay
        while (left := deadline - self.clock.now()) > 0:
            await self.clock.sleep(min(left, self.min_poll))
            idle = self.limiter.limit and self.limiter.pressure() < 0.9
            oldest = min(self._sleeping.values(), default=start) >= start
            if idle and oldest and self.clock.now() - self._last_early >= self.min_poll:
                self._last_early = self.clock.now()
                return

    def next_poll_delay(self, elapsed: float, polls: int, last_poll: float | None = None) -> float:
        """Seconds to wait before the next poll of a job submitted ``elapsed`` seconds ago whose
        previous poll was sent at ``last_poll``."""
        spacing = self.min_poll * 1.02  # the service measures from its answer: stay clear of its 304
        interval = max(self.min_poll, self.config.poll_interval)
        early, late = self.latency.early(self.min_poll), self.latency.late()
        if early is None or late is None:  # nothing learnt yet: back off x1.5 up to 30 s
            return max(self.min_poll, min(30.0, interval * 1.5 ** polls))
        soonest = elapsed if last_poll is None else last_poll + spacing
        if self.limiter.pressure() > 0.7:
            # requests are scarce: spend one poll near the slow end, then a few more if needed
            target = late if elapsed < late else max(soonest, elapsed + max(interval, (late - early) / 2))
        else:
            # requests to spare: a finished job holds a concurrency slot, so look often once due
            target = max(early, soonest)
        return max(soonest - elapsed, target - elapsed, 0.0)

    async def fetch(self, url: str) -> Clip:
        from ..audio.convert import sniff_format

        data = await self.http.download(url, MAX_DOWNLOAD_BYTES)
        fmt = sniff_format(data[:64])
        if fmt is None:
            raise ProviderError(f"{self.name}: the result file is not audio "
                                f"(starts with {data[:16]!r}); not stored")
        return Clip(data, fmt)
