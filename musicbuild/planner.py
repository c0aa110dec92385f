"""Decide, for every track, what a build has to do and why (SPEC 2). No network, no writes.

An output is ``ok`` when it exists and its content hash is the one we recorded for its output key;
size+mtime is the fast path and a changed stat triggers a re-hash, so touching a file costs a hash,
not a build. When the cache has no record of an output (the cache was deleted, or this is a fresh
CI runner), the lock's record counts: an output whose SHA-256 is the one ``musicbuild.lock`` pins
for the same output key is up to date, and its record is written back. A lost cache is never a
reason to pay. Read-only commands plan against ``read_cache``, which never creates a cache folder.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

from .cache import file_sha256
from .keys import generation_key, legacy_generation_key, output_key, output_parts, tag_fields
from .model import Action, PlannedOutput, PlannedTrack, Reason, TrackSpec
from .providers.catalog import expected_length


class CacheState(Protocol):
    def get_output(self, path: Path) -> dict[str, Any] | None: ...
    def get_generation(self, gen_key: str) -> dict[str, Any] | None: ...
    def live_job(self, gen_key: str) -> Any: ...
    def iter_outputs(self) -> Iterator[tuple[Path, dict[str, Any]]]: ...


class LockedState(Protocol):
    """The lock's block for one track (``lock.LockEntry``)."""

    gen_key: str
    outputs: tuple[Any, ...]  # LockedOutput: path, clip, output_key, sha256


class EmptyCache:
    """The state of a cache that does not exist yet: nothing recorded, cached or pending."""

    def get_output(self, path: Path) -> dict[str, Any] | None:
        return None

    def get_generation(self, gen_key: str) -> dict[str, Any] | None:
        return None

    def live_job(self, gen_key: str) -> Any:
        return None

    def iter_outputs(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        return iter(())


def cache_exists(directory: Path) -> bool:
    return (directory / "index" / "cache.db").is_file()


@contextlib.contextmanager
def read_cache(directory: Path) -> Iterator[CacheState]:
    """The cache for reading: a folder that does not exist yet is an empty cache, not created."""
    if not cache_exists(directory):
        yield EmptyCache()
        return
    from .cache import Cache

    with Cache(directory) as cache:
        yield cache


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


class EarlierOutputs:
    """What each track wrote before, by track id; read from the cache only if a plan needs it
    (an output with no record: a new track, or one whose ``out`` or format changed)."""

    def __init__(self, cache: CacheState) -> None:
        self.cache = cache
        self._formats: dict[str, set[str]] | None = None

    def formats(self, track_id: str) -> set[str]:
        if self._formats is None:
            self._formats = {}
            for path, rec in self.cache.iter_outputs():
                fmt = (rec.get("parts") or {}).get("format") or PurePath(path).suffix.lstrip(".").lower()
                self._formats.setdefault(str(rec.get("track")), set()).add(fmt)
        return self._formats.get(track_id, set())


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


# Below this many outputs, one query per output is cheaper than a pass over the whole index.
SNAPSHOT_FROM = 64


KnownKeys = Mapping[int, tuple[TrackSpec, str, tuple[str, ...]]]


def plan_tracks(specs: Iterable[TrackSpec], cache: CacheState, *, force: bool = False,
                estimate: Callable[[TrackSpec], float] = lambda spec: 0.0,
                lock: Mapping[str, LockedState] | None = None, known: KnownKeys | None = None) -> list[PlannedTrack]:
    """``known``: keys the loader already computed (or took from the spec memo), by spec identity."""
    specs = list(specs)
    keys = ["out:" + str(o.path) for s in specs for o in s.outputs]
    if len(keys) >= SNAPSHOT_FROM and hasattr(cache, "index"):  # a real Cache: read the records in one pass
        from .cache import Snapshot

        cache = Snapshot(cache, keys)  # type: ignore[arg-type,assignment]
    earlier = EarlierOutputs(cache)
    lock = lock if lock is not None else {}
    return [plan_track(spec, cache, force=force, estimate=estimate, earlier=earlier, lock=lock, known=known)
            for spec in specs]


def plan_track(spec: TrackSpec, cache: CacheState, *, force: bool = False,
               estimate: Callable[[TrackSpec], float] = lambda spec: 0.0,
               earlier: EarlierOutputs | None = None, locked: LockedState | None = None,
               lock: Mapping[str, LockedState] | None = None, known: KnownKeys | None = None) -> PlannedTrack:
    """``locked``: the track's lock block; or ``lock``, the whole lock, asked only if an output has
    no record (``lock.LazyLock`` then reads the file only when a plan needs it)."""
    hit = known.get(id(spec)) if known is not None else None
    tags: dict[str, Any] | None = None
    if hit is not None and hit[0] is spec and not _hashes_inputs(spec):
        gen_key, keys = hit[1], list(hit[2])
    else:  # a cover or reference audio is hashed into the keys: hash it now, as it is now
        gen_key = generation_key(spec)
        tags = tag_fields(spec)
        keys = [output_key(gen_key, spec, out, tags) for out in spec.outputs]
    pinned: dict[str, Any] | None = None
    checks = []
    for out, okey in zip(spec.outputs, keys):
        record = cache.get_output(out.path)
        check = check_output(out.path, okey, record)
        if record is None and check.state == "unknown":
            if pinned is None:
                entry = locked if locked is not None else (lock.get(spec.id) if lock is not None else None)
                pinned = {o.path: o for o in entry.outputs} if entry is not None and entry.gen_key == gen_key else {}
            check = check_locked_output(out.path, okey, gen_key, out.clip, pinned.get(out.rel)) or check
        checks.append(check)
    # what the key is made of matters only to an output that will be written or explained
    parts = output_parts(spec, tags) if any(c.state != "ok" for c in checks) or force else {}

    outputs = [PlannedOutput(out, okey, c.state, c.restat, parts,
                             c.record if c.record and c.record.get("recovered_from") else None)
               for out, okey, c in zip(spec.outputs, keys, checks)]
    reasons = _output_reasons(spec, gen_key, parts, checks, earlier or EarlierOutputs(cache))
    if not reasons and not force:  # (an up-to-date track's journal is not looked at: one query less each)
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.UP_TO_DATE, (), 0.0)
    note = expected_length(spec.provider.type, spec.model, spec.duration).note
    job = cache.live_job(gen_key)
    job_info = {"state": job.state, "job_id": job.job_id, "attempt": job.attempt} if job is not None else None
    if force:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.GENERATE, (Reason.FORCED,), estimate(spec),
                            job_info, note)
    cached = cache.get_generation(gen_key) is not None
    if not cached:  # cached under musicbuild 0.1's key: `build` adopts it
        legacy = legacy_generation_key(spec)
        cached = legacy is not None and cache.get_generation(legacy) is not None
    if cached:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.MATERIALIZE, reasons, 0.0)
    if job is not None:
        return PlannedTrack(spec, gen_key, tuple(outputs), Action.RESUME, reasons, 0.0, job_info, note)
    return PlannedTrack(spec, gen_key, tuple(outputs), Action.GENERATE, reasons, estimate(spec), None, note)


def _hashes_inputs(spec: TrackSpec) -> bool:
    return spec.reference_audio is not None or spec.metadata.cover is not None


_PART_REASONS = {"format": Reason.FORMAT_CHANGED, "post": Reason.POST_CHANGED, "meta": Reason.METADATA_CHANGED}


def _output_reasons(spec: TrackSpec, gen_key: str, parts: dict[str, str], checks: list[OutputCheck],
                    earlier: EarlierOutputs) -> tuple[Reason, ...]:
    if all(c.state == "ok" for c in checks):
        return ()
    reasons: set[Reason] = set()
    for c in checks:
        if c.state == "ok":
            continue
        if c.record is None:  # nothing written here yet: a new track, or its format moved the file
            known = earlier.formats(spec.id)
            reasons.add(Reason.FORMAT_CHANGED if known and spec.format not in known else Reason.NEW)
            continue
        if c.record.get("gen_key") != gen_key:
            reasons.add(Reason.SPEC_CHANGED)
        elif c.state == "stale":
            old = c.record.get("parts") or {}
            changed = {_PART_REASONS[k] for k in _PART_REASONS if old and old.get(k) != parts[k]}
            reasons |= changed or {Reason.METADATA_CHANGED}  # records from before parts were kept
        if c.state == "missing":
            reasons.add(Reason.OUTPUT_MISSING)
        elif c.state == "modified":
            reasons.add(Reason.OUTPUT_MODIFIED)
    return tuple(r for r in Reason if r in reasons)
