"""Run a plan: the only async part of musicbuild (SPEC 5).

Every track is one coroutine. A paid job holds a global slot (``-j``) and a slot of its provider
(``max_concurrent``) until the service says it finished; CPU-bound work (a free provider's
render, materialization) runs in threads, at most one per core and at most ``-j`` (so ``-j 1``
does one thing at a time). Where a track is goes to the reporter as ``track_state`` (news only).
A failure is a value (a failed ``Outcome``); without ``keep_going`` it stops new work from
starting, and tracks that never started are skipped.

Money: every paid job moves through the journal (``journal.py``) by a ``JournalJob`` handle (``jobs.py``), the
only code that changes a job's state. Before a new attempt is journaled the build looks at the
key's live job: a submitted one is collected first (also under ``--force``: it is paid, so its
audio is kept as an earlier take); an ``intent`` left by a dead build never left and is dropped;
a ``sent`` one is ambiguous; an ambiguous or gone one fails its track until ``--force`` moves on.
What this build spends is what its jobs were charged plus, for jobs it submitted whose charge is
not known yet, their estimate: that sum is the report's cost and what ``--max-cost`` bounds.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Protocol, Sequence

from .cache import Cache
from .fleet import Coordination, LocalCoordination, LocalSlots
from .errors import AmbiguousCreate, JobGone, MusicbuildError, ProviderAuthError, ProviderError, RemoteJobFailed
from .jobs import (FreeJob, JournalJob, Replayed, TrackMoney, check_delivered, from_record, orphans, reconcile,
                   settle, stuck_message)
from .journal import JobRecord, Journal
from .materialize import TakeAudio, materialize
from .model import Action, Generation, Outcome, PlannedTrack
from .providers.base import Provider
from .slots import CpuSlot, HeldSlots


class Reporter(Protocol):
    def plan_ready(self, planned: list[PlannedTrack], unchanged: Sequence[Any] = ()) -> None:
        """``unchanged``: tracks up to date without a plan (``cleanset.CleanTrack``), not run here."""
    def track_started(self, planned: PlannedTrack) -> None: ...
    def track_finished(self, planned: PlannedTrack, outcome: Outcome) -> None: ...
    def track_state(self, planned: PlannedTrack, state: str, detail: str | None = None) -> None:
        """Where a started track is now (news for the display, no effect on the build): ``waiting``
        (``detail``: ``cpu``, ``fleet`` another worker generates it, ``shared`` another track of this
        build does), ``generating`` (a free provider, in-process), a paid job's ``providers.base.STAGES``
        (``submitting``, ``queued``, ``polling``, ``downloading``), ``encoding`` (writing its outputs)."""


@dataclass(frozen=True)
class ExecOptions:
    jobs: int = 8
    keep_going: bool = False
    cpu_workers: int = max(1, os.cpu_count() or 1)
    max_cost: float | None = None
    force: bool = False
    collect_orphans: bool = True  # collect paid jobs no track of this plan needs any more
    # generation keys of tracks up to date without a plan (incremental.py): still needed, so a job
    # of theirs is no orphan (as in a plan of every track)
    unplanned_keys: frozenset[str] = frozenset()


UPLOAD_WAIT = 60.0  # seconds a claimed generation may take to reach the shared cache
CLAIM_WAIT = 0.5  # real seconds between looks at a key another worker claimed


class Executor:
    def __init__(self, cache: Cache, providers: Mapping[str, Provider], options: ExecOptions,
                 reporter: Reporter, coordination: Coordination | None = None, remote: Any = None) -> None:
        self.cache = cache
        self.providers = providers
        self.options = options
        self.reporter = reporter
        self.coord = coordination or LocalCoordination()
        self.remote = remote  # sync.SharedCache: where claimed generations are shared with the fleet
        self.outcomes: dict[str, Outcome] = {}  # filled as tracks finish, readable after Ctrl-C
        self.collected: list[dict[str, Any]] = []  # orphaned paid jobs this build collected
        self.from_fleet: set[str] = set()  # keys another worker generated; this one materialized them
        self.handles: list[JournalJob] = []
        self.began: dict[str, float] = {}  # track id -> when it started working (slots held)

    @property
    def journal(self) -> Journal:
        return self.cache.journal

    def spent(self) -> float:
        return sum(h.cost for h in self.handles)

    async def run(self, planned: list[PlannedTrack]) -> list[Outcome]:
        self.stop = asyncio.Event()
        self.jobs = LocalSlots(max(1, self.options.jobs))
        self.claimable = LocalSlots(max(1, self.options.jobs))
        self.cpu = asyncio.Semaphore(max(1, min(self.options.jobs, self.options.cpu_workers)))
        await self.coord.start()
        self.per_provider: dict[str, Any] = {}
        for name, p in self.providers.items():
            if p.paid:
                self.per_provider[name] = self.coord.slots(p.config, p.env)
                if hasattr(p, "limiter"):  # hosted: the (fleet-wide) request window of its account
                    p.limiter = self.coord.limiter(p.config, p.clock, p.env)  # type: ignore[attr-defined]
                    p.latency = self.coord.latency_model(p.config, p.env)  # type: ignore[attr-defined]
            else:
                self.per_provider[name] = LocalSlots(p.config.max_concurrent)
        self.blocked: dict[str, str] = {}  # provider name -> auth error message
        # one generation per generation key: tracks that differ only in id, format or tags share it
        self.shared: dict[str, asyncio.Event] = {}
        self.shared_records: dict[str, dict[str, Any]] = {}
        self.budget_stopped = False
        reconcile(self.journal, self.cache)
        try:
            async with _http_client(self.providers.values()) as client:
                for provider in self.providers.values():
                    provider.bind(client)
                leftover = (orphans(self.journal, self.providers, planned, self.options.unplanned_keys)
                            if self.options.collect_orphans else [])
                await asyncio.gather(*(self._track(pt) for pt in planned), *(self._orphan(r) for r in leftover))
        finally:
            await self.coord.close()
        return [self.outcomes[pt.spec.id] for pt in planned]

    def _outcome(self, pt: PlannedTrack, status: str, money: TrackMoney | None = None, **kw: Any) -> Outcome:
        outcome = Outcome(
            id=pt.spec.id, out=[o.output.rel for o in pt.outputs], action=pt.action, reasons=pt.reasons,
            status=status, gen_key=pt.gen_key, provider=pt.spec.provider.name, model=pt.spec.model,
            estimated_usd=pt.est_cost_usd, **(money.fields() if money else {}), **kw)
        self.outcomes[pt.spec.id] = outcome
        self.reporter.track_finished(pt, outcome)
        return outcome

    async def _track(self, pt: PlannedTrack) -> None:
        if pt.action is Action.UP_TO_DATE:
            for po in pt.outputs:
                if po.recovered is not None:  # the lock vouched for a file the cache forgot
                    self.cache.put_output(po.output.path, {**po.recovered, "track": pt.spec.id})
                elif po.restat:  # touched but unchanged: remember the new stat so the next check is cheap
                    record = self.cache.get_output(po.output.path) or {}
                    self.cache.put_output(po.output.path, {**record, "size": po.restat[0], "mtime_ns": po.restat[1]})
            self._outcome(pt, "ok", clips=len(pt.outputs))
            return
        if self.stop.is_set():
            self._outcome(pt, "skipped", error="not started: an earlier track failed (use -k to keep going)")
            return
        started = time.monotonic()
        money = TrackMoney()
        generation: Generation | None = None
        cpu = CpuSlot(self.cpu)
        blobs: dict[str, bytes] = {}
        try:
            if pt.action in (Action.GENERATE, Action.RESUME) and pt.gen_key in self.shared:
                self._started(pt)
                self.reporter.track_state(pt, "waiting", "shared")
                record = await self._await_shared(pt.gen_key)  # another track pays for this spec
            elif pt.action in (Action.GENERATE, Action.RESUME):
                done = self.shared[pt.gen_key] = asyncio.Event()
                try:
                    paid = await self._paid(pt, money, cpu)
                    if paid is None:
                        return  # skipped while waiting for a slot, or by the budget
                    generation, record = paid
                    self.shared_records[pt.gen_key] = record
                    if cpu.held and generation.clips:  # materialized next, from the bytes in hand: no read-back
                        blobs = {c["sha256"]: clip.data for c, clip in zip(record["clips"], generation.clips)}
                    generation = replace(generation, clips=())  # cached now: hold no audio while waiting
                finally:
                    done.set()
            else:
                self._started(pt)
                record = self.cache.get_generation(pt.gen_key)
                if record is None:
                    raise MusicbuildError("the cached generation disappeared; build again to fetch or generate it")
            written = []
            have = len(record["clips"])
            takes = TakeAudio(self.cache, record, blobs)
            await self._cpu_work(pt, cpu, "encoding")
            for po in pt.outputs:
                if pt.spec.clips == "all" and po.output.clip > have:
                    continue  # a clip the service did not deliver: said below
                if po.state != "ok" or pt.action is not Action.MATERIALIZE:
                    written.append(await asyncio.to_thread(materialize, self.cache, pt.spec, pt.gen_key, record, po,
                                                           takes))
            check_delivered(pt, record)
            extra = _delivery_facts(written)
            if generation is not None and generation.partial:
                extra["partial"] = dict(generation.partial)
            if pt.gen_key in self.from_fleet:  # generated by another worker: here it was only materialized
                pt = replace(pt, action=Action.MATERIALIZE)
                extra["generated_by"] = "another worker"
            self._outcome(pt, "ok", money, clips=len(record["clips"]), seconds=self._seconds(pt, started),
                          attempts=generation.attempts if generation else 0,
                          job_id=generation.job_id if generation else record.get("job_id"), extra=extra)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a track's failure is a value, whatever raised it
            message = exc.message if isinstance(exc, MusicbuildError) else f"internal error: {type(exc).__name__}: {exc}"
            if isinstance(exc, ProviderAuthError):
                self.blocked[pt.spec.provider.name] = message
            if not self.options.keep_going:
                self.stop.set()
            self._outcome(pt, "failed", money, error=message, seconds=self._seconds(pt, started),
                          attempts=generation.attempts if generation else 0)
        finally:
            cpu.release()

    def _started(self, pt: PlannedTrack) -> None:
        self.began.setdefault(pt.spec.id, time.monotonic())
        self.reporter.track_started(pt)

    def _seconds(self, pt: PlannedTrack, queued: float) -> float:
        """A track's time from when it started working (not from when it began waiting for a slot)."""
        return round(time.monotonic() - self.began.get(pt.spec.id, queued), 3)

    async def _cpu_work(self, pt: PlannedTrack, cpu: "CpuSlot | None", state: str) -> None:
        """Take the track's CPU slot (unless it holds it already), saying when it has to wait for one."""
        if cpu is not None and not cpu.held:
            if self.cpu.locked():
                self.reporter.track_state(pt, "waiting", "cpu")
            await cpu.acquire()
        self.reporter.track_state(pt, state)

    # -- paid work ---------------------------------------------------------------------------
    async def _paid(self, pt: PlannedTrack, money: TrackMoney,
                    cpu: "CpuSlot | None" = None) -> tuple[Generation, dict[str, Any]] | None:
        """The key's paid work, by the worker of the fleet that claims it (always us alone)."""
        provider = self.providers[pt.spec.provider.name]
        if not provider.paid:
            return await self._run(pt, provider, None, money, cpu=cpu)
        elsewhere = await self._claim(pt)
        if elsewhere is not False:
            return elsewhere  # another worker's generation (or None: skipped)
        try:  # claimed: its generation may have reached the shared cache since this build planned
            result = await self._from_shared_cache(pt.gen_key) if self.remote is not None else None
            result = result or await self._paid_here(pt, provider, money)
        except Exception as exc:
            await self.coord.finish(pt.gen_key, exc.message if isinstance(exc, MusicbuildError) else repr(exc))
            raise
        except BaseException:
            await asyncio.shield(self.coord.finish(pt.gen_key, "interrupted"))
            raise
        finally:
            self.claimable.release(None)
        await self.coord.finish(pt.gen_key, None if result is not None else "skipped")
        return result

    async def _claim(self, pt: PlannedTrack) -> tuple[Generation, dict[str, Any]] | None | bool:
        """False when the key is ours to work on; else wait for the worker that claimed it and
        return its generation from the shared cache (None: the track was skipped)."""
        announced = False
        while True:
            # a worker holds at most -j claims: the rest of the fleet takes the other keys
            await self.claimable.acquire()
            claim = await self.coord.claim(pt.gen_key)
            if claim.state == "mine":
                return False
            self.claimable.release(None)
            if claim.state == "unavailable":
                self._outcome(pt, "skipped", error="not claimed: the coordinator is unreachable, and another worker "
                                                   "may be generating it; a later build does it")
                return None
            if claim.state == "failed":
                raise ProviderError(f"another worker of the fleet generated this spec and it failed: {claim.detail}")
            if not announced:
                self._started(pt)
                self.reporter.track_state(pt, "waiting", "fleet")
                announced = True
            if claim.detail == "done":
                shared = await self._from_shared_cache(pt.gen_key)
                if shared is None:
                    raise ProviderError("another worker of the fleet generated this spec, but its audio is not in "
                                        "the shared cache; a later build fetches it")
                return shared
            await asyncio.sleep(CLAIM_WAIT)

    async def _from_shared_cache(self, gen_key: str) -> tuple[Generation, dict[str, Any]] | None:
        """Another worker's generation of this key, fetched from the shared cache (None if absent)."""
        if self.remote is None:
            return None
        found = await asyncio.to_thread(self.remote.fill, [gen_key])
        record = self.cache.get_generation(gen_key) if found else None
        if record is None:
            return None
        self.from_fleet.add(gen_key)
        return from_record(record), record

    async def _paid_here(self, pt: PlannedTrack, provider: Provider,
                         money: TrackMoney) -> tuple[Generation, dict[str, Any]] | None:
        """Collect what the journal holds for this key, then (if still needed) one new attempt."""
        self.journal.adopt_shared([pt.gen_key])  # a dead worker's jobs for this key, from the fleet's journal
        live = settle(self.journal, self.journal.live(pt.gen_key))
        collected = False
        if live is not None and (live.state in ("submitted", "done")
                                 or (live.state == "ambiguous" and provider.idempotent_create)):
            # a job an earlier build paid for: collect it (under --force too: it is paid, keep it as a take)
            try:
                result = await self._run(pt, provider, live, money)
            except (RemoteJobFailed, JobGone):
                if not self.options.force:
                    raise
            else:
                if result is None or not self.options.force:
                    return result
                collected = True
        elif live is not None and not self.options.force:
            self._started(pt)
            error = AmbiguousCreate if live.state == "ambiguous" else JobGone
            raise error(stuck_message(provider, live))
        elif live is not None:  # --force: move on from an ambiguous or gone job (it stays in the journal)
            self.journal.move(live, "superseded", error="--force started a new attempt")
        return await self._run(pt, provider, None, money, keep_earlier=collected)

    async def _run(self, pt: PlannedTrack, provider: Provider, live: JobRecord | None, money: TrackMoney,
                   keep_earlier: bool = False, cpu: "CpuSlot | None" = None) -> tuple[Generation, dict[str, Any]] | None:
        """One job under its slots: a new attempt (``live`` None) or a journaled job to finish."""
        name = pt.spec.provider.name
        slots = HeldSlots(self.jobs, self.per_provider[name])
        await slots.acquire()
        try:
            if self.stop.is_set():
                self._outcome(pt, "skipped", money, error="not started: an earlier track failed (use -k to keep going)")
                return None
            if name in self.blocked:
                raise ProviderAuthError(self.blocked[name])
            self._started(pt)
            if not provider.paid:  # renders in-process: CPU work (taken after the job slots: no lock-order cycle)
                await self._cpu_work(pt, cpu, "generating")
                generation = await provider.generate(pt.spec, FreeJob(pt.gen_key))  # type: ignore[arg-type]
                return generation, await asyncio.to_thread(self._store, pt.gen_key, pt.spec.id, pt.spec.seed,
                                                           generation, None, False)
            if live is None:
                if not await self.coord.still_mine(pt.gen_key):
                    raise ProviderError("this worker's claim on the track expired before it could submit; "
                                        "another worker of the fleet took it over")
                budget = self.options.max_cost
                if budget is not None and self.spent() + pt.est_cost_usd > budget + 1e-9:
                    self.budget_stopped = True
                    self._outcome(pt, "skipped", money,
                                  error=f"not submitted: it would take spending past --max-cost ${budget:.2f}")
                    return None
                cfg = pt.spec.provider
                live = self.journal.begin(pt.gen_key, provider=name, type=provider.type, base_url=cfg.base_url or "",
                                          model=pt.spec.model, track=pt.spec.id, estimate_usd=pt.est_cost_usd,
                                          key=lambda n: provider.idempotency_key(pt.gen_key, n))
            job = JournalJob(self.journal, live, slots.release, lambda stage: self.reporter.track_state(pt, stage))
            self.handles.append(job)
            money.jobs.append(job)
            try:
                generation = await provider.generate(pt.spec, job)
            except Replayed as replay:  # a known job: finish that one instead, never counted twice
                if not replay.prior.live:
                    record = self.cache.get_generation(pt.gen_key)
                    if record is None:
                        raise ProviderError(f"{provider.name}: the service replayed job {replay.prior.job_id}, "
                                            f"which is {replay.prior.state} and has no audio in the cache; "
                                            "`musicbuild build --force <track>` starts a new attempt") from None
                    return from_record(record), record
                job = JournalJob(self.journal, replay.prior, slots.release, job.on_progress)
                self.handles.append(job)
                generation = await provider.collect(job)
            record = await asyncio.to_thread(self._store, pt.gen_key, pt.spec.id, pt.spec.seed, generation, job,
                                             keep_earlier)
            return generation, record
        finally:
            slots.release()

    def _store(self, gen_key: str, track: str, seed: int | None, generation: Generation, job: JournalJob | None,
               keep_earlier: bool) -> dict[str, Any]:
        """Audio into the cache, then into the shared cache (if any), then the journal says
        collected. In this order: a crash in between leaves a ``done`` job, which the next build
        (or, on an empty disk, another runner reading the shared journal) collects again for free;
        and the fleet's other workers find the audio in the shared cache as soon as it is done."""
        provenance = {"provider": generation.provider, "model": generation.model, "job_id": generation.job_id,
                      "seed": seed, "cost_usd": generation.cost_usd, "cost_basis": generation.cost_basis,
                      "track": track}
        if generation.partial:
            provenance["partial"] = dict(generation.partial)
        record = self.cache.put_generation(gen_key, [(c.data, c.format) for c in generation.clips], provenance,
                                           keep_earlier=keep_earlier)
        if self.remote is not None and job is not None:
            self.remote.upload([gen_key], UPLOAD_WAIT)
        if job is not None:
            job.collected(record, generation)
        return record

    async def _await_shared(self, gen_key: str) -> dict[str, Any]:
        await self.shared[gen_key].wait()
        record = self.shared_records.get(gen_key)
        if record is None:
            raise ProviderError("not generated: the track with the same generation spec failed or was skipped")
        return record

    # -- orphans: paid jobs no track of this plan needs --------------------------------------
    async def _orphan(self, rec: JobRecord) -> None:
        """A paid job whose track changed or left the manifest: its audio is collected into the cache
        (a later build that wants that spec again gets it free) and its charge is reported."""
        provider = self.providers[rec.provider]
        slots = HeldSlots(self.jobs, self.per_provider[rec.provider])
        await slots.acquire()
        job = JournalJob(self.journal, rec, slots.release)
        self.handles.append(job)
        row: dict[str, Any] = {"gen_key": rec.gen_key, "provider": rec.provider, "job_id": rec.job_id,
                               "track": rec.track}
        try:
            if rec.provider in self.blocked:
                raise ProviderAuthError(self.blocked[rec.provider])
            generation = await provider.collect(job)
            await asyncio.to_thread(self._store, rec.gen_key, rec.track, None, generation, job, False)
            row["status"] = "collected"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            row.update(status="failed", error=exc.message if isinstance(exc, MusicbuildError) else repr(exc))
        finally:
            slots.release()
        row.update(cost_usd=round(job.cost, 6), charged_usd=round(job.charged, 6))
        self.collected.append(row)


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


def _http_client(providers: Iterable[Provider]) -> Any:
    """The build's shared HTTP client, or None when no provider makes requests: a build on the
    local synthesizer alone never imports httpx (~50 ms)."""
    if not any(p.uses_http for p in providers):
        return contextlib.nullcontext(None)
    import httpx

    from .providers.http import DEFAULT_TIMEOUT

    return httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, follow_redirects=True)
