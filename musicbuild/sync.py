"""The shared team cache: read-through and write-through between the local cache and a remote.

Before a build runs, every track that would need a paid generation asks the remote for it
(``ac/<generation key>`` then its ``cas/<sha256>`` blobs, each verified against its hash) and
becomes a free materialization when found. After the build, every generation this machine holds
that the remote does not yet have is uploaded, blobs first and the record last, so a reader never
sees a record without its audio. Uploads run on daemon threads and the build waits for them only
``upload_wait`` seconds; what is left (or what a dead remote refused) is uploaded by a later build,
because each successful upload is marked in the local index.

A remote that is down or refuses is a warning and the build carries on locally, except when the
build needs it (``--frozen``), where it is an error.
"""
from __future__ import annotations

import hashlib
import queue
import threading
import time
from typing import Any, Callable, Iterable

from .cache import Cache
from .errors import MusicbuildError

FETCH_WORKERS = 16
UPLOAD_WORKERS = 8


class SharedCache:
    def __init__(self, store: Any, cache: Cache, *, required: bool, warn: Callable[[str], None]) -> None:
        self.store = store
        self.cache = cache
        self.required = required
        self.warn = warn
        self.alive = True
        self.fetched = 0
        self.uploaded = 0
        self.bytes_down = 0
        self.bytes_up = 0
        self._mark_prefix = "up:" + hashlib.sha256(store.display.encode()).hexdigest()[:16] + ":"
        self._lock = threading.Lock()

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            if self.required:
                raise exc
            if self.alive:
                self.alive = False
                self.warn(f"shared cache {self.store.display} is unavailable ({getattr(exc, 'message', exc)}); "
                          "building locally, a later build uploads what is missing")

    # -- read-through ------------------------------------------------------------------------
    def fill(self, gen_keys: Iterable[str]) -> set[str]:
        """Bring the remote's audio for ``gen_keys`` into the local cache; return the keys found."""
        from .remote import RemoteError, get_blob, get_record

        found: set[str] = set()

        def one(gen_key: str) -> None:
            if not self.alive:
                return
            try:
                record = get_record(self.store, gen_key)
                if record is None:
                    return
                clips = []
                for clip in record["clips"]:
                    data = get_blob(self.store, clip["sha256"])
                    if data is None:
                        return  # a record without its audio (an interrupted writer): treat as absent
                    clips.append((data, str(clip.get("format", "flac"))))
                provenance = {k: v for k, v in record.items() if k not in ("clips", "created_at")}
                self.cache.put_generation(gen_key, clips, provenance)
                self.cache.index.set(self._mark_prefix + gen_key, time.time())
                with self._lock:
                    found.add(gen_key)
                    self.fetched += 1
                    self.bytes_down += sum(len(d) for d, _ in clips)
            except (RemoteError, OSError) as exc:
                self._failed(exc if isinstance(exc, MusicbuildError) else RemoteError(str(exc)))

        self._run(list(dict.fromkeys(gen_keys)), one, FETCH_WORKERS, wait=None)
        return found

    # -- write-through -----------------------------------------------------------------------
    def missing_uploads(self, gen_keys: Iterable[str]) -> list[str]:
        """Local generations not yet known to be on the remote."""
        return [k for k in dict.fromkeys(gen_keys)
                if self.cache.index.get(self._mark_prefix + k) is None and self.cache.get_generation(k)]

    def upload(self, gen_keys: Iterable[str], wait: float) -> int:
        """Upload in the background; wait at most ``wait`` seconds; return how many are unfinished."""
        from .remote import RemoteError, put_blob, put_record

        todo = self.missing_uploads(gen_keys)

        def one(gen_key: str) -> None:
            if not self.alive:
                return
            try:
                record = self.cache.get_generation(gen_key)
                if record is None:
                    return
                size = 0
                for clip in record["clips"]:
                    data = self.cache.read_blob(clip["sha256"])
                    put_blob(self.store, data)
                    size += len(data)
                put_record(self.store, gen_key, record)
                self.cache.index.set(self._mark_prefix + gen_key, time.time())
                with self._lock:
                    self.uploaded += 1
                    self.bytes_up += size
            except (MusicbuildError, OSError) as exc:
                self._failed(exc if isinstance(exc, MusicbuildError) else RemoteError(str(exc)))

        left = self._run(todo, one, UPLOAD_WORKERS, wait=wait)
        if left and self.alive:
            self.warn(f"{left} uploads to {self.store.display} did not finish in {wait:g} s; "
                      "a later build uploads them")
        return left

    def _run(self, items: list[str], work: Callable[[str], None], workers: int, wait: float | None) -> int:
        """Run ``work`` over ``items`` on daemon threads (a hung remote must not hold the process)."""
        if not items:
            return 0
        jobs: queue.Queue[str] = queue.Queue()
        for item in items:
            jobs.put(item)
        errors: list[BaseException] = []
        done = threading.Semaphore(0)

        def worker() -> None:
            while True:
                try:
                    item = jobs.get_nowait()
                except queue.Empty:
                    return
                try:
                    work(item)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
                    errors.append(exc)
                finally:
                    done.release()

        for _ in range(min(workers, len(items))):
            threading.Thread(target=worker, daemon=True).start()
        deadline = None if wait is None else time.monotonic() + wait
        finished = 0
        while finished < len(items):
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not done.acquire(timeout=timeout):
                break
            finished += 1
        if errors:
            raise errors[0]
        return len(items) - finished
