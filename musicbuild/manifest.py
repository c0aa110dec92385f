"""Load a manifest: YAML with locations -> schema -> defaults -> matrix -> rendered ``TrackSpec``s.

Everything here is pure except reading the manifest and the files it names. All problems are
collected and raised together as one ``ManifestError`` so a user fixes them in one pass.
"""
from __future__ import annotations

import hashlib
import ipaddress
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from . import limits, paths, schema
from .errors import ConfigError, Diagnostic, ManifestError, UsageError
from .lock import LOCK_NAME
from .model import ProviderConfig, TrackSpec
from .providers.catalog import TYPES
from .providerset import ProviderSet
from .render import Renderer, RenderError
from .trackbuild import TrackBuilder, unknown_model
from .yamlsrc import Path_, SourceMap, YamlSyntaxError, format_path, load_yaml

NO_MEMO_ENV = "MUSICBUILD_NO_MEMO"  # set: always the full loader, no spec memo (specmemo.py)
# Fields merged key by key from `defaults` instead of replaced (a track adds to them).
MERGED_FIELDS = ("vars", "metadata", "options", "post")


@dataclass(frozen=True)
class Manifest:
    path: Path
    root: Path
    output_dir: Path
    cache_dir: Path
    providers: Mapping[str, ProviderConfig]
    tracks: tuple[TrackSpec, ...]
    source: SourceMap
    sha256: str
    origins: Mapping[str, Path_]  # track id -> ("tracks", i)
    remote: str | None = None  # cache.remote: the shared team cache URL
    coordinator: str | None = None  # cache.coordinator: the fleet's Redis URL
    memo: Any = None  # specmemo.Memo: what a build saves for the next load (None: the full loader ran)
    known_keys: Mapping[int, tuple[TrackSpec, str, tuple[str, ...]]] | None = None  # id(spec) -> keys (fastload)
    # Asked for with ``partial``: tracks up to date since the last whole build, as rows, NOT in ``tracks``
    # (``cleanset.CleanSet``; ``incremental.py`` plans and builds such a manifest).
    clean: Any = None

    def diagnostic(self, path: Path_, message: str) -> Diagnostic:
        line, col = self.source.where(path)
        return Diagnostic(self.source.file, line, col, format_path(path), message)


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def load_manifest(path: Path, env: Mapping[str, str] | None = None, partial: bool = False) -> Manifest:
    """``partial``: the caller handles ``Manifest.clean`` (only ``incremental.py`` does)."""
    env = os.environ if env is None else env
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no manifest at {display_path(path)}", "pass one with -f FILE") from None
    except OSError as exc:
        raise UsageError(f"cannot read {display_path(path)}: {exc.strerror}") from None
    if not env.get(NO_MEMO_ENV):
        from .fastload import load_fast  # only the entries that changed are rendered

        manifest = load_fast(path, raw, env, partial)
        if manifest is not None:
            return manifest
    return _Loader(path, raw, env).load()


class _Loader:
    def __init__(self, path: Path, raw: bytes, env: Mapping[str, str]) -> None:
        self.path = path.resolve()
        self.root = self.path.parent
        self.raw = raw
        self.env = env
        self.file = display_path(path)
        self.smap = SourceMap(self.file)
        self.diags: list[Diagnostic] = []
        self.renderer = Renderer()
        self.inputs = paths.InputPolicy(self.root)
        self._file_cache: dict[Path, str] = {}
        self._realdirs: dict[Path, Path] = {}

    # -- reporting ---------------------------------------------------------------------------
    def error(self, path: Path_, message: str) -> None:
        line, col = self.smap.where(path)
        self.diags.append(Diagnostic(self.file, line, col, format_path(path), message))

    def fail_if_errors(self) -> None:
        if self.diags:
            raise ManifestError(self.diags)

    # -- stages ------------------------------------------------------------------------------
    def load(self) -> Manifest:
        try:
            text = self.raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError([Diagnostic(self.file, 1, 1, "", f"not UTF-8 text ({exc.reason})")]) from None
        try:
            data, self.smap, dupes = load_yaml(text, self.file, limits.max_yaml_nodes(self.env), limits.MAX_YAML_DEPTH)
        except YamlSyntaxError as exc:
            raise ManifestError([Diagnostic(self.file, exc.line, exc.col, format_path(exc.path), exc.message)]) from None
        for p, msg in dupes:
            self.error(p, msg)
        if not isinstance(data, dict):
            self.error((), "the manifest is empty: start it with 'version: 1' and a 'tracks:' list" if data is None
                       else f"the manifest must be a mapping with 'version' and 'tracks', not {schema._show(data)}")
            self.fail_if_errors()
        broken = self._schema(data)

        top_vars = self._top_vars(data.get("vars", {}))
        output_dir = self._dir(data, "output_dir", "build", top_vars)
        cache_dir = self._cache_dir(data, top_vars)
        self.inputs = paths.InputPolicy(self.root, self._allowed_inputs(data.get("inputs", {}).get("allow", [])))
        providers = self._providers(data.get("providers", {}), top_vars)
        max_tracks = limits.max_tracks(self.env)

        defaults = data.get("defaults", {})
        tracks: list[TrackSpec] = []
        origins: dict[str, Path_] = {}
        combos: dict[str, Mapping[str, Any]] = {}
        outs: dict[Path, str] = {}
        for i, raw_track in enumerate(data["tracks"]):
            dropped = broken.get(i, frozenset())
            if dropped:
                # Schema errors are already reported; still render the rest of the entry so its other
                # mistakes show up in the same run, but build nothing from it.
                if dropped & {"", "id", "matrix"}:
                    continue
                raw_track = {k: v for k, v in raw_track.items() if k not in dropped}
            expanded = self._expand(i, raw_track, defaults, top_vars, providers, output_dir, dropped,
                                    max_tracks - len(tracks))
            if dropped:
                continue
            for spec, combo in expanded:
                origin: Path_ = ("tracks", i)
                if spec.id in origins:
                    self.error(origin + ("id",), self._duplicate_id(spec.id, origins[spec.id], combos[spec.id], origin, combo))
                    continue
                origins[spec.id] = origin
                combos[spec.id] = combo
                for o in spec.outputs:
                    if o.path in outs:
                        first = outs[o.path]
                        self.error(origin + ("out",),
                                   f"output '{o.rel}' is also written by track '{first}' ({format_path(origins[first])}, "
                                   f"line {self.smap.where(origins[first])[0]}); give each track its own out "
                                   f"(the default is {{{{ id }}}}.{{{{ format }}}}){_combo_note(combo)}")
                    outs[o.path] = spec.id
                tracks.append(spec)
            if len(tracks) > max_tracks:
                self.error(("tracks", i), f"the tracks up to this entry are more than allowed: {_too_many(max_tracks)}")
                break
        self._protect(tracks, cache_dir, origins)
        if not data["tracks"]:
            self.error(("tracks",), "is empty: add at least one track")
        self.fail_if_errors()
        remote = (data.get("cache") or {}).get("remote")
        remote = self._string(("cache", "remote"), remote, top_vars) if remote else remote
        coordinator = (data.get("cache") or {}).get("coordinator")
        coordinator = self._string(("cache", "coordinator"), coordinator, top_vars) if coordinator else coordinator
        return Manifest(self.path, self.root, output_dir, cache_dir, providers, tuple(tracks), self.smap,
                        hashlib.sha256(self.raw).hexdigest(), origins, remote, coordinator)

    def _schema(self, data: dict) -> dict[int, frozenset[str]]:
        """Report schema errors. Stop if any is outside ``tracks[i]``; else return the fields to drop."""
        broken: dict[int, set[str]] = {}
        fatal = False
        for p, msg in schema.validate(data):
            self.error(p, msg)
            if len(p) >= 2 and p[0] == "tracks" and isinstance(p[1], int):
                broken.setdefault(p[1], set()).add(str(p[2]) if len(p) > 2 else "")
            else:
                fatal = True
        if fatal:
            self.fail_if_errors()
        return {i: frozenset(fields) for i, fields in broken.items()}

    def _duplicate_id(self, track_id: str, first: Path_, first_combo: Mapping[str, Any], origin: Path_,
                      combo: Mapping[str, Any]) -> str:
        if first == origin and combo:
            differ = [k for k in combo if not _same(combo[k], first_combo.get(k))]
            return (f"id renders to '{track_id}' for more than one matrix combination ({_combo_text(first_combo)} "
                    f"and {_combo_text(combo)}); put every matrix variable in the id, e.g. add "
                    + " ".join(f"{{{{ {k} }}}}" for k in differ))
        return (f"duplicate track id '{track_id}': {format_path(first)} (line {self.smap.where(first)[0]}) "
                f"already uses it; ids must be unique{_combo_note(combo)}")

    def _top_vars(self, raw: dict) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in raw.items():
            try:  # earlier vars are visible to later ones
                out[k] = self.renderer.render_tree(v, out)
            except RenderError as exc:
                self.error(("vars", k), exc.args[0])
        return out

    def _dir(self, data: dict, key: str, default: str, ctx: Mapping[str, Any]) -> Path:
        try:
            value = self.renderer.render(data.get(key, default), ctx)
        except RenderError as exc:
            self.error((key,), exc.args[0])
            value = default
        problem = paths.dir_problem(value, self.root, writable=key == "cache_dir")
        if problem:
            self.error((key,), problem)
            value = default
        return (self.root / value).resolve()

    def _string(self, path: Path_, value: str, ctx: Mapping[str, Any]) -> str:
        """A top-level string rendered with the top vars (SPEC 1: every string is a template)."""
        try:
            return self.renderer.render(value, ctx)
        except RenderError as exc:
            self.error(path, exc.args[0])
            return value

    def _cache_dir(self, data: dict, ctx: Mapping[str, Any]) -> Path:
        """The cache folder: ``MUSICBUILD_CACHE_DIR``, else ``cache_dir``; checked here so that
        ``validate`` refuses what opening the cache later would."""
        cache_env = self.env.get("MUSICBUILD_CACHE_DIR")
        if not cache_env:
            return self._dir(data, "cache_dir", ".musicbuild", ctx)
        problem = paths.dir_problem(cache_env, Path.cwd(), writable=True)
        if problem:
            raise ConfigError(f"MUSICBUILD_CACHE_DIR {problem}")
        return Path(cache_env).resolve()

    def _allowed_inputs(self, allow: list[str]) -> list[Path]:
        """``inputs.allow``: folders outside the manifest's tree that inputs may come from."""
        out = []
        for j, text in enumerate(allow):
            where = ("inputs", "allow", j)
            problem = paths.text_problem(text)
            folder = None if problem else (self.root / text).resolve()
            if folder is not None and not folder.is_dir():
                problem = "is not a folder"
            elif folder is not None and any(paths.inside(folder, s) or paths.inside(s, folder) for s in paths.SYSTEM_ROOTS):
                problem = f"covers {', '.join(map(str, paths.SYSTEM_ROOTS))}, whose files are never inputs"
            if problem:
                self.error(where, f"{text!r} {problem}")
            elif folder is not None:
                out.append(folder)
        return out

    def _protect(self, tracks: list[TrackSpec], cache_dir: Path, origins: Mapping[str, Path_],
                 other_inputs: set[Path] = frozenset()) -> None:  # type: ignore[assignment]
        """Refuse outputs that would overwrite the manifest, the lock, an input or the cache."""
        inputs = {f for spec in tracks for f in spec.files} | other_inputs
        lock = self.root / LOCK_NAME
        for spec in tracks:
            for o in spec.outputs:
                problem = paths.protected_problem(o.path, self.path, lock, inputs, cache_dir)
                if problem:
                    self.error(origins[spec.id] + ("out",), f"output path {o.rel!r} {problem}; choose another out "
                                                            "or output_dir")

    def _providers(self, raw: dict, ctx: Mapping[str, Any]) -> ProviderSet:
        out: dict[str, ProviderConfig] = {}
        unknown = [name for name, cfg in raw.items() if cfg["type"] not in TYPES]  # plugins add types
        for name in unknown:
            self.error(("providers", name, "type"), _unknown_type(raw[name]["type"]))
        if unknown:
            self.fail_if_errors()
        for name, cfg in raw.items():
            ptype = TYPES[cfg["type"]]
            cfg = {**cfg, **{k: self._string(("providers", name, k), cfg[k], ctx) for k in ("base_url", "model") if k in cfg}}
            base_url = cfg.get("base_url", ptype.base_url)
            if "base_url" in cfg:
                problem = _check_base_url(base_url)
                if problem:
                    self.error(("providers", name, "base_url"), problem)
            if cfg["type"] == "local":
                for key in ("base_url", "api_key_env"):
                    if key in cfg:
                        self.error(("providers", name, key), "the local provider runs in-process and takes no " + key)
            model = cfg.get("model", ptype.default_model)
            if ptype.models and model not in ptype.models:
                self.error(("providers", name, "model"), unknown_model(cfg["type"], model, ptype.models))
            out[name] = ProviderConfig(
                name=name, type=cfg["type"], base_url=base_url,
                api_key_env=cfg.get("api_key_env", ptype.api_key_env), model=model,
                requests_per_minute=float(cfg.get("requests_per_minute", ptype.requests_per_minute)),
                max_concurrent=int(cfg.get("max_concurrent", ptype.max_concurrent)),
                poll_interval=float(cfg.get("poll_interval", ptype.poll_interval)),
                timeout=float(cfg.get("timeout", ptype.timeout)),
                price=cfg.get("price"), options=cfg.get("options", {}),
            )
        return ProviderSet(out)  # and every type name works as a provider name

    def _expand(self, i: int, track: dict, defaults: dict, top_vars: dict, providers: dict,
                output_dir: Path, dropped: frozenset[str] = frozenset(),
                room: int = limits.DEFAULT_MAX_TRACKS) -> list[tuple[TrackSpec, dict[str, Any]]]:
        merged, origin_of = _merge_defaults(i, track, defaults)
        matrix = track.get("matrix")
        combos: list[dict[str, Any]] = [{}]
        if matrix:
            combos = self._matrix(i, matrix, room)
        specs = []
        for combo in combos:
            builder = TrackBuilder(self, i, merged, origin_of, top_vars, combo, providers, output_dir, dropped)
            spec = builder.build()
            if spec is not None:
                specs.append((spec, combo))
        return specs

    def _matrix(self, i: int, matrix: dict, room: int) -> list[dict[str, Any]]:
        axes = {k: v for k, v in matrix.items() if k != "exclude"}
        if not axes:
            self.error(("tracks", i, "matrix"), "matrix needs at least one variable with a list of values")
            return []
        size = math.prod(len(v) for v in axes.values())
        if size > room:  # before expanding it: a 1000 x 1000 matrix must not build a million specs first
            left = f" ({room:,} after the entries above)" if room < limits.max_tracks(self.env) else ""
            self.error(("tracks", i, "matrix"), f"this matrix makes {size:,} tracks{left}: {_too_many(limits.max_tracks(self.env))}")
            return []
        excludes = matrix.get("exclude", [])
        for j, ex in enumerate(excludes):
            for k, v in ex.items():
                where = ("tracks", i, "matrix", "exclude", j, k)
                if k not in axes:
                    self.error(where, f"'{k}' is not a matrix variable{schema.did_you_mean(k, list(axes))}; "
                                      f"the variables are {', '.join(axes)}")
                elif not any(_same(v, x) for x in axes[k]):
                    values = [str(x) for x in axes[k]]
                    self.error(where, f"{v!r} is not a value of {k}{schema.did_you_mean(str(v), values)}, so this "
                                      f"exclude matches nothing; the values are {', '.join(values)}")
        combos = []
        for values in itertools.product(*axes.values()):
            combo = dict(zip(axes, values))
            if any(all(k in combo and _same(combo[k], v) for k, v in ex.items()) for ex in excludes):
                continue
            combos.append(combo)
        if not combos:
            self.error(("tracks", i, "matrix", "exclude"),
                       "excludes every combination, so this entry builds nothing; remove or narrow the excludes")
        return combos

    def read_text(self, path: Path) -> str:
        if path not in self._file_cache:
            data = paths.read_limited(path, limits.MAX_INPUT_TEXT, path.name)
            self._file_cache[path] = data.decode("utf-8")
        return self._file_cache[path]

    def realdir(self, path: Path) -> Path:
        """``path`` with symlinks resolved, memoised: matrix tracks share a handful of folders."""
        if path not in self._realdirs:
            self._realdirs[path] = path.resolve()
        return self._realdirs[path]

    def resolve_input(self, rel: str) -> Path:
        return self.inputs.resolve(rel)


def _too_many(limit: int) -> str:
    return (f"a manifest may make at most {limit:,} tracks; split it into several manifests, or raise the "
            f"limit with the environment variable {limits.MAX_TRACKS_ENV}")


def _same(a: Any, b: Any) -> bool:
    return a == b or str(a) == str(b)


def _combo_text(combo: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in combo.items())


def _combo_note(combo: Mapping[str, Any]) -> str:
    return f" [matrix {_combo_text(combo)}]" if combo else ""


def _merge_defaults(i: int, track: dict, defaults: dict) -> tuple[dict, dict[str, Path_]]:
    merged: dict[str, Any] = {}
    origin_of: dict[str, Path_] = {}
    for k, v in defaults.items():
        merged[k] = v
        origin_of[k] = ("defaults", k)
    for k, v in track.items():
        if k in MERGED_FIELDS and isinstance(merged.get(k), dict) and isinstance(v, dict):
            for key in merged[k]:  # keys inherited from defaults keep pointing there
                origin_of[f"{k}.{key}"] = ("defaults", k, key)
            for key in v:
                origin_of[f"{k}.{key}"] = ("tracks", i, k, key)
            merged[k] = {**merged[k], **v}
        else:
            merged[k] = v
        origin_of[k] = ("tracks", i, k)
    return merged, origin_of


def _unknown_type(name: str) -> str:
    from .providers.registry import problem

    broken = problem(name)
    if broken:
        return f"provider type '{name}' is installed but cannot be used: {broken}"
    return (f"must be an installed provider type ({', '.join(TYPES)}), not {name!r}"
            f"{schema.did_you_mean(name, list(TYPES))}")


def _check_base_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http(s) URL, not {url!r}"
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return (f"plain http to {parts.hostname} would send your API key and prompts unencrypted; use "
                f"https://{url[len('http://'):]} (http is allowed only for loopback hosts such as 127.0.0.1)")
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


