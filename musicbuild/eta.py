"""How long a build has left, from what the build itself has shown so far (the live display's ETA).

Tracks are grouped into kinds that take alike long: a paid or generated track by its provider,
a track that is only materialized as ``materialize``; up-to-date tracks take no time. For each
kind the durations are taken to be spread evenly between a shortest and a longest: the shortest
finished one, and the longest that best explains both the tracks that finished and the ones still
running after the time they have run (a maximum-likelihood fit, so a wave of tracks that all
started together, of which only the quick ones finished, is not taken for a wave of quick ones).

Time left is then what a scheduler with as many lanes as tracks have worked at once on average
would need (Little's law: with the same definition of "working" for the count and the durations,
that average over the mean duration is the rate at which tracks finish, whatever holds them back:
-j, the provider's limits, the CPU): a running track its expected rest (several of a kind spread
over their possible rests, so the last of them is expected where the last of several usually is),
a track not started yet the kind's mean duration. It is recomputed for the current time on every refresh, so it counts down between events
and grows when a track runs longer than expected; it is unknown (None) while a kind of work that is
left has no finished track yet, or only one that tracks still running have outrun.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Iterable

MATERIALIZE = "materialize"
EXACT_QUEUE = 500  # beyond this many tracks not started, sum their work over the lanes instead of scheduling it


def kind_of(action: str, provider: str) -> str | None:
    """The group a track's duration is learnt in (None: it takes no time)."""
    if action == "up-to-date":
        return None
    return MATERIALIZE if action == MATERIALIZE else provider


@dataclass
class _Fit:
    low: float  # the shortest duration of the kind
    high: float  # the longest

    def rest(self, elapsed: float) -> tuple[float, float]:
        """The range of time left for a track of this kind that has run ``elapsed``."""
        high = max(self.high, elapsed)
        return max(self.low, elapsed) - elapsed, high - elapsed

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2


@dataclass
class Eta:
    """Fed with the build's events (times from one clock), answers ``left(now)`` in seconds."""

    queued: dict[str, str] = field(default_factory=dict)  # not working yet (waiting included) -> kind
    busy: dict[str, tuple[str, float]] = field(default_factory=dict)  # working -> (kind, since)
    done: dict[str, list[float]] = field(default_factory=dict)  # kind -> durations of finished tracks
    first: float | None = None  # when the first track started work
    area: float = 0.0  # integral of the number of working tracks over time, up to ``changed``
    changed: float = 0.0

    def plan(self, tracks: Iterable[tuple[str, str | None]]) -> None:
        """(id, kind) of every track of the plan."""
        self.queued.update((tid, kind) for tid, kind in tracks if kind is not None)

    def working(self, tid: str, now: float) -> None:
        """The track started work (not just waiting for a slot)."""
        kind = self.queued.pop(tid, None)
        if kind is not None:
            self._count(now)
            self.first = now if self.first is None else self.first
            self.busy[tid] = (kind, now)

    def waiting(self, tid: str, now: float) -> None:
        """A track announced as started waits before doing anything: it is not working yet."""
        if tid in self.busy:
            self._count(now)
            self.queued[tid] = self.busy.pop(tid)[0]

    def finished(self, tid: str, now: float, ok: bool) -> None:
        self.queued.pop(tid, None)
        self._count(now)
        kind, since = self.busy.pop(tid, (None, now))
        if kind is not None and ok:
            self.done.setdefault(kind, []).append(now - since)

    def _count(self, now: float) -> None:
        self.area += len(self.busy) * (now - self.changed)
        self.changed = now

    def working_at_once(self, now: float) -> float:
        """How many tracks have worked at once, on average since the first started."""
        if self.first is None or now <= self.first:
            return float(len(self.busy))
        return (self.area + len(self.busy) * (now - self.changed)) / (now - self.first)

    def left(self, now: float) -> float | None:
        if not self.busy and not self.queued:
            return 0.0
        fits: dict[str, _Fit] = {}
        for kind in {k for k, _ in self.busy.values()} | set(self.queued.values()):
            finished = self.done.get(kind, [])
            running = [now - since for k, since in self.busy.values() if k == kind]
            if not finished or (len(finished) == 1 and any(e > finished[0] for e in running)):
                return None  # nothing known, or one track, outrun by others: no spread to go by
            fits[kind] = _fit(finished, running)
        rests = sorted(_running_rests(self.busy.values(), fits, now))
        work = [fits[kind].mean for kind in self.queued.values()]
        lanes = max(1, round(self.working_at_once(now)))
        # queued work goes to the lanes that free up first; tracks beyond them only finish
        free, others = (rests + [0.0] * lanes)[:lanes], rests[lanes:]
        if len(work) > EXACT_QUEUE:
            return max(max(free + others), (sum(free) + sum(work)) / lanes)
        heapq.heapify(free)
        for seconds in work:
            heapq.heapreplace(free, free[0] + seconds)
        return max(free + others)


def _running_rests(busy: Iterable[tuple[str, float]], fits: dict[str, _Fit], now: float) -> list[float]:
    """Expected time left per running track. Of m running tracks of a kind, the i-th quickest is
    expected at the i/(m+1) point of its range: their mean is each one's mean, and the last of them
    is expected where the last of m usually is, not where one alone would be."""
    by_kind: dict[str, list[tuple[float, float]]] = {}
    for kind, since in busy:
        by_kind.setdefault(kind, []).append(fits[kind].rest(now - since))
    rests = []
    for ranges in by_kind.values():
        ranges.sort(key=lambda r: r[0] + r[1])
        m = len(ranges)
        rests += [lo + (hi - lo) * (i + 1) / (m + 1) for i, (lo, hi) in enumerate(ranges)]
    return rests


def _fit(finished: list[float], running: list[float]) -> _Fit:
    """Uniform(low, high) durations: low the shortest finished, high by maximum likelihood, with
    the running tracks as censored observations (each lasts at least as long as it has run).

    log L(high) = -n log(high - low) + sum(log(high - e) for running e > low), n = finished + those
    running; its maximum is where n / (high - low) = sum(1 / (high - e)), found by bisection. With
    no running track past ``low`` the likelihood only falls with ``high``: it is the longest finished."""
    low = min(finished)
    longest = max(finished)
    censored = [e for e in running if e > low]
    if not censored:
        return _Fit(low, longest)
    n = len(finished) + len(censored)

    def rising(high: float) -> bool:
        return sum(1 / (high - e) for e in censored) > n / (high - low)

    lo = max(longest, max(censored) + 1e-9)
    if not rising(lo):
        return _Fit(low, lo)
    hi = lo + max(lo - low, 1.0)
    while rising(hi):
        hi = lo + 2 * (hi - lo)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rising(mid) else (lo, mid)
    return _Fit(low, (lo + hi) / 2)
