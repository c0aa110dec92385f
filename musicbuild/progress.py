"""Build progress for people: a live rich display on a terminal, plain lines in CI, or nothing.

Reporters receive events from the executor's thread-free event loop; all output goes to stderr so
stdout stays clean for ``--json`` and pipes. ``NO_COLOR`` is honoured by rich and by us.
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from .model import Action, Outcome, PlannedTrack


class QuietReporter:
    def plan_ready(self, planned: list[PlannedTrack]) -> None:
        pass

    def track_started(self, planned: PlannedTrack) -> None:
        pass

    def track_finished(self, planned: PlannedTrack, outcome: Outcome) -> None:
        pass

    def close(self) -> None:
        pass


def describe(pt: PlannedTrack) -> str:
    reasons = ", ".join(r.value for r in pt.reasons)
    return f"{pt.action.value} {pt.spec.id}" + (f" ({reasons})" if reasons else "")


class PlainReporter(QuietReporter):
    """One line per finished track (CI logs); up-to-date tracks are counted, not listed."""

    def __init__(self, stream: IO[str] | None = None, verbose: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.done = 0
        self.total = 0

    def plan_ready(self, planned: list[PlannedTrack]) -> None:
        self.total = len(planned)
        work = sum(1 for p in planned if p.action is not Action.UP_TO_DATE)
        self._line(f"{self.total} tracks, {work} to build")

    def track_started(self, planned: PlannedTrack) -> None:
        if self.verbose or planned.action in (Action.GENERATE, Action.RESUME):
            self._line(f"start {describe(planned)}")

    def track_finished(self, planned: PlannedTrack, outcome: Outcome) -> None:
        self.done += 1
        if planned.action is Action.UP_TO_DATE and not self.verbose:
            return
        tail = f" after {outcome.seconds:.1f}s" if outcome.seconds else ""
        msg = f": {outcome.error}" if outcome.error else ""
        self._line(f"[{self.done}/{self.total}] {outcome.status} {describe(planned)}{tail}{msg}")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class LiveReporter(QuietReporter):
    """rich progress bar: done/total, running, spend, ETA; failures printed above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("running {task.fields[running]}"), TextColumn("spent ${task.fields[spent]:.2f}"),
            TimeRemainingColumn(), console=self.console, transient=False)
        self.task: Any = None
        self.running = 0
        self.spent = 0.0
        self.started = time.monotonic()

    def plan_ready(self, planned: list[PlannedTrack]) -> None:
        self.progress.start()
        self.task = self.progress.add_task("build", total=len(planned), running=0, spent=0.0)

    def track_started(self, planned: PlannedTrack) -> None:
        self.running += 1
        self.progress.update(self.task, running=self.running)

    def track_finished(self, planned: PlannedTrack, outcome: Outcome) -> None:
        if planned.action is not Action.UP_TO_DATE and outcome.status != "skipped":
            self.running = max(0, self.running - 1)
        self.spent += outcome.cost_usd
        if outcome.status == "failed":
            self.progress.console.print(f"[red]failed[/red] {planned.spec.id}: {outcome.error}", markup=True,
                                        highlight=False)
        self.progress.update(self.task, advance=1, running=self.running, spent=self.spent)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(quiet: bool, verbose: bool) -> QuietReporter:
    if quiet:
        return QuietReporter()
    if sys.stderr.isatty() and os.environ.get("TERM") != "dumb" and not os.environ.get("CI"):
        return LiveReporter()
    return PlainReporter(verbose=verbose)
