"""Commands that look after a build rather than run one: status, dead outputs, clean, gc, verify."""
from __future__ import annotations

from dataclasses import dataclass, field
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import confine, stamp
from .cache import Cache, file_sha256
from .errors import MusicbuildError
from .keys import generation_key
from .lock import LockEntry, LockError, lock_path, read_lock
from .manifest import Manifest
from .model import Action, PlannedTrack, TrackSpec
from .planner import CacheState, cache_exists, read_cache


def track_state(pt: PlannedTrack) -> str:
    if pt.action is Action.UP_TO_DATE:
        return "up-to-date"
    states = {o.state for o in pt.outputs}
    if states == {"missing"}:
        return "missing"
    if "modified" in states:
        return "modified"
    return "stale"


def status_row(pt: PlannedTrack) -> dict[str, Any]:
    return {"id": pt.spec.id, "state": track_state(pt), "action": pt.action.value,
            "reasons": [r.value for r in pt.reasons], "out": [o.output.rel for o in pt.outputs]}


def clean(manifest: Manifest, specs: list[TrackSpec], dry_run: bool = False, whole: bool = True) -> list[str]:
    """Remove built outputs and stale musicbuild temp files (never the cache); return what was
    removed, relative to output_dir. ``whole``: look for temp files in all of output_dir, not only
    beside these outputs (a temp file of an output whose ``out`` changed since sits elsewhere).
    A dry run writes nothing, and no cache folder is created when there is none."""
    removed: list[str] = []
    failed: list[str] = []

    def remove(path: Path, shown: str) -> None:
        try:
            if not dry_run:
                path.unlink()
            removed.append(shown)
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append(f"{shown} ({exc.strerror})")

    for spec in specs:
        for out in spec.outputs:
            if out.path.exists():
                remove(out.path, out.rel)
    folders = {out.path.parent for spec in specs for out in spec.outputs}
    temps = confine.temp_files(manifest.output_dir) if whole else [
        p for folder in folders for p in confine.temp_files_in(folder)]
    for temp in temps:
        remove(temp, str(temp.relative_to(manifest.output_dir)) if temp.is_relative_to(manifest.output_dir) else str(temp))
    if not dry_run:
        for folder in sorted(folders | {t.parent for t in temps}, key=lambda p: -len(p.parts)):
            _prune_empty_dirs(folder, manifest.output_dir)
        if cache_exists(manifest.cache_dir):
            with Cache(manifest.cache_dir) as cache:
                for spec in specs:
                    for out in spec.outputs:
                        cache.remove_output(out.path)
            stamp.remove(manifest.cache_dir, manifest.path)
    if failed:
        raise MusicbuildError(f"could not remove {len(failed)} file{'s' if len(failed) > 1 else ''}: "
                              + ", ".join(failed[:5]) + (" and more" if len(failed) > 5 else ""),
                              f"removed {len(removed)}; fix the permissions of output_dir and run clean again")
    return removed


@dataclass(frozen=True)
class DeadOutput:
    """A file musicbuild wrote that no track of the manifest writes any more."""

    rel: str  # relative to output_dir
    path: Path
    track: str  # the track that wrote it
    reason: str  # why it is dead, in words
    modified: bool  # changed since musicbuild wrote it: reported, never removed


def dead_outputs(manifest: Manifest, cache: CacheState) -> list[DeadOutput]:
    """Files under output_dir that the cache index (or musicbuild.lock) says we wrote, that no
    track writes now (the track left the manifest, or its ``out`` or format changed)."""
    current = {o.path for spec in manifest.tracks for o in spec.outputs}
    writes = {spec.id: [o.rel for o in spec.outputs] for spec in manifest.tracks}
    root = manifest.output_dir
    known: dict[Path, dict[str, Any]] = {}
    for path, record in cache.iter_outputs():
        if path not in current and root in path.parents:
            known[path] = record
    try:
        locked = read_lock(lock_path(manifest.path)) or {}
    except LockError:  # a damaged lock is the build's to report; the cache index still answers
        locked = {}
    for entry in locked.values():
        for out in entry.outputs:
            path = root / out.path
            if path not in current and root in path.parents:
                known.setdefault(path, {"track": entry.id, "sha256": out.sha256})
    dead = []
    for path, record in sorted(known.items()):
        if not path.is_file():
            continue
        track = str(record.get("track"))
        reason = (f"track {track} now writes {', '.join(writes[track])}" if track in writes
                  else f"track {track} is no longer in the manifest")
        dead.append(DeadOutput(path.relative_to(root).as_posix(), path, track, reason, not _unchanged(path, record)))
    return dead


def _unchanged(path: Path, record: Mapping[str, Any]) -> bool:
    st = path.stat()
    if record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
        return True
    return record.get("sha256") is not None and file_sha256(path) == record["sha256"]


def clean_dead(manifest: Manifest, dry_run: bool = False) -> list[DeadOutput]:
    """Remove the dead outputs that are still exactly what musicbuild wrote (like ``ninja -t
    cleandead``); modified ones stay. Returns every dead output found."""
    with read_cache(manifest.cache_dir) as cache:
        dead = dead_outputs(manifest, cache)
        for d in dead:
            if d.modified or dry_run:
                continue
            d.path.unlink(missing_ok=True)
            if isinstance(cache, Cache):
                cache.remove_output(d.path)
            _prune_empty_dirs(d.path.parent, manifest.output_dir)
    return dead


def _prune_empty_dirs(folder: Any, stop: Any) -> None:
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


@dataclass
class GcResult:
    generations: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept_jobs: int = 0


GC_SCOPES = ("manifest", "lock")


def kept_generations(manifest: Manifest, keep: Iterable[str]) -> set[str]:
    keep = set(keep)
    wanted: set[str] = set()
    if "manifest" in keep:
        wanted |= {generation_key(spec) for spec in manifest.tracks}
    if "lock" in keep:
        wanted |= {e.gen_key for e in (read_lock(lock_path(manifest.path)) or {}).values()}
    return wanted


def gc(manifest: Manifest, keep: Iterable[str] = GC_SCOPES, older_than_days: float | None = None,
       dry_run: bool = False, now: float | None = None) -> GcResult:
    """Drop cached generations outside the kept scopes, then blobs nothing references.

    ``keep``: what protects a generation: ``manifest`` (a track of this manifest uses it), ``lock``
    (musicbuild.lock records it); none protects nothing. ``older_than_days``: only generations
    created that long ago go. The job journal is never touched: live jobs were paid for and a later
    build resumes them. Only the local cache is touched (``gc_remote`` is the remote's).
    """
    wanted = kept_generations(manifest, keep)
    cutoff = None if older_than_days is None else (now or time.time()) - older_than_days * 86400
    result = GcResult()
    if not cache_exists(manifest.cache_dir):
        return result  # nothing cached yet: nothing to collect, and no folder to create
    with Cache(manifest.cache_dir) as cache:
        keep_blobs: set[str] = set()
        for gen_key, rec in list(cache.iter_generations()):
            young = cutoff is not None and rec.get("created_at", 0) > cutoff
            if gen_key in wanted or young:  # with the paid takes a --force kept beside it
                keep_blobs.update(c["sha256"] for take in [rec, *rec.get("earlier", [])] for c in take["clips"])
            else:
                result.generations.append(gen_key)
                if not dry_run:
                    cache.remove_generation(gen_key)
        for sha, size in list(cache.iter_blobs()):
            if sha not in keep_blobs:
                result.blobs.append(sha)
                result.bytes_freed += size
                if not dry_run:
                    cache.remove_blob(sha)
        result.kept_jobs = sum(1 for r in cache.journal.records() if r.live)
    return result


REMOTE_GRACE = 3600.0  # another machine may be uploading: blobs land before their record


def gc_remote(store: Any, wanted: set[str], older_than_days: float | None = None, dry_run: bool = False,
              now: float | None = None) -> GcResult:
    """The same for the shared cache, asked for explicitly (``gc --remote``): records outside the
    kept scopes go, then blobs no remaining record references, except blobs younger than an hour."""
    from .remote import get_record

    now = now or time.time()
    cutoff = None if older_than_days is None else now - older_than_days * 86400
    result = GcResult()
    keep_blobs: set[str] = set()
    for key, _size, mtime in list(store.list("ac")):
        gen_key = key.rsplit("/", 1)[-1]
        if gen_key in wanted or (cutoff is not None and mtime > cutoff):
            record = get_record(store, gen_key) or {"clips": []}
            keep_blobs.update(c["sha256"] for c in record["clips"])
        else:
            result.generations.append(gen_key)
            if not dry_run:
                store.delete(key)
    for key, size, mtime in list(store.list("cas")):
        if key.rsplit("/", 1)[-1] not in keep_blobs and mtime < now - REMOTE_GRACE:
            result.blobs.append(key)
            result.bytes_freed += size
            if not dry_run:
                store.delete(key)
    return result


def verify(output_dir: Path, entries: Mapping[str, LockEntry]) -> list[str]:
    """One line per locked output that is missing or whose content differs from the lock."""
    problems = []
    for entry in sorted(entries.values(), key=lambda e: e.id):
        for out in entry.outputs:
            path = output_dir / out.path
            if not path.is_file():
                problems.append(f"{out.path}: missing (track {entry.id})")
            elif file_sha256(path) != out.sha256:
                problems.append(f"{out.path}: content differs from the lock (track {entry.id})")
    return problems
