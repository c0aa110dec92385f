"""``musicbuild.lock``: what every track was built from and what it produced (SPEC 6).

Committed beside the manifest, it pins per track the generation key, provider, model, seed, job
ids, chosen clips, and per output its output key and SHA-256. It is indented JSON sorted by track
id, one block per track, so a review diff shows exactly which tracks changed (JSON rather than
YAML because a 10,000-track lock must load and save in a blink: YAML took seconds). ``--locked`` refuses a build
that would change it; ``--frozen`` builds only what the lock and the caches already hold; ``verify``
checks outputs against it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .cache import Cache, Snapshot, atomic_write_bytes
from .errors import MusicbuildError
from .lazymap import LazyMapping
from .model import PlannedTrack

LOCK_NAME = "musicbuild.lock"
LOCK_VERSION = 1
NOTE = "written by `musicbuild build`; commit it, do not edit it by hand"


class LockError(MusicbuildError):
    exit_code = 3


class LockDamaged(LockError):
    """The lock is not what ``build`` writes: user state, so it is never thrown away silently."""

    exit_code = 2


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

    def to_json(self) -> dict[str, Any]:
        return {
            "gen_key": self.gen_key, "provider": self.provider, "model": self.model, "seed": self.seed,
            "job_ids": list(self.job_ids), "clips": self.clips,
            "outputs": [{"path": o.path, "clip": o.clip, "output_key": o.output_key, "sha256": o.sha256}
                        for o in self.outputs],
        }

    @classmethod
    def from_json(cls, track_id: str, data: Mapping[str, Any]) -> "LockEntry":
        """One track's block; ``TypeError`` naming the field if it is not what ``build`` writes."""
        _want(data, dict, track_id)
        outputs = _want(data.get("outputs"), list, f"{track_id}.outputs")
        for i, o in enumerate(outputs):
            _want(o, dict, f"{track_id}.outputs[{i}]")
            for key in ("path", "output_key", "sha256"):
                _want(o.get(key), str, f"{track_id}.outputs[{i}].{key}")
            _want(o.get("clip", 1), int, f"{track_id}.outputs[{i}].clip")
        for key in ("gen_key", "provider", "model"):
            _want(data.get(key), str, f"{track_id}.{key}")
        job_ids = _want(data.get("job_ids") or [], list, f"{track_id}.job_ids")
        return cls(
            id=track_id, gen_key=data["gen_key"], provider=data["provider"], model=data["model"],
            seed=_want(data.get("seed"), int, f"{track_id}.seed"),
            job_ids=tuple(_want(j, str, f"{track_id}.job_ids") for j in job_ids),
            clips=_want(data.get("clips", "first"), str, f"{track_id}.clips"),
            outputs=tuple(LockedOutput(o["path"], o.get("clip", 1), o["output_key"], o["sha256"]) for o in outputs))


def lock_path(manifest_path: Path) -> Path:
    return manifest_path.parent / LOCK_NAME


def _want(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{where} is not {'a whole number' if kind is int else 'a ' + kind.__name__}")
    return value


def read_lock(path: Path) -> dict[str, LockEntry] | None:
    """The lock's entries, or None when there is no lock yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockError(f"cannot read {path.name}: {exc.strerror}") from None
    try:
        data = _want(json.loads(raw.decode("utf-8")), dict, "the lock")
        if data.get("version") != LOCK_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {LOCK_VERSION}")
        tracks = _want(data.get("tracks") or {}, dict, "tracks")
        return {k: LockEntry.from_json(k, v) for k, v in tracks.items()}
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeDecodeError and JSON errors are ValueErrors
        reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else (
            "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200])
        raise LockDamaged(f"{path.name} is damaged ({reason}); restore it from version control "
                          "or delete it and run `musicbuild build`") from None


class LazyLock(LazyMapping[str, LockEntry]):
    """The lock, read on first use: a plan needs it only for outputs the cache has no record of,
    and reading a 100,000-block lock costs a second. A damaged lock is reported when read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(lambda: read_lock(path) or {})


def render(entries: Iterable[LockEntry]) -> str:
    """The lock's text: exactly ``json.dumps(doc, indent=2, ensure_ascii=False)`` (``render_slow``),
    written block by block with the C encoder for each value, because the indenting encoder is
    pure Python (9.8 s of a 100,000-track build). ``tests/test_lock.py`` holds the two equal."""
    blocks = [_block(e) for e in sorted(entries, key=lambda e: e.id)]
    tracks = "{\n" + ",\n".join(blocks) + "\n  }" if blocks else "{}"
    return f'{{\n  "note": {_s(NOTE)},\n  "version": {LOCK_VERSION},\n  "tracks": {tracks}\n}}\n'


def render_slow(entries: Iterable[LockEntry]) -> str:
    """The lock's text by the book (what ``render`` must equal)."""
    tracks = {e.id: e.to_json() for e in sorted(entries, key=lambda e: e.id)}
    return json.dumps({"note": NOTE, "version": LOCK_VERSION, "tracks": tracks}, indent=2, ensure_ascii=False) + "\n"


def _s(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _block(e: LockEntry) -> str:
    ind = " " * 6
    jobs = ("[\n" + ",\n".join(f"{ind}  {_s(j)}" for j in e.job_ids) + f"\n{ind}]") if e.job_ids else "[]"
    outs = ",\n".join(f'{ind}  {{\n{ind}    "path": {_s(o.path)},\n{ind}    "clip": {_s(o.clip)},\n'
                      f'{ind}    "output_key": {_s(o.output_key)},\n{ind}    "sha256": {_s(o.sha256)}\n{ind}  }}'
                      for o in e.outputs)
    outs = f"[\n{outs}\n{ind}]" if e.outputs else "[]"
    return (f'    {_s(e.id)}: {{\n{ind}"gen_key": {_s(e.gen_key)},\n{ind}"provider": {_s(e.provider)},\n'
            f'{ind}"model": {_s(e.model)},\n{ind}"seed": {_s(e.seed)},\n{ind}"job_ids": {jobs},\n'
            f'{ind}"clips": {_s(e.clips)},\n{ind}"outputs": {outs}\n    }}')


def write_lock(path: Path, entries: Iterable[LockEntry], old: Mapping[str, LockEntry] | None = None) -> bool:
    """Write the lock if its content changed; return whether it did."""
    entries = list(entries)
    if old is not None and {e.id: e for e in entries} == dict(old):
        return False  # nothing changed: skip rendering a lock that may be megabytes
    text = render(entries)
    try:
        if path.read_bytes() == text.encode("utf-8"):
            return False
    except FileNotFoundError:
        pass
    except OSError:
        pass  # writing it will say what is wrong
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise MusicbuildError(f"cannot write {path}: {exc.strerror}",
                              "the outputs are built; make the folder writable and run `musicbuild build` "
                              "again to record them in the lock") from None
    return True


class LockBlocks(Mapping[str, LockEntry]):
    """A lock exactly as ``render`` writes it, read as bytes and never parsed whole: a block is found
    by its header line and decoded when asked for, and ``write_spliced`` rewrites only the blocks that
    changed, copying the rest in runs (at 100,000 tracks, reading and rendering the whole lock was
    seconds and hundreds of MB). Only the block headers and ends are checked, not each block's
    inner layout: the engine uses this only for the file its last build wrote (the stamp recorded
    its size and mtime); a file not in that form makes ``write_spliced`` raise ``NotWritten`` (the
    caller then reads it with ``read_lock`` and renders it whole)."""

    _HEAD = ('{\n  "note": ' + json.dumps(NOTE, ensure_ascii=False) + f',\n  "version": {LOCK_VERSION},\n  "tracks": {{').encode()
    _TAIL = b"\n  }\n}\n"
    _EMPTY = _HEAD + b"}\n}\n"
    _BLOCK = re.compile(rb'\n    ("(?:[^"\\\n]|\\.)*"): \{\n')

    class NotWritten(ValueError):
        """The file is not in ``render``'s form: nothing was written."""

    def __init__(self, path: Path, raw: bytes) -> None:
        self.path, self._raw = path, raw

    @classmethod
    def read(cls, path: Path) -> "LockBlocks | None":
        """The lock, or None if there is none or it does not even start and end as ``render`` writes."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        if raw != cls._EMPTY and not (raw.startswith(cls._HEAD + b"\n") and raw.endswith(cls._TAIL)):
            return None
        return cls(path, raw)

    def _span(self, track_id: str) -> tuple[int, int] | None:
        header = b"\n    " + json.dumps(track_id, ensure_ascii=False).encode() + b": {\n"
        start = self._raw.find(header, len(self._HEAD))
        if start < 0:
            return None
        stop = self._raw.find(b"\n    }", start + len(header))
        return (start + 1, stop + len(b"\n    }")) if stop >= 0 else None

    def __getitem__(self, track_id: str) -> LockEntry:
        span = self._span(track_id)
        if span is None:
            raise KeyError(track_id)
        try:
            data = json.loads(b"{" + self._raw[span[0]:span[1]] + b"}")
            return LockEntry.from_json(track_id, data[track_id])
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise LockDamaged(f"{self.path.name} is damaged ({str(exc)[:200]}); restore it from version control "
                              "or delete it and run `musicbuild build`") from None

    def __contains__(self, track_id: object) -> bool:
        return isinstance(track_id, str) and self._span(track_id) is not None

    def __bool__(self) -> bool:
        return self._raw != self._EMPTY

    def __iter__(self) -> Iterator[str]:
        return (track_id for track_id, _, _ in self._blocks())

    def __len__(self) -> int:
        return sum(1 for _ in self._blocks())

    def _blocks(self) -> Iterator[tuple[str, int, int]]:
        """(id, start, stop) of every block in order; ``NotWritten`` if the file is not as render writes."""
        raw = self._raw
        if raw == self._EMPTY:
            return
        end = len(raw) - len(self._TAIL)
        last: tuple[str, int] | None = None  # the block whose end is the next header
        for m in self._BLOCK.finditer(raw, len(self._HEAD), end):  # (a raw newline is never inside a JSON string)
            if last is None:
                if m.start() != len(self._HEAD):
                    raise self.NotWritten("the first block is not where render puts it")
            else:
                stop = m.start() - 1
                if raw[stop] != 44 or not raw.endswith(b"\n    }", 0, stop):  # 44: ","
                    raise self.NotWritten("blocks are not separated as render separates them")
                yield last[0], last[1], stop
            track_id = self._id(m.group(1))
            if last is not None and track_id <= last[0]:
                raise self.NotWritten("blocks are not sorted by id")
            last = (track_id, m.start() + 1)
        if last is None or not raw.endswith(b"\n    }", 0, end):
            raise self.NotWritten("the last block does not end as render ends it")
        yield last[0], last[1], end

    def _id(self, quoted: bytes) -> str:
        try:
            track_id = json.loads(quoted) if b"\\" in quoted else quoted[1:-1].decode("utf-8")
        except ValueError:
            raise self.NotWritten("a block's id is not a JSON string") from None
        if not isinstance(track_id, str):
            raise self.NotWritten("a block's id is not a string")
        return track_id

    def write_spliced(self, fresh: Mapping[str, LockEntry], keep: set[str]) -> bool:
        """Write the lock with ``fresh`` blocks in place of (or beside) the old ones, and without the
        old blocks of tracks not in ``keep``: byte for byte what ``render`` of the same entries
        gives. Return whether the file changed; ``NotWritten`` if it is not in render's form."""
        new_blocks = {k: _block(e).encode("utf-8") for k, e in fresh.items()}
        waiting = sorted(new_blocks)  # blocks to place, by id (the few this build changed)
        view = memoryview(self._raw)
        items: list[Any] = []  # new blocks (bytes) and runs of old blocks ([start, stop])
        changed = False

        def old(start: int, stop: int) -> None:
            if items and isinstance(items[-1], list) and items[-1][1] + 2 == start:
                items[-1][1] = stop  # the next block of a run: copied with its separator
            else:
                items.append([start, stop])

        n = 0
        for track_id, start, stop in self._blocks():
            while n < len(waiting) and waiting[n] < track_id:
                items.append(new_blocks[waiting[n]])
                changed, n = True, n + 1
            if n < len(waiting) and waiting[n] == track_id:
                n += 1
                if new_blocks[track_id] != self._raw[start:stop]:
                    items.append(new_blocks[track_id])
                    changed = True
                    continue
                old(start, stop)
            elif track_id in keep:
                old(start, stop)
            else:
                changed = True  # a track no longer in the manifest
        for track_id in waiting[n:]:
            items.append(new_blocks[track_id])
            changed = True
        if not changed:
            return False
        pieces: list[Any] = [self._HEAD + (b"\n" if items else b"")]
        for i, item in enumerate(items):
            if i:
                pieces.append(b",\n")
            pieces.append(item if isinstance(item, bytes) else view[item[0]:item[1]])
        pieces.append(self._TAIL if items else b"}\n}\n")
        try:
            atomic_write_bytes(self.path, pieces)
        except OSError as exc:
            raise MusicbuildError(f"cannot write {self.path}: {exc.strerror}",
                                  "the outputs are built; make the folder writable and run `musicbuild build` "
                                  "again to record them in the lock") from None
        return True


def changed_tracks(old: Mapping[str, LockEntry] | None, new: Mapping[str, LockEntry]) -> list[str]:
    """Track ids whose lock block would be added, removed or changed."""
    old = old or {}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def entry_for(pt: PlannedTrack, cache: Cache | Snapshot) -> LockEntry | None:
    """The lock block of a track this build left ok (its keys are the plan's, its hashes the
    records materializing wrote), or None if an output has no record."""
    outputs = []
    for po in pt.outputs:
        record = cache.get_output(po.output.path)
        if record is None or record.get("out_key") != po.out_key:
            return None
        outputs.append(LockedOutput(po.output.rel, int(record.get("clip", po.output.clip)), po.out_key,
                                    str(record["sha256"])))
    gen = cache.generation_record(pt.gen_key) or {}
    job = gen.get("job_id")
    spec = pt.spec
    return LockEntry(spec.id, pt.gen_key, str(gen.get("provider") or spec.provider.name),
                     str(gen.get("model") or spec.model), spec.seed, (str(job),) if job else (), spec.clips,
                     tuple(outputs))


def updated_entries(planned: Iterable[PlannedTrack], ok: set[str], cache: Cache | Snapshot, old: Mapping[str, LockEntry],
                    track_ids: Iterable[str]) -> dict[str, LockEntry]:
    """The lock after a build: fresh blocks for the tracks in ``ok``, the old block for tracks not
    built this time (failed, skipped, not selected), none for tracks no longer in the manifest."""
    ids = set(track_ids)
    entries = {k: v for k, v in old.items() if k in ids}
    for pt in planned:
        if pt.spec.id in ok:
            entry = entry_for(pt, cache)
            if entry is not None:
                entries[pt.spec.id] = entry
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
