"""Decide, for every track, what a build has to do and why (SPEC 2). No network, no writes.

An output is ``ok`` when it exists and its content hash is the one we recorded for its output key;
size+mtime is the fast path and a changed stat triggers a re-hash, so touching a file costs a hash,
not a build.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from .cache import file_sha256
from .keys import generation_key, output_key
from .model import Action, PlannedOutput, PlannedTrack, Reason, TrackSpec


class CacheState(Protocol):
    def get_output(self, path: Path) -> dict[str, Any] | None: ...
    def get_generation(self, gen_key: str) -> dict[str, Any] | None: ...
    def pending_job(self, gen_key: str) -> dict[str, Any] | None: ...


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


def plan_tracks(specs: Iterable[TrackSpec], cache: CacheState, *, force: bool = False,
                estimate: Callable[[TrackSpec], float] = lambda spec: 0.0) -> list[PlannedTrack]:
    return [plan_track(spec, cache, force=force, estimate=estimate) for spec in specs]


def plan_track(spec: TrackSpec, cache: CacheState, *, force: bool = False,
               estimate: Callable[[TrackSpec], float] = lambda spec: 0.0) -> PlannedTrack:
    gen_key = generation_key(spec)
    outputs = []
    checks = []
    for out in spec.outputs:
        okey = output_key(gen_key, spec, out)
        check = check_output(out.path, okey, cache.get_output(out.path))
        checks.append(check)
        outputs.append(PlannedOutput(out, okey, check.state, check.restat))
    reasons = _output_reasons(gen_key, checks)
    if force:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.GENERATE, (Reason.FORCED,), estimate(spec))
    if not reasons:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.UP_TO_DATE, (), 0.0)
    if cache.get_generation(gen_key) is not None:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.MATERIALIZE, reasons, 0.0)
    if cache.pending_job(gen_key) is not None:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.RESUME, reasons, 0.0)
    return PlannedTrack(spec, gen_key, tuple(outputs), Action.GENERATE, reasons, estimate(spec))


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
