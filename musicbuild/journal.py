"""The life of a paid job: one state machine, in a file that outlives the audio cache.

::

    intent ──► sent ──► submitted ──► done ──► collected      the happy path
      │          │          │           └────► gone           URL and job expired before download
      │          │          ├──► failed                       the service ran it and says it failed
      │          │          └──► gone                         the service no longer knows the job id
      │          ├──► ambiguous ──► sent                      no readable answer; an idempotent
      │          │        └───────► superseded                service takes the same key again;
      │          │                                            otherwise only --force moves on
      │          └──► refused                                 the service's own "no" (4xx, 429)
      └──► refused                                            never sent (stopped before the request left)
    gone ──► superseded                                       --force starts a new attempt

Every transition is one JSON line appended to ``journal.jsonl`` in the cache directory and fsynced
before the build goes on, so: the intent is on disk before a create may leave, ``sent`` is on disk
before the bytes go out (an ``intent`` found after a crash provably never left), the job id is on
disk the moment the service returns it, and a ``collected`` record names the audio blobs, so the
generation can be rebuilt when the cache index is lost. The file is small (one line per transition)
and separate from the diskcache index: deleting or damaging the index loses no paid job. If the
file itself is deleted while a build runs, the next append writes it again in full.

Only the executor changes a job's state, through ``Journal.move`` (providers see a ``JobHandle``).
A journal that cannot be read stops every build that would submit or resume (``JournalError``):
paying blind is worse than stopping.
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .errors import CacheError

JOURNAL_NAME = "journal.jsonl"
RECORD_VERSION = 1

TRANSITIONS: dict[str, frozenset[str]] = {
    "intent": frozenset({"sent", "refused"}),
    "sent": frozenset({"submitted", "ambiguous", "refused"}),
    "submitted": frozenset({"submitted", "done", "failed", "gone"}),
    "done": frozenset({"done", "collected", "gone"}),
    "ambiguous": frozenset({"sent", "superseded"}),
    "gone": frozenset({"superseded"}),
    "collected": frozenset(),
    "failed": frozenset(),
    "refused": frozenset(),
    "superseded": frozenset(),
}
STATES = frozenset(TRANSITIONS)
LIVE = frozenset(s for s, nxt in TRANSITIONS.items() if nxt)  # a build still has something to do
POSSIBLY_PAID = frozenset({"sent", "submitted", "done", "collected", "ambiguous", "gone"})


class JournalError(CacheError):
    exit_code = 2


class TransitionError(RuntimeError):
    """A bug: a job moved along an edge the state machine does not have."""


@dataclass(frozen=True)
class JobRecord:
    gen_key: str
    attempt: int  # 0, 1, ... per generation key: each deliberate new attempt is a new record
    state: str
    provider: str  # the provider's name in the manifest
    type: str
    base_url: str  # where the job lives (never a credential)
    model: str
    track: str  # the track that started it
    build: str  # the build that last moved it
    estimate_usd: float = 0.0
    key: str | None = None  # idempotency key sent with the create, for services that honour one
    job_id: str | None = None
    poll: Mapping[str, Any] = field(default_factory=dict)  # what polling needs (the adapter's own state)
    charged_usd: float | None = None  # what the service billed (its figure, else measured)
    refunded_usd: float | None = None
    cost_basis: str | None = None  # billed | measured | price
    charged_in: str | None = None  # the build that learnt the charge (each report counts it once)
    refunded_in: str | None = None
    clips: tuple[Mapping[str, Any], ...] = ()  # collected audio: sha256, format, bytes
    partial: Mapping[str, Any] | None = None  # fewer clips than asked for: expected, delivered, errors
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def net_usd(self) -> float:
        return round((self.charged_usd or 0.0) - (self.refunded_usd or 0.0), 6)

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["v"] = RECORD_VERSION
        doc["poll"], doc["clips"] = dict(self.poll), [dict(c) for c in self.clips]
        return {k: v for k, v in doc.items() if v is not None and v != {} and v != []}

    @classmethod
    def from_json(cls, doc: Any) -> "JobRecord":
        if not isinstance(doc, dict) or doc.get("state") not in STATES:
            raise ValueError("not a journal record")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in names}
        values["clips"] = tuple(values.get("clips") or ())
        values["poll"] = dict(values.get("poll") or {})
        rec = cls(**values)
        if not isinstance(rec.gen_key, str) or not isinstance(rec.attempt, int) or not isinstance(rec.poll, dict):
            raise ValueError("not a journal record")
        return rec


def legacy_record(gen_key: str, entry: Mapping[str, Any], build: str) -> JobRecord:
    """A job of musicbuild 0.1's index journal (``job:<gen_key>``): submitted if it had a job id,
    else an ambiguous create."""
    poll = {k: v for k, v in entry.items() if k not in ("provider", "type", "state", "job_id", "model",
                                                         "submitted_cost", "recorded_at")}
    job_id = entry.get("job_id")
    at = float(entry.get("recorded_at") or 0)
    return JobRecord(gen_key=gen_key, attempt=0, state="submitted" if job_id else "ambiguous",
                     provider=str(entry.get("provider", "")), type=str(entry.get("type", "")), base_url="",
                     model=str(entry.get("model", "")), track="", build=build, job_id=job_id, poll=poll,
                     charged_usd=entry.get("submitted_cost"), error=None if job_id else "an earlier build",
                     created_at=at, updated_at=at)


class Journal:
    """The job records of one cache directory, folded from its append-only file."""

    def __init__(self, directory: Path, mirror: Any = None) -> None:
        self.path = directory / JOURNAL_NAME
        self.mirror = mirror  # fleet.JournalMirror: records are written through to the fleet's journal
        self.warnings: list[str] = []
        self.build_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._records: dict[tuple[str, int], JobRecord] = {}
        self._by_key: dict[str, list[JobRecord]] = {}
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._rewrite = False  # a torn last line or many stale lines: the first append rewrites the file
        self._load()

    # -- reading -----------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except IsADirectoryError:
            raise JournalError(f"the job journal {self.path} is a folder, not a file",
                               "move it aside; musicbuild will not submit paid jobs until it can read its journal")
        except OSError as exc:
            raise JournalError(f"cannot read the job journal {self.path}: {exc.strerror or exc}") from None
        lines = data.split(b"\n")
        torn = lines.pop() if lines else b""  # bytes after the last newline: a write cut short by a crash
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                rec = JobRecord.from_json(json.loads(raw))
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                raise JournalError(
                    f"the job journal {self.path} is damaged at line {number} ({type(exc).__name__}); it records "
                    "the paid jobs of this cache, so nothing will be submitted until it is repaired",
                    "inspect it, or move it aside to start a new one (jobs it recorded will not be collected)") from None
            self._remember(rec)
        self._rewrite = bool(torn.strip()) or len(lines) > 4 * len(self._records) + 1000

    def _remember(self, rec: JobRecord) -> None:
        self._records[(rec.gen_key, rec.attempt)] = rec
        attempts = self._by_key.setdefault(rec.gen_key, [])
        for i, old in enumerate(attempts):
            if old.attempt == rec.attempt:
                attempts[i] = rec
                return
        attempts.append(rec)
        attempts.sort(key=lambda r: r.attempt)

    def attempts(self, gen_key: str) -> list[JobRecord]:
        return list(self._by_key.get(gen_key, ()))

    def live(self, gen_key: str) -> JobRecord | None:
        """The attempt a build still has to deal with (at most one per key)."""
        return next((r for r in reversed(self._by_key.get(gen_key, ())) if r.live), None)

    def collected(self, gen_key: str) -> JobRecord | None:
        return next((r for r in reversed(self._by_key.get(gen_key, ())) if r.state == "collected"), None)

    def records(self) -> Iterator[JobRecord]:
        return iter(list(self._records.values()))

    def touched_by_this_build(self) -> list[JobRecord]:
        return [r for r in self._records.values() if r.build == self.build_id]

    # -- writing -----------------------------------------------------------------------------
    def begin(self, gen_key: str, *, provider: str, type: str, base_url: str, model: str, track: str,
              estimate_usd: float, key: str | None = None) -> JobRecord:
        """A new attempt, journaled as ``intent`` before anything is sent."""
        attempts = self._by_key.get(gen_key, [])
        live = [r for r in attempts if r.live]
        if live:
            raise TransitionError(f"{gen_key[:12]} already has a live job (attempt {live[0].attempt}, {live[0].state})")
        number = attempts[-1].attempt + 1 if attempts else 0
        now = time.time()
        rec = JobRecord(gen_key=gen_key, attempt=number, state="intent", provider=provider, type=type,
                        base_url=base_url, model=model, track=track, build=self.build_id,
                        estimate_usd=estimate_usd, key=key(number) if callable(key) else key,
                        created_at=now, updated_at=now)
        self._append(rec)
        return rec

    def move(self, rec: JobRecord, state: str, **changes: Any) -> JobRecord:
        """Move ``rec`` to ``state`` (an edge of the state machine) and make it durable."""
        current = self._records.get((rec.gen_key, rec.attempt), rec)
        if state not in TRANSITIONS[current.state]:
            raise TransitionError(f"a job cannot go from {current.state} to {state}")
        for amount, learnt in (("charged_usd", "charged_in"), ("refunded_usd", "refunded_in")):
            if changes.get(amount) is not None and getattr(current, learnt) is None:
                changes.setdefault(learnt, self.build_id)
        new = dataclasses.replace(current, state=state, build=self.build_id, updated_at=time.time(), **changes)
        self._append(new)
        return new

    def import_records(self, records: Iterable[JobRecord], share: bool = True) -> int:
        """Adopt records from elsewhere (the shared journal, an old cache format); newer wins.
        ``share``: write them through to the fleet's journal too (not when they came from it)."""
        count = 0
        for rec in records:
            mine = self._records.get((rec.gen_key, rec.attempt))
            if mine is None or rec.updated_at > mine.updated_at:
                self._append(rec, share=share)
                count += 1
        return count

    def _append(self, rec: JobRecord, share: bool = True) -> None:
        line = (json.dumps(rec.to_json(), sort_keys=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self._remember(rec)
            try:
                self._ensure_open()
                if self._rewrite:
                    self._write_all()
                else:
                    os.write(self._fd, line)  # type: ignore[arg-type]
                    os.fsync(self._fd)  # type: ignore[arg-type]
            except OSError as exc:
                raise JournalError(f"cannot write the job journal {self.path}: {exc.strerror or exc}",
                                   "a paid job cannot be recorded, so nothing more is submitted") from None
        mirror = self.mirror if share else None
        if mirror is not None:
            try:  # synchronous: an intent is in the fleet's journal before its create may leave
                mirror.put(rec.to_json())
            except Exception as exc:  # the shared store is down: the local journal still holds it
                self._mirror_lost(mirror, exc)

    def _mirror_lost(self, mirror: Any, exc: Exception) -> None:
        with self._lock:
            if self.mirror is not mirror:
                return
            self.mirror = None
        self.warnings.append(f"the shared journal at {mirror.display} is unavailable "
                             f"({getattr(exc, 'message', exc)}); jobs are journaled locally only")

    def adopt_shared(self, gen_keys: Iterable[str]) -> int:
        """Records of the fleet's journal for ``gen_keys`` (a dead runner's jobs) into this journal."""
        mirror = self.mirror
        if mirror is None:
            return 0
        found = []
        for gen_key in gen_keys:
            try:
                docs = mirror.get(gen_key)
            except Exception as exc:
                self._mirror_lost(mirror, exc)
                return 0
            for doc in docs:
                try:
                    found.append(JobRecord.from_json(doc))
                except (ValueError, TypeError):
                    continue
        # what came from the mirror need not go back to it (and the mirror stays in place for the
        # moves other threads make meanwhile: a collected job is stored from a worker thread)
        return self.import_records(found, share=False)

    def _ensure_open(self) -> None:
        """Open for appending; after the file (or the whole cache folder) was deleted, write it anew."""
        if self._fd is not None:
            try:
                gone = os.fstat(self._fd).st_nlink == 0 or os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
            except FileNotFoundError:
                gone = True
            if not gone:
                return
            os.close(self._fd)
            self._fd = None
            self._rewrite = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if not existed:
            self._rewrite = True
            _fsync_dir(self.path.parent)

    def _write_all(self) -> None:
        """Replace the file with one line per record (atomic: temp file, fsync, rename)."""
        tmp = self.path.with_name(f".{JOURNAL_NAME}.{os.getpid()}.tmp")
        body = b"".join((json.dumps(r.to_json(), sort_keys=True, separators=(",", ":")) + "\n").encode()
                        for r in self._records.values())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._rewrite = False

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spend_by_provider(records: Iterable[JobRecord], build_id: str | None = None) -> dict[str, dict[str, float]]:
    """Charged, refunded and outstanding USD per provider name (of one build's charges, or of all)."""
    table: dict[str, dict[str, float]] = {}
    for rec in records:
        row = table.setdefault(rec.provider, {"jobs": 0, "charged_usd": 0.0, "refunded_usd": 0.0,
                                              "outstanding_usd": 0.0})
        if build_id is None or rec.charged_in == build_id:
            row["charged_usd"] += rec.charged_usd or 0.0
        if build_id is None or rec.refunded_in == build_id:
            row["refunded_usd"] += rec.refunded_usd or 0.0
        if rec.state in POSSIBLY_PAID and rec.charged_usd is None and (build_id is None or rec.build == build_id):
            row["outstanding_usd"] += rec.estimate_usd
        row["jobs"] += 1
    for row in table.values():
        for k in ("charged_usd", "refunded_usd", "outstanding_usd"):
            row[k] = round(row[k], 6)
        row["cost_usd"] = round(row["charged_usd"] - row["refunded_usd"] + row["outstanding_usd"], 6)
    return table
