"""The local cache: a diskcache index stored as JSON, content-addressed blobs, and the job journal.

Layout under ``cache_dir``::

    index/            diskcache (SQLite) with JSONDisk: values are JSON, never pickle
    blobs/ab/abcd...  audio exactly as downloaded/rendered, named by its SHA-256
    stamps/           null-build stamps (see ``stamp.py``)

Index keys: ``gen:<gen_key>`` -> generation record (clips, provenance, cost), ``job:<gen_key>`` ->
journal entry of a submitted job that has no audio yet, ``out:<abs path>`` -> what we last wrote
there (output key, generation key, SHA-256, size, mtime). Every blob is verified on read, so a
corrupted cache costs a re-generation at worst, never a wrong output.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .confine import temp_prefix
from .errors import CacheError


class Cache:
    def __init__(self, directory: Path) -> None:
        import diskcache

        self.dir = directory
        self.blob_dir = directory / "blobs"
        self.warnings: list[str] = []  # damage found and repaired, for the build's summary
        try:
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            self.index = diskcache.Cache(str(directory / "index"), disk=diskcache.JSONDisk,
                                         eviction_policy="none", size_limit=2**62)
        except (OSError, Exception) as exc:  # sqlite3.OperationalError and friends
            raise CacheError(f"cannot open the cache at {directory}: {exc}") from None

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- blobs -------------------------------------------------------------------------------
    def blob_path(self, sha: str) -> Path:
        return self.blob_dir / sha[:2] / sha

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not self.has_blob(sha):
            atomic_write_bytes(path, data)
        return sha

    def read_blob(self, sha: str) -> bytes:
        path = self.blob_path(sha)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self.has_blob(sha)  # repairs what can be repaired
            raise CacheError(f"cache blob {sha[:12]} is missing") from None
        if hashlib.sha256(data).hexdigest() != sha:
            path.unlink(missing_ok=True)
            raise CacheError(f"cache blob {sha[:12]} was corrupt and has been removed")
        return data

    def has_blob(self, sha: str) -> bool:
        path = self.blob_path(sha)
        if path.is_file():
            return True
        if path.is_dir() or path.parent.is_file():  # damaged derived state: throw it away
            self._discard(path if path.is_dir() else path.parent)
        return False

    def _discard(self, path: Path) -> None:
        kind = "folder" if path.is_dir() else "file"
        _remove(path)
        self.warnings.append(f"the cache held a {kind} where audio belongs ({path}); removed it: that audio "
                             "is fetched or generated again")

    def iter_blobs(self) -> Iterator[tuple[str, int]]:
        for sub in self.blob_dir.iterdir() if self.blob_dir.exists() else ():
            if sub.is_dir():
                for f in sub.iterdir():
                    if len(f.name) == 64:
                        yield f.name, f.stat().st_size

    def remove_blob(self, sha: str) -> None:
        _remove(self.blob_path(sha))

    # -- generations -------------------------------------------------------------------------
    def get_generation(self, gen_key: str) -> dict[str, Any] | None:
        """The record, only if every clip's blob is still there."""
        rec = self.index.get("gen:" + gen_key)
        if rec and all(self.has_blob(c["sha256"]) for c in rec["clips"]):
            return rec
        return None

    def generation_record(self, gen_key: str) -> dict[str, Any] | None:
        """The record even if its blobs were collected (provenance outlives audio)."""
        return self.index.get("gen:" + gen_key)

    def put_generation(self, gen_key: str, clips: list[tuple[bytes, str]], provenance: dict[str, Any]) -> dict:
        stored = [{"sha256": self.put_blob(data), "format": fmt, "bytes": len(data)} for data, fmt in clips]
        rec = {**provenance, "clips": stored, "created_at": time.time()}
        self.index.set("gen:" + gen_key, rec)
        self.index.delete("job:" + gen_key)  # the journal entry is done with
        return rec

    def iter_generations(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key in list(self.index.iterkeys()):
            if isinstance(key, str) and key.startswith("gen:"):
                rec = self.index.get(key)
                if rec is not None:
                    yield key[4:], rec

    def remove_generation(self, gen_key: str) -> None:
        self.index.delete("gen:" + gen_key)

    # -- job journal -------------------------------------------------------------------------
    def record_job(self, gen_key: str, entry: dict[str, Any]) -> None:
        """Called the moment a service returns a job id: that job is paid for, never lose it."""
        self.index.set("job:" + gen_key, {**entry, "recorded_at": time.time()})

    def pending_job(self, gen_key: str) -> dict[str, Any] | None:
        return self.index.get("job:" + gen_key)

    def clear_job(self, gen_key: str) -> None:
        self.index.delete("job:" + gen_key)

    # -- outputs -----------------------------------------------------------------------------
    def get_output(self, path: Path) -> dict[str, Any] | None:
        return self.index.get("out:" + str(path))

    def put_output(self, path: Path, record: dict[str, Any]) -> None:
        self.index.set("out:" + str(path), record)

    def remove_output(self, path: Path) -> None:
        self.index.delete("out:" + str(path))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_build(directory: Path) -> Iterator[None]:
    """One build per cache at a time: two builds racing would submit the same paid job twice."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        f = open(directory / "build.lock", "a+")
    except OSError as exc:
        raise CacheError(f"cannot use the cache folder {directory}: {exc.strerror}",
                         "point cache_dir (or MUSICBUILD_CACHE_DIR) at a writable folder") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise CacheError(f"another build is using the cache {directory} ({holder}); wait for it to finish") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _default_mode()


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A new empty temp file next to ``path`` (same filesystem: the final rename is atomic), named
    after its owner's pid (see ``confine``).

    mkstemp creates files 0600; outputs are for sharing, so they get the usual umask mode.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=suffix)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file."""
    tmp = temp_beside(path)
    fd = os.open(tmp, os.O_WRONLY)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
