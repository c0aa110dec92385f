"""What every hosted (async job) provider shares: create, poll, download, and the charge (SPEC 4, 5).

An adapter implements ``submit`` (one create request: the job id and what polling needs), ``poll``
(one status request: a ``JobStatus``) and, where its prices or files need it, ``charge``. This base
runs a job through the journal's state machine (``journal.py``) via the ``JobHandle`` it is given:

- a create is sent only for a fresh ``intent`` (or, on a service that deduplicates, again for an
  ``ambiguous`` one, with the same idempotency key); the HTTP layer marks it ``sent`` just before
  it leaves; once it may have left, only the service's own refusal (a 4xx) makes it ``refused``:
  no answer, a 5xx, or an answer the adapter cannot read leaves it ``ambiguous``, never re-sent;
- polling adapts to the latency this provider has shown in this build and to how full its rate
  window is; states a service adds that we do not know are "still running" until the timeout;
  a job the service answers 404 for is ``gone``;
- results are downloaded at once (URLs expire), size-bounded and checked to be audio; a part that
  was delivered is kept when another part failed;
- the charge is the service's own figure, else the delivered audio's measured length at the
  service's price, never the length that was asked for.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from ..clock import Clock
from ..errors import AmbiguousCreate, JobGone, ProviderAuthError, ProviderError, RemoteJobFailed
from ..model import Clip, Generation, ProviderConfig, TrackSpec
from .base import JobHandle, JobRecordView, Provider
from .catalog import cost_of, price_for
from .http import ProviderHTTP, create_hook, last_sent, retries
from .ratelimit import RateLimiter
from .polling import LatencyModel, best_schedule, learning_delay

MAX_DOWNLOAD_BYTES = 512 * 2**20
POLL_ERRORS = 4  # unreadable or failing polls in a row before the track gives up (the job stays journaled)
GONE_AFTER = 2  # 404s in a row before a job counts as gone (one could be a routing hiccup)
QUEUED = frozenset({"queued", "received", "pending"})  # services' words for a job not started yet


@dataclass
class JobStatus:
    state: str  # "pending" | "done" | "failed" | "gone"
    urls: list[str] = field(default_factory=list)
    error: str | None = None
    charged_usd: float | None = None  # net charge, when the service states it (billed)
    refunded_usd: float | None = None
    clip_seconds: list[float] | None = None  # lengths the service reports for ``urls``
    partial: Mapping[str, Any] | None = None  # some clips failed: expected, delivered, errors
    poll: Mapping[str, Any] | None = None  # new polling state to journal
    prefetched: dict[str, bytes] = field(default_factory=dict)  # url -> bytes polling already fetched
    stage: str | None = None  # the service's own word for a pending job (queued, running, ...), for display


@dataclass
class Submitted:
    job_id: str
    poll: dict[str, Any] = field(default_factory=dict)  # extra state polling needs, journaled
    charged_usd: float | None = None  # charged at create (prepaid services)
    status: JobStatus | None = None  # set when the create answered with the finished result


class HostedProvider(Provider):
    min_poll: ClassVar[float] = 1.0  # the service's minimum poll spacing (AIgateway: 3 s)
    refreshes_urls: ClassVar[bool] = False  # polling a finished job again yields fresh file URLs

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

    def idempotency_key(self, gen_key: str, attempt: int) -> str | None:
        # one key per deliberate attempt, journaled before it is sent: a lost answer is re-sent with
        # the same key (deduplicated), a --force or a retry after a failure gets a new one
        return f"mb-{gen_key[:40]}-{attempt}" if self.idempotent_create else None

    # -- what adapters implement -------------------------------------------------------------
    async def submit(self, spec: TrackSpec, key: str | None) -> Submitted:
        raise NotImplementedError

    async def poll(self, job: Mapping[str, Any]) -> JobStatus:
        """One status request; ``job`` is the journaled job id, model and polling state."""
        raise NotImplementedError

    def charge(self, job: JobRecordView, status: JobStatus, clips: list[Clip] | None) -> tuple[float, str] | None:
        """(net USD, basis) for a finished job: the service's figure (``billed``), else the delivered
        length at the price (``measured``: the lengths the service reports, else the audio measured),
        else the flat price (``price``). None while it needs ``clips`` that are not downloaded yet."""
        if status.charged_usd is not None:
            return round(status.charged_usd - (status.refunded_usd or 0.0), 6), "billed"
        if job.charged_usd is not None:  # charged at create (prepaid)
            return round(job.charged_usd, 6), "billed"
        price = self.config.price or price_for(self.type, job.model)
        if not (price.get("usd_per_second") or price.get("usd_per_minute")):
            count = len(clips) if clips is not None else len(status.urls)
            return cost_of(price, [0.0] * count), "price"
        seconds = status.clip_seconds
        if seconds is None or len(seconds) != len(status.urls):
            if clips is None:
                return None
            from ..audio.probe import audio_seconds

            seconds = [audio_seconds(c.data) for c in clips]
        return cost_of(price, seconds), "measured"

    # -- the job lifecycle -------------------------------------------------------------------
    async def generate(self, spec: TrackSpec, job: JobHandle) -> Generation:
        retries.set(0)
        state = job.record.state
        status = None
        if state == "intent" or (state == "ambiguous" and self.idempotent_create):
            status = await self._create(spec, job)
        return await self._finish(job, status, fresh=state == "intent")

    async def collect(self, job: JobHandle) -> Generation:
        retries.set(0)
        return await self._finish(job, None, fresh=False)

    async def _create(self, spec: TrackSpec, job: JobHandle) -> JobStatus | None:
        job.progress("submitting")
        token = create_hook.set(job.sent)
        try:
            submitted = await self.submit(spec, job.record.key)
        except ProviderError as exc:
            if exc.refused:  # the service's own "no": nothing was created
                job.refused(exc.message)
                raise
            raise self._unanswered(job, exc.message) from None
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            self._unanswered(job, "the build was interrupted before the answer was read")
            raise
        except Exception as exc:  # an answer the adapter cannot read is no "no"
            raise self._unanswered(job, f"unreadable answer ({type(exc).__name__})") from None
        finally:
            create_hook.reset(token)
        job.submitted(submitted.job_id, submitted.poll, submitted.charged_usd)
        return submitted.status

    def _unanswered(self, job: JobHandle, reason: str) -> ProviderError:
        """Journal a create that got no readable answer; the error to report for it."""
        state = job.record.state
        if state == "intent":  # never left: provably nothing was created
            job.refused(f"not sent: {reason}")
            return ProviderError(f"{self.name}: the create request was not sent ({reason})", retryable=True)
        if state == "sent":
            job.ambiguous(reason)
        return AmbiguousCreate(self._ambiguous_message(reason))

    def _ambiguous_message(self, reason: str) -> str:
        if self.idempotent_create:
            return (f"{self.name}: the create request got no readable answer ({reason}); the next build sends it "
                    "again with the same Idempotency-Key, which the service deduplicates")
        return (f"{self.name}: the create request may have started a paid job but got no readable answer "
                f"({reason}), so it is not re-sent. Check the provider's dashboard; "
                "`musicbuild build --force <track>` submits again")

    async def _finish(self, job: JobHandle, status: JobStatus | None, fresh: bool) -> Generation:
        rec = job.record
        if rec.state == "ambiguous":
            raise AmbiguousCreate(self._ambiguous_message(rec.error or "an earlier build"))
        if rec.state == "gone":
            raise JobGone(self._gone_message(rec.job_id))
        if status is None:
            status = await self._wait_with_timeout(job, fresh)
        if status.state == "gone":
            message = self._gone_message(rec.job_id)
            job.gone(message)
            raise JobGone(message)
        if status.state == "failed":
            job.failed(status.error or "no reason given", status.charged_usd, status.refunded_usd)
            raise RemoteJobFailed(f"{self.name}: job {rec.job_id} failed: {status.error or 'no reason given'}")
        # the charge goes with "done" when it is known without the audio: the job's slot (and the
        # budget of the next create) is freed with what this one really cost
        known = self.charge(job.record, status, None)
        if known is not None:
            job.done(status.poll, *known)
        job.progress("downloading")
        clips = await self._download(job, status)
        if known is None:
            known = self.charge(job.record, status, clips)
            assert known is not None
            job.done(status.poll, *known)
        cost, basis = known
        return Generation(clips=tuple(clips), provider=self.name, model=job.record.model,
                          job_id=str(job.record.job_id), cost_usd=cost, attempts=1 + retries.get(),
                          cost_basis=basis, partial=status.partial)

    def _gone_message(self, job_id: str | None) -> str:
        return (f"{self.name}: the service no longer knows job {job_id} (404: past its retention); its audio cannot "
                "be collected. `musicbuild build --force <track>` generates it again")

    async def _wait_with_timeout(self, job: JobHandle, fresh: bool) -> JobStatus:
        try:
            return await asyncio.wait_for(self._wait(job, fresh), timeout=self.config.timeout * self.clock.scale)
        except asyncio.TimeoutError:
            raise ProviderError(f"{self.name}: job {job.record.job_id} not finished after {self.config.timeout:g} s; "
                                "it stays journaled and the next build resumes it", retryable=True) from None

    def _job_view(self, job: JobHandle) -> dict[str, Any]:
        rec = job.record
        return {**rec.poll, "job_id": rec.job_id, "model": rec.model}

    async def _download(self, job: JobHandle, status: JobStatus) -> list[Clip]:
        if not status.urls:
            raise ProviderError(f"{self.name}: job {job.record.job_id} finished without any audio", retryable=True)
        try:
            return [await self.fetch(url, status.prefetched.get(url)) for url in status.urls]
        except ProviderError as exc:
            if exc.status not in (403, 404, 410) or not self.refreshes_urls:
                raise
        # an expired signed URL: the finished job hands out a fresh one
        fresh = await self._wait_with_timeout(job, fresh=False)
        if fresh.state != "done":
            raise ProviderError(f"{self.name}: job {job.record.job_id} was finished but now reports {fresh.state}",
                                retryable=True)
        job.progress("downloading")
        return [await self.fetch(url, fresh.prefetched.get(url)) for url in fresh.urls]

    async def _wait(self, job: JobHandle, fresh: bool) -> JobStatus:
        start = self.clock.now()
        polls, last_pending, last_poll, errors, missing = 0, 0.0, None, 0, 0
        key = id(job)
        self._sleeping[key] = start
        job.progress("polling")
        try:
            while True:
                delay = self.next_poll_delay(self.clock.now() - start, polls, last_poll)
                await self._sleep_until_due(key, start, delay)
                try:
                    status = await self.poll(self._job_view(job))
                except ProviderAuthError:
                    raise  # 401/402 on a poll: the job stays journaled, the provider is stopped
                except ProviderError as exc:
                    missing = missing + 1 if exc.status == 404 else 0
                    if missing >= GONE_AFTER:
                        return JobStatus("gone", error=exc.message)
                    errors += 1
                    if errors >= POLL_ERRORS and exc.status != 404:
                        raise
                    polls += 1
                    continue
                errors = missing = 0
                polls += 1
                elapsed = last_poll = last_sent.get() - start  # when the service looked, not when we heard back
                if status.state == "pending":
                    if status.stage is not None:  # (a 304 says nothing new)
                        job.progress("queued" if status.stage.lower() in QUEUED else "polling")
                    if status.poll is not None:
                        job.update(status.poll)
                    last_pending = elapsed
                    continue
                if fresh and status.state == "done":
                    self.latency.add(last_pending, elapsed)
                return status
        finally:
            self._sleeping.pop(key, None)

    async def _sleep_until_due(self, key: int, start: float, delay: float) -> None:
        """Sleep ``delay``, but poll early while the rate window is clearly idle and this is the
        oldest job waiting: a finished job nobody has asked about holds a concurrency slot, so
        spare requests are best spent on the job most likely done."""
        deadline = self.clock.now() + delay
        while (left := deadline - self.clock.now()) > 0:
            await self.clock.sleep(min(left, self.min_poll))
            idle = self.limiter.limit and self.limiter.pressure() < 0.5 and len(self.latency.brackets) >= 3
            oldest = min(self._sleeping.values(), default=start) >= start
            if idle and oldest and self.clock.now() - self._last_early >= self.min_poll:
                self._last_early = self.clock.now()
                return

    def next_poll_delay(self, elapsed: float, polls: int, last_poll: float | None = None) -> float:
        """Seconds to wait before the next poll of a job submitted ``elapsed`` seconds ago whose
        previous poll was sent at ``last_poll`` (``polling.py`` chooses the schedule)."""
        spacing = self.min_poll * 1.02  # the service measures from its answer: stay clear of its 304
        soonest = elapsed if last_poll is None else last_poll + spacing
        schedule = best_schedule(self.latency.samples(), spacing, self.limiter.limit, self.config.max_concurrent)
        if schedule is None:
            return learning_delay(polls, spacing, self.config.poll_interval, plentiful=not self.limiter.limit)
        return max(soonest - elapsed, schedule.due(polls) - elapsed, 0.0)

    async def fetch(self, url: str, data: bytes | None = None) -> Clip:
        from ..audio.convert import sniff_format

        if data is None:
            data = await self.http.download(url, MAX_DOWNLOAD_BYTES)
        fmt = sniff_format(data[:64])
        if fmt is None:
            raise ProviderError(f"{self.name}: the result file is not audio "
                                f"(starts with {data[:16]!r}); not stored", retryable=True)
        return Clip(data, fmt)
