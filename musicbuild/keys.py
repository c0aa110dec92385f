"""The two content keys (SPEC 2), as SHA-256 over canonical JSON.

The generation key covers exactly what changes the generated audio, so editing a title, a cover,
the format or the output path never costs a generation; the output key adds what changes the bytes
of one output file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .cache import file_sha256
from .model import OutputSpec, TrackSpec
from .providers.catalog import uses_seed

GEN_KEY_VERSION = 1
OUT_KEY_VERSION = 1


def canonical(value: Any) -> str:
    return json.dumps(_normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_PLAIN = (str, int, bool, type(None))


def _normalize(value: Any) -> Any:
    if type(value) in _PLAIN:  # the common case first: keys are computed for every track
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 84 and 84.0 are the same tempo
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def sha256_hex(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


_input_hashes: dict[tuple[Path, int, int, int], str] = {}


def input_sha256(path: Path) -> str:
    """Hash of an input file (reference audio, cover); memoised because matrix tracks share files.

    The memo is keyed by size and change times too, so a long-lived process (a watcher, a test
    run) that sees the file edited hashes it again instead of reusing a stale key.
    """
    st = path.stat()
    memo = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if memo not in _input_hashes:
        _input_hashes[memo] = file_sha256(path)
    return _input_hashes[memo]


def generation_key(spec: TrackSpec) -> str:
    """SHA-256 of what changes the generated audio. A seed the service cannot use changes nothing,
    so the one derived from the track id stays out (two tracks with one spec share one paid job);
    a seed the manifest wrote is a deliberate variation and stays in."""
    return sha256_hex(canonical(_generation_doc(spec, keep_seed=spec.seed_given or uses_seed(spec.provider.type,
                                                                                               spec.model))))


def legacy_generation_key(spec: TrackSpec) -> str | None:
    """The key musicbuild 0.1 gave a track whose derived seed is now left out (None if unchanged):
    its paid generation is adopted under the new key instead of being paid again."""
    if spec.seed_given or uses_seed(spec.provider.type, spec.model):
        return None
    return sha256_hex(canonical(_generation_doc(spec, keep_seed=True)))


def _generation_doc(spec: TrackSpec, keep_seed: bool) -> dict[str, Any]:
    doc = {
        "v": GEN_KEY_VERSION,
        "provider": spec.provider.type,
        "model": spec.model,
        "prompt": spec.prompt,
        "tags": list(spec.tags),
        "lyrics": spec.lyrics,
        "instrumental": spec.instrumental,
        "seed": spec.seed,
        "duration": spec.duration,
        "bpm": spec.bpm,
        "options": dict(spec.options),
        "reference_audio": input_sha256(spec.reference_audio) if spec.reference_audio else None,
    }
    if not keep_seed:
        del doc["seed"]
    return doc


def tag_fields(spec: TrackSpec) -> dict[str, Any]:
    """The metadata that ends up in an output, with the cover as its content hash."""
    md = spec.metadata
    fields = {k: getattr(md, k) for k in md.__dataclass_fields__ if k != "cover"}
    fields["cover"] = input_sha256(md.cover) if md.cover else None
    fields["bpm"] = spec.bpm
    fields["lyrics"] = spec.lyrics
    fields["prompt"] = spec.prompt
    return fields


def output_key(gen_key: str, spec: TrackSpec, output: OutputSpec, tags: dict[str, Any] | None = None) -> str:
    doc = {
        "v": OUT_KEY_VERSION,
        "gen": gen_key,
        "clip": output.clip,
        "format": spec.format,
        "tags": tag_fields(spec) if tags is None else tags,
        "pick": spec.clips,
        "post": dict(spec.post),
    }
    return sha256_hex(canonical(doc))


def output_parts(spec: TrackSpec, tags: dict[str, Any] | None = None) -> dict[str, str]:
    """The output key's ingredients by kind of change (format, ``post:``, tags and take choice),
    recorded with each output so a later plan can say which of them changed."""
    tags = tag_fields(spec) if tags is None else tags
    return {"format": spec.format, "post": sha256_hex(canonical(dict(spec.post)))[:16],
            "meta": sha256_hex(canonical({"tags": tags, "pick": spec.clips}))[:16]}
