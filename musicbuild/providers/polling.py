"""When to poll a job: the schedule that gets the most jobs through the provider's limits.

Two limits bound a provider's throughput: ``max_concurrent`` slots, each held from the create until
a poll finds the job done (C / mean hold time jobs per minute), and ``requests_per_minute``, shared
by creates and polls (R / requests per job). Polling often frees slots sooner but spends requests;
polling late spends one request but holds the slot. Which matters depends on the limits and on the
jobs' latency, so the schedule is chosen by simulating candidates against the latencies this build
(or, with a coordinator, the fleet) has observed, and taking the one with the highest throughput.

A schedule is "first poll ``first`` seconds after the create, then every ``spacing`` seconds".
Before enough jobs have finished, polls back off from the service's minimum spacing.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Iterable

QUANTILES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
SPACINGS = (1.0, 1.5, 2.0, 3.0, 5.0, 8.0)  # multiples of the service's minimum poll spacing
MIN_SAMPLES = 3


class LatencyModel:
    """What has been seen of one provider's job latency.

    Each finished job gives a bracket: it was last seen pending at ``lower`` seconds (0 if its
    first poll found it done) and was done at ``upper``. Only the most recent jobs count: the first
    ones learn with coarse polls and their loose brackets should age out.
    """

    RECENT = 32

    def __init__(self) -> None:
        self.brackets: collections.deque[tuple[float, float]] = collections.deque(maxlen=self.RECENT)

    def add(self, lower: float, upper: float) -> None:
        self.brackets.append((lower, upper))

    def samples(self) -> list[float]:
        """Latency estimates: bracket midpoints (a job found done at its first poll finished
        somewhere before it, so its midpoint keeps early schedules in the running)."""
        return sorted((lo + hi) / 2 for lo, hi in self.brackets)


@dataclass(frozen=True)
class Schedule:
    first: float
    spacing: float

    def due(self, polls_done: int) -> float:
        """Seconds after the create at which poll number ``polls_done + 1`` is due."""
        return self.first + polls_done * self.spacing


def evaluate(schedule: Schedule, samples: list[float]) -> tuple[float, float]:
    """(mean seconds a slot is held, mean requests per job, the create included)."""
    hold = requests = 0.0
    for latency in samples:
        late_by = max(0.0, latency - schedule.first)
        polls = math.ceil(late_by / schedule.spacing - 1e-9) if late_by > 0 else 0
        hold += schedule.first + polls * schedule.spacing
        requests += 2 + polls
    return hold / len(samples), requests / len(samples)


def throughput(schedule: Schedule, samples: list[float], rate_per_min: float, slots: int) -> float:
    hold, requests = evaluate(schedule, samples)
    by_slots = slots * 60.0 / max(hold, 1e-9)
    by_rate = rate_per_min / requests if rate_per_min else math.inf
    return min(by_slots, by_rate)


def best_schedule(samples: Iterable[float], min_poll: float, rate_per_min: float, slots: int) -> Schedule | None:
    """The candidate schedule with the highest throughput under both limits (None: too little seen);
    among equals, the one that spends fewer requests."""
    seen = sorted(samples)
    if len(seen) < MIN_SAMPLES:
        return None
    starts = sorted({max(min_poll, seen[min(len(seen) - 1, int(q * len(seen)))]) for q in QUANTILES})
    best: tuple[float, float, Schedule] | None = None
    for first in starts:
        for k in SPACINGS:
            candidate = Schedule(first, min_poll * k)
            score = throughput(candidate, seen, rate_per_min, slots)
            _, requests = evaluate(candidate, seen)
            if best is None or (score, -requests) > (best[0], -best[1]):
                best = (score, requests, candidate)
    assert best is not None
    return best[2]


def learning_delay(polls: int, min_poll: float, interval: float, plentiful: bool) -> float:
    """Before anything is learnt: back off x1.5, from the service's minimum spacing when requests
    are unlimited (tight brackets teach fast), else from ``poll_interval`` (every poll spent on
    learning is one create fewer in the window)."""
    start = min_poll if plentiful else max(min_poll, interval)
    return max(min_poll, min(30.0, start * 1.5 ** polls))
