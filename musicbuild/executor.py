"""Run a plan: the only async part of musicbuild (SPEC 5).

Every track is one coroutine. Generations hold a global slot (``-j``) and a slot of their
provider (``max_concurrent``); CPU work runs in threads holding a CPU slot (one per core, at most
``-j``): materializing, and the ``local`` provider's rendering, which keeps its slot until its
outputs are written, so rendered audio never waits in memory for a slot.
A failure is a value (a failed ``Outcome``); without ``keep_going`` it stops new work from
starting, and tracks that never started are reported as skipped.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping, Protocol

from .cache import Cache
from .errors import MusicbuildError, ProviderAuthError, ProviderError
from .providers.http import DEFAULT_TIMEOUT
from .providers.hosted import RemoteJobFailed
from .materialize import TakeAudio, materialize
from .model import Action, Generation, Outcome, PlannedTrack
from .providers.base import Provider


class Reporter(Protocol):
    def plan_ready(self, planned: list[PlannedTrack]) -> None: ...
    def track_started(self, planned: PlannedTrack) -> None: ...
    def track_finished(self, planned: PlannedTrack, outcome: Outcome) -> None: ...


@dataclass(frozen=True)
class ExecOptions:
    jobs: int = 8
    keep_going: bool = False
    cpu_workers: int = max(1, os.cpu_count() or 1)
    max_cost: float | None = None


class Executor:
    def __init__(self, cache: Cache, providers: Mapping[str, Provider], options: ExecOptions,
                 reporter: Reporter) -> None:
        self.cache = cache
        self.providers = providers
        self.options = options
        self.reporter = reporter
        self.outcomes: dict[str, Outcome] = {}  # filled as tracks finish, readable after Ctrl-C

    async def run(self, planned: list[PlannedTrack]) -> list[Outcome]:
        self.stop = asyncio.Event()
        self.jobs = asyncio.Semaphore(max(1, self.options.jobs))
        self.cpu = asyncio.Semaphore(max(1, min(self.options.jobs, self.options.cpu_workers)))
        self.per_provider = {name: asyncio.Semaphore(p.config.max_concurrent) for name, p in self.providers.items()}
        self.blocked: dict[str, str] = {}  # provider name -> auth error message
        self.committed = 0.0  # USD spent or in flight, for --max-cost
        # one generation per generation key: tracks that differ only in id, format or tags share it
        self.shared: dict[str, asyncio.Event] = {}
        self.shared_records: dict[str, dict[str, Any]] = {}
        self.budget_stopped = False
        import httpx  # only builds that run need it

        async with httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, follow_redirects=True) as client:
            for provider in self.providers.values():
                provider.bind(client)
            await asyncio.gather(*(self._track(pt) for pt in planned))
        return [self.outcomes[pt.spec.id] for pt in planned]

    def _outcome(self, pt: PlannedTrack, status: str, **kw: Any) -> Outcome:
        outcome = Outcome(
            id=pt.spec.id, out=[o.output.rel for o in pt.outputs], action=pt.action, reasons=pt.reasons,
            status=status, gen_key=pt.gen_key, provider=pt.spec.provider.name, model=pt.spec.model, **kw)
        self.outcomes[pt.spec.id] = outcome
        self.reporter.track_finished(pt, outcome)
        return outcome

    async def _track(self, pt: PlannedTrack) -> None:
        if pt.action is Action.UP_TO_DATE:
            for po in pt.outputs:
                if po.restat:  # touched but unchanged: remember the new stat so the next check is cheap
                    record = self.cache.get_output(po.output.path) or {}
                    self.cache.put_output(po.output.path, {**record, "size": po.restat[0], "mtime_ns": po.restat[1]})
            self._outcome(pt, "ok", clips=len(pt.outputs))
            return
        if self.stop.is_set():
            self._outcome(pt, "skipped", error="not started: an earlier track failed (use -k to keep going)")
            return
        started = time.monotonic()
        generation: Generation | None = None
        cpu = _CpuSlot(self.cpu)
        blobs: dict[str, bytes] = {}
        try:
            record = None
            if pt.action in (Action.GENERATE, Action.RESUME) and pt.gen_key in self.shared:
                self.reporter.track_started(pt)
                record = await self._await_shared(pt.gen_key)  # another track pays for this spec
            elif pt.action in (Action.GENERATE, Action.RESUME):
                done = self.shared[pt.gen_key] = asyncio.Event()
                try:
                    generation = await self._generate(pt, cpu)
                    if generation is None:
                        return  # skipped while waiting for a slot
                    record = await asyncio.to_thread(self._store, pt, generation)
                    self.shared_records[pt.gen_key] = record
                    if cpu.held:  # materialized next, from the bytes in hand: no read-back
                        blobs = {c["sha256"]: clip.data for c, clip in zip(record["clips"], generation.clips)}
                    generation = replace(generation, clips=())  # cached now: hold no audio while waiting
                finally:
                    done.set()
            else:
                self.reporter.track_started(pt)
                record = self.cache.get_generation(pt.gen_key)
            written = []
            takes = TakeAudio(self.cache, record, blobs)
            await cpu.acquire()
            for po in pt.outputs:
                if po.state != "ok" or pt.action is not Action.MATERIALIZE:
                    written.append(await asyncio.to_thread(materialize, self.cache, pt.spec, pt.gen_key, record, po, takes))
            self._outcome(pt, "ok", clips=len(record["clips"]), seconds=round(time.monotonic() - started, 3),
                          cost_usd=generation.cost_usd if generation else 0.0,
                          attempts=generation.attempts if generation else 0,
                          job_id=generation.job_id if generation else record.get("job_id"),
                          extra=_delivery_facts(written))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a track's failure is a value, whatever raised it
            if isinstance(exc, RemoteJobFailed):
                self.cache.clear_job(pt.gen_key)  # the service finished it (unpaid): a later build may retry
            message = exc.message if isinstance(exc, MusicbuildError) else f"internal error: {type(exc).__name__}: {exc}"
            if isinstance(exc, ProviderAuthError):
                self.blocked[pt.spec.provider.name] = message
            if not self.options.keep_going:
                self.stop.set()
            self._outcome(pt, "failed", error=message, seconds=round(time.monotonic() - started, 3),
                          cost_usd=generation.cost_usd if generation else 0.0,
                          attempts=generation.attempts if generation else 0)
        finally:
            cpu.release()

    async def _generate(self, pt: PlannedTrack, cpu: "_CpuSlot") -> Generation | None:
        name = pt.spec.provider.name
        provider = self.providers[name]
        slots = _Slots(self.jobs, self.per_provider[name])
        await slots.acquire()
        try:
            if self.stop.is_set():
                self._outcome(pt, "skipped", error="not started: an earlier track failed (use -k to keep going)")
                return None
            if name in self.blocked:
                raise ProviderAuthError(self.blocked[name])
            if pt.spec.provider.type == "local":
                await cpu.acquire()  # renders in-process: CPU work (taken after the job slots: no lock-order cycle)
            self.reporter.track_started(pt)
            if pt.action is Action.RESUME:
                job = self.cache.pending_job(pt.gen_key) or {}
                return await provider.resume(pt.spec, pt.gen_key, job, on_remote_done=lambda cost: slots.release())
            budget = self.options.max_cost
            if budget is not None and self.committed + pt.est_cost_usd > budget + 1e-9:
                self.budget_stopped = True
                self._outcome(pt, "skipped", error=f"not submitted: it would take spending past --max-cost ${budget:.2f}")
                return None
            self.committed += pt.est_cost_usd
            charged: list[float] = []

            def remote_done(cost_usd: float) -> None:
                # count the real charge before the slot goes to the next track's budget check
                if not charged:
                    charged.append(cost_usd)
                    self.committed += cost_usd - pt.est_cost_usd
                slots.release()

            def journal(entry: dict[str, Any] | None) -> None:
                if entry is None:
                    self.cache.clear_job(pt.gen_key)
                else:
                    self.cache.record_job(pt.gen_key, {"provider": name, "type": provider.type, **entry})

            try:
                generation = await provider.generate(pt.spec, pt.gen_key, journal, on_remote_done=remote_done)
            except BaseException:
                self.committed -= charged[0] if charged else pt.est_cost_usd
                raise
            self.committed += generation.cost_usd - (charged[0] if charged else pt.est_cost_usd)
            return generation
        finally:
            slots.release()

    async def _await_shared(self, gen_key: str) -> dict[str, Any]:
        await self.shared[gen_key].wait()
        record = self.shared_records.get(gen_key)
        if record is None:
            raise ProviderError("not generated: the track with the same generation spec failed or was skipped")
        return record

    def _store(self, pt: PlannedTrack, generation: Generation) -> dict[str, Any]:
        provenance = {"provider": generation.provider, "model": generation.model, "job_id": generation.job_id,
                      "seed": pt.spec.seed, "cost_usd": generation.cost_usd, "track": pt.spec.id}
        return self.cache.put_generation(pt.gen_key, [(c.data, c.format) for c in generation.clips], provenance)


class _CpuSlot:
    """A track's CPU slot: taken once (before a local render, or before materializing), released
    when the track's work ends."""

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


class _Slots:
    """A global (-j) slot and a provider slot, released once: as soon as the service says the job
    is finished (downloads come from a CDN and do not count), or when the track's work ends."""

    def __init__(self, *semaphores: asyncio.Semaphore) -> None:
        self.semaphores = semaphores
        self.held: list[asyncio.Semaphore] = []

    async def acquire(self) -> None:
        for sem in self.semaphores:
            await sem.acquire()
            self.held.append(sem)

    def release(self) -> None:
        while self.held:
            self.held.pop().release()


def _delivery_facts(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What materializing decided and measured, for the report: takes and loudness."""
    facts: dict[str, Any] = {}
    if records:
        facts["takes"] = [r.get("clip", 1) for r in records]
    measured = [r for r in records if r.get("loudness_lufs") is not None]
    if measured:
        facts["loudness_lufs"] = round(measured[0]["loudness_lufs"], 2)
        facts["true_peak_db"] = round(measured[0]["true_peak_db"], 2)
    return facts
