"""The live display of a build on a terminal (rich), and the screen it leaves behind.

While the build runs: a bar with done/total, failures, spend so far against the plan's estimate,
elapsed time and the ETA (``eta.py``), then one line per running track (name, provider, what it
is doing, how long it has run) and how many wait to start. It is redrawn ``refresh_per_second``
times from the reporter's clock, so times move between events. When the build ends the display
goes and a final screen stays: for a small build one short line per track, and every failure in
full.

The build's events arrive on its event loop; rich redraws from its own thread: a lock keeps them
apart. rich is imported when the plan arrives, so a no-op build on a terminal never loads it.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from .api import Event, TrackRow
from .eta import Eta, kind_of
from .progress import QuietReporter, money, state_words

SMALL_BUILD = 20  # at most this many tracks: the final screen lists every one
MAX_ROWS = 12  # running tracks shown by name (the rest are counted)
GLYPHS = {"ok": ("✓", "green"), "failed": ("✗", "red"), "skipped": ("-", "yellow")}


def clock_text(seconds: float) -> str:
    """1:05, or 1:02:05 past an hour."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class LiveReporter(QuietReporter):
    def __init__(self, console: Any = None, clock: Callable[[], float] = time.monotonic,
                 refresh_per_second: float = 4.0, small_build: int = SMALL_BUILD) -> None:
        self.console = console
        self.clock = clock
        self.refresh_per_second = refresh_per_second
        self.small_build = small_build
        self.lock = threading.Lock()
        self.live: Any = None
        self.plan: dict[str, TrackRow] = {}
        self.results: dict[str, TrackRow] = {}  # finished tracks' report rows
        self.failed: list[TrackRow] = []
        self.running: dict[str, float] = {}  # started, not finished -> when it started
        self.took: dict[str, float] = {}  # finished -> seconds from its start
        self.states: dict[str, tuple[str | None, str | None]] = {}
        self.worked: set[str] = set()  # tracks that have done something besides waiting
        self.spinners: dict[str, Any] = {}
        self.eta = Eta()
        self.t0 = 0.0
        self.spent = 0.0
        self.estimate = 0.0

    # -- events (the build's loop) -------------------------------------------------------
    def planned(self, event: Event) -> None:
        from rich.console import Console
        from rich.live import Live

        if self.console is None:
            self.console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), get_time=self.clock)
        with self.lock:
            self.t0 = self.clock()
            self.plan = {row["id"]: row for row in event.tracks}
            self.estimate = sum(row.get("estimated_usd") or 0.0 for row in event.tracks)
            self.eta.plan((row["id"], kind_of(row["action"], row["provider"])) for row in event.tracks)
        self.live = Live(console=self.console, get_renderable=self._render, transient=True,
                         refresh_per_second=self.refresh_per_second, redirect_stdout=False)  # stderr lines go above it
        self.live.start()

    def started(self, event: Event) -> None:
        assert event.track is not None
        with self.lock:
            tid, now = event.track["id"], self.clock()
            self.running[tid] = now
            self.states[tid] = (None, None)
            self.eta.working(tid, now)

    def state(self, event: Event) -> None:
        assert event.track is not None
        with self.lock:
            tid = event.track["id"]
            self.states[tid] = (event.state, event.detail)
            if event.state != "waiting":
                self.worked.add(tid)
                self.eta.working(tid, self.clock())
            elif tid not in self.worked:  # announced, but waiting for a slot: not working yet
                self.eta.waiting(tid, self.clock())

    def finished(self, event: Event) -> None:
        row = event.track
        assert row is not None
        with self.lock:
            tid = row["id"]
            self.results[tid] = row
            if row["status"] == "failed":
                self.failed.append(row)
            self.spent += row.get("cost_usd") or 0.0
            since = self.running.pop(tid, None)
            if since is not None:
                self.took[tid] = self.clock() - since
            self.states.pop(tid, None)
            self.spinners.pop(tid, None)
            self.eta.finished(tid, self.clock(), ok=row["status"] == "ok")

    def refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()

    def close(self) -> None:
        if self.live is None:
            return
        self.live.stop()
        self.live = None
        for renderable in self._final():
            self.console.print(renderable, highlight=False)

    # -- the display (rich's thread, or refresh()) ---------------------------------------
    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            now = self.clock()
            lines: list[Any] = [self._header(now)]
            table = Table.grid(padding=(0, 1))
            table.add_column(width=1)
            table.add_column(no_wrap=True, overflow="ellipsis", max_width=32)
            table.add_column(style="dim", no_wrap=True, overflow="ellipsis", max_width=12)
            table.add_column(no_wrap=True, overflow="ellipsis")
            table.add_column(justify="right", no_wrap=True)
            shown = sorted(self.running.items(), key=lambda item: item[1])[:MAX_ROWS]
            for tid, since in shown:
                state, detail = self.states.get(tid, (None, None))
                style = "dim" if state == "waiting" else ""
                table.add_row(self._spinner(tid), tid, self.plan[tid]["provider"] if tid in self.plan else "",
                              Text(state_words(state, detail, self.plan.get(tid, {}).get("provider", "")), style=style),
                              clock_text(now - since))
            if shown:
                lines.append(table)
            more = len(self.running) - len(shown)
            waiting = len(self.plan) - len(self.results) - len(self.running)
            counts = [f"{more} more running"] if more > 0 else []
            counts += [f"{waiting} waiting to start"] if waiting > 0 else []
            if counts:
                lines.append(Text("  " + ", ".join(counts), style="dim"))
            for row in self.failed[-3:]:
                lines.append(Text(f"✗ {row['id']}: {row['error']}", style="red", no_wrap=True, overflow="ellipsis"))
            return Group(*lines)

    def _header(self, now: float) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        done, total = len(self.results), len(self.plan)
        left = self.eta.left(now)
        parts = [Text(f"{done}/{total}", style="bold")]
        if self.failed:
            parts.append(Text(f"{len(self.failed)} failed", style="red"))
        spend = f"spent {money(self.spent)}"
        parts.append(Text(spend + (f" of {money(self.estimate)} estimated" if self.estimate else "")))
        parts.append(Text(f"{clock_text(now - self.t0)} elapsed"))
        parts.append(Text("ETA estimating…" if left is None else f"ETA {clock_text(left)}", style="cyan"))
        text = _joined(parts, Text(" · ", style="dim"))
        room = self.console.width - len(text) - 1
        if room < 10:  # a narrow terminal: the numbers matter more than the bar
            return text
        head = Table.grid(padding=(0, 1))
        head.add_row(ProgressBar(total=max(total, 1), completed=done, width=min(room, 30)), text)
        return head

    def _spinner(self, tid: str) -> Any:
        from rich.spinner import Spinner

        if tid not in self.spinners:
            self.spinners[tid] = Spinner("dots", style="cyan")
        return self.spinners[tid]

    # -- the final screen --------------------------------------------------------------------
    def _final(self) -> list[Any]:
        from rich.table import Table
        from rich.text import Text

        out: list[Any] = []
        if len(self.plan) <= self.small_build:
            table = Table.grid(padding=(0, 1))
            for tid in self.plan:
                table.add_row(*self._brief(tid, self.results.get(tid)))
            out.append(table)
        for row in self.failed:
            took = self.took.get(row["id"], row.get("seconds") or 0.0)
            after = f" after {clock_text(took)}" if took else ""
            out.append(Text.assemble(("✗ ", "red"), (row["id"], "bold"), f" failed ({row['action']}{after}):"))
            out.append(Text(f"  {row['error']}"))
        total = f"took {clock_text(self.clock() - self.t0)}"
        out.append(Text(total + (f"; the plan estimated {money(self.estimate)}" if self.estimate else ""), style="dim"))
        return out

    def _brief(self, tid: str, row: TrackRow | None) -> list[Any]:
        """One short line of the final screen: glyph, id, what happened, time, cost."""
        from rich.text import Text

        if row is None:
            return [Text("-", style="yellow"), tid, Text("not finished", style="yellow"), "", ""]
        if row["action"] == "up-to-date" and row["status"] == "ok":
            return [Text("·", style="dim"), tid, Text("up to date", style="dim"), "", ""]
        glyph, colour = GLYPHS.get(row["status"], ("?", ""))
        what = row["action"] if row["status"] == "ok" else f"{row['status']} ({row['action']})"
        cost = money(row["cost_usd"]) if row.get("cost_usd") or row.get("estimated_usd") else ""
        took = self.took.get(tid, row.get("seconds") or 0.0)
        return [Text(glyph, style=colour), tid, what, clock_text(took) if took else "", cost]


def _joined(parts: list[Any], separator: Any) -> Any:
    from rich.text import Text

    return Text.assemble(*[piece for i, part in enumerate(parts) for piece in ((separator, part) if i else (part,))])
