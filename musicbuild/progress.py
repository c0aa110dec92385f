"""Build progress for people: a live rich display on a terminal, plain lines in CI, or nothing.

Reporters are ``on_event`` callbacks of ``musicbuild.build`` (the public API's events, carrying
report rows), called on the build's event loop; all output goes to stderr so stdout stays clean
for ``--json`` and pipes. ``NO_COLOR`` is honoured by rich and by us.
"""
from __future__ import annotations

import os
import sys
from typing import IO, Any

from .api import Event, TrackRow


class QuietReporter:
    """An ``on_event`` callback for ``musicbuild.build`` that shows nothing."""

    def __call__(self, event: Event) -> None:
        getattr(self, event.kind)(event)

    def planned(self, event: Event) -> None:
        pass

    def started(self, event: Event) -> None:
        pass

    def finished(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


def describe(row: TrackRow) -> str:
    reasons = ", ".join(row["reasons"])
    return f"{row['action']} {row['id']}" + (f" ({reasons})" if reasons else "")


class PlainReporter(QuietReporter):
    """One line per finished track (CI logs); up-to-date tracks are counted, not listed."""

    def __init__(self, stream: IO[str] | None = None, verbose: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.done = 0
        self.total = 0

    def planned(self, event: Event) -> None:
        self.total = len(event.tracks)
        work = sum(1 for row in event.tracks if row["action"] != "up-to-date")
        self._line(f"{self.total} tracks, {work} to build")

    def started(self, event: Event) -> None:
        row = event.track
        if row is not None and (self.verbose or row["action"] in ("generate", "resume")):
            self._line(f"start {describe(row)}")

    def finished(self, event: Event) -> None:
        row = event.track
        assert row is not None
        self.done += 1
        if row["action"] == "up-to-date" and not self.verbose:
            return
        tail = f" after {row['seconds']:.1f}s" if row["seconds"] else ""
        msg = f": {row['error']}" if row["error"] else ""
        self._line(f"[{self.done}/{self.total}] {row['status']} {describe(row)}{tail}{msg}")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class LiveReporter(QuietReporter):
    """rich progress bar: done/total, running, spend, ETA; failures printed above it. rich is
    imported when the plan arrives, so a no-op build on a terminal never loads it."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None
        self.running = 0
        self.spent = 0.0

    def planned(self, event: Event) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("running {task.fields[running]}"), TextColumn("spent ${task.fields[spent]:.2f}"),
            TimeRemainingColumn(), console=console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task("build", total=len(event.tracks), running=0, spent=0.0)

    def started(self, event: Event) -> None:
        self.running += 1
        self.progress.update(self.task, running=self.running)

    def finished(self, event: Event) -> None:
        row = event.track
        assert row is not None
        if row["action"] != "up-to-date" and row["status"] != "skipped":
            self.running = max(0, self.running - 1)
        self.spent += row["cost_usd"]
        if row["status"] == "failed":
            self.progress.console.print(f"[red]failed[/red] {row['id']}: {row['error']}", markup=True,
                                        highlight=False)
        self.progress.update(self.task, advance=1, running=self.running, spent=self.spent)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def make_reporter(quiet: bool, verbose: bool) -> QuietReporter:
    if quiet:
        return QuietReporter()
    if sys.stderr.isatty() and os.environ.get("TERM") != "dumb" and not os.environ.get("CI"):
        return LiveReporter()
    return PlainReporter(verbose=verbose)
