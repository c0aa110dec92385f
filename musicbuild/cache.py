"""The local cache: a diskcache index stored as JSON, content-addressed blobs, and the job journal.

Layout under ``cache_dir``::

    index/            diskcache (SQLite) with JSONDisk: values are JSON, never pickle
    blobs/ab/abcd...  audio exactly as downloaded/rendered, named by its SHA-256
    journal.jsonl     the paid jobs (``journal.py``): outlives the index, names collected blobs
    stamps/           null-build stamps (see ``stamp.py``)
    memo/             each manifest's rendered specs and keys by entry (see ``specmemo.py``)

Index keys: ``gen:<gen_key>`` -> generation record (clips, provenance, cost), ``out:<abs path>`` ->
what we last wrote there (output key, generation key, SHA-256, size, mtime). Every blob is verified
on read, so a corrupted cache costs a re-generation at worst, never a wrong output. A generation
whose index record was lost is found again through the journal's ``collected`` record, whose
blobs are still there: a lost index never costs a paid job twice.
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
from typing import Any, Iterable, Iterator

from .confine import temp_prefix
from .errors import CacheError
from .journal import Journal, JobRecord, legacy_record


class Cache:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.blob_dir = directory / "blobs"
        self.warnings: list[str] = []  # damage found and repaired, for the build's summary
        try:
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            self.index = self._open_index()
        except (OSError, Exception) as exc:  # sqlite3.OperationalError and friends
            raise CacheError(f"cannot open the cache at {directory}: {exc}") from None
        self._journal: Journal | None = None

    def _open_index(self) -> Any:
        """The diskcache index; a damaged one is set aside and started anew: it is rebuilt from what
        outlives it (the journal names every paid generation's blobs, the lock every output's hash)."""
        import sqlite3

        import diskcache

        folder = self.dir / "index"
        try:
            index = diskcache.Cache(str(folder), disk=diskcache.JSONDisk, eviction_policy="none", size_limit=2**62)
            index.get("probe")  # a damaged file fails on the first read
            return index
        except sqlite3.DatabaseError as exc:
            aside = folder.with_name(f"index.damaged-{int(time.time())}")
            folder.rename(aside)
            self.warnings.append(f"the cache index was damaged ({exc}); it was moved to {aside.name} and started "
                                 "anew: paid generations are found again through the job journal, outputs "
                                 "through musicbuild.lock")
            return diskcache.Cache(str(folder), disk=diskcache.JSONDisk, eviction_policy="none", size_limit=2**62)

    @property
    def journal(self) -> Journal:
        """The paid jobs of this cache (read on first use; written only when a job moves)."""
        if self._journal is None:
            self._journal = Journal(self.dir)
        return self._journal

    def close(self) -> None:
        self.index.close()
        if self._journal is not None:
            self._journal.close()

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
        """The record, only if every clip's blob is still there (from the journal if the index lost it)."""
        rec = self.index.get("gen:" + gen_key)
        if rec and all(self.has_blob(c["sha256"]) for c in rec["clips"]):
            return rec
        job = self.journal.collected(gen_key) if rec is None else None
        if job is not None and job.clips and all(self.has_blob(c["sha256"]) for c in job.clips):
            return generation_from_job(job)
        return None

    def generation_record(self, gen_key: str) -> dict[str, Any] | None:
        """The record even if its blobs were collected (provenance outlives audio)."""
        return self.index.get("gen:" + gen_key)

    def put_generation(self, gen_key: str, clips: list[tuple[bytes, str]], provenance: dict[str, Any],
                       keep_earlier: bool = False) -> dict:
        """Store a generation's audio; with ``keep_earlier`` the generation it replaces (a paid take
        collected before a --force) stays listed under ``earlier``, so gc keeps its audio."""
        stored = [{"sha256": self.put_blob(data), "format": fmt, "bytes": len(data)} for data, fmt in clips]
        rec = {**provenance, "clips": stored, "created_at": time.time()}
        old = self.index.get("gen:" + gen_key) if keep_earlier else None
        if old:
            rec["earlier"] = [*old.pop("earlier", []), old]
        self.index.set("gen:" + gen_key, rec)
        return rec

    def _records(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for key in list(self.index.iterkeys()):
            if isinstance(key, str) and key.startswith(prefix):
                rec = self.index.get(key)
                if rec is not None:
                    yield key[len(prefix):], rec

    def iter_generations(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return self._records("gen:")

    def remove_generation(self, gen_key: str) -> None:
        self.index.delete("gen:" + gen_key)

    # -- job journal -------------------------------------------------------------------------
    def live_job(self, gen_key: str) -> JobRecord | None:
        """The journaled job of ``gen_key`` a build still has to deal with (in musicbuild 0.1's
        index journal too, until a build moves it into journal.jsonl)."""
        live = self.journal.live(gen_key)
        if live is None and self.index.get("meta:journal-file") is None:
            entry = self.index.get("job:" + gen_key)
            if isinstance(entry, dict):
                return legacy_record(gen_key, entry, "musicbuild-0.1")
        return live

    def adopt_legacy_jobs(self) -> None:
        """Move musicbuild 0.1's index journal into journal.jsonl (once per cache)."""
        legacy = [legacy_record(key, entry, self.journal.build_id) for key, entry in self.legacy_jobs()]
        if legacy:
            self.journal.import_records(legacy)
            for rec in legacy:
                self.index.delete("job:" + rec.gen_key)

    def legacy_jobs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Job entries of the index-based journal of musicbuild 0.1, once: the caller moves them into
        journal.jsonl, and the index remembers it was looked at (a scan of every key is not free)."""
        if self.index.get("meta:journal-file") is not None:
            return
        for key in list(self.index.iterkeys()):
            if isinstance(key, str) and key.startswith("job:"):
                entry = self.index.get(key)
                if isinstance(entry, dict):
                    yield key[4:], entry
        self.index.set("meta:journal-file", 1)

    # -- outputs -----------------------------------------------------------------------------
    def get_output(self, path: Path) -> dict[str, Any] | None:
        return self.index.get("out:" + str(path))

    def put_output(self, path: Path, record: dict[str, Any]) -> None:
        self.index.set("out:" + str(path), record)

    def remove_output(self, path: Path) -> None:
        self.index.delete("out:" + str(path))

    def iter_outputs(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Every output we recorded writing, as (absolute path, record)."""
        return ((Path(path), rec) for path, rec in self._records("out:"))


class Snapshot:
    """Index records read in one pass over the index (one SQL query) instead of one query each:
    planning 100,000 tracks asked SQLite 200,000 times (14 s). Records are decoded when asked
    for; keys not asked for when it was taken are not kept (memory). Only reads; answers as the
    index was when it was taken. ``get_output``/``generation_record`` as ``Cache`` has them."""

    def __init__(self, cache: Cache, keys: Iterable[str]) -> None:
        self.cache = cache
        self._rows: dict[str, tuple[Any, Any, Any]] = {}
        index = cache.index
        try:
            disk, sql = index._disk, index._sql  # diskcache's own key decoding and connection
            wanted = set(keys)
            query = "SELECT key, raw, mode, filename, value FROM Cache WHERE expire_time IS NULL OR expire_time > ?"
            for db_key, raw, mode, filename, value in sql(query, (time.time(),)):
                key = disk.get(db_key, raw)  # decoding a key is cheaper than encoding one (zlib)
                if key in wanted:
                    self._rows[key] = (mode, filename, value)
            self._fetch = disk.fetch
        except AttributeError:  # pragma: no cover - a diskcache without these internals: one query each
            self._rows = {k: (None, None, index.get(k)) for k in keys}
            self._fetch = lambda mode, filename, value, read: value

    def get(self, key: str) -> Any:
        row = self._rows.get(key)
        if row is None:
            return None
        try:
            return self._fetch(*row, False)
        except OSError:  # a value stored in a file that went away meanwhile: as if deleted
            return None

    def get_output(self, path: Path) -> dict[str, Any] | None:
        return self.get("out:" + str(path))

    def generation_record(self, gen_key: str) -> dict[str, Any] | None:
        return self.get("gen:" + gen_key)

    def __getattr__(self, name: str) -> Any:  # everything else: the cache itself
        return getattr(self.cache, name)


def generation_from_job(job: JobRecord) -> dict[str, Any]:
    """A generation record rebuilt from the journal's record of the job that delivered it."""
    return {"provider": job.provider, "model": job.model, "job_id": job.job_id, "cost_usd": job.net_usd,
            "track": job.track, "clips": [dict(c) for c in job.clips], "created_at": job.updated_at,
            "recovered_from": "journal"}


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


def atomic_write_bytes(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file.
    ``data`` may come in pieces (a large file spliced from an old one is never joined in memory)."""
    tmp = temp_beside(path)
    fd = os.open(tmp, os.O_WRONLY)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                f.writelines(data)
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
