"""The null-build stamp: answer "everything is up to date" without parsing the manifest.

After a build of the whole manifest ends with every track ok, we record the manifest's SHA-256,
the size+mtime of every file it read and of every output, and the report rows. The next command
only hashes the manifest and stats those files: if nothing moved, nothing needs re-parsing,
re-validating, re-rendering or re-hashing. Any difference falls back to the full path, so the stamp
can make a no-op build fast but never make a stale build look fresh: a file that was missing when
the stamp was written never matches, and a build writes no stamp when an output it ends with is not
the file it recorded (deleted or edited while it ran). A damaged stamp is derived state: it is
removed with a warning, and the command takes the full path. The shared-cache URL is stored only
as a hash of it without credentials.

The file is one JSON object whose report rows come last, behind a ``rows_at`` offset written first
(padded to a fixed width): a no-op parses only what it checks, and the rows (79 % of the bytes at
100,000 tracks) are checked by CRC-32 and parsed only if someone reads them (``-v``, ``--report``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections.abc import Sequence

from . import __version__

TYPE_CHECKING = False  # neither typing nor pathlib is imported by a no-op build (see ``noop.py``)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Iterable, Iterator, Mapping

STAMP_VERSION = 2  # 2: each output also names the output key it was built for (``incremental.py``)
_ROWS_AT = re.compile(rb'^\{"rows_at": *(\d{1,12}),')
_ROWS_KEY = b',"rows":'

_CACHE_DIR_LINE = re.compile(r"^cache_dir:[ \t]*(?:\"([^\"\n]*)\"|'([^'\n]*)'|([^\s#'\"][^#\n]*?))[ \t]*(?:#.*)?$", re.M)


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


# Paths are handled as text here (os.path): importing pathlib is a sixth of a no-op at 10,000 tracks.
def _stamp_file(cache_dir: str, manifest: str) -> str:
    return os.path.join(cache_dir, "stamps", hashlib.sha256(manifest.encode()).hexdigest()[:24] + ".json")


def stamp_path(cache_dir: Path, manifest: Path) -> Path:
    from pathlib import Path

    return Path(_stamp_file(str(cache_dir), str(manifest)))


def _guess_cache_dir(manifest: str, text: bytes, env: Mapping[str, str]) -> str | None:
    if env.get("MUSICBUILD_CACHE_DIR"):
        return os.path.realpath(env["MUSICBUILD_CACHE_DIR"])
    folder = os.path.dirname(manifest)
    if b"cache_dir:" not in text:  # the common case, without decoding a large manifest
        return os.path.join(folder, ".musicbuild")
    matches = _CACHE_DIR_LINE.findall(text.decode("utf-8", "replace"))
    if not matches:
        return os.path.join(folder, ".musicbuild")
    value = next(v for v in matches[-1] if v)
    if "{" in value:
        return None  # a template: only the full loader knows
    return os.path.realpath(os.path.join(folder, value.strip()))


def guess_cache_dir(manifest: Path, text: bytes, env: Mapping[str, str]) -> Path | None:
    """Where the stamp would be, from the env or a plain top-level ``cache_dir:`` line."""
    from pathlib import Path

    found = _guess_cache_dir(str(manifest), text, env)
    return None if found is None else Path(found)


def remote_fingerprint(url: str | None) -> str | None:
    """What the stamp keeps of MUSICBUILD_REMOTE_CACHE: a hash of the URL without its userinfo."""
    if not url:
        return None
    from .redact import url_without_userinfo

    return hashlib.sha256(url_without_userinfo(url).encode()).hexdigest()[:16]


def read_fresh(manifest_file: Path | str, env: Mapping[str, str],
               warn: Callable[[str], None] | None = None, repair: bool = True) -> dict[str, Any] | None:
    """The stamp's rows if nothing changed since it was written, else None. A damaged stamp is
    removed (and said to ``warn``) unless ``repair`` is false: then it is left for the full path."""
    manifest = os.path.realpath(manifest_file)  # what Path.resolve() gives
    try:
        with open(manifest, "rb") as f:
            text = f.read()
    except OSError:
        return None
    cache_dir = _guess_cache_dir(manifest, text, env)
    if cache_dir is None:
        return None
    path = _stamp_file(cache_dir, manifest)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    try:
        stamp = _parse(raw)
        fresh = _fresh(stamp, cache_dir, hashlib.sha256(text).hexdigest(), env)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        if not repair:
            return None
        try:
            os.unlink(path)
        except OSError:
            pass
        if warn is not None:
            warn(f"the null-build stamp {path} was damaged ({type(exc).__name__}); removed it (the next build "
                 "writes a new one)")
        return None
    return stamp if fresh else None


def read_outputs(cache_dir: Path, manifest: Path, env: Mapping[str, str]) -> dict[str, list[Any]] | None:
    """path -> [[size, mtime_ns], output key] of every output the last whole build ended with, if its
    stamp can still vouch for them though the manifest changed (``cleanset.py``): made by this code,
    for this cache and shared cache, and the lock is still the file that build wrote. Else None."""
    path = _stamp_file(str(cache_dir), str(manifest))
    try:
        with open(path, "rb") as f:
            found = _parse(f.read())
        lock_file = os.path.join(os.path.dirname(str(manifest)), "musicbuild.lock")
        if (found.get("v") != STAMP_VERSION or found.get("tool") != __version__
                or found.get("cache_dir") != str(cache_dir)
                or found.get("remote_env") != remote_fingerprint(env.get("MUSICBUILD_REMOTE_CACHE"))):
            return None
        if not any(p == lock_file and st is not None and st == _stat(p) for p, st in found["inputs"]):
            return None
        return {p: [st, key] for p, st, key in found["outputs"]}
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None  # no stamp, or one the full path will repair


class StampRows(Sequence):  # of report rows (dicts)
    """The report rows of a stamp, parsed on first use (their CRC was checked when it was read)."""

    def __init__(self, data: bytes, count: int) -> None:
        self._data: bytes | None = data
        self._count = count
        self._rows: list[dict[str, Any]] | None = None

    def _load(self) -> list[dict[str, Any]]:
        if self._rows is None:
            rows = json.loads(self._data or b"[]")
            if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("action"), str)
                                                     and isinstance(r.get("status"), str) for r in rows):
                raise TypeError("rows are not report rows")
            self._rows, self._data = rows, None
        return self._rows

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int | slice) -> Any:
        return self._load()[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, (list, StampRows)) else other)


def _parse(raw: bytes) -> dict[str, Any]:
    """The stamp without its rows (``StampRows`` under "rows"); ``ValueError``/``TypeError`` if damaged."""
    m = _ROWS_AT.match(raw)
    if m is None:
        raise TypeError("no rows_at")
    at = int(m.group(1))
    if raw[at:at + len(_ROWS_KEY)] != _ROWS_KEY or not raw.endswith(b"}"):
        raise ValueError("rows are not where the stamp says")
    stamp = json.loads(raw[:at] + b"}")
    rows = raw[at + len(_ROWS_KEY):-1]
    if not isinstance(stamp, dict) or zlib.crc32(rows) != stamp["rows_crc"] or not isinstance(stamp["rows_count"], int):
        raise ValueError("rows do not match their checksum")
    stamp["rows"] = StampRows(rows, stamp["rows_count"])
    return stamp


def _fresh(stamp: Any, cache_dir: str, manifest_sha256: str, env: Mapping[str, str]) -> bool:
    """Whether ``stamp`` proves nothing changed; ``TypeError``/``KeyError`` if it is not a stamp."""
    files = [*stamp["inputs"], *stamp["outputs"]]
    if (stamp.get("v") != STAMP_VERSION or stamp.get("tool") != __version__
            or stamp.get("cache_dir") != cache_dir
            or stamp.get("manifest_sha256") != manifest_sha256
            or stamp.get("remote_env") != remote_fingerprint(env.get("MUSICBUILD_REMOTE_CACHE"))):
        return False
    for path, st, *_ in files:
        if st is None or _stat(str(path)) != st:  # a file that was missing never matches
            return False
    return True


def recorded_stat(record: Mapping[str, Any] | None) -> list[int] | None:
    """[size, mtime_ns] of what the cache recorded writing or seeing at an output."""
    return None if record is None else [record.get("size"), record.get("mtime_ns")]


def as_recorded(path: Path, record: Mapping[str, Any] | None) -> bool:
    """Whether ``path`` is, by size and mtime, the file the cache recorded writing or seeing there."""
    return record is not None and _stat(str(path)) == recorded_stat(record)


def write(cache_dir: Path, manifest: Path, manifest_sha256: str, inputs: Iterable[Path | str],
          outputs: Iterable[tuple[Path | str, list[int] | None, str | None]], rows: list[dict[str, Any]] | tuple[bytes, int],
          remote_env: str | None = None) -> None:
    """``outputs``: (path, [size, mtime_ns] the build wrote or saw there, its output key), not stat-ed
    again here, so an output edited at the last moment cannot slip into the stamp as fine.
    ``rows``: the report rows, or (their compact JSON list already encoded, how many)."""
    from .cache import atomic_write_bytes  # not imported by a no-op, which only reads

    rows_json, count = rows if isinstance(rows, tuple) else (json.dumps(rows, separators=(",", ":")).encode(), len(rows))
    doc = {
        "v": STAMP_VERSION, "tool": __version__, "cache_dir": str(cache_dir),
        "remote_env": remote_fingerprint(remote_env), "manifest_sha256": manifest_sha256,
        "inputs": [[p, _stat(p)] for p in sorted({str(p) for p in inputs})],
        "outputs": [[str(p), st, key] for p, st, key in outputs],
        "rows_count": count, "rows_crc": zlib.crc32(rows_json),
    }
    if any(st is None for _, st, *_ in doc["inputs"] + doc["outputs"]):  # something vanished: no promise
        remove(cache_dir, manifest)
        return
    body = json.dumps(doc, separators=(",", ":")).encode()  # ASCII: offsets in bytes are offsets in text
    head = b'{"rows_at":%12d,' % 0 + body[1:-1]
    head = b'{"rows_at":%12d,' % len(head) + body[1:-1]  # fixed width: the offset does not move it
    atomic_write_bytes(stamp_path(cache_dir, manifest), head + _ROWS_KEY + rows_json + b"}")


def remove(cache_dir: Path, manifest: Path) -> None:
    try:
        stamp_path(cache_dir, manifest).unlink(missing_ok=True)
    except OSError:  # e.g. "stamps" is not a folder: there is no stamp to trust either way
        pass


def fresh_rows(manifest_file: Path, env: Mapping[str, str] | None = None,
               warn: Callable[[str], None] | None = None) -> Sequence[dict[str, Any]] | None:
    """Report rows of a whole-manifest no-op build, if the stamp proves nothing changed."""
    found = read_fresh(manifest_file, os.environ if env is None else env, warn)
    return found["rows"] if found else None
