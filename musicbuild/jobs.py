"""A paid job as the executor sees it: the handle that moves it through the journal, and the money
one track's jobs cost in this build.

``journal.py`` says which states a job has and which moves are allowed; this module is the only
code that makes those moves during a build (``JournalJob``), plus the few decisions the build
takes from the journal alone, before any request: what a dead build left behind (``settle``),
jobs whose audio reached the cache just before a crash (``reconcile``) and paid jobs no track of
the plan needs any more (``orphans``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .cache import Cache
from .errors import ProviderError
from .journal import POSSIBLY_PAID, JobRecord, Journal
from .model import Generation, PlannedTrack
from .providers.base import Provider


class Replayed(Exception):
    """The service answered a create with a job another journaled attempt already holds."""

    def __init__(self, prior: JobRecord) -> None:
        self.prior = prior


class JournalJob:
    """The ``JobHandle`` of one job: each call is a journal transition; it also keeps the money
    this build learnt about the job and frees the job's slots when the service is done with it."""

    def __init__(self, journal: Journal, record: JobRecord, release: Any = lambda: None,
                 on_progress: Callable[[str], None] | None = None) -> None:
        self.journal = journal
        self.record = record
        self.release = release
        self.began_here = record.build == journal.build_id and record.state == "intent"
        self.on_progress = on_progress
        self.stage: str | None = None

    def progress(self, stage: str) -> None:
        if stage != self.stage and self.on_progress is not None:  # each poll says it again: tell news only
            self.on_progress(stage)
        self.stage = stage

    def _move(self, state: str, **changes: Any) -> None:
        self.record = self.journal.move(self.record, state, **changes)

    def sent(self) -> None:
        if self.record.state in ("intent", "ambiguous"):
            self._move("sent")

    def submitted(self, job_id: str, poll: Mapping[str, Any], charged_usd: float | None = None) -> None:
        prior = next((r for r in self.journal.attempts(self.record.gen_key)
                      if r.job_id == job_id and r.attempt != self.record.attempt), None)
        if prior is not None:
            self._move("refused", error=f"the service replayed job {job_id} of attempt {prior.attempt}")
            raise Replayed(prior)
        self._move("submitted", job_id=job_id, poll=dict(poll), charged_usd=charged_usd,
                   cost_basis="billed" if charged_usd is not None else None)

    def update(self, poll: Mapping[str, Any]) -> None:
        if dict(poll) != dict(self.record.poll):
            self._move(self.record.state, poll=dict(poll))

    def done(self, poll: Mapping[str, Any] | None = None, charged_usd: float | None = None,
             basis: str | None = None) -> None:
        changes: dict[str, Any] = {}
        if poll is not None:
            changes["poll"] = dict(poll)
        if charged_usd is not None:
            changes.update(charged_usd=charged_usd, cost_basis=basis or "billed")
        self._move("done", **changes)
        self.release()  # the service is finished: downloads come from a CDN and hold no slot

    def failed(self, error: str, charged_usd: float | None = None, refunded_usd: float | None = None) -> None:
        changes: dict[str, Any] = {"error": error}
        if charged_usd is not None:
            changes.update(charged_usd=charged_usd, cost_basis="billed")
        if refunded_usd is not None:
            changes["refunded_usd"] = refunded_usd
        self._move("failed", **changes)
        self.release()

    def gone(self, error: str) -> None:
        self._move("gone", error=error)

    def ambiguous(self, error: str) -> None:
        self._move("ambiguous", error=error)

    def refused(self, error: str) -> None:
        self._move("refused", error=error)

    def collected(self, record: Mapping[str, Any], generation: Generation) -> None:
        if self.record.state == "intent":  # a provider that ran in-process reports no steps of its own
            self._move("sent")
            self._move("submitted", job_id=generation.job_id or self.record.gen_key[:16])
        if self.record.state == "submitted":
            self._move("done")
        self._move("collected", clips=tuple(record["clips"]), charged_usd=generation.cost_usd,
                   cost_basis=generation.cost_basis, partial=generation.partial, error=None)

    # -- what this build spent on it ---------------------------------------------------------
    @property
    def charged(self) -> float:
        rec = self.record
        return rec.charged_usd or 0.0 if rec.charged_in == self.journal.build_id else 0.0

    @property
    def refunded(self) -> float:
        rec = self.record
        return rec.refunded_usd or 0.0 if rec.refunded_in == self.journal.build_id else 0.0

    @property
    def outstanding(self) -> float:
        """Submitted by this build, charge not known: counted at the estimate until the service says."""
        rec = self.record
        unknown = rec.charged_usd is None and rec.state in POSSIBLY_PAID and rec.state != "collected"
        return rec.estimate_usd if self.began_here and unknown else 0.0

    @property
    def cost(self) -> float:
        return self.charged - self.refunded + self.outstanding


class FreeJob:
    """The handle of a job on a free provider (local): nothing to journal or pay."""

    @dataclass(frozen=True)
    class _Record:
        gen_key: str
        state: str = "intent"
        job_id: str | None = None
        key: str | None = None
        model: str = ""
        poll: Mapping[str, Any] = field(default_factory=dict)
        charged_usd: float | None = None
        error: str | None = None

    def __init__(self, gen_key: str) -> None:
        self.record = self._Record(gen_key)

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@dataclass
class TrackMoney:
    """The jobs one track ran in this build."""

    jobs: list[JournalJob] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        charged = round(sum(j.charged for j in self.jobs), 6)
        refunded = round(sum(j.refunded for j in self.jobs), 6)
        outstanding = round(sum(j.outstanding for j in self.jobs), 6)
        bases = {j.record.cost_basis for j in self.jobs if j.record.cost_basis}
        basis = (bases.pop() if len(bases) == 1 else "mixed") if bases else ("estimate" if outstanding else None)
        return {"cost_usd": round(charged - refunded + outstanding, 6), "charged_usd": charged,
                "refunded_usd": refunded, "outstanding_usd": outstanding, "cost_basis": basis}


def settle(journal: Journal, live: JobRecord | None) -> JobRecord | None:
    """A job a dead build left between intent and its answer: never sent, or ambiguous."""
    if live is None or live.build == journal.build_id:
        return live
    if live.state == "intent":  # "sent" is journaled before any byte leaves: this one never did
        journal.move(live, "refused", error="never sent: the build that meant to send it stopped first")
        return None
    if live.state == "sent":
        return journal.move(live, "ambiguous", error="the build that sent it stopped before the answer came")
    return live


def stuck_message(provider: Provider, live: JobRecord) -> str:
    """Why a track whose last job is ambiguous or gone is not sent again without ``--force``."""
    if live.state == "gone":
        return (f"{provider.name}: the service no longer knows job {live.job_id} (404 after its retention); "
                "its audio cannot be collected. `musicbuild build --force <track>` generates it again")
    return (f"{provider.name}: an earlier create request for this track may have started a paid job but "
            f"got no readable answer ({live.error or 'unknown'}), so it is not re-sent. Check the provider's "
            "dashboard; `musicbuild build --force <track>` submits again")


def reconcile(journal: Journal, cache: Cache) -> None:
    """Bring the journal up to date with the cache before any work: a job whose audio reached
    the cache just before a crash (the journal still says submitted/done) is collected."""
    for rec in journal.records():
        if rec.state not in ("submitted", "done") or not rec.job_id:
            continue
        record = cache.generation_record(rec.gen_key)
        if not record or record.get("job_id") != rec.job_id or not cache.get_generation(rec.gen_key):
            continue
        if rec.state == "submitted":
            rec = journal.move(rec, "done")
        journal.move(rec, "collected", clips=tuple(record["clips"]), cost_basis=record.get("cost_basis"))


def orphans(journal: Journal, providers: Mapping[str, Provider], planned: list[PlannedTrack],
            also_wanted: Iterable[str] = ()) -> list[JobRecord]:
    """Paid jobs (submitted or done) whose track changed or left the manifest, on a provider this
    manifest still configures with the same type and base URL: they are collected, not forgotten.
    ``also_wanted``: keys of tracks in the manifest that were not planned (up to date as rows)."""
    wanted = {pt.gen_key for pt in planned} | set(also_wanted)
    found = []
    for rec in journal.records():
        provider = providers.get(rec.provider)
        if (rec.gen_key in wanted or rec.state not in ("submitted", "done") or provider is None
                or provider.type != rec.type or (provider.config.base_url or "") != rec.base_url
                or journal.live(rec.gen_key) != rec):
            continue
        found.append(rec)
    return found


def check_delivered(pt: PlannedTrack, record: Mapping[str, Any]) -> None:
    """`clips: all` needs every clip: a job that delivered fewer (one song of two failed) cannot
    fill the others, and its paid song is kept, so say so instead of paying for both again."""
    have = len(record["clips"])
    missing = [po.output.rel for po in pt.outputs if pt.spec.clips == "all" and po.output.clip > have]
    if missing:
        partial = record.get("partial") or {}
        why = "; ".join(partial.get("errors") or []) or "fewer clips than outputs"
        raise ProviderError(f"the service delivered {have} of {partial.get('expected', len(pt.outputs))} clips "
                            f"({why}), so {', '.join(missing)} cannot be written; the delivered clip is kept "
                            "(paid). `musicbuild build --force <track>` generates the whole job again")


def from_record(record: Mapping[str, Any]) -> Generation:
    """A generation already in the cache, as the executor passes it on (no audio, nothing spent)."""
    return Generation(clips=(), provider=str(record.get("provider")), model=str(record.get("model")),
                      job_id=record.get("job_id"), cost_usd=0.0)
