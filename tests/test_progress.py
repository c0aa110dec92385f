"""Build progress as people see it: the live display through a pseudo-terminal (screens rebuilt by a
terminal emulator, pyte) with a fake clock where timing matters, the ETA, the states a track goes
through (against the emulators), plain lines in CI, and -j 1 doing one thing at a time."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pyte
import pytest

import musicbuild

from .conftest import Project
from .emulators.aigateway import AIgatewayEmulator
from .hosted_support import FAST, SCALE, provider, write_manifest

MUSICBUILD = [sys.executable, "-m", "musicbuild"]
COLS, LINES = 100, 30


# -- the ETA, from the build's own observations ----------------------------------------------
def test_eta_is_unknown_until_a_track_of_each_kind_finished_then_exact_and_counting_down() -> None:
    from musicbuild.eta import Eta

    eta = Eta()
    eta.plan([(t, "gw") for t in "abcdef"] + [("m", "materialize"), ("u", None)])
    eta.working("a", 0.0)
    eta.working("b", 0.0)
    assert eta.left(5.0) is None  # nothing finished: no guess
    for t in "ab":
        eta.finished(t, 10.0, ok=True)
    eta.working("c", 10.0)
    eta.working("d", 10.0)
    assert eta.left(10.0) is None  # gw is known now, materializing is not
    eta.working("m", 10.0)
    eta.finished("m", 11.0, ok=True)
    # 2 lanes; c, d have 10 s to go, then e, f 10 s: 20 s, and the clock alone counts it down
    assert eta.left(11.0) == pytest.approx(19.0)
    assert eta.left(15.0) == pytest.approx(15.0)
    for t in "cd":
        eta.finished(t, 20.0, ok=True)
    eta.working("e", 20.0)
    eta.finished("f", 20.5, ok=False)  # a failure is no duration sample, and no work left
    assert eta.left(21.0) == pytest.approx(9.0)
    eta.finished("e", 30.0, ok=True)
    assert eta.left(30.0) == 0.0


def test_eta_of_a_wave_whose_quick_tracks_finished_first_is_not_taken_for_quick() -> None:
    """Eight jobs started together, 30 to 90 s: after the two quickest, a naive mean (34 s) would
    say 0 s left while 45 s are; the fit counts the six still running as longer than they have run."""
    from musicbuild.eta import Eta

    durations = [30 + 60 * i / 7 for i in range(8)]
    eta = Eta()
    eta.plan([(str(i), "gw") for i in range(8)])
    for i in range(8):
        eta.working(str(i), 0.0)
    errors = []
    for now in (45.0, 55.0, 65.0, 75.0, 85.0):
        for i, d in enumerate(durations):
            if d <= now and str(i) in eta.busy:
                eta.finished(str(i), d, ok=True)
        left = eta.left(now)
        assert left is not None
        errors.append(abs(left - (90.0 - now)))
    assert max(errors) < 12.0, errors  # the last of six is expected where the last of six usually is


def test_eta_grows_while_a_track_overruns_instead_of_freezing() -> None:
    from musicbuild.eta import Eta

    eta = Eta()
    eta.plan([(t, "gw") for t in "abc"])
    eta.working("a", 0.0)
    eta.finished("a", 10.0, ok=True)
    eta.working("b", 10.0)
    assert eta.left(15.0) == pytest.approx(15.0)  # b 5 s more, then c 10 s (one at a time so far)
    assert eta.left(21.0) is None  # one finished track, outrun by another: no spread to go by
    eta.finished("b", 22.0, ok=True)  # 10 s and 12 s
    eta.working("c", 22.0)
    lefts = [eta.left(22.0 + s) for s in (0.0, 11.0, 12.0, 14.0, 20.0)]
    assert lefts[:3] == pytest.approx([11.0, 0.5, 0.5])  # the mean; then due within the spread seen
    assert 0 < lefts[3] < lefts[4]  # type: ignore[operator]  # longer still: a longer kind than we knew


# -- the live display in a pseudo-terminal, on a fake clock ----------------------------------
DRIVER = r'''
import os, sys
from musicbuild.api import Event
from musicbuild.live import LiveReporter

now = [0.0]
mark, ack = os.fdopen(int(sys.argv[1]), "w"), os.fdopen(int(sys.argv[2]), "rb", buffering=0)
live = LiveReporter(clock=lambda: now[0])
ERROR = ("gw: job j-f failed: cancelled: the upstream model refused this prompt after moderation; "
         "nothing was charged. Change the prompt or pick another model, then build again (end of error)")

def plan_row(tid, action="generate"):
    est = 0.10 if action == "generate" else 0.0
    return {"id": tid, "action": action, "reasons": ["new"] if est else [], "status": "planned",
            "provider": "gw", "estimated_usd": est, "cost_usd": est, "seconds": 0.0, "error": None}

rows = {t: plan_row(t) for t in "abcdef"} | {u: plan_row(u, "up-to-date") for u in ("u1", "u2")}

def at(t, *events):
    now[0] = t
    for kind, tid, *rest in events:
        if kind == "finished":
            status, cost, error = rest
            row = {**rows[tid], "status": status, "cost_usd": cost, "seconds": 99.0, "error": error}
            live(Event("finished", track=row))
        elif kind == "state":
            live(Event("state", track=rows[tid], state=rest[0], detail=rest[1] if len(rest) > 1 else None))
        else:
            live(Event(kind, track=rows[tid]))

def checkpoint(name):
    live.refresh()
    sys.stderr.flush()
    mark.write(name + "\n")
    mark.flush()
    ack.read(1)

live(Event("planned", tracks=tuple(rows.values())))
at(0.0, ("finished", "u1", "ok", 0.0, None), ("finished", "u2", "ok", 0.0, None),
   ("started", "a"), ("state", "a", "submitting"), ("started", "b"), ("state", "b", "submitting"))
checkpoint("start")
at(4.0, ("state", "a", "queued"), ("state", "b", "polling"))
checkpoint("polling")
at(9.0, ("state", "a", "downloading"), ("state", "b", "waiting", "cpu"))
at(9.5, ("state", "a", "encoding"))
at(10.0, ("finished", "a", "ok", 0.08, None), ("finished", "b", "ok", 0.08, None),
   ("started", "c"), ("started", "d"))
checkpoint("first-done")
at(15.0)
checkpoint("no-events")
at(20.0, ("finished", "c", "ok", 0.08, None), ("finished", "d", "ok", 0.08, None), ("started", "e"), ("started", "f"))
at(21.0, ("finished", "f", "failed", 0.0, ERROR))
checkpoint("failed")
at(30.0, ("finished", "e", "ok", 0.08, None))
checkpoint("end")
live.close()
'''


def _pty_session(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
                 marks: bool = False, timeout: float = 60.0) -> dict[str, list[str]]:
    """Run ``args`` on a pseudo-terminal of COLS x LINES and rebuild its screen with a terminal
    emulator. With ``marks`` the program gets two pipe fds as argv: it writes a checkpoint name to
    the first and waits for a byte on the second; the screen at each checkpoint is returned, and
    the screen at exit as "exit". Without, every distinct screen is returned under its number."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLS, 0, 0))
    mark_r, mark_w = os.pipe()
    ack_r, ack_w = os.pipe()
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR")}
    env = {**base, "TERM": "xterm-256color", **(env or {})}
    extra = [str(mark_w), str(ack_r)] if marks else []
    proc = subprocess.Popen(args + extra, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env,
                            pass_fds=(mark_w, ack_r) if marks else ())
    for fd in (slave, mark_w, ack_r):
        os.close(fd)
    screen = pyte.Screen(COLS, LINES)
    stream = pyte.ByteStream(screen)
    screens: dict[str, list[str]] = {}
    pending = b""
    deadline = time.monotonic() + timeout

    def read_screen(wait: float) -> bool | None:
        """Feed what the terminal got within ``wait`` seconds: True, None (nothing), False (closed)."""
        ready, _, _ = select.select([master], [], [], wait)
        if not ready:
            return None
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            return False
        stream.feed(data)
        return bool(data)

    def snapshot() -> list[str]:
        return [line.rstrip() for line in screen.display]

    try:
        open_fds = [master, mark_r]
        while time.monotonic() < deadline:
            ready, _, _ = select.select(open_fds, [], [], 1.0)
            if mark_r in ready:
                chunk = os.read(mark_r, 1024)
                if not chunk:
                    open_fds.remove(mark_r)
                    continue
                pending += chunk
                while b"\n" in pending:
                    name, pending = pending.split(b"\n", 1)
                    while read_screen(0.15):  # what the program wrote before the mark (the pty may lag)
                        pass
                    screens[name.decode()] = snapshot()
                    os.write(ack_w, b"x")
            if master in ready:
                got = read_screen(0)
                if got is False:
                    break
                if not marks and snapshot() not in screens.values():
                    screens[str(len(screens))] = snapshot()
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        while read_screen(0.1):
            pass
        screens["exit"] = snapshot()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in (master, mark_r, ack_w):
            os.close(fd)
    return screens


def _text(lines: list[str]) -> str:
    return "\n".join(lines)


def _line(lines: list[str], *words: str) -> str:
    found = [ln for ln in lines if all(w in ln for w in words)]
    assert len(found) == 1, (words, _text(lines))
    return found[0]


def test_live_display_through_a_pty_with_a_fake_clock() -> None:
    screens = _pty_session([sys.executable, "-c", DRIVER], marks=True)
    start = screens["start"]
    assert "2/8" in _line(start, "spent $0.00 of $0.60 estimated", "0:00 elapsed", "ETA estimating…")
    assert _line(start, " a ", "gw", "submitting", "0:00") and _line(start, " b ", "submitting")
    assert "4 waiting to start" in _text(start)

    polling = screens["polling"]  # what each running track is doing, and for how long
    assert _line(polling, " a ", "queued at gw", "0:04") and _line(polling, " b ", "polling gw", "0:04")
    assert "0:04 elapsed" in _text(polling) and "ETA estimating…" in _text(polling)

    first = screens["first-done"]  # two lanes: c and d 10 s, then e and f 10 s
    assert _line(first, "4/8", "spent $0.16 of $0.60 estimated", "0:10 elapsed", "ETA 0:20")
    assert _line(first, " c ", "starting", "0:00") and "2 waiting to start" in _text(first)

    idle = screens["no-events"]  # no event for 5 s: the clock alone moves the display (no freeze)
    assert _line(idle, "0:15 elapsed", "ETA 0:15") and _line(idle, " c ", "0:05")

    failed = screens["failed"]
    assert _line(failed, "7/8", "1 failed", "ETA 0:09")
    assert _line(failed, "✗ f: gw: job j-f failed").endswith("…")  # one line while the build runs

    end = screens["end"]
    assert _line(end, "8/8", "spent $0.40 of $0.60 estimated", "0:30 elapsed", "ETA 0:00")

    final = screens["exit"]  # the display is gone; a line per track (a small build), the failure in full
    assert not any("ETA" in ln for ln in final)
    assert _line(final, "✓", " a ", "generate", "0:10", "$0.08")
    assert _line(final, "·", "u1", "up to date")
    assert _line(final, "✗", " f ", "failed (generate)", "0:01")
    joined = " ".join(ln.strip() for ln in final)
    assert "f failed (generate after 0:01): gw: job j-f failed: cancelled: the upstream" in joined
    assert "then build again (end of error)" in joined  # in full, wrapped, not cut
    assert _line(final, "took 0:30; the plan estimated $0.60")


def test_a_real_build_on_a_terminal_shows_provider_states_and_the_final_screen(project: Project) -> None:
    scale = 0.03  # a 30-40 s job takes about a second: several redraws while it polls
    with AIgatewayEmulator(time_scale=scale, latency=(30, 40), audio_seconds=2) as gw:
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST)},
                       [{"id": f"theme-{i}", "provider": "gw", "prompt": f"theme {i}"} for i in range(3)])
        env = {"MUSICBUILD_TIME_SCALE": str(scale), "AIGATEWAY_API_KEY": "test-key"}
        screens = _pty_session(MUSICBUILD + ["build", "-j", "2"], cwd=project.root, env=env)
    seen = "\n".join(_text(s) for s in screens.values())
    assert "polling gw" in seen and "1 waiting to start" in seen
    assert "of $" in seen and "estimated" in seen
    final = screens["exit"]
    for i in range(3):
        assert _line(final, "✓", f"theme-{i}", "generate", "$0.")
    assert _line(final, "3 tracks: 3 generated")


# -- the states a track goes through (public events, against an emulator) ---------------------
def test_every_hosted_track_reports_its_stages_in_order(project: Project, env: dict[str, str]) -> None:
    # latency 400 s: the service says queued for its first 40 s (120 ms real: room for a loaded
    # machine), and the first poll comes at 3 s
    with AIgatewayEmulator(time_scale=SCALE, latency=400, audio_seconds=2) as gw:
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST)},
                       [{"id": t, "provider": "gw", "prompt": t} for t in ("a", "b")])
        events: list[musicbuild.Event] = []
        result = musicbuild.build(project.manifest, on_event=events.append)
    assert result.ok
    for tid in ("a", "b"):
        states = [e.state for e in events if e.kind == "state" and e.track and e.track["id"] == tid]
        assert _in_order(["submitting", "queued", "polling", "downloading", "encoding"], states), states
        assert states.count("submitting") == 1 and states.count("downloading") == 1  # news only, not every poll
    kinds = [e.kind for e in events]
    assert kinds[0] == "planned" and kinds.count("started") == 2 and kinds.count("finished") == 2


def test_a_track_sharing_another_ones_generation_says_it_waits_for_it(project: Project) -> None:
    project.write("version: 1\ndefaults: {provider: local, duration: 1, seed: 7}\ntracks:\n"
                  "  - {id: theme-wav, prompt: theme, format: wav}\n  - {id: theme-mp3, prompt: theme, format: mp3}\n")
    events: list[musicbuild.Event] = []
    assert musicbuild.build(project.manifest, on_event=events.append).ok
    states = {tid: [(e.state, e.detail) for e in events if e.kind == "state" and e.track and e.track["id"] == tid]
              for tid in ("theme-wav", "theme-mp3")}
    assert states["theme-wav"][0] == ("generating", None)
    assert states["theme-mp3"][0] == ("waiting", "shared") and ("generating", None) not in states["theme-mp3"]


def _in_order(wanted: list[str], seen: list[Any]) -> bool:
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


# -- -j 1 ---------------------------------------------------------------------------------------
def _record_cpu_work(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float, str]]:
    """Wrap the local render and materialize: (start, end, what) of every call, from any thread."""
    import musicbuild.executor as executor
    import musicbuild.providers.local as local

    spans: list[tuple[float, float, str]] = []
    lock = threading.Lock()

    def timed(fn: Any, what: str) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    spans.append((t0, time.perf_counter(), what))
        return run

    monkeypatch.setattr(local, "render_flac", timed(local.render_flac, "render"))
    monkeypatch.setattr(executor, "materialize", timed(executor.materialize, "materialize"))
    return spans


def _most_at_once(spans: list[tuple[float, float, str]]) -> int:
    edges = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_j1_renders_and_encodes_one_track_at_a_time(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("version: 1\ndefaults: {provider: local, duration: 2, format: mp3}\ntracks:\n"
                  + "".join(f"  - {{id: t{i}, prompt: theme {i}}}\n" for i in range(4)))
    spans = _record_cpu_work(monkeypatch)
    events: list[musicbuild.Event] = []
    assert musicbuild.build(project.manifest, jobs=1, on_event=events.append).ok
    assert len(spans) == 8 and _most_at_once(spans) == 1, sorted(spans)
    busy: set[str] = set()  # the events say the same: never two tracks rendering or encoding
    for e in events:
        tid = e.track["id"] if e.track else ""
        if e.kind == "state" and e.state in ("generating", "encoding"):
            busy.add(tid)
            assert len(busy) == 1, (tid, busy)
        elif e.kind == "finished" or (e.kind == "state" and e.state == "waiting"):
            busy.discard(tid)
    spans.clear()
    assert musicbuild.build(project.manifest, jobs=2, force=True).ok
    assert len(spans) == 8 and _most_at_once(spans) <= 2


# -- plain lines (CI) ---------------------------------------------------------------------------
def test_ci_prints_a_line_per_finished_track_and_starts_only_with_v(project: Project, env: dict[str, str]) -> None:
    project.write("version: 1\ndefaults: {provider: local, duration: 1, format: wav}\ntracks:\n"
                  "  - {id: intro, prompt: intro}\n  - {id: outro, prompt: outro}\n")
    run = project.run("build")
    lines = run.err.splitlines()
    assert lines[0] == "2 tracks, 2 to build" and not any(ln.startswith("start") for ln in lines)
    done = [ln for ln in lines if ln.startswith("[")]
    assert len(done) == 2 and all(" ok generate " in ln and " after " in ln for ln in done)

    verbose = project.run("-v", "build", "--force").err.splitlines()
    assert {"start generate intro (forced)", "start generate outro (forced)"} <= set(verbose)
    assert "  intro: encoding" in verbose and sum(ln.startswith("[") for ln in verbose) == 2

    noop = project.run("build")  # answered by the null-build stamp
    assert noop.err.splitlines() == ["2 tracks up to date, nothing to do"]
    listed = project.run("-v", "build")
    assert listed.err.splitlines() == ["up-to-date intro", "up-to-date outro", "2 tracks up to date, nothing to do"]


def test_ci_lines_carry_the_cost_of_paid_tracks(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=(30, 40), audio_seconds=2) as gw:
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST)},
                       [{"id": "a", "provider": "gw", "prompt": "a"}])
        run = project.run("build", "--report", str(project.root / "r.json"))
    row = json.loads((project.root / "r.json").read_text())["tracks"][0]
    line = next(ln for ln in run.err.splitlines() if ln.startswith("[1/1]"))
    assert 0 < row["cost_usd"] < 0.01  # money() keeps cents' fractions: $0.0026, not $0.00
    assert line.startswith("[1/1] ok generate a (new) after ") and line.endswith(f", ${row['cost_usd']:.4f}")
