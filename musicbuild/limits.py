"""Limits that keep a hostile or runaway manifest from hanging musicbuild or eating the machine.

Each limit is far above what a real manifest needs and fails with a message that names it. Only the
number of tracks is meant to be raised (a catalogue of more than 100,000 tracks is plausible); it is
set by whoever runs musicbuild, never by the manifest itself::

    MUSICBUILD_MAX_TRACKS=250000 musicbuild build

The YAML budget grows with it, so a bigger catalogue also gets room for its bigger manifest.
"""
from __future__ import annotations

import os
from typing import Mapping

from .errors import ConfigError

MAX_TRACKS_ENV = "MUSICBUILD_MAX_TRACKS"
DEFAULT_MAX_TRACKS = 100_000  # tracks after matrix expansion, over the whole manifest
YAML_NODES_PER_TRACK = 20  # values a manifest may expand to (anchors counted at every alias), per track
MIN_YAML_NODES = 1_000_000  # ... and at least this many, however low the track limit
MAX_YAML_DEPTH = 64  # nesting levels of mappings and lists

MAX_TEXT = 1_000_000  # characters (or items) of one value a template makes, and of its whole output
MAX_WORK = 10_000_000  # characters all the operations of one template render may produce together
MAX_INT_BITS = 10_000  # size of an integer a template's arithmetic may make (~3,000 digits)
MAX_RENDER_SECONDS = 1.0  # wall-clock time of one template render
MAX_STOPPED_SECONDS = 1.0  # renders stopped by that deadline, together, per manifest: then none run
MAX_INPUT_TEXT = 1_000_000  # bytes of a prompt_file or lyrics_file
MAX_INPUT_BINARY = 200_000_000  # bytes of a cover image or reference audio


def max_tracks(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    raw = env.get(MAX_TRACKS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_TRACKS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_TRACKS_ENV} must be a whole number of tracks >= 1, not {raw!r}")
    return value


def max_yaml_nodes(env: Mapping[str, str] | None = None) -> int:
    return max(MIN_YAML_NODES, max_tracks(env) * YAML_NODES_PER_TRACK)
