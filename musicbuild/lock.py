"""``musicbuild.lock``: what every track was built from and what it produced (SPEC 6).

Committed beside the manifest, it pins per track the generation key, provider, model, seed, job
ids, chosen clips, and per output its output key and SHA-256. It is YAML sorted by track id, one
block per track, so a review diff shows exactly which tracks changed. ``--locked`` refuses a build
that would change it; ``--frozen`` builds only what the lock and the caches already hold; ``verify``
checks outputs against it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .cache import Cache, atomic_write_bytes
from .errors import MusicbuildError
from .keys import generation_key, output_key
from .model import PlannedTrack, TrackSpec
from .plan import check_output

LOCK_NAME = "musicbuild.lock"
LOCK_VERSION = 1
HEADER = "# musicbuild.lock: written by `musicbuild build`. Commit it; do not edit it by hand.\n"


class LockError(MusicbuildError):
    exit_code = 3


@dataclass(frozen=True)
class LockedOutput:
    path: str  # relative to output_dir
    clip: int
    output_key: str
    sha256: str


@dataclass(frozen=True)
class LockEntry:
    id: str
    gen_key: str
    provider: str
    model: str
    seed: int
    job_ids: tuple[str, ...]
    clips: str
    outputs: tuple[LockedOutput, ...]

    def to_yaml(self) -> dict[str, Any]:
        return {
            "gen_key": self.gen_key, "provider": self.provider, "model": self.model, "seed": self.seed,
            "job_ids": list(self.job_ids), "clips": self.clips,
            "outputs": [{"path": o.path, "clip": o.clip, "output_key": o.output_key, "sha256": o.sha256}
                        for o in self.outputs],
        }

    @classmethod
    def from_yaml(cls, track_id: str, data: Mapping[str, Any]) -> "LockEntry":
        return cls(
            id=track_id, gen_key=str(data["gen_key"]), provider=str(data["provider"]), model=str(data["model"]),
            seed=int(data["seed"]), job_ids=tuple(str(j) for j in data.get("job_ids") or ()),
            clips=str(data.get("clips", "first")),
            outputs=tuple(LockedOutput(str(o["path"]), int(o.get("clip", 1)), str(o["output_key"]), str(o["sha256"]))
                          for o in data["outputs"]))


def lock_path(manifest_path: Path) -> Path:
    return manifest_path.parent / LOCK_NAME


def read_lock(path: Path) -> dict[str, LockEntry] | None:
    """The lock's entries, or None when there is no lock yet."""
    import yaml

    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    try:
        data = yaml.safe_load(text) or {}
        if data.get("version") != LOCK_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {LOCK_VERSION}")
        return {str(k): LockEntry.from_yaml(str(k), v) for k, v in (data.get("tracks") or {}).items()}
    except (yaml.YAMLError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LockError(f"{path.name} is damaged ({exc}); restore it from version control "
                        "or delete it and run `musicbuild build`") from None


def render(entries: Iterable[LockEntry]) -> str:
    import yaml

    tracks = {e.id: e.to_yaml() for e in sorted(entries, key=lambda e: e.id)}
    body = yaml.safe_dump({"version": LOCK_VERSION, "tracks": tracks}, sort_keys=False,
                          default_flow_style=False, width=200, allow_unicode=True)
    return HEADER + body


def write_lock(path: Path, entries: Iterable[LockEntry]) -> bool:
    """Write the lock if its content changed; return whether it did."""
    text = render(entries)
    try:
        if path.read_text("utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, text.encode("utf-8"))
    return True


def digest(entries: Mapping[str, LockEntry]) -> str:
    return hashlib.sha256(render(entries.values()).encode()).hexdigest()


def changed_tracks(old: Mapping[str, LockEntry] | None, new: Mapping[str, LockEntry]) -> list[str]:
    """Track ids whose lock block would be added, removed or changed."""
    old = old or {}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def entry_for(spec: TrackSpec, gen_key: str, cache: Cache) -> LockEntry | None:
    """The lock block for ``spec`` if all its outputs are built and verified, else None."""
    outputs = []
    for out in spec.outputs:
        okey = output_key(gen_key, spec, out)
        record = cache.get_output(out.path)
        if check_output(out.path, okey, record).state != "ok" or record is None:
            return None
        outputs.append(LockedOutput(out.rel, int(record.get("clip", out.clip)), okey, str(record["sha256"])))
    gen = cache.generation_record(gen_key) or {}
    job = gen.get("job_id")
    return LockEntry(spec.id, gen_key, str(gen.get("provider") or spec.provider.name),
                     str(gen.get("model") or spec.model), spec.seed, (str(job),) if job else (), spec.clips,
                     tuple(outputs))


def updated_entries(specs: Iterable[TrackSpec], cache: Cache, old: Mapping[str, LockEntry]) -> dict[str, LockEntry]:
    """The lock after a build: fresh blocks for built tracks, the old block for tracks not built
    this time (failed, skipped, not selected), none for tracks no longer in the manifest."""
    entries = {}
    for spec in specs:
        entry = entry_for(spec, generation_key(spec), cache)
        if entry is None:
            entry = old.get(spec.id)
        if entry is not None:
            entries[spec.id] = entry
    return entries


def mismatches(planned: Iterable[PlannedTrack], old: Mapping[str, LockEntry], all_ids: Iterable[str] | None) -> list[str]:
    """Why building ``planned`` would change the lock (empty: it would not)."""
    problems = []
    for pt in planned:
        entry = old.get(pt.spec.id)
        if entry is None:
            problems.append(f"{pt.spec.id}: not in the lock (a new track)")
        elif entry.gen_key != pt.gen_key:
            problems.append(f"{pt.spec.id}: its generation spec changed (prompt, seed, model, ...)")
        elif [(o.path, o.output_key) for o in entry.outputs] != [(po.output.rel, po.out_key) for po in pt.outputs]:
            problems.append(f"{pt.spec.id}: its outputs changed (format, path or tags)")
    if all_ids is not None:
        problems += [f"{track}: in the lock but no longer in the manifest" for track in sorted(set(old) - set(all_ids))]
    return problems
