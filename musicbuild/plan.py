"""Decide, for every track, what a build has to do and why (SPEC 2). No network, no writes.

An output is ``ok`` when it exists and its content hash is the one we recorded for its output key;
size+mtime is the fast path and a changed stat triggers a re-hash, so touching a file costs a hash,
not a build. When the cache has no record of an output (the cache was deleted, or this is a fresh
CI runner), the lock's record counts: an output whose SHA-256 is the one ``musicbuild.lock`` pins
for the same output key is up to date, and its record is written back. A lost cache is never a
reason to pay.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

from .cache import file_sha256
from .keys import generation_key, legacy_generation_key, output_key
from .model import Action, PlannedOutput, PlannedTrack, Reason, TrackSpec
from .providers.catalog import expected_length


class CacheState(Protocol):
    def get_output(self, path: Path) -> dict[str, Any] | None: ...
    def get_generation(self, gen_key: str) -> dict[str, Any] | None: ...
    def live_job(self, gen_key: str) -> Any: ...


class LockedState(Protocol):
    """The lock's block for one track (``lock.LockEntry``)."""

    gen_key: str
    outputs: tuple[Any, ...]  # LockedOutput: path, clip, output_key, sha256


@dataclass(frozen=True)
class OutputCheck:
    state: str  # ok | missing | modified | stale | unknown
    record: dict[str, Any] | None
    restat: tuple[int, int] | None = None  # (size, mtime_ns) to refresh when content was unchanged


def check_output(path: Path, out_key: str, record: dict[str, Any] | None) -> OutputCheck:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return OutputCheck("missing", record)
    if record is None:
        return OutputCheck("unknown", None)  # a file we did not write (or whose record was lost)
    if record.get("out_key") != out_key:
        return OutputCheck("stale", record)
    if record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
        return OutputCheck("ok", record)
    if record.get("size") == st.st_size and file_sha256(path) == record.get("sha256"):
        return OutputCheck("ok", record, (st.st_size, st.st_mtime_ns))
    return OutputCheck("modified", record)


def check_locked_output(path: Path, out_key: str, gen_key: str, clip: int,
                        locked: Any | None) -> OutputCheck | None:
    """An output the cache has no record of, vouched for by the lock: ``ok`` (with the record to
    write back) when the file's SHA-256 is the one the lock pins for this output key."""
    if locked is None or locked.output_key != out_key:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if file_sha256(path) != locked.sha256:
        return None
    record = {"out_key": out_key, "gen_key": gen_key, "sha256": locked.sha256, "size": st.st_size,
              "mtime_ns": st.st_mtime_ns, "clip": int(locked.clip or clip), "recovered_from": "lock"}
    return OutputCheck("ok", record, (st.st_size, st.st_mtime_ns))


def plan_tracks(specs: Iterable[TrackSpec], cache: CacheState, *, force: bool = False,
                estimate: Callable[[TrackSpec], float] = lambda spec: 0.0,
                lock: Mapping[str, LockedState] | None = None) -> list[PlannedTrack]:
    lock = lock or {}
    return [plan_track(spec, cache, force=force, estimate=estimate, locked=lock.get(spec.id)) for spec in specs]


def plan_track(spec: TrackSpec, cache: CacheState, *, force: bool = False,
               estimate: Callable[[TrackSpec], float] = lambda spec: 0.0,
               locked: LockedState | None = None) -> PlannedTrack:
    gen_key = generation_key(spec)
    outputs = []
    checks = []
    pinned = {o.path: o for o in locked.outputs} if locked is not None and locked.gen_key == gen_key else {}
    for out in spec.outputs:
        okey = output_key(gen_key, spec, out)
        record = cache.get_output(out.path)
        check = check_output(out.path, okey, record)
        if record is None and check.state == "unknown":
            check = check_locked_output(out.path, okey, gen_key, out.clip, pinned.get(out.rel)) or check
        checks.append(check)
        recovered = check.record if check.record and check.record.get("recovered_from") else None
        outputs.append(PlannedOutput(out, okey, check.state, check.restat, recovered))
    reasons = _output_reasons(gen_key, checks)
    length = expected_length(spec.provider.type, spec.model, spec.duration)
    note = length.note
    job = cache.live_job(gen_key)
    job_info = {"state": job.state, "job_id": job.job_id, "attempt": job.attempt} if job is not None else None
    if force:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.GENERATE, (Reason.FORCED,), estimate(spec),
                            job_info, note)
    if not reasons:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.UP_TO_DATE, (), 0.0)
    cached = cache.get_generation(gen_key) is not None
    if not cached:  # cached under musicbuild 0.1's key: `build` adopts it
        legacy = legacy_generation_key(spec)
        cached = legacy is not None and cache.get_generation(legacy) is not None
    if cached:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.MATERIALIZE, reasons, 0.0)
    if job is not None:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.RESUME, reasons, 0.0, job_info, note)
    return PlannedTrack(spec, gen_key, tuple(outputs), Action.GENERATE, reasons, estimate(spec), None, note)


def _output_reasons(gen_key: str, checks: list[OutputCheck]) -> tuple[Reason, ...]:
    reasons: set[Reason] = set()
    for c in checks:
        if c.state == "ok":
            continue
        if c.record is None:
            reasons.add(Reason.NEW)
            continue
        if c.record.get("gen_key") != gen_key:
            reasons.add(Reason.SPEC_CHANGED)
        elif c.state == "stale":
            reasons.add(Reason.METADATA_CHANGED)
        if c.state == "missing":
            reasons.add(Reason.OUTPUT_MISSING)
        elif c.state == "modified":
            reasons.add(Reason.OUTPUT_MODIFIED)
    return tuple(r for r in Reason if r in reasons)
