"""The null-build stamp: answer "everything is up to date" without parsing the manifest.

After a build of the whole manifest ends with every track ok, we record the manifest's SHA-256,
the size+mtime of every file it read and of every output, and the report rows. The next command
only hashes the manifest and stats those files: if nothing moved, nothing needs re-parsing,
re-validating, re-rendering or re-hashing. Any difference falls back to the full path, so the stamp
can make a no-op build fast but never make a stale build look fresh.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import __version__
from .cache import atomic_write_bytes

STAMP_VERSION = 1
_CACHE_DIR_LINE = re.compile(r"^cache_dir:[ \t]*(?:\"([^\"\n]*)\"|'([^'\n]*)'|([^\s#'\"][^#\n]*?))[ \t]*(?:#.*)?$", re.M)


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def stamp_path(cache_dir: Path, manifest: Path) -> Path:
    return cache_dir / "stamps" / (hashlib.sha256(str(manifest).encode()).hexdigest()[:24] + ".json")


def guess_cache_dir(manifest: Path, text: bytes, env: Mapping[str, str]) -> Path | None:
    """Where the stamp would be, from the env or a plain top-level ``cache_dir:`` line."""
    if env.get("MUSICBUILD_CACHE_DIR"):
        return Path(env["MUSICBUILD_CACHE_DIR"]).resolve()
    matches = _CACHE_DIR_LINE.findall(text.decode("utf-8", "replace"))
    if not matches:
        return manifest.parent / ".musicbuild"
    value = next(v for v in matches[-1] if v)
    if "{" in value:
        return None  # a template: only the full loader knows
    return (manifest.parent / value.strip()).resolve()


def read_fresh(manifest_file: Path, env: Mapping[str, str]) -> dict[str, Any] | None:
    """The stamp's rows if nothing changed since it was written, else None."""
    manifest = manifest_file.resolve()
    try:
        text = manifest.read_bytes()
    except OSError:
        return None
    cache_dir = guess_cache_dir(manifest, text, env)
    if cache_dir is None:
        return None
    try:
        stamp = json.loads(stamp_path(cache_dir, manifest).read_bytes())
    except (OSError, ValueError):
        return None
    if (stamp.get("v") != STAMP_VERSION or stamp.get("tool") != __version__
            or stamp.get("cache_dir") != str(cache_dir)
            or stamp.get("manifest_sha256") != hashlib.sha256(text).hexdigest()
            or stamp.get("remote_env") != env.get("MUSICBUILD_REMOTE_CACHE")):
        return None
    for path, st in stamp["inputs"]:
        if _stat(path) != st:
            return None
    for path, st in stamp["outputs"]:
        if _stat(path) != st:
            return None
    return stamp


def write(cache_dir: Path, manifest: Path, manifest_sha256: str, inputs: Iterable[Path],
          outputs: Iterable[Path], rows: list[dict[str, Any]], remote_env: str | None = None) -> None:
    doc = {
        "v": STAMP_VERSION, "tool": __version__, "cache_dir": str(cache_dir), "remote_env": remote_env,
        "manifest_sha256": manifest_sha256,
        "inputs": [[str(p), _stat(str(p))] for p in sorted(set(inputs))],
        "outputs": [[str(p), _stat(str(p))] for p in outputs],
        "rows": rows,
    }
    atomic_write_bytes(stamp_path(cache_dir, manifest), json.dumps(doc, separators=(",", ":")).encode())


def remove(cache_dir: Path, manifest: Path) -> None:
    stamp_path(cache_dir, manifest).unlink(missing_ok=True)


def fresh_rows(manifest_file: Path, env: Mapping[str, str] | None = None) -> list[dict[str, Any]] | None:
    """Report rows of a whole-manifest no-op build, if the stamp proves nothing changed."""
    found = read_fresh(manifest_file, os.environ if env is None else env)
    return found["rows"] if found else None
