"""The ``post:`` block after rendering: numbers from templates converted and checked again, and
settings that cannot apply to the track's format refused.

SPEC 1 makes every string a template, ``post.loudness: "{{ preset }}"`` included, so the schema
accepts a template wherever ``post:`` takes a value; what it renders to must then pass the same
schema without the template alternatives. A setting written on the track itself that cannot
apply to its format (``bit_depth`` on an mp3) is an error; one that comes from ``defaults`` applies
to the tracks whose format takes it and is left out of the others (so it does not touch their
output key either).
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Callable

from .render import to_number
from .yamlsrc import Path_

# where post takes a number (True: a whole number) or a boolean
NUMBERS: dict[tuple[str, ...], bool] = {
    ("loudness", "target_lufs"): False, ("loudness", "true_peak_db"): False, ("length", "fit"): False,
    ("length", "fade_out"): False, ("loop", "crossfade"): False, ("sample_rate",): True, ("channels",): True,
    ("bit_depth",): True, ("bitrate",): True,
}
BOOLEANS = {("length", "trim_silence"), ("loop",)}
LOSSLESS, LOSSY = ("wav", "flac"), ("mp3", "ogg", "m4a")
MP3_MAX_RATE = 48000


def check_post(post: dict[str, Any], fmt: str | None,
               own: Callable[[str], bool]) -> tuple[dict[str, Any], list[tuple[Path_, str]]]:
    """``post`` with template results converted, and the problems (path inside ``post``, message).

    ``own(key)``: whether ``post.key`` was written on the track itself (else it came from defaults).
    """
    if not post:
        return post, []
    problems: list[tuple[Path_, str]] = []
    post = _converted(post, (), problems)
    if problems:
        return post, problems
    from .schema import validate_against

    problems = validate_against(_strict_schema(), post)
    if post.get("loop") and (post.get("length") or {}).get("fade_out"):
        problems.append((("length", "fade_out"), "cannot be combined with loop: a faded tail cannot loop seamlessly"))
    if problems or fmt is None:
        return post, problems
    kept = {}
    for key, value in post.items():
        why = _inapplicable(key, value, fmt)
        if why is None:
            kept[key] = value
        elif own(key):
            problems.append(((key,), why))
    return kept, problems


def _inapplicable(key: str, value: Any, fmt: str) -> str | None:
    if key == "bit_depth" and fmt in LOSSY:
        return f"bit_depth applies to wav and flac; {fmt} is lossy (set its quality with bitrate)"
    if key == "bitrate" and fmt in LOSSLESS:
        return f"bitrate applies to mp3, ogg and m4a; {fmt} is lossless (set bit_depth instead)"
    if key == "sample_rate" and fmt == "mp3" and value > MP3_MAX_RATE:
        return f"mp3 holds at most {MP3_MAX_RATE} Hz, not {value}: use 44100 or 48000, or format wav/flac"
    return None


def _converted(value: Any, path: tuple[str, ...], problems: list[tuple[Path_, str]]) -> Any:
    if isinstance(value, dict):
        return {k: _converted(v, path + (str(k),), problems) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    if path in NUMBERS:
        try:
            return to_number(value, integer=NUMBERS[path])
        except ValueError as exc:
            problems.append((path, str(exc)))
    elif path in BOOLEANS and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


@lru_cache(maxsize=1)
def _strict_schema() -> dict[str, Any]:
    """The schema of ``post:`` without its template alternatives: what a rendered block must be."""
    from .schema import schema_text

    post = json.loads(schema_text())["properties"]["tracks"]["items"]["properties"]["post"]
    return _without_templates(post)


def _without_templates(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_templates(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _without_templates(v) for k, v in node.items()}
    if "anyOf" in out:
        out["anyOf"] = [s for s in out["anyOf"] if "pattern" not in s]
        if len(out["anyOf"]) == 1:
            only = out.pop("anyOf")[0]
            out.update(only)
    return out
