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

The file starts with a plain-text check section (``musicbuild-stamp 2``, its own length, the tool
version, the cache folder, the shared-cache fingerprint, the manifest's SHA-256, the number of
rows and of files, the manifest's size and mtime, then one ``size mtime_ns key path`` line per
file, ``key`` being an output's output key or ``-``): a no-op reads only that, with neither
``json`` nor ``re`` nor OpenSSL imported (together a third of a 10,000-track no-op), and the
incremental path (``cleanset.py``) the same lines. Then comes one JSON object whose
report rows come last, behind a ``rows_at`` offset written first (padded to a fixed width): the
rows (79 % of the bytes at 100,000 tracks) are checked by CRC-32 and parsed only if someone reads
them (``-v``, ``--report``). A path with a newline in it gets no stamp (the full path decides).
"""
from __future__ import annotations

import os
import zlib

from . import __version__

TYPE_CHECKING = False  # neither typing nor pathlib is imported by a no-op build (see ``noop.py``)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

STAMP_VERSION = 2  # 2: a check section first; each output also names its output key (``incremental.py``)
_MAGIC = b"musicbuild-stamp %d\n" % STAMP_VERSION
_LENGTH = 13  # the check section's length in bytes: 12 digits and a newline, right after the magic
_HEADER_LINES = 7  # after those: tool, cache_dir, remote fingerprint, manifest SHA-256, rows, files,
# and the manifest's "size mtime_ns" (when unchanged, its content is not hashed again)
_ROWS_AT = b'{"rows_at":'
_ROWS_KEY = b',"rows":'
_CRC_KEY = b',"rows_crc":'
_CACHE_DIR_LINE = r"^cache_dir:[ \t]*(?:\"([^\"\n]*)\"|'([^'\n]*)'|([^\s#'\"][^#\n]*?))[ \t]*(?:#.*)?$"


def _sha256(data: bytes) -> str:
    if len(data) > 1 << 16:  # OpenSSL's is 10x faster: worth its import (5 ms) for a large manifest
        from hashlib import sha256
    else:
        try:
            from _sha256 import sha256  # CPython's own: no OpenSSL to load; the same digest
        except ImportError:  # pragma: no cover - other interpreters
            from hashlib import sha256
    return sha256(data).hexdigest()


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


# Paths are handled as text here (os.path): importing pathlib is a sixth of a no-op at 10,000 tracks.
def _stamp_file(cache_dir: str, manifest: str) -> str:
    return os.path.join(cache_dir, "stamps", _sha256(manifest.encode())[:24] + ".json")


def stamp_path(cache_dir: Path, manifest: Path) -> Path:
    from pathlib import Path

    return Path(_stamp_file(str(cache_dir), str(manifest)))


def _guess_cache_dir(manifest: str, text: bytes, env: Mapping[str, str]) -> str | None:
    if env.get("MUSICBUILD_CACHE_DIR"):
        return os.path.realpath(env["MUSICBUILD_CACHE_DIR"])
    folder = os.path.dirname(manifest)
    if b"cache_dir:" not in text:  # the common case, without decoding a large manifest
        return os.path.join(folder, ".musicbuild")
    import re

    matches = re.findall(_CACHE_DIR_LINE, text.decode("utf-8", "replace"), re.M)
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

    return _sha256(url_without_userinfo(url).encode())[:16]


def _manifest_and_stamp(manifest_file: Path | str, env: Mapping[str, str]) -> tuple[str, tuple[bytes, bytes], str] | None:
    """(cache_dir, (the manifest's text, its "size mtime_ns"), the stamp's path), or None."""
    manifest = os.path.realpath(manifest_file)  # what Path.resolve() gives
    try:
        with open(manifest, "rb") as f:
            st = os.fstat(f.fileno())
            text = f.read()
    except OSError:
        return None
    cache_dir = _guess_cache_dir(manifest, text, env)
    if cache_dir is None:
        return None
    return cache_dir, (text, b"%d %d" % (st.st_size, st.st_mtime_ns)), _stamp_file(cache_dir, manifest)


def _manifest_stat(manifest: Path, manifest_sha256: str) -> bytes:
    """The "size mtime_ns" a later no-op may trust instead of hashing the manifest: only if the file
    still holds what was built and is not so fresh that an edit in the same clock tick could keep
    its mtime (git's "racily clean" rule); else "-" (hash it)."""
    import time

    try:
        with open(manifest, "rb") as f:
            st = os.fstat(f.fileno())
            text = f.read()
    except OSError:
        return b"-"
    if _sha256(text) != manifest_sha256 or st.st_mtime_ns > time.time_ns() - 100_000_000:
        return b"-"
    return b"%d %d" % (st.st_size, st.st_mtime_ns)


def fresh_count(manifest_file: str, env: Mapping[str, str]) -> int | None:
    """The number of tracks if the stamp proves nothing changed, else None (also if it is damaged:
    the full path then repairs it). Reads the check section only: what a no-op build imports."""
    found = _manifest_and_stamp(manifest_file, env)
    if found is None:
        return None
    cache_dir, manifest, path = found
    try:
        header, files = _read_check(path)
        return int(header[4]) if _fresh(header, files, cache_dir, manifest, env) else None
    except (OSError, ValueError, IndexError):
        return None


# The check section a not-fresh ``read_fresh`` just read, for the ``read_outputs`` of the same
# command (a build that asked for a no-op, then loads incrementally): read once, handed over once.
_HANDED: list[tuple[tuple[str, int, int, int], list[bytes], list[bytes]]] = []


def _identity(path: str, st: os.stat_result) -> tuple[str, int, int, int]:
    return path, st.st_ino, st.st_size, st.st_mtime_ns


def _read_check(path: str) -> tuple[list[bytes], list[bytes]]:
    """The header fields and file lines of a stamp's check section, reading nothing else."""
    if _HANDED:
        identity, header, files = _HANDED.pop()
        if identity == _identity(path, os.stat(path)):  # the same file, unchanged since
            return header, files
    with open(path, "rb") as f:
        start = f.read(len(_MAGIC) + _LENGTH)
        if not start.startswith(_MAGIC):
            raise ValueError("not a stamp of this version")
        check = start + f.read(int(start[len(_MAGIC):]) - len(start))
    header, files, _ = _sections(check)
    return header, files


def read_fresh(manifest_file: Path | str, env: Mapping[str, str],
               warn: Callable[[str], None] | None = None, repair: bool = True) -> dict[str, Any] | None:
    """The stamp's rows if nothing changed since it was written, else None. A damaged stamp is
    removed (and said to ``warn``) unless ``repair`` is false: then it is left for the full path."""
    found = _manifest_and_stamp(manifest_file, env)
    if found is None:
        return None
    cache_dir, manifest, path = found
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except OSError:
        return None
    try:
        header, files, body = _sections(raw)
        if not _fresh(header, files, cache_dir, manifest, env):
            # (its JSON part is read only if fresh); the incremental load reads the same lines next
            _HANDED[:] = [(_identity(path, st), header, files)]
            return None
        stamp = _parse(body)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
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
    return stamp


def read_outputs(cache_dir: Path, manifest: Path, env: Mapping[str, str]) -> dict[str, bytes] | None:
    """path -> its check line (``size mtime_ns key path``) of every output the last whole build ended
    with, if its stamp can still vouch for them though the manifest changed (``cleanset.py``): made
    by this code, for this cache and shared cache, and the lock is still the file that build wrote.
    Else None."""
    try:
        header, files = _read_check(_stamp_file(str(cache_dir), str(manifest)))
        remote = remote_fingerprint(env.get("MUSICBUILD_REMOTE_CACHE")) or ""
        if header[0] != __version__.encode() or header[1] != os.fsencode(str(cache_dir)) or header[2] != remote.encode():
            return None
        lock_file = os.fsencode(os.path.join(os.path.dirname(str(manifest)), "musicbuild.lock"))
        outputs: dict[str, bytes] = {}
        lock_ok = False
        for line in files:
            size, mtime, key, path = line.split(b" ", 3)
            if key != b"-":
                outputs[path.decode("utf-8", "surrogateescape")] = line  # (os.fsdecode, without its checks)
            elif path == lock_file:
                lock_ok = _stat(path) == [int(size), int(mtime)]  # type: ignore[arg-type]
        return outputs if lock_ok else None
    except (OSError, ValueError, IndexError):
        return None  # no stamp, or one the full path will repair


def _rows_class() -> type:
    """``StampRows``, made on first use: a no-op build does not import ``collections.abc`` (5 ms)."""
    from collections.abc import Sequence

    class StampRows(Sequence):  # of report rows (dicts)
        """The report rows of a stamp, parsed on first use (their CRC was checked when it was read)."""

        def __init__(self, data: bytes, count: int) -> None:
            self._data: bytes | None = data
            self._count = count
            self._rows: list[dict[str, Any]] | None = None

        def _load(self) -> list[dict[str, Any]]:
            if self._rows is None:
                import json

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
            return list(self) == (list(other) if isinstance(other, (list, type(self))) else other)

    return StampRows


_ROWS_CLASS: list[type] = []


def StampRows(data: bytes, count: int) -> Any:  # noqa: N802 - a class to its callers
    """The report rows of a stamp, parsed on first use (their CRC was checked when it was read)."""
    if not _ROWS_CLASS:
        _ROWS_CLASS.append(_rows_class())
    return _ROWS_CLASS[0](data, count)


def _sections(raw: bytes) -> tuple[list[bytes], list[bytes], bytes]:
    """(the header fields, the file lines, the JSON part) of a stamp, or of its check section alone
    (then the JSON part is empty); ``ValueError``/``IndexError`` if it is not one."""
    if not raw.startswith(_MAGIC):
        raise ValueError("not a stamp of this version")
    length = int(raw[len(_MAGIC):len(_MAGIC) + _LENGTH])
    header = raw[len(_MAGIC) + _LENGTH:length].split(b"\n", _HEADER_LINES)
    count = int(header[5])
    lines = header[_HEADER_LINES].split(b"\n")
    if len(lines) != count + 1 or lines[count]:
        raise ValueError("not the file lines the stamp says")
    return header[:_HEADER_LINES], lines[:count], raw[length:]


def _parse(body: bytes) -> dict[str, Any]:
    """The stamp's JSON part without its rows (``StampRows`` under "rows"); ``ValueError``/``TypeError`` if damaged."""
    import json

    if not body.startswith(_ROWS_AT):
        raise TypeError("no rows_at")
    at = int(body[len(_ROWS_AT):body.index(b",")])
    if body[at:at + len(_ROWS_KEY)] != _ROWS_KEY or not body.endswith(b"}"):
        raise ValueError("rows are not where the stamp says")
    stamp = json.loads(body[:at] + b"}")
    end = body.rindex(_CRC_KEY)  # the rows' CRC comes after them (they are written as they are made)
    rows = body[at + len(_ROWS_KEY):end]
    if (not isinstance(stamp, dict) or zlib.crc32(rows) != int(body[end + len(_CRC_KEY):-1])
            or not isinstance(stamp["rows_count"], int)):
        raise ValueError("rows do not match their checksum")
    stamp["rows"] = StampRows(rows, stamp["rows_count"])
    return stamp


def _fresh(header: list[bytes], files: list[bytes], cache_dir: str, manifest: tuple[bytes, bytes],
           env: Mapping[str, str]) -> bool:
    """Whether the check section proves nothing changed; ``ValueError`` if it is damaged."""
    remote = remote_fingerprint(env.get("MUSICBUILD_REMOTE_CACHE")) or ""
    if header[0] != __version__.encode() or header[1] != os.fsencode(cache_dir) or header[2] != remote.encode():
        return False
    if header[6] != manifest[1] and header[3] != _sha256(manifest[0]).encode():
        return False
    stat = os.stat
    for line in files:
        size, mtime, _, path = line.split(b" ", 3)
        try:
            st = stat(path)
        except OSError:
            return False
        if st.st_size != int(size) or st.st_mtime_ns != int(mtime):
            return False
    return True


def recorded_stat(record: Mapping[str, Any] | None) -> list[int] | None:
    """[size, mtime_ns] of what the cache recorded writing or seeing at an output."""
    return None if record is None else [record.get("size"), record.get("mtime_ns")]


def as_recorded(path: Path, record: Mapping[str, Any] | None) -> bool:
    """Whether ``path`` is, by size and mtime, the file the cache recorded writing or seeing there."""
    return record is not None and _stat(str(path)) == recorded_stat(record)


def write(cache_dir: Path, manifest: Path, manifest_sha256: str, inputs: Iterable[Path | str],
          outputs: Iterable[tuple[Path | str, list[int] | None, str | None]],
          rows: list[dict[str, Any]] | tuple[Iterable[bytes], int],
          remote_env: str | None = None, output_lines: Sequence[bytes] = ()) -> None:
    """``outputs``: (path, [size, mtime_ns] the build wrote or saw there, its output key), not stat-ed
    again here, so an output edited at the last moment cannot slip into the stamp as fine.
    ``output_lines``: more outputs, as the check lines of the last stamp (``read_outputs``).
    ``rows``: the report rows, or (their compact JSON list in encoded pieces, made as written; how many)."""
    import itertools
    import json

    from .cache import atomic_write_bytes  # not imported by a no-op, which only reads

    _HANDED.clear()  # (a section handed over and not taken: this stamp replaces it)

    pieces, count = rows if isinstance(rows, tuple) else ([json.dumps(rows, separators=(",", ":")).encode()], len(rows))
    doc = {
        "v": STAMP_VERSION, "tool": __version__, "cache_dir": str(cache_dir),
        "remote_env": remote_fingerprint(remote_env), "manifest_sha256": manifest_sha256, "rows_count": count,
    }
    files = [(p, _stat(p), None) for p in sorted({str(p) for p in inputs})] + list(outputs)
    if any(st is None for _, st, _ in files):  # something vanished: no promise
        remove(cache_dir, manifest)
        return
    body = json.dumps(doc, separators=(",", ":")).encode()  # ASCII: offsets in bytes are offsets in text
    head = b'{"rows_at":%12d,' % 0 + body[1:-1]
    head = b'{"rows_at":%12d,' % len(head) + body[1:-1]  # fixed width: the offset does not move it
    lines = [b"%d %d %s %s" % (st[0], st[1], key.encode() if key else b"-", os.fsencode(str(p)))  # type: ignore[index]
             for p, st, key in files]
    lines += output_lines
    header = [__version__.encode(), os.fsencode(str(cache_dir)), (doc["remote_env"] or "").encode(),
              manifest_sha256.encode(), b"%d" % count, b"%d" % len(lines), _manifest_stat(manifest, manifest_sha256)]
    if any(b"\n" in line for line in header + lines):  # a newline in a path: no promise (never seen in practice)
        remove(cache_dir, manifest)
        return
    check = b"\n".join(header + lines) + b"\n"
    check = _MAGIC + b"%012d\n" % (len(_MAGIC) + _LENGTH + len(check)) + check

    def body() -> Iterator[bytes]:  # the rows as they are made, their CRC after them
        crc = 0
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
            yield piece
        yield _CRC_KEY + b"%d}" % crc

    atomic_write_bytes(stamp_path(cache_dir, manifest), itertools.chain([check, head, _ROWS_KEY], body()))


def remove(cache_dir: Path, manifest: Path) -> None:
    _HANDED.clear()
    try:
        stamp_path(cache_dir, manifest).unlink(missing_ok=True)
    except OSError:  # e.g. "stamps" is not a folder: there is no stamp to trust either way
        pass


def fresh_rows(manifest_file: Path, env: Mapping[str, str] | None = None,
               warn: Callable[[str], None] | None = None) -> Sequence[dict[str, Any]] | None:  # noqa: F821
    """Report rows of a whole-manifest no-op build, if the stamp proves nothing changed."""
    found = read_fresh(manifest_file, os.environ if env is None else env, warn)
    return found["rows"] if found else None
