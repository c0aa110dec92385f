"""Plan and build after an edit at the cost of the edit (issue 11): unchanged tracks stay rows.

``plan`` and a plain ``build`` (no targets, no ``--force``, ``--locked``, ``--frozen``,
``--offline``, ``--shard``, shared cache or coordinator) load the manifest ``partial``: the entries
proven up to date since the last whole build (``cleanset.py``) come back as ``CleanTrack`` rows in
``Manifest.clean`` and only the rest become specs. The engine plans, runs, reports, locks and
stamps those specs as ever; this module adds the clean tracks back where the full path would have
them: their rows in the plan and the report (in manifest order, as the full path words an
up-to-date track), their lock blocks kept byte for byte (``lock.LockBlocks``: only changed
blocks are written), their outputs in the next stamp. ``tests/test_incremental.py`` holds every
result equal to the full path's, edit by edit.
"""
from __future__ import annotations

import heapq
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from . import lock
from .cleanset import CleanTrack, plan_row, report_row, report_row_json
from .model import Action, Outcome, PlannedTrack

__all__ = ["allowed", "Rows", "plan_rows", "report_rows", "stamp_rows", "all_ids", "update_lock", "stamp_row"]


def allowed(env: Mapping[str, str], *, targets: Sequence[str] = (), force: bool = False, **options: Any) -> bool:
    """Whether a command may load the manifest ``partial``: the whole manifest, nothing forced, no
    lock check and nothing shared with a fleet (those need every track's plan)."""
    return (not targets and not force and not any(options.values())
            and not env.get("MUSICBUILD_REMOTE_CACHE") and not env.get("MUSICBUILD_COORDINATOR"))


def _merged(clean: Sequence[CleanTrack], planned: Sequence[PlannedTrack], rows: Iterable[Any],
            clean_row: Callable[[CleanTrack], Any]) -> Iterator[Any]:
    """Rows of both kinds in manifest order (entry by entry; no entry has tracks of both kinds)."""
    mine = ((pt.spec.index, n, row) for n, (pt, row) in enumerate(zip(planned, rows)))
    theirs = ((t.index, -1, t) for t in clean)
    return (clean_row(item) if n < 0 else item for _, n, item in heapq.merge(theirs, mine, key=lambda x: x[:2]))


class Rows(Sequence[dict[str, Any]]):
    """Plan or report rows in manifest order, the clean tracks' made only when read, one at a time
    (a list of 100,000 row dicts was ~100 MB). ``changed``: the rows of the tracks this command
    planned; every other row is an up-to-date row that spends nothing (``report.report_document``
    counts them so). ``json_rows`` gives each report row's compact JSON for writing the report."""

    def __init__(self, clean: Sequence[CleanTrack], planned: Sequence[PlannedTrack], changed: list[dict[str, Any]],
                 clean_row: Callable[[CleanTrack], dict[str, Any]] = report_row) -> None:
        self.clean, self.planned, self.changed, self._clean_row = clean, planned, changed, clean_row
        self.unchanged = len(clean)
        self._all: list[dict[str, Any]] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._all is not None:
            return iter(self._all)
        return _merged(self.clean, self.planned, self.changed, self._clean_row)

    def __len__(self) -> int:
        return len(self.clean) + len(self.changed)

    def ids(self) -> list[str]:
        """Every row's id, without making the rows (in no particular order)."""
        return [t.id for t in self.clean] + [r["id"] for r in self.changed]

    def __getitem__(self, i: Any) -> Any:
        if self._all is None:
            self._all = list(self)
        return self._all[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def json_rows(self) -> Iterator[str]:
        """Each row's compact JSON, in order, made as it is written."""
        encode = json.JSONEncoder(separators=(",", ":")).encode
        return _merged(self.clean, self.planned, [encode(r) for r in self.changed], report_row_json)


def report_rows(clean: Sequence[CleanTrack], planned: Sequence[PlannedTrack], outcomes: Sequence[Outcome],
                outcome_row: Callable[[Outcome], dict[str, Any]]) -> Rows:
    return Rows(clean, planned, [outcome_row(o) for o in outcomes])


def plan_rows(clean: Sequence[CleanTrack], planned: Sequence[PlannedTrack], rows: list[dict[str, Any]]) -> Rows:
    return Rows(clean, planned, rows, plan_row)


def stamp_row(outcome: Outcome) -> Outcome:
    """What the next no-op reports for a track this build left ok: the build's row, spending nothing."""
    return replace(outcome, action=Action.UP_TO_DATE, reasons=(), cost_usd=0.0, seconds=0.0, attempts=0,
                   estimated_usd=0.0, charged_usd=0.0, refunded_usd=0.0, outstanding_usd=0.0, cost_basis=None)


def stamp_rows(clean: Sequence[CleanTrack], planned: Sequence[PlannedTrack], outcomes: Sequence[Outcome],
               outcome_row: Callable[[Outcome], dict[str, Any]]) -> tuple[Iterator[bytes], int]:
    """The next stamp's rows as compact JSON pieces (``[``, the rows with their commas, ``]``),
    encoded one row at a time as the stamp is written: no list of 100,000 rows in memory."""
    encode = json.JSONEncoder(separators=(",", ":")).encode
    rows = _merged(clean, planned, [encode(outcome_row(stamp_row(o))) for o in outcomes], report_row_json)
    return _pieces(rows), len(clean) + len(outcomes)


def _pieces(rows: Iterable[str]) -> Iterator[bytes]:
    yield b"["
    for n, row in enumerate(rows):
        yield row.encode() if not n else b"," + row.encode()
    yield b"]"


def all_ids(clean: Sequence[CleanTrack], specs: Iterable[Any]) -> set[str]:
    return {t.id for t in clean} | {s.id for s in specs}


def update_lock(blocks: lock.LockBlocks, planned: Sequence[PlannedTrack], ok: set[str], records: Any,
                keep: set[str]) -> bool:
    """Rewrite only the lock blocks this build changed (fresh blocks for tracks it left ok; old blocks
    of failed or skipped tracks stay; blocks of tracks no longer in the manifest go)."""
    fresh = {}
    for pt in planned:
        if pt.spec.id in ok:
            entry = lock.entry_for(pt, records)
            if entry is not None:
                fresh[pt.spec.id] = entry
    return blocks.write_spliced(fresh, keep)


def input_files(clean: Sequence[CleanTrack]) -> list[Path]:
    return [Path(f) for t in clean for f in t.files]
