"""Commands that look after a build rather than run one: status, clean, gc."""
from __future__ import annotations

from dataclasses import dataclass, field
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import confine, stamp
from .cache import Cache, file_sha256
from .errors import MusicbuildError
from .keys import generation_key
from .lock import LockEntry, lock_path, read_lock
from .manifest import Manifest
from .model import Action, PlannedTrack, TrackSpec


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
    beside these outputs (a temp file of an output whose ``out`` changed since sits elsewhere)."""
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

    with Cache(manifest.cache_dir) as cache:
        for spec in specs:
            for out in spec.outputs:
                if out.path.exists():
                    remove(out.path, out.rel)
                if not dry_run:
                    cache.remove_output(out.path)
        folders = {out.path.parent for spec in specs for out in spec.outputs}
        temps = confine.temp_files(manifest.output_dir) if whole else [
            p for folder in folders for p in confine.temp_files_in(folder)]
        for temp in temps:
            remove(temp, str(temp.relative_to(manifest.output_dir)) if temp.is_relative_to(manifest.output_dir) else str(temp))
        if not dry_run:
            for folder in sorted(folders | {t.parent for t in temps}, key=lambda p: -len(p.parts)):
                _prune_empty_dirs(folder, manifest.output_dir)
    if not dry_run:
        stamp.remove(manifest.cache_dir, manifest.path)
    if failed:
        raise MusicbuildError(f"could not remove {len(failed)} file{'s' if len(failed) > 1 else ''}: "
                              + ", ".join(failed[:5]) + (" and more" if len(failed) > 5 else ""),
                              f"removed {len(removed)}; fix the permissions of output_dir and run clean again")
    return removed


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
    created that long ago go. Pending jobs in the journal are always kept: they were paid for and
    a later build resumes them. Only the local cache is touched (``gc_remote`` is the remote's).
    """
    wanted = kept_generations(manifest, keep)
    cutoff = None if older_than_days is None else (now or time.time()) - older_than_days * 86400
    result = GcResult()
    with Cache(manifest.cache_dir) as cache:
        keep_blobs: set[str] = set()
        for gen_key, rec in list(cache.iter_generations()):
            young = cutoff is not None and rec.get("created_at", 0) > cutoff
            if gen_key in wanted or young:
                keep_blobs.update(c["sha256"] for c in rec["clips"])
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
        result.kept_jobs = sum(1 for k in cache.index.iterkeys() if isinstance(k, str) and k.startswith("job:"))
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
