"""Turn one merged track entry plus one matrix combination into a rendered ``TrackSpec``.

Rendering order follows SPEC 1: the context is top ``vars`` < track ``vars`` < matrix values < the
track's own scalar fields (``id``, ``format``, ``duration``, ``bpm``, ``seed``, ``clip``), so those
scalars are rendered first and then made visible to every other string.
"""
from __future__ import annotations

import difflib
import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Protocol

from .model import Metadata, OutputSpec, ProviderConfig, TrackSpec
from .postcheck import check_post
from .providers.catalog import TYPES, clip_count
from .paths import PathProblem, sniff_audio, text_problem
from .render import Renderer, RenderError, to_number
from .schema import format_hint, seconds_hint
from .yamlsrc import Path_

ID_RE = re.compile(r"^[A-Za-z0-9._-]+$")
FORMATS = ("mp3", "wav", "flac", "ogg", "m4a")
AUDIO_EXTS = {"." + f for f in FORMATS} | {".oga", ".aac", ".mp4", ".aiff"}
DEFAULT_DURATION = 30.0
DEFAULT_FORMAT = "mp3"
MAX_DURATION = 3600.0
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def default_seed(track_id: str) -> int:
    return int.from_bytes(hashlib.sha256(track_id.encode()).digest()[:4], "big") & 0x7FFFFFFF


def unknown_model(type_name: str, model: str, models: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(model, models, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {type_name} model '{model}'{hint}; known: {', '.join(models)}"


class LoaderLike(Protocol):
    root: Path
    renderer: Renderer

    def error(self, path: Path_, message: str) -> None: ...
    def read_text(self, path: Path) -> str: ...
    def resolve_input(self, rel: str) -> Path: ...
    def realdir(self, path: Path) -> Path: ...


class _Skip(Exception):
    """This track already has an error recorded; stop building it."""


class TrackBuilder:
    def __init__(self, loader: LoaderLike, index: int, merged: dict, origin_of: dict[str, Path_],
                 top_vars: Mapping[str, Any], combo: Mapping[str, Any],
                 providers: Mapping[str, ProviderConfig], output_dir: Path,
                 dropped: frozenset[str] = frozenset()) -> None:
        self.ld = loader
        self.dropped = dropped  # fields removed because they failed the schema: build for diagnostics only
        self.i = index
        self.m = merged
        self.origin_of = origin_of
        self.combo = combo
        self.providers = providers
        self.output_dir = output_dir
        self.files: list[Path] = []
        self.ok = True
        self.ctx: dict[str, Any] = dict(top_vars)
        if "vars" in merged:
            base = {**top_vars, **combo}
            self.ctx.update(self._guard("vars", lambda: loader.renderer.render_tree(merged["vars"], base)) or {})
        self.ctx.update(combo)

    # -- helpers -----------------------------------------------------------------------------
    def where(self, field: str, *rest: str | int) -> Path_:
        if rest and f"{field}.{rest[0]}" in self.origin_of:  # a key merged from defaults: point at it there
            return self.origin_of[f"{field}.{rest[0]}"] + tuple(rest[1:])
        return self.origin_of.get(field, ("tracks", self.i, field)) + tuple(rest)

    def own(self, field: str, key: str) -> bool:
        """Whether ``field.key`` was written on the track itself (not inherited from defaults)."""
        return self.where(field, key)[0] == "tracks"

    def err(self, field: str, message: str, *rest: str | int) -> None:
        if self.combo:
            combo = ", ".join(f"{k}={v}" for k, v in self.combo.items())
            message = f"{message} [matrix {combo}]"
        self.ld.error(self.where(field, *rest), message)
        self.ok = False

    def _guard(self, field: str, fn: Callable[[], Any], *rest: str | int) -> Any:
        try:
            return fn()
        except RenderError as exc:
            self.err(field, exc.args[0], *rest)
        except ValueError as exc:
            self.err(field, str(exc), *rest)
        except OSError as exc:
            self.err(field, f"cannot read {exc.filename or 'a file'}: {exc.strerror}", *rest)
        return None

    def text(self, field: str, default: str | None = None) -> str | None:
        if field not in self.m:
            return default
        value = self.m[field]
        return self._guard(field, lambda: self.ld.renderer.render(str(value), self.ctx))

    def number(self, field: str, *, integer: bool, default: Any = None) -> Any:
        if field not in self.m:
            return default
        raw = self.m[field]
        rendered = self._guard(field, lambda: self.ld.renderer.render(raw, self.ctx) if isinstance(raw, str) else raw)
        if rendered is None:
            return None
        return self._guard(field, lambda: _number(field, rendered, integer))

    def input_file(self, field: str, rel: str, *rest: str | int) -> Path | None:
        try:
            path = self.ld.resolve_input(rel)
        except PathProblem as exc:
            self.err(field, exc.args[0], *rest)
            return None
        self.files.append(path)
        return path

    def file_template(self, field: str) -> str | None:
        rel = self.text(field)
        if rel is None:
            return None
        path = self.input_file(field, rel)
        if path is None:
            return None
        try:
            source = self.ld.read_text(path)
        except UnicodeDecodeError:
            self.err(field, f"{rel} is not UTF-8 text")
            return None
        except PathProblem as exc:
            self.err(field, exc.args[0])
            return None
        except OSError as exc:
            self.err(field, f"cannot read {rel}: {exc.strerror}")
            return None
        try:
            return self.ld.renderer.render(source, self.ctx, origin=rel)
        except RenderError as exc:
            self.err(field, exc.args[0])
            return None

    # -- the build ---------------------------------------------------------------------------
    def build(self) -> TrackSpec | None:
        track_id = self.text("id") or ""
        if not track_id and "id" in self.m and "id" not in self.dropped and self.ok:
            self.err("id", f"id {self.m['id']!r} renders to an empty string; every track needs a non-empty id")
        if track_id and not ID_RE.match(track_id):
            better = re.sub(r"[^A-Za-z0-9._-]+", "-", track_id).strip("-")
            self.err("id", f"id {track_id!r} may only use letters, digits, '.', '_' and '-'"
                     + (f" (e.g. '{better}')" if better else ""))
        self.ctx["id"] = track_id
        fmt = None if "format" in self.dropped else self.text("format", DEFAULT_FORMAT)
        if fmt is not None and fmt not in FORMATS:
            self.err("format", f"unknown format {fmt!r}{format_hint(fmt)}; must be one of {', '.join(FORMATS)}")
        self.ctx["format"] = fmt
        duration = self.number("duration", integer=False, default=DEFAULT_DURATION)
        if duration is not None and not 0 < duration <= MAX_DURATION:
            self.err("duration", f"must be a number of seconds > 0 and <= {MAX_DURATION:g}, not {duration:g}")
        self.ctx["duration"] = duration
        bpm = self.number("bpm", integer=False)
        if bpm is not None and not 20 <= bpm <= 400:
            self.err("bpm", f"must be a tempo between 20 and 400 beats per minute, not {bpm:g}")
        self.ctx["bpm"] = bpm
        seed = self.number("seed", integer=True, default=default_seed(track_id))
        if seed is not None and not 0 <= seed < 2**32:
            self.err("seed", f"must be a whole number from 0 to {2**32 - 1}, not {seed}")
        self.ctx["seed"] = seed

        prompt = (self._one_of("prompt", "prompt_file") or "").strip()
        lyrics = self._one_of("lyrics", "lyrics_file")
        tags = self._tags()
        if not self.dropped and not prompt and not tags and not {"prompt", "prompt_file", "tags"} & set(self.m):
            self.err("id", "needs a prompt, prompt_file or tags: there is nothing to generate from")
        instrumental = self.m.get("instrumental", not lyrics)
        provider, model = self._provider()
        options = self._guard("options", lambda: self.ld.renderer.render_tree(
            {**(provider.options if provider else {}), **self.m.get("options", {})}, self.ctx)) or {}
        clips = self.m.get("clips", "first")
        if isinstance(clips, dict):  # {pick: strategy}: one output, the take chosen by the strategy
            clips = clips["pick"]
        post = self._post(self._guard("post", lambda: self.ld.renderer.render_tree(self.m.get("post", {}), self.ctx))
                          or {}, fmt)
        reference = None
        if "reference_audio" in self.m:
            rel = self.text("reference_audio")
            reference = self.input_file("reference_audio", rel) if rel else None
            not_audio = self._guard("reference_audio", lambda: sniff_audio(reference)) if reference else None
            if not_audio:
                self.err("reference_audio", f"{rel} {not_audio}")
            if provider and not TYPES[provider.type].takes_reference_audio:
                self.err("reference_audio", f"provider type '{provider.type}' does not take reference audio")
        outputs = self._outputs(provider, model, options, clips, fmt) if provider and fmt else ()
        metadata = self._metadata(track_id, tags)
        labels = tuple(self._guard("labels", lambda: [self.ld.renderer.render(x, self.ctx)
                                                      for x in self.m.get("labels", [])]) or ())
        if not self.ok or provider is None:
            return None
        return TrackSpec(
            id=track_id, index=self.i, provider=provider, model=model, prompt=prompt or "",
            tags=tags, lyrics=lyrics, instrumental=bool(instrumental), seed=seed, duration=float(duration),
            bpm=float(bpm) if bpm is not None else None, format=fmt, outputs=outputs, options=options, clips=clips, reference_audio=reference, post=post,
            metadata=metadata, labels=labels, files=tuple(self.files), seed_given="seed" in self.m)

    def _post(self, post: dict[str, Any], fmt: str | None) -> dict[str, Any]:
        if not post:
            return post
        post, problems = check_post(post, fmt, lambda key: self.own("post", key))
        for path, message in problems:
            self.err("post", message, *path)
        return post

    def _one_of(self, inline: str, file_field: str) -> str | None:
        if inline in self.m and file_field in self.m:
            if self.origin_of[inline][0] == self.origin_of[file_field][0]:
                self.err(file_field, f"give either {inline} or {file_field}, not both")
                return None
            # one comes from defaults: the track's own field wins
            if self.origin_of[inline][0] == "defaults":
                return self.file_template(file_field)
            return self.text(inline)
        if file_field in self.m:
            return self.file_template(file_field)
        return self.text(inline)

    def _tags(self) -> tuple[str, ...]:
        raw = self.m.get("tags", [])
        items = raw.split(",") if isinstance(raw, str) else raw
        out = []
        for n, item in enumerate(items):
            rendered = self._guard("tags", lambda: self.ld.renderer.render(str(item), self.ctx), n)
            if rendered and rendered.strip():
                out.append(rendered.strip())
        return tuple(out)

    def _provider(self) -> tuple[ProviderConfig | None, str]:
        name = self.text("provider", "local") or "local"
        provider = self.providers.get(name)
        if provider is None:
            names = sorted({*self.providers, *TYPES})  # the plugin types too, not only those looked up
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.err("provider", f"unknown provider '{name}'{hint}; define it under providers: or use one of {', '.join(names)}")
            return None, ""
        model = self.text("model", provider.model) or provider.model or ""
        ptype = TYPES[provider.type]
        if "model" in self.m and ptype.models and model not in ptype.models:
            self.err("model", unknown_model(provider.type, model, ptype.models))
        duration = self.ctx.get("duration")
        if duration is not None and ptype.max_duration < duration <= MAX_DURATION:
            self.err("duration", f"must be at most {ptype.max_duration:g} seconds with provider '{provider.name}' "
                                 f"(type {provider.type}), not {duration:g}")
        return provider, model

    def _outputs(self, provider: ProviderConfig, model: str, options: Mapping[str, Any], clips: str,
                 fmt: str) -> tuple[OutputSpec, ...]:
        template = str(self.m.get("out", "{{ id }}.{{ format }}"))
        n = clip_count(provider.type, model, options) if clips == "all" else 1
        outs = []
        for clip in range(1, n + 1):
            rel = self._guard("out", lambda: self.ld.renderer.render(template, {**self.ctx, "clip": clip}))
            if rel is None:
                return ()
            path = self._confine(rel, fmt)
            if path is None:
                return ()
            outs.append(OutputSpec(clip, rel, path, self.ld.realdir(self.output_dir)))
        if clips == "all":
            probe = self._guard("out", lambda: {self.ld.renderer.render(template, {**self.ctx, "clip": c}) for c in (1, 2)})
            if probe is not None and len(probe) < 2:
                stem, dot, ext = template.rpartition(".")
                example = f"{stem}-{{{{ clip }}}}.{ext}" if dot and "/" not in ext else template + "-{{ clip }}"
                self.err("out", f"with clips: all, out must use {{{{ clip }}}} so each clip gets its own file, "
                                f"e.g. out: \"{example}\"")
                return ()
        return tuple(outs)

    def _confine(self, rel: str, fmt: str) -> Path | None:
        pure = PurePosixPath(rel.replace("\\", "/"))
        if not rel.strip() or rel.endswith(("/", "\\")):
            self.err("out", f"output path {rel!r} must name a file")
            return None
        problem = text_problem(rel)
        if problem:
            self.err("out", f"output path {rel!r} {problem}")
            return None
        shown = _shown(self.output_dir, self.ld.root)
        if pure.is_absolute() or re.match(r"^[A-Za-z]:", rel):
            self.err("out", f"output path {rel!r} is absolute; out is relative to output_dir ({shown}), "
                            f"e.g. {pure.name!r} (set output_dir to write somewhere else)")
            return None
        if ".." in pure.parts:
            self.err("out", f"output path {rel!r} leaves output_dir ({shown}) through '..'; keep it inside "
                            "(set output_dir to write somewhere else)")
            return None
        # Only folders can lead out: a symlink at the file itself is replaced by the atomic rename.
        path = self.ld.realdir(self.output_dir / pure.parent) / pure.name
        root = self.ld.realdir(self.output_dir)
        if root not in path.parents:
            self.err("out", f"output path {rel!r} leaves output_dir ({shown}) through a symlink "
                            f"(it resolves to {path}); outputs must stay inside output_dir")
            return None
        ext = pure.suffix.lower()
        if ext in AUDIO_EXTS and ext != "." + fmt:
            self.err("out", f"output path {rel!r} ends in {ext} but format is {fmt}: end it in .{fmt}, "
                            "or use {{ format }}")
            return None
        return path

    def _metadata(self, track_id: str, tags: tuple[str, ...]) -> Metadata:
        raw = self.m.get("metadata", {})
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "id3v23":
                values[key] = bool(value)
                if value and self.ctx.get("format") not in (None, "mp3", "wav") and self.own("metadata", key):
                    self.err("metadata", f"id3v23 applies to the ID3 tags of mp3 and wav; {self.ctx['format']} files "
                                         "have their own tag format", key)
                continue
            rendered = self._guard("metadata", lambda: self.ld.renderer.render(str(value), self.ctx), key)
            if rendered is not None:
                values[key] = rendered
        cover = None
        if values.get("cover"):
            cover = self.input_file("metadata", values["cover"], "cover")
            head = self._guard("metadata", lambda: _head(cover), "cover") if cover is not None else None
            if head is not None and not head.startswith(IMAGE_MAGIC):
                self.err("metadata", f"cover {values['cover']} is not a PNG or JPEG image (judged by its content, "
                                     "not its name); use a .png or .jpg file", "cover")
        values["cover"] = cover
        values.setdefault("title", track_id)
        if "genre" not in values and tags:
            values["genre"] = ", ".join(tags)
        return Metadata(**values)


def _number(field: str, rendered: Any, integer: bool) -> float | int:
    try:
        return to_number(rendered, integer=integer)
    except ValueError as exc:
        hint = seconds_hint(str(rendered)) if field == "duration" else ""
        raise ValueError(f"{exc}{hint}") from None


def _shown(path: Path, root: Path) -> str:
    """``path`` as the user wrote it: relative to the manifest's folder when inside it."""
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return str(path)


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)
