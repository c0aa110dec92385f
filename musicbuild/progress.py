"""Build progress for people: a live rich display on a terminal, plain lines in CI, or nothing.

Reporters are ``on_event`` callbacks of ``musicbuild.build`` (the public API's events, carrying
report rows), called on the build's event loop; all output goes to stderr so stdout stays clean
for ``--json`` and pipes. ``NO_COLOR`` is honoured by rich and by us. The live display is in
``live.py`` (it loads rich, which a no-op build never needs).
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Callable

from .api import Event, TrackRow

# what a started track is doing, as the build's ``state`` events say it
WAITING = {"cpu": "waiting for a CPU slot", "fleet": "another worker generates it",
           "shared": "waiting for the same generation"}
DOING = {"generating": "generating", "submitting": "submitting", "queued": "queued at {provider}",
         "polling": "polling {provider}", "downloading": "downloading", "encoding": "encoding"}


def state_words(state: str | None, detail: str | None, provider: str) -> str:
    if state is None:
        return "starting"
    if state == "waiting":
        return WAITING.get(detail or "", "waiting")
    return DOING.get(state, state).format(provider=provider)


def describe(row: TrackRow) -> str:
    reasons = ", ".join(row["reasons"])
    return f"{row['action']} {row['id']}" + (f" ({reasons})" if reasons else "")


def money(usd: float) -> str:
    return f"${usd:.4f}" if 0 < usd < 0.01 else f"${usd:.2f}"


class QuietReporter:
    """An ``on_event`` callback for ``musicbuild.build`` that shows nothing."""

    def __call__(self, event: Event) -> None:
        getattr(self, event.kind)(event)

    def planned(self, event: Event) -> None:
        pass

    def started(self, event: Event) -> None:
        pass

    def state(self, event: Event) -> None:
        pass

    def finished(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


class PlainReporter(QuietReporter):
    """One line per finished track (CI logs); up-to-date tracks are counted, not listed. ``verbose``
    adds them, and a line when a track starts and when its state changes. A track's time is from
    when it started (not from when it began to wait for a -j slot)."""

    def __init__(self, stream: IO[str] | None = None, verbose: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.clock = clock
        self.since: dict[str, float] = {}
        self.done = 0
        self.total = 0

    def planned(self, event: Event) -> None:
        self.total = len(event.tracks)
        work = sum(1 for row in event.tracks if row["action"] != "up-to-date")
        self._line(f"{self.total} tracks, {work} to build")

    def started(self, event: Event) -> None:
        assert event.track is not None
        self.since[event.track["id"]] = self.clock()
        if self.verbose:
            self._line(f"start {describe(event.track)}")

    def state(self, event: Event) -> None:
        row = event.track
        if self.verbose and row is not None:
            self._line(f"  {row['id']}: {state_words(event.state, event.detail, row['provider'])}")

    def finished(self, event: Event) -> None:
        row = event.track
        assert row is not None
        self.done += 1
        if row["action"] == "up-to-date" and not self.verbose:
            return
        since = self.since.pop(row["id"], None)
        seconds = row["seconds"] if since is None else self.clock() - since
        tail = f" after {seconds:.1f}s" if seconds else ""
        if row["cost_usd"] or row.get("estimated_usd"):
            tail += f", {money(row['cost_usd'])}"
        msg = f": {row['error']}" if row["error"] else ""
        self._line(f"[{self.done}/{self.total}] {row['status']} {describe(row)}{tail}{msg}")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def live_terminal() -> bool:
    """stderr is a terminal a live display can redraw, and this is not CI."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb" and not os.environ.get("CI")


def make_reporter(quiet: bool, verbose: bool) -> QuietReporter:
    if quiet:
        return QuietReporter()
    if live_terminal():
        from .live import LiveReporter

        return LiveReporter()
    return PlainReporter(verbose=verbose)
