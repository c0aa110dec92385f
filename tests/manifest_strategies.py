"""Hypothesis strategies for fuzzed manifests: plausible structure, wrong types, hostile values, and
YAML written every way YAML allows (flow and block, quoting, tags, anchors, aliases, merge keys)
plus raw text damage. Shared by ``tests/test_fuzz_manifests.py`` and ``bench/fuzz_manifests.py``.

``write_inputs`` creates the files the fuzzed paths may name, so file fields sometimes point at
real prompt/lyrics files, a PNG cover, a WAV reference, a folder or a FIFO.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

PROVIDER_TYPES = ["local", "aigateway", "verbatik", "sonauto", "beatra"]
KEY_NAMES = ["AIGATEWAY_API_KEY", "VERBATIK_API_KEY", "SONAUTO_API_KEY", "BEATRA_API_KEY", "FUZZ_KEY"]
FUZZ_ENV = {name: f"fuzz-secret-{i}-0123456789" for i, name in enumerate(KEY_NAMES)}

GOOD_TEMPLATES = ["{{ id }}", "{{ mood }} theme", "{{ id }}.{{ format }}", "{{ level }}/{{ id }}-{{ clip }}.{{ format }}",
                  "{{ mood|upper }}", "{% if mood %}{{ mood }}{% endif %}", "{{ duration * 2 }}", "{{ seed }}",
                  "{{ tags|join(', ') }}", "{{ '%03d' % seed }}", "{{ undefined_var }}", "{{ id", "{% for %}",
                  "{{ ''.__class__ }}", "{{ range(10)|list }}", "{{ '' }}", "{{ mood ~ level }}", "{{ 120 }}"]
HOSTILE_TEMPLATES = ["{{ 'a' * 10**9 }}", "{{ (3**1000000000) % 7 }}", "{{ 'x'|center(10**9) }}",
                     "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                     "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                     "{{ range(100000)|join('x' * 100000) }}", "{{ '%0999999999d' % 1 }}",
                     "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                     "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "{{ 10.0 ** 1000 }}", "{{ lipsum(100000) }}"]
PATHS = ["prompts/calm.txt", "prompts/missing.txt", "lyrics.txt", "cover.png", "hum.wav", "notes.txt", "prompts",
         "fifo", "../outside.txt", "/etc/passwd", "/proc/self/environ", "/dev/zero", "a\0b.txt", "x" * 300 + ".txt",
         "", ".", "musicbuild.yaml", "musicbuild.lock", ".musicbuild/index/cache.db", "build", "music/{{ id }}.mp3",
         "link-out.txt", "{{ id }}.txt", "C:\\win\\path.mp3", "sub/../../up.mp3", "  "]
TEXT = st.one_of(st.sampled_from(["calm harp", "", " ", "ü ñ 漢字 🎵", "a: b", "- x", "#c", "'q'", '"dq"', "\t", "yes",
                                  "null", "1e3", "0x10", "~", "*ref", "&anc", "!tag", "%", "@", "`"]),
                 st.text(max_size=12))
INTS = st.one_of(st.integers(-5, 500), st.sampled_from([0, -1, 2**31, 2**32, 2**64, 10**40]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, 1.5, 30.0, 3601.0, -2.0]))
SCALARS = st.one_of(TEXT, INTS, FLOATS, st.booleans(), st.none(), st.sampled_from(GOOD_TEMPLATES + PATHS))


def anything(depth: int = 2) -> st.SearchStrategy:
    if depth <= 0:
        return SCALARS
    inner = anything(depth - 1)
    return st.one_of(SCALARS, st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "mood", "x"]), inner, max_size=3))


def field(values: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a plausible value, sometimes anything at all."""
    return st.one_of(values, values, values, anything(1))


TRACK_FIELDS: dict[str, st.SearchStrategy] = {
    "id": field(st.sampled_from(["rain", "boss-1", "cue.{{ mood }}", "{{ '' }}", "bad id!", "a/b", "rain"])),
    "prompt": field(st.one_of(st.sampled_from(GOOD_TEMPLATES + HOSTILE_TEMPLATES), TEXT)),
    "prompt_file": field(st.sampled_from(PATHS)),
    "lyrics": field(TEXT),
    "lyrics_file": field(st.sampled_from(PATHS)),
    "reference_audio": field(st.sampled_from(PATHS)),
    "tags": field(st.one_of(st.lists(TEXT, max_size=3), TEXT)),
    "duration": field(st.one_of(FLOATS, INTS, st.sampled_from(["30", "2m30s", "{{ 10 }}", "{{ 'x' }}"]))),
    "bpm": field(st.one_of(INTS, FLOATS)),
    "seed": field(INTS),
    "format": field(st.sampled_from(["mp3", "wav", "flac", "ogg", "m4a", "aac", "{{ 'wav' }}", "MP3"])),
    "out": field(st.sampled_from(PATHS + GOOD_TEMPLATES)),
    "provider": field(st.sampled_from(PROVIDER_TYPES + ["mine", "nope"])),
    "model": field(st.sampled_from(["synth-v1", "suno-5.5", "minimax-music-2.6", "v2", "nope"])),
    "instrumental": field(st.booleans()),
    "clips": field(st.one_of(st.sampled_from(["first", "all", "longest", "nope"]),
                             st.fixed_dictionaries({"pick": st.sampled_from(["loudest", "closest-duration", "x"])}))),
    "labels": field(st.lists(st.sampled_from(["menu", "boss", "{{ mood }}", ""]), max_size=3)),
    "vars": field(st.dictionaries(st.sampled_from(["mood", "level", "x"]), anything(2), max_size=3)),
    "metadata": field(st.dictionaries(st.sampled_from(["title", "artist", "cover", "year", "id3v23", "bogus"]),
                                      st.one_of(TEXT, st.sampled_from(PATHS), st.booleans()), max_size=3)),
    "options": field(st.dictionaries(st.sampled_from(["model_options", "title", "seed", "x"]),
                                     anything(2), max_size=2)),
    "post": field(st.dictionaries(st.sampled_from(["loudness", "length", "loop", "sample_rate", "bitrate", "x"]),
                                  anything(1), max_size=2)),
    "matrix": field(st.one_of(
        st.dictionaries(st.sampled_from(["mood", "level"]), st.lists(SCALARS, min_size=1, max_size=3), min_size=1, max_size=2),
        st.just({"mood": ["calm", "dark"], "exclude": [{"mood": "dark"}]}),
        st.just({"mood": ["calm", "dark"], "exclude": [{"mood": "calm"}, {"mood": "dark"}]}),
        st.just({"a": "BIG", "b": "BIG"}))),
    "trakcs": anything(1),
}


CLEAN_FIELDS: dict[str, st.SearchStrategy] = {  # values a manifest may well have: deeper paths get exercised
    "prompt": st.sampled_from(["calm harp", "{{ mood }} theme", "{{ id }} cue", "{% if mood %}{{ mood }}{% endif %} drums"]),
    "prompt_file": st.just("prompts/calm.txt"),
    "lyrics": st.sampled_from(["la la la", "{{ mood }} night"]),
    "lyrics_file": st.just("lyrics.txt"),
    "tags": st.lists(st.sampled_from(["ambient", "drums", "{{ mood }}"]), max_size=2),
    "duration": st.sampled_from([0.5, 1, 8, 30, "{{ 2 * 3 }}"]),
    "bpm": st.integers(20, 400),
    "seed": st.integers(0, 2**32 - 1),
    "format": st.sampled_from(["mp3", "wav", "flac", "ogg", "m4a"]),
    "out": st.sampled_from(["{{ id }}.{{ format }}", "music/{{ id }}.{{ format }}", "{{ mood }}/{{ id }}.{{ format }}"]),
    "provider": st.sampled_from(["local", "local", "aigateway", "verbatik", "sonauto", "beatra"]),
    "instrumental": st.booleans(),
    "clips": st.sampled_from(["first", {"pick": "longest"}]),
    "labels": st.lists(st.sampled_from(["menu", "boss", "{{ mood }}"]), max_size=2),
    "vars": st.fixed_dictionaries({"mood": st.sampled_from(["calm", "dark"])}),
    "metadata": st.fixed_dictionaries({}, optional={"title": st.just("{{ id|title }}"), "artist": st.just("Fuzz"),
                                                    "cover": st.just("cover.png"), "year": st.just("2024")}),
    "post": st.sampled_from([{"loudness": "streaming"}, {"length": {"fit": 1.0}}, {"sample_rate": 22050}]),
}


@st.composite
def clean_track(draw: Any, index: int) -> dict[str, Any]:
    track: dict[str, Any] = {"id": f"t{index}", "prompt": draw(CLEAN_FIELDS["prompt"])}
    for key in draw(st.lists(st.sampled_from(list(CLEAN_FIELDS)), max_size=5, unique=True)):
        track[key] = draw(CLEAN_FIELDS[key])
    if "prompt_file" in track:
        del track["prompt"]
    if "lyrics" in track and "lyrics_file" in track:
        del track["lyrics"]
    if draw(st.integers(0, 4)) == 0:
        track["matrix"] = {"level": draw(st.lists(st.integers(1, 9), min_size=1, max_size=3, unique=True))}
        track["id"] += "-{{ level }}"
    return track


@st.composite
def tracks(draw: Any) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(list(TRACK_FIELDS)), max_size=6, unique=True))
    track = {"id": draw(TRACK_FIELDS["id"])} if draw(st.integers(0, 9)) else {}
    if draw(st.booleans()):
        track["prompt"] = draw(TRACK_FIELDS["prompt"])
    for key in keys:
        track[key] = draw(TRACK_FIELDS[key])
    return track


PROVIDER = st.fixed_dictionaries(
    {"type": st.sampled_from(PROVIDER_TYPES + ["nope"])},
    optional={"base_url": st.sampled_from(["https://api.example.com", "http://127.0.0.1:9", "http://evil.example",
                                           "ftp://x", "not a url"]),
              "api_key_env": st.sampled_from(KEY_NAMES + ["sk_live_abcdef0123456789", "lower-case", ""]),
              "model": st.sampled_from(["suno-5.5", "v2", "nope"]), "requests_per_minute": st.one_of(INTS, FLOATS),
              "max_concurrent": INTS, "options": anything(1), "price": anything(1)})


HOSTILE_FIELDS: dict[str, st.SearchStrategy] = {  # one of these in an otherwise sound manifest gets rendered
    "prompt": st.sampled_from(HOSTILE_TEMPLATES), "lyrics": st.sampled_from(HOSTILE_TEMPLATES),
    "out": st.sampled_from(PATHS), "prompt_file": st.sampled_from(PATHS), "lyrics_file": st.sampled_from(PATHS),
    "reference_audio": st.sampled_from(PATHS), "id": TRACK_FIELDS["id"], "duration": TRACK_FIELDS["duration"],
    "metadata": st.fixed_dictionaries({"cover": st.sampled_from(PATHS)}),
    "vars": st.fixed_dictionaries({"mood": st.sampled_from(HOSTILE_TEMPLATES)}),
}


@st.composite
def clean_manifests(draw: Any) -> dict[str, Any]:
    """Manifests that mostly validate: what follows validation (plan, keys, provider rules) runs.
    A third carry one hostile value, which then really is rendered or resolved."""
    doc: dict[str, Any] = {"version": 1, "vars": {"mood": draw(st.sampled_from(["calm", "dark"]))}}
    if draw(st.booleans()):
        doc["defaults"] = {"duration": draw(st.sampled_from([1, 4])), "format": draw(CLEAN_FIELDS["format"])}
    if draw(st.integers(0, 3)) == 0:
        doc["output_dir"] = draw(st.sampled_from(["out", "{{ 'build' }}"]))
    doc["tracks"] = [draw(clean_track(i)) for i in range(draw(st.integers(1, 4)))]
    if draw(st.integers(0, 2)) == 0:
        track = draw(st.sampled_from(doc["tracks"]))
        key = draw(st.sampled_from(list(HOSTILE_FIELDS)))
        track[key] = draw(HOSTILE_FIELDS[key])
        if key == "prompt_file":
            track.pop("prompt", None)
        elif key == "prompt":
            track.pop("prompt_file", None)
    return doc


@st.composite
def manifests(draw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        doc["version"] = draw(st.one_of(st.just(1), st.just(1), st.just(1), SCALARS))
    optional = {
        "vars": st.dictionaries(st.sampled_from(["mood", "level", "game"]), anything(2), max_size=3),
        "output_dir": st.sampled_from(["build", ".", "{{ 'out' }}", "a\0b", ".musicbuild", "musicbuild.yaml", "/proc/x"]),
        "cache_dir": st.sampled_from([".musicbuild", "{{ 'c' }}", "notes.txt", "build", "", "{{ x }}"]),
        "cache": st.fixed_dictionaries({}, optional={"remote": st.sampled_from(["memory://fuzz", "https://u:pw@h/c", 5])}),
        "inputs": st.fixed_dictionaries({}, optional={"allow": st.lists(st.sampled_from(["/", "/proc", "prompts", "nope", ".."]), max_size=2)}),
        "defaults": tracks(),
        "providers": st.dictionaries(st.sampled_from(["mine", "gw", "local", "9bad"]), PROVIDER, max_size=2),
        "bogus": anything(1),
    }
    for key in draw(st.lists(st.sampled_from(list(optional)), max_size=4, unique=True)):
        doc[key] = draw(field(optional[key]))
    if draw(st.integers(0, 19)):
        doc["tracks"] = draw(st.one_of(st.lists(tracks(), max_size=4), st.lists(tracks(), max_size=4), anything(1)))
    return doc


# -- YAML text ---------------------------------------------------------------------------------
TAGS = ["!!str", "!!int", "!!float", "!!bool", "!!null", "!!binary", "!!timestamp", "!foo", "!!set", "!!omap", "!"]
SCALAR_SPELLINGS = {True: ["true", "yes", "True", "on"], False: ["false", "no", "off"], None: ["~", "null", ""]}


class _Writer:
    """Writes a tree as YAML with drawn styles; remembers anchors so later nodes can alias them."""

    def __init__(self, draw: Any, clean: bool = False) -> None:
        self.draw = draw
        self.clean = clean  # valid YAML only: no tags, merge keys or aliases
        self.anchors: list[str] = []
        self.open: list[str] = []  # anchors of the nodes being written (an alias to one is recursive)

    def chance(self, n: int) -> bool:
        return not self.clean and self.draw(st.integers(0, n - 1)) == 0

    def scalar(self, value: Any) -> str:
        if value == "BIG":
            return "[" + ", ".join(str(i) for i in range(1000)) + "]"
        if isinstance(value, bool) or value is None:
            return self.draw(st.sampled_from(SCALAR_SPELLINGS[value]))
        if isinstance(value, (int, float)):
            text = repr(value) if not (isinstance(value, float) and value != value) else ".nan"
            return {"inf": ".inf", "-inf": "-.inf"}.get(text, text)
        style = self.draw(st.integers(0, 3))
        if style == 0 or (self.clean and style == 3):
            return json.dumps(value)  # double-quoted YAML
        if style == 1 and "\n" not in value:
            return "'" + value.replace("'", "''") + "'"
        return value if "\n" not in value else json.dumps(value)  # plain: may not even be valid YAML

    def node_prefix(self) -> str:
        parts = []
        if self.chance(12):
            parts.append(self.draw(st.sampled_from(TAGS)))
        if self.chance(8):
            name = f"a{len(self.anchors)}"
            self.anchors.append(name)
            self.open.append(name)
            parts.append("&" + name)
        return " ".join(parts)

    def alias(self) -> str | None:
        if self.anchors and self.chance(10):
            return "*" + self.draw(st.sampled_from(self.anchors + ["undefined"]))
        return None

    def flow(self, value: Any) -> str:
        alias = self.alias()
        if alias:
            return alias
        prefix = self.node_prefix()
        depth = len(self.open)
        if isinstance(value, dict):
            body = "{" + ", ".join(f"{self.scalar(str(k))}: {self.flow(v)}" for k, v in value.items()) + "}"
        elif isinstance(value, list):
            body = "[" + ", ".join(self.flow(v) for v in value) + "]"
        else:
            body = self.scalar(value)
        del self.open[depth - (1 if prefix and "&" in prefix else 0):]
        return f"{prefix} {body}".strip()

    def block(self, value: Any, indent: int) -> list[str]:
        pad = " " * indent
        lines = []
        if isinstance(value, dict):
            if self.anchors and self.chance(15):
                lines.append(f"{pad}<<: " + self.draw(st.sampled_from(["*" + self.anchors[-1], "5", "[1, 2]",
                                                                            f"[*{self.anchors[0]}]"])))
            for key, item in value.items():
                lines += self._entry(f"{pad}{self.scalar(str(key))}:", item, indent)
        elif isinstance(value, list):
            for item in value:
                lines += self._entry(f"{pad}-", item, indent)
        else:
            lines.append(pad + self.scalar(value))
        return lines

    def _entry(self, head: str, item: Any, indent: int) -> list[str]:
        if isinstance(item, (dict, list)) and item and not self.chance(4):
            alias = self.alias()
            if alias:
                return [f"{head} {alias}"]
            prefix = self.node_prefix()
            depth = len(self.open)
            inner = self.block(item, indent + 2)
            del self.open[depth - (1 if "&" in prefix else 0):]
            return [f"{head} {prefix}".rstrip()] + inner
        return [f"{head} {self.flow(item)}"]


DAMAGE = ["tab", "drop-char", "dup-line", "colon", "bom", "crlf", "nul", "second-doc", "truncate", "deep"]


@st.composite
def yaml_texts(draw: Any) -> str:
    """A fuzzed manifest as YAML text: half plausible and well-formed, half anything."""
    clean = draw(st.booleans())
    doc = draw(clean_manifests() if clean else manifests())
    writer = _Writer(draw, clean)
    text = "\n".join(writer.block(doc, 0)) + "\n"
    if not clean and draw(st.integers(0, 4)) == 0:
        kind = draw(st.sampled_from(DAMAGE))
        lines = text.splitlines()
        at = draw(st.integers(0, max(0, len(lines) - 1)))
        if kind == "tab" and lines:
            lines[at] = "\t" + lines[at]
        elif kind == "drop-char" and text:
            i = draw(st.integers(0, len(text) - 1))
            return text[:i] + text[i + 1:]
        elif kind == "dup-line" and lines:
            lines.insert(at, lines[at])
        elif kind == "colon" and lines:
            lines[at] += ": x: y"
        elif kind == "bom":
            return "\ufeff" + text
        elif kind == "crlf":
            return text.replace("\n", "\r\n")
        elif kind == "nul":
            return text + "\0"
        elif kind == "second-doc":
            return "---\n" + text + "---\nversion: 2\n...\n"
        elif kind == "truncate" and text:
            return text[: draw(st.integers(0, len(text)))]
        elif kind == "deep":
            depth = draw(st.sampled_from([70, 500, 1200]))
            return text + "vars:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth)) + "  " * (depth + 1) + "v\n"
        text = "\n".join(lines) + "\n"
    return text


def write_inputs(root: Path) -> None:
    """The files fuzzed paths may name (created once per folder)."""
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "prompts" / "calm.txt").write_text("a calm {{ mood | default('slow') }} theme\n")
    (root / "lyrics.txt").write_text("la la la\n")
    (root / "notes.txt").write_text("not audio\n")
    (root / "cover.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    samples = b"\0\0" * 800
    (root / "hum.wav").write_bytes(b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt "
                                   + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
                                   + b"data" + struct.pack("<I", len(samples)) + samples)
    if not (root / "fifo").exists():
        os.mkfifo(root / "fifo")
    if not (root / "link-out.txt").is_symlink():
        (root / "link-out.txt").symlink_to("/etc/hostname")
