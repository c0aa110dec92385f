"""Load a manifest re-rendering only the ``tracks:`` entries that changed (issue 11, the edit loop).

The full loader (``manifest._Loader``) parses, validates and renders every entry: seconds at
10,000 tracks, a minute at 100,000. Here the text is cut into its head and one piece per entry
(``yamlsplit``); the head is loaded as the full loader loads it; each entry whose text and
inputs are unchanged (``specmemo``: its text hash, the vars it uses, the head it inherits, its
input files, the code) gives back its specs and keys without YAML, schema or Jinja; every other
entry is parsed on its own, validated and rendered by the full loader's own code. The checks that
span entries (duplicate ids and outputs, protected paths, the track and YAML limits) run over all
tracks as before.

Anything this path is not sure of (a layout it does not cut, an entry that does not parse on its
own, such as an alias to an anchor elsewhere) and any problem at all (every diagnostic) returns
None: the full loader then runs from the start and says exactly what it always said. So an error
message never comes from here, and a plan made here equals the full path's plan
(``tests/test_edit_loop.py`` proves it edit by edit).
"""
from __future__ import annotations

import gc
import hashlib
import re
from pathlib import Path
from typing import Any, Mapping

from . import limits, paths, schema, specmemo
from .cleanset import CleanSet
from .errors import MusicbuildError
from .keys import generation_key, output_key, tag_fields
from .manifest import Manifest, _Loader
from .model import TrackSpec
from .render import Renderer
from .limits import MAX_STOPPED_SECONDS
from .renderbudget import TimeBudget
from .yamlsplit import split_tracks
from .yamlsrc import SourceMap, YamlSyntaxError, load_yaml

_PLACEHOLDER_NAMES = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# An anchor, alias, tag or merge key: text that may mean something else outside its document.
_REFERENCES = re.compile(r"(?:^|[\s\[{,])[&*!]|<<", re.M)
FAST_RENDER_SECONDS = 0.2
MANY_MISSES = 64  # more entries than this (and a quarter) to render: one full load beats one parse each


class _RecordingRenderer(Renderer):
    """Renders as ever, and keeps the sources of the templates it rendered for the current entry."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] | None = None
        # A template slow enough to meet the deadline is an error the full loader will time and
        # report anyway: give up here after FAST_RENDER_SECONDS in all, not after the full second.
        self._time.stopped = max(0.0, MAX_STOPPED_SECONDS - FAST_RENDER_SECONDS)

    def full_budget(self) -> None:
        """The full loader's own time budget (it must time and word a slow template as ever)."""
        self._time = TimeBudget()

    def render(self, source: str, context: Mapping[str, Any], origin: str | None = None) -> str:
        if self.seen is not None and "{" in source:
            self.seen.add(source)
        return super().render(source, context, origin)

    def names(self, sources: set[str]) -> set[str]:
        """Every variable name these templates can read."""
        out: set[str] = set()
        for source in sources:
            plain = _PLACEHOLDER_NAMES.sub("", source)
            if "{{" not in plain and "{%" not in plain and "{#" not in plain:
                out.update(_PLACEHOLDER_NAMES.findall(source))
            else:
                from jinja2 import meta  # here: templates of {{ name }}s only never import Jinja

                out.update(meta.find_undeclared_variables(self._env.parse(source)))
        return out


class LazySourceMap(SourceMap):
    """The manifest's locations, made (by a full parse) only when a message needs one."""

    def __init__(self, file: str, text: str, env: Mapping[str, str]) -> None:
        super().__init__(file)
        self._text, self._env, self._loaded = text, env, False

    def where(self, path: Any) -> tuple[int, int]:
        if not self._loaded:
            self._loaded = True
            _, smap, _ = load_yaml(self._text, self.file, limits.max_yaml_nodes(self._env), limits.MAX_YAML_DEPTH)
            self.locations = smap.locations
        return super().where(path)


class _FastLoader(_Loader):
    def __init__(self, path: Path, raw: bytes, env: Mapping[str, str]) -> None:
        super().__init__(path, raw, env)
        self.renderer = _RecordingRenderer()
        self._inputs_seen: list[list[Any]] | None = None
        self._dirs_seen: dict[str, str] | None = None
        self._reals: dict[str, str] = {}
        self._recorded: dict[int, tuple[set[str], list[list[Any]], dict[str, str], int]] | None = None
        self.known: dict[int, tuple[TrackSpec, str, tuple[str, ...]]] = {}  # keys computed or memoized, by spec
        self.full_load = False  # the full loader's own load ran (_load_recording)

    def resolve_input(self, rel: str) -> Path:
        path = super().resolve_input(rel)
        if self._inputs_seen is not None:
            self._inputs_seen.append([rel, str(path), specmemo.file_state(str(path))])
        return path

    def realdir(self, path: Path) -> Path:
        real = super().realdir(path)
        if self._dirs_seen is not None:
            self._dirs_seen[str(path)] = str(real)
        return real

    def _expand(self, i: int, track: dict, *args: Any, **kwargs: Any) -> list[tuple[TrackSpec, dict[str, Any]]]:
        if self._recorded is None:
            return super()._expand(i, track, *args, **kwargs)
        self.renderer.seen, self._inputs_seen, self._dirs_seen = set(), [], {}
        try:
            return super()._expand(i, track, *args, **kwargs)
        finally:
            # values of the entry parsed alone: the list, the entry and what is below it
            self._recorded[i] = (self.renderer.seen, self._inputs_seen, self._dirs_seen, 2 + _count(track))
            self.renderer.seen, self._inputs_seen, self._dirs_seen = None, None, None

    # -- the whole load ----------------------------------------------------------------------
    def load_fast(self, text: str, partial: bool = False) -> Manifest | None:
        """``partial``: clean entries (``cleanset.py``) become rows in ``Manifest.clean``, not specs."""
        split = split_tracks(text)
        if split is None:
            return None
        max_nodes, max_depth = limits.max_yaml_nodes(self.env), limits.MAX_YAML_DEPTH
        shape: dict[str, int] = {}
        data, _, dupes = load_yaml(split.head, self.file, max_nodes, max_depth, shape)
        if dupes or not isinstance(data, dict) or data.get("tracks") != []:
            return None
        if schema.validate(data):
            return None
        nodes = shape["size"]
        top_vars = self._top_vars(data.get("vars", {}))
        output_dir = self._dir(data, "output_dir", "build", top_vars)
        cache_dir = self._cache_dir(data, top_vars)
        self.inputs = paths.InputPolicy(self.root, self._allowed_inputs(data.get("inputs", {}).get("allow", [])))
        providers = self._providers(data.get("providers", {}), top_vars)
        if self.diags:
            return None
        defaults = data.get("defaults", {})
        clean = self._clean_set(cache_dir) if partial else None  # (read before the memo: a lower peak)
        memo = specmemo.read(cache_dir, self.path, self.env)
        context = specmemo.digest([str(self.path), str(output_dir), str(cache_dir), [str(a) for a in self.inputs.allowed],
                                   defaults, {n: vars(p) for n, p in providers.items()}])
        var_digests: dict[str, str | None] = {}

        def var_digest(name: str) -> str | None:
            if name not in var_digests:
                var_digests[name] = specmemo.digest(top_vars[name]) if name in top_vars else None
            return var_digests[name]

        hashes = [hashlib.sha256(item.encode()).hexdigest()[:32] for item in split.items]
        valid: set[str] = set()  # entries taken from the memo
        absent = sum(h not in memo.lines for h in hashes) if memo is not None else len(hashes)
        if memo is None or not memo.lines or _many(absent, len(hashes)):  # nothing to reuse: one full load
            return self._load_recording(split, hashes, valid, memo, context, var_digest)
        decoder = specmemo.Decoder(providers)
        tracks: list[TrackSpec] = []
        origins: dict[str, Any] = {}
        outs: set[str] = set()
        max_tracks = limits.max_tracks(self.env)
        misses = 0
        clean_ids: set[str] = set()  # (clean tracks need no origin: no message will name them)
        for i, (item_text, item_hash) in enumerate(zip(split.items, hashes)):
            found = memo.get_list(item_hash) if memo is not None else None  # decoded one at a time (memory)
            entry = None
            if found is not None and self._valid_parts(found[0], found[1], found[2], found[3], context, var_digest):
                kept = clean.take(i, found[4], found[5]) if clean is not None else None
                if kept is not None:  # up to date as the last build left it: no spec, no plan (cleanset.py)
                    valid.add(item_hash)
                    memo.used.add(item_hash)  # type: ignore[union-attr]
                    nodes += found[6] - 1
                    for track in kept:
                        if track.id in origins or track.id in clean_ids or any(p in outs for p in track.paths):
                            return None
                        clean_ids.add(track.id)
                        outs.update(track.paths)
                    continue
                entry = specmemo.Entry.from_json(found)
                specs = [decoder.spec(row, i) for row in entry.specs]
                for spec, (gen, out_keys) in zip(specs, entry.keys):
                    self.known[id(spec)] = (spec, gen, tuple(out_keys))
                valid.add(item_hash)
            else:
                misses += 1
                if _many(misses, len(hashes)):  # more changed than the file said: one full load instead
                    return self._load_recording(split, hashes, valid, memo, context, var_digest)
                entry = self._render(i, item_text, defaults, top_vars, providers, output_dir, context, var_digest,
                                     max_nodes, max_depth, max_tracks - len(origins) - len(clean_ids))
                if entry is None:  # a problem, or text that means something else alone: the full loader
                    self.diags = []
                    return self._load_recording(split, hashes, valid, memo, context, var_digest)
                specs = entry.made
                if memo is not None and entry.specs:
                    memo.fresh[item_hash] = entry
            if memo is not None:
                memo.used.add(item_hash)
            nodes += entry.nodes - 1
            for spec in specs:
                if spec.id in origins or spec.id in clean_ids or any(str(o.path) in outs for o in spec.outputs):
                    return None  # the full loader says which, and where
                origins[spec.id] = ("tracks", i)
                outs.update(str(o.path) for o in spec.outputs)
                tracks.append(spec)
            if len(origins) + len(clean_ids) > max_tracks or nodes > max_nodes:
                return None
        if memo is not None:
            memo.done()
        if clean is not None:
            clean.done()
        if clean:
            if not self._clean_protected(clean, tracks):
                return None
            self._protect(tracks, cache_dir, origins, {Path(f) for t in clean.tracks for f in t.files})
        else:
            self._protect(tracks, cache_dir, origins)
        remote = self._head_string(data, "remote", top_vars)
        coordinator = self._head_string(data, "coordinator", top_vars)
        if self.diags:
            return None
        return Manifest(self.path, self.root, output_dir, cache_dir, providers, tuple(tracks),
                        LazySourceMap(self.file, text, self.env), hashlib.sha256(self.raw).hexdigest(), origins,
                        remote, coordinator, memo, self.known, clean if clean else None)

    def _clean_set(self, cache_dir: Path) -> CleanSet | None:
        """An empty ``CleanSet`` over the last stamp's outputs, if the stamp can vouch for them."""
        from . import stamp

        found = stamp.read_outputs(cache_dir, self.path, self.env)
        return CleanSet(found) if found is not None else None

    def _clean_protected(self, clean: CleanSet, tracks: list[TrackSpec]) -> bool:
        """Whether no clean output is an input file a changed track now reads (else the full
        loader says so; clean tracks were checked against everything else when they were built)."""
        new_inputs = {str(f) for spec in tracks for f in spec.files}
        return not new_inputs or not any(p in new_inputs for t in clean.tracks for p in t.paths)

    def _load_recording(self, split: Any, hashes: list[str], valid: set[str], memo: specmemo.Memo | None,
                        context: str, var_digest: Any) -> Manifest:
        """The full loader itself (its errors are the errors), recording what each entry used, so
        that the entries that mean the same on their own go into the memo."""
        self._recorded = {}
        if memo is not None:
            memo.fresh.clear()
        self.renderer.full_budget()
        self.full_load = True  # from here on, an error is the full loader's own: said as it is, not re-run
        manifest = _Loader.load(self)
        recorded, self._recorded = self._recorded, None
        if memo is None or len(recorded) != len(split.items):  # not the entries the text was cut into
            return manifest
        by_entry: dict[int, list[TrackSpec]] = {}
        for spec in manifest.tracks:
            by_entry.setdefault(spec.index, []).append(spec)
        for i, (item_text, item_hash) in enumerate(zip(split.items, hashes)):
            memo.used.add(item_hash)
            if item_hash in valid or _REFERENCES.search(item_text) or i not in recorded:
                continue  # (with a reference: parsed in context, it may lean on text elsewhere)
            kept = memo.get(item_hash)
            if kept is not None and self._valid(kept, context, var_digest):
                continue  # unchanged, only not looked at before the switch to the full loader
            seen, inputs, dirs, nodes = recorded[i]
            entry = self._entry(by_entry.get(i, []), seen, inputs, dirs, nodes, context, var_digest)
            if entry.specs:
                memo.fresh[item_hash] = entry
        memo.done()
        return Manifest(manifest.path, manifest.root, manifest.output_dir, manifest.cache_dir, manifest.providers,
                        manifest.tracks, manifest.source, manifest.sha256, manifest.origins, manifest.remote,
                        manifest.coordinator, memo, self.known)

    def _entry(self, specs: list[TrackSpec], seen: set[str], inputs: list[list[Any]], dirs: dict[str, str],
               nodes: int, context: str, var_digest: Any) -> specmemo.Entry:
        """The memo entry of specs just rendered (their keys computed now, for the planner too)."""
        keys = []
        for spec in specs:
            gen = generation_key(spec)
            tags = tag_fields(spec)
            out_keys = tuple(output_key(gen, spec, o, tags) for o in spec.outputs)
            self.known[id(spec)] = (spec, gen, out_keys)
            keys.append([gen, list(out_keys)])
        rows = [specmemo.encode_spec(s) for s in specs]
        keep = specmemo.roundtrips(rows)
        return specmemo.Entry(context, {n: var_digest(n) for n in sorted(self.renderer.names(seen))}, inputs,
                              sorted([k, v] for k, v in dirs.items()), rows if keep else [], keys if keep else [],
                              nodes, specs)

    def _head_string(self, data: dict, key: str, top_vars: Mapping[str, Any]) -> str | None:
        value = (data.get("cache") or {}).get(key)
        return self._string(("cache", key), value, top_vars) if value else value

    def _valid(self, entry: specmemo.Entry, context: str, var_digest: Any) -> bool:
        """Whether everything ``entry`` was made from is as it was."""
        return self._valid_parts(entry.context, entry.vars, entry.inputs, entry.dirs, context, var_digest)

    def _valid_parts(self, made_in: str, used_vars: dict[str, str | None], inputs: list[list[Any]],
                     dirs: list[list[str]], context: str, var_digest: Any) -> bool:
        if made_in != context:
            return False
        for name, digest in used_vars.items():  # (plain loops: this runs once per entry, 100,000 times)
            if var_digest(name) != digest:
                return False
        for rel, resolved, state in inputs:
            try:
                if str(self.inputs.resolve(rel)) != resolved or specmemo.file_state(resolved) != state:
                    return False
            except (paths.PathProblem, OSError):
                return False
        reals = self._reals
        for lexical, real in dirs:
            if (reals.get(lexical) or self._real(lexical)) != real:
                return False
        return True

    def _real(self, folder: str) -> str:
        """``realdir`` of a folder an entry recorded, as text (once per folder: tracks share them)."""
        real = self._reals.get(folder)
        if real is None:
            real = self._reals[folder] = str(super().realdir(Path(folder)))
        return real

    def _render(self, i: int, item_text: str, defaults: dict, top_vars: dict, providers: dict, output_dir: Path,
                context: str, var_digest: Any, max_nodes: int, max_depth: int, room: int) -> specmemo.Entry | None:
        """Parse, validate and render one entry alone, as the full loader does; None on any problem."""
        shape: dict[str, int] = {}
        try:
            items, _, dupes = load_yaml(item_text, self.file, max_nodes, max_depth - 1, shape)
        except YamlSyntaxError:
            return None
        if dupes or not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
            return None
        if schema.validate({"version": 1, "tracks": items}):
            return None
        self._recorded = {}
        try:
            expanded = self._expand(i, items[0], defaults, top_vars, providers, output_dir, room=room)
        finally:
            recorded, self._recorded = self._recorded, None
        if self.diags:
            return None
        seen, inputs, dirs, _ = recorded[i]
        return self._entry([spec for spec, _ in expanded], seen, inputs, dirs, shape["size"], context, var_digest)


def _many(misses: int, entries: int) -> bool:
    return misses > MANY_MISSES and misses * 4 > entries


def _count(value: Any) -> int:
    """YAML values below ``value`` (as ``yamlsrc`` counts them: keys too), for an entry without aliases."""
    if isinstance(value, dict):
        return sum(1 + 1 + _count(v) for v in value.values())
    if isinstance(value, list):
        return sum(1 + _count(v) for v in value)
    return 0


def load_fast(path: Path, raw: bytes, env: Mapping[str, str], partial: bool = False) -> Manifest | None:
    """The manifest through the memo, or None: then the full loader must run (and say what is wrong)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    loader = _FastLoader(path, raw, env)
    # The load makes millions of small objects that all live on (decoded memo entries, clean tracks)
    # and no reference cycles: the cyclic collector only re-walks them, ever more of them each pass
    # (a third of a 100,000-track load). It is paused for the load, and resumes after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return loader.load_fast(text, partial)
    except (MusicbuildError, YamlSyntaxError):
        if loader.full_load:  # running it again would say the same after the same work (a slow
            raise  # template: another second)
        return None
    finally:
        if collecting:
            gc.enable()
