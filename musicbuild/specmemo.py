"""The spec memo: each ``tracks:`` entry's rendered specs and keys, kept from one build to the next.

Stored in ``<cache_dir>/memo/<hash of the manifest path>.json`` (JSON, never pickle; derived
state like the stamp). An entry is found by the SHA-256 of the entry's text and used only if
everything else it was derived from is unchanged:

- ``context``: the head of the manifest the entry does not name itself (``defaults``, every
  provider's settings, ``output_dir``, ``inputs``, the manifest's folder) and a fingerprint of the
  code (musicbuild's files, PyYAML, Jinja2, jsonschema, the installed provider types);
- ``vars``: the value of each top-level var its templates name (found by recording every template
  rendered for the entry: a var no template of the entry names cannot change it), so editing a var
  re-renders exactly the entries that use it;
- ``inputs``: each input file as written (re-resolved, so a moved symlink counts) and its size and
  change times; ``dirs``: each output folder and the real folder it resolved to.

What a hit gives is what the full path would compute from the same inputs; every check a hit
skips is either proven by these or run again over all tracks (duplicate ids and outputs, protected
paths, limits). A missing, stale or damaged memo only costs the full render (damage is a warning).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping

from .model import Metadata, OutputSpec, ProviderConfig, TrackSpec

MEMO_VERSION = 1
DISABLE_ENV = "MUSICBUILD_NO_MEMO"  # set (to anything): no memo, always the full loader (manifest.NO_MEMO_ENV)


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Changes whenever code that shapes a spec or a key may have changed: musicbuild's files and
    those of the libraries that parse, validate and render (an upgrade rewrites them), by size and
    mtime, and the installed distributions (plugins among them)."""
    import importlib.util

    h = hashlib.sha256()
    folders = [(os.path.dirname(__file__), True)]
    for lib in ("yaml", "jinja2", "jsonschema"):  # their own files, not their tests: an upgrade rewrites them
        found = importlib.util.find_spec(lib)
        folders += [(f, False) for f in (found.submodule_search_locations or [])] if found else [(f"?{lib}", False)]
    for top, deep in folders:
        for dirpath, dirnames, filenames in sorted(os.walk(top)):
            dirnames[:] = sorted(d for d in dirnames if deep and d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith((".py", ".json", ".so")):
                    st = os.stat(os.path.join(dirpath, name))
                    h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    h.update(repr(_distributions()).encode())
    return h.hexdigest()


def _distributions() -> list[str]:
    """The metadata folders (``name-version.dist-info``) of what is installed on the import path.

    A plugin shapes specs (its type's defaults, clips, prices), and pip installing, upgrading or
    removing one adds, renames or drops its folder. Listing the folders costs a directory read;
    hashing the plugins' infos, as before, meant the entry-point scan (importlib.metadata) and
    importing every provider module in each edit-loop command, ~0.1 s, for a change that happens
    on `pip install`. Any distribution's change counts: rare, and it only costs one full load.
    (A plugin edited in place under an editable install keeps its folder: bump its version, or set
    MUSICBUILD_NO_MEMO while developing it.) The built-in types' infos are musicbuild's own files."""
    import sys

    found = []
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as folder:
                found += [e.name for e in folder if e.name.endswith((".dist-info", ".egg-info"))]
        except OSError:  # a zip file, or a folder that is not there
            continue
    return sorted(found)


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                     default=str).encode()).hexdigest()[:32]


def memo_path(cache_dir: Path, manifest: Path) -> Path:
    return cache_dir / "memo" / (hashlib.sha256(str(manifest).encode()).hexdigest()[:24] + ".json")


def file_state(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


# -- specs as JSON lists (positional: half the size of objects, and a 100,000-track memo loads in one go)
def encode_spec(spec: TrackSpec) -> list[Any]:
    md = spec.metadata
    return [spec.id, spec.provider.name, spec.model, spec.prompt, list(spec.tags), spec.lyrics, spec.instrumental,
            spec.seed, spec.duration, spec.bpm, spec.format,
            [[o.clip, o.rel, str(o.path), None if o.root is None else str(o.root)] for o in spec.outputs],
            spec.options, spec.clips, None if spec.reference_audio is None else str(spec.reference_audio),
            [md.title, md.artist, md.album, md.album_artist, md.genre, md.year, md.track_number, md.comment,
             md.copyright, md.publisher, None if md.cover is None else str(md.cover), md.id3v23],
            list(spec.labels), [str(f) for f in spec.files], spec.post, spec.seed_given]


_METADATA = [f for f in Metadata.__dataclass_fields__]
_OUTPUT = [f for f in OutputSpec.__dataclass_fields__]


def _frozen(cls: type, values: dict[str, Any]) -> Any:
    """A frozen dataclass from all its field values, without its ``__init__`` (one ``setattr`` per
    field: 40 % of rebuilding 100,000 specs). Only for these plain classes, which have no
    ``__post_init__``; ``roundtrips`` compares the result with the real thing."""
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


class Decoder:
    """Rebuilds specs; equal folders become one ``Path`` object (100,000 outputs share a few)."""

    def __init__(self, providers: Mapping[str, ProviderConfig]) -> None:
        self.providers = providers
        self._paths: dict[str, Path] = {}

    def _shared(self, text: str) -> Path:
        path = self._paths.get(text)
        if path is None:
            path = self._paths[text] = Path(text)
        return path

    def _path(self, text: str) -> Path:
        folder, sep, name = text.rpartition(os.sep)
        if not folder or not name or name in (".", ".."):
            return Path(text)
        return self._shared(folder) / name  # parses the name only: half the cost of Path(text)

    def spec(self, row: list[Any], index: int) -> TrackSpec:
        (track_id, provider, model, prompt, tags, lyrics, instrumental, seed, duration, bpm, fmt, outputs, options,
         clips, reference, md, labels, files, post, seed_given) = row
        outs = tuple(_frozen(OutputSpec, {"clip": clip, "rel": rel, "path": self._path(path),
                                          "root": None if root is None else self._shared(root)})
                     for clip, rel, path, root in outputs)
        return _frozen(MemoSpec, {
            "id": track_id, "index": index, "provider": self.providers[provider], "model": model, "seed": seed,
            "format": fmt, "outputs": outs, "options": options, "clips": clips, "labels": tuple(labels),
            "files": tuple(Path(f) for f in files), "post": post, "seed_given": seed_given,
            "_rest": (prompt, tags, lyrics, instrumental, duration, bpm, reference, md)})


_LAZY = frozenset({"prompt", "tags", "lyrics", "instrumental", "duration", "bpm", "reference_audio", "metadata"})
_FIELDS = tuple(TrackSpec.__dataclass_fields__)


class MemoSpec(TrackSpec):
    """A spec from the memo whose fields an up-to-date track never needs (prompt, tags, lyrics,
    duration, bpm, reference audio, metadata) are decoded on first use: planning and building
    100,000 unchanged tracks reads none of them. Equal to the ``TrackSpec`` with the same fields."""

    def __getattr__(self, name: str) -> Any:  # only for attributes not set: the lazy fields, once
        rest = self.__dict__.pop("_rest", None) if name in _LAZY else None
        if rest is None:
            raise AttributeError(name)
        prompt, tags, lyrics, instrumental, duration, bpm, reference, md = rest
        if md[10] is not None:
            md = [*md[:10], Path(md[10]), md[11]]
        self.__dict__.update(prompt=prompt, tags=tuple(tags), lyrics=lyrics, instrumental=instrumental,
                             duration=duration, bpm=bpm, reference_audio=None if reference is None else Path(reference),
                             metadata=_frozen(Metadata, dict(zip(_METADATA, md))))
        return self.__dict__[name]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrackSpec):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    __hash__ = TrackSpec.__hash__


@dataclass
class Entry:
    """What one ``tracks:`` entry rendered to, and everything that decided it."""

    context: str
    vars: dict[str, str | None]  # top-level var name -> digest of its value (None: not defined)
    inputs: list[list[Any]]  # [as written, resolved, [size, mtime_ns, ctime_ns]]
    dirs: list[list[str]]  # [folder as joined, real folder]
    specs: list[list[Any]]  # encode_spec rows
    keys: list[list[Any]]  # per spec: [generation key, [output keys]]
    nodes: int  # YAML values of the entry parsed alone (the document's limit counts them)
    made: list[TrackSpec] = field(default_factory=list, repr=False, compare=False)  # specs just rendered

    def to_json(self) -> list[Any]:
        return [self.context, self.vars, self.inputs, self.dirs, self.specs, self.keys, self.nodes]

    @staticmethod
    def check(data: Any) -> list[Any]:
        """``data`` if it has an entry's shape (as ``to_json`` gives), else ``TypeError``/``ValueError``."""
        context, vars_, inputs, dirs, specs, keys, nodes = data
        if not (type(context) is str and type(vars_) is dict and type(specs) is list  # noqa: E721
                and type(inputs) is list and type(dirs) is list  # noqa: E721
                and type(keys) is list and len(keys) == len(specs) and type(nodes) is int):  # noqa: E721
            raise TypeError("not a memo entry")
        return data

    @classmethod
    def from_json(cls, data: list[Any]) -> "Entry":
        context, vars_, inputs, dirs, specs, keys, nodes = cls.check(data)
        entry = object.__new__(cls)  # (its __init__ is a tenth of a 100,000-entry load)
        entry.__dict__.update(context=context, vars=vars_, inputs=inputs, dirs=dirs, specs=specs, keys=keys,
                              nodes=nodes, made=[])
        return entry


_scan = json.JSONDecoder().scan_once  # the C scanner itself: json.loads checks encodings and whitespace first


def _decode(line: bytes) -> Any:
    text = line.decode("utf-8")
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the entry")
    return value


@dataclass
class Memo:
    """One manifest's memo file: a header line, then one line per entry (``<item hash> <JSON>``), so
    that a load decodes only the entries it asks for and keeps none of the file (100,000 entries
    are 60 MB of JSON, three times that as Python lists)."""

    path: Path
    fingerprint: str
    lines: Mapping[str, bytes] = field(default_factory=dict)  # item hash -> its JSON, until the load is done
    fresh: dict[str, Entry] = field(default_factory=dict)  # made by this load, to be saved
    used: set[str] = field(default_factory=set)  # item hashes of the current manifest
    changed: bool = True  # whether ``save`` has anything to write
    warning: str | None = None
    stale: int = 0  # lines of the file no entry of the manifest uses (``done``)
    appendable: bool = False  # the file may take the new entries at its end (``save``)

    def get(self, item_hash: str) -> Entry | None:
        found = self.get_list(item_hash)
        return None if found is None else Entry.from_json(found)

    def get_list(self, item_hash: str) -> list[Any] | None:
        """The entry as its JSON list (``Entry.to_json``'s shape, checked): what a clean entry needs,
        without making an ``Entry``."""
        line = self.lines.get(item_hash)
        if line is None:
            return None
        try:
            return Entry.check(_decode(line))
        except (TypeError, ValueError, RecursionError) as exc:
            self._damaged(exc)
            return None

    def _damaged(self, exc: Exception) -> None:
        self.warning = self.warning or (f"the spec memo {self.path} was damaged ({type(exc).__name__}); planning "
                                        "rendered its tracks again (the next build writes a new memo)")

    def done(self) -> None:
        """The load is over: note whether the file must change, and let go of its lines."""
        self.changed = bool(self.fresh) or set(self.lines) != self.used
        # lines of the file no entry uses now: of other versions of entries, or written over later
        self.stale = self.lines.count - sum(1 for key in self.used if key in self.lines) if isinstance(self.lines, _Lines) else 0
        self.appendable = isinstance(self.lines, _Lines)  # a file of this code, read whole and fine
        self.lines = {}


class _Lines(Mapping[str, bytes]):
    """The entries of a memo file by item hash, sliced from the file's bytes when asked for: one
    copy of the file in memory, not three (bytes, lines, entries)."""

    def __init__(self, raw: bytes, start: int) -> None:
        self._raw = raw
        self._at: dict[str, int] = {}  # where each entry's JSON starts (a key written again: the later line wins)
        self.count = 0  # entry lines, those written over included
        end = raw.rfind(b"\n") + 1  # a last line without its newline was torn by a crash: not an entry
        while start < end:
            stop = raw.find(b"\n", start)
            stop = end if stop < 0 else stop
            space = raw.find(b" ", start, stop)
            if space > start:
                self._at[raw[start:space].decode("ascii", "replace")] = space + 1  # (no end: 9 MB less at 100,000)
                self.count += 1
            start = stop + 1

    def __getitem__(self, key: str) -> bytes:
        begin = self._at[key]
        return self._raw[begin:self._raw.index(b"\n", begin)]

    def view(self, key: str) -> memoryview | None:
        """The entry's line without copying it (``save`` writes unchanged lines from here)."""
        begin = self._at.get(key)
        return None if begin is None else memoryview(self._raw)[begin:self._raw.index(b"\n", begin)]

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def __iter__(self) -> Iterator[str]:
        return iter(self._at)

    def __len__(self) -> int:
        return len(self._at)


def _parse(raw: bytes, fingerprint: str) -> Mapping[str, bytes]:
    """The entry lines of a memo file made by this code (none if made by other code);
    ``ValueError`` if it is not a memo file at all."""
    newline = raw.find(b"\n")
    header = json.loads(raw[: newline if newline >= 0 else len(raw)])
    if not isinstance(header, dict) or "v" not in header:
        raise ValueError("not a memo")
    if header.get("v") != MEMO_VERSION or header.get("fingerprint") != fingerprint or newline < 0:
        return {}
    return _Lines(raw, newline + 1)


def read(cache_dir: Path, manifest: Path, env: Mapping[str, str]) -> Memo | None:
    """The memo of ``manifest`` (empty if there is none yet or it was made by other code); None when
    disabled. A damaged memo is an empty one with a warning: it is derived state."""
    if env.get(DISABLE_ENV):
        return None
    memo = Memo(memo_path(cache_dir, manifest), code_fingerprint())
    try:
        raw = memo.path.read_bytes()
    except OSError:
        return memo
    try:
        memo.lines = _parse(raw, memo.fingerprint)
    except (ValueError, RecursionError) as exc:
        memo._damaged(exc)
    return memo


def save(memo: Memo) -> None:
    """Keep the entries of the manifest as it is now. After a small edit the new entries are added
    at the end of the file (the cost of the edit, not of the manifest: a later line of the same key
    wins, a torn last line is ignored); when a third of the file would be lines no entry uses, it
    is written again whole with only the entries in use, unchanged ones copied as they are."""
    if not memo.changed:
        return
    if memo.appendable and memo.fresh and (memo.stale + len(memo.fresh)) * 2 < len(memo.used) and _append(memo):
        memo.changed = False
        return
    from .cache import atomic_write_bytes

    try:
        old = _parse(memo.path.read_bytes(), memo.fingerprint)
    except (OSError, ValueError, RecursionError):
        old = {}
    out = [json.dumps({"v": MEMO_VERSION, "fingerprint": memo.fingerprint}).encode(), b"\n"]
    for key in sorted(memo.used):
        entry = memo.fresh.get(key)
        line = (json.dumps(entry.to_json(), separators=(",", ":"), ensure_ascii=False).encode() if entry
                else old.view(key) if isinstance(old, _Lines) else None)
        if line is not None:
            out += (key.encode(), b" ", line, b"\n")
    try:
        memo.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(memo.path, out)  # in pieces: 100,000 entries are 60 MB, not joined in memory
    except OSError:
        pass  # derived state: the next plan renders what it must
    memo.changed = False


def _append(memo: Memo) -> bool:
    lines = [key.encode() + b" " + json.dumps(entry.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
             + b"\n" for key, entry in sorted(memo.fresh.items())]
    try:
        with open(memo.path, "ab") as f:
            if f.tell() == 0:
                return False  # the file went away meanwhile: write it whole
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        return False
    return True


def roundtrips(rows: list[list[Any]]) -> bool:
    """Whether JSON gives back exactly these rows (it has no tuples, NaN != NaN, ...): an entry
    whose values do not survive it is not kept. (``Decoder`` itself is proven by the tests.)"""
    try:
        return json.loads(json.dumps(rows, ensure_ascii=False)) == rows
    except (TypeError, ValueError):
        return False
