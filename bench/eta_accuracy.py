"""ETA accuracy: how far the live display's ETA is from the time a build really had left.

Each scenario is a real build (``musicbuild.build`` against the AIgateway emulator on a scaled
clock, or the ``local`` provider) whose events are recorded with their times. The recording is
then replayed into two estimators, asked at 40 evenly spaced moments of the build:

- musicbuild's ETA (``eta.py``, what the live display shows), and
- what the display showed before (rich's ``TimeRemainingColumn`` on a ``Progress`` advanced per
  finished track, up-to-date ones included), replayed through rich itself with the same clock.

For each: how often it had an answer, and its median and worst error as a share of the whole
build's time (|ETA - time really left| / build time), over the moments it had one.

    python bench/eta_accuracy.py [--scale 0.02]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import musicbuild  # noqa: E402
from musicbuild.eta import Eta, kind_of  # noqa: E402
from tests.emulators.aigateway import AIgatewayEmulator  # noqa: E402

SAMPLES = 40


def record(manifest: Path, jobs: int, force: bool = False) -> list[tuple[float, musicbuild.Event]]:
    events: list[tuple[float, musicbuild.Event]] = []
    t0 = time.monotonic()
    result = musicbuild.build(manifest, jobs=jobs, force=force, keep_going=True,
                              on_event=lambda e: events.append((time.monotonic() - t0, e)))
    assert not result.noop
    return events


def replay_ours(events: list[tuple[float, musicbuild.Event]], at: float) -> float | None:
    if events[0][0] > at:
        return None  # the display starts with the plan
    eta, worked = Eta(), set()
    for t, e in events:
        if t > at:
            break
        tid = e.track["id"] if e.track else ""
        if e.kind == "planned":
            eta.plan((r["id"], kind_of(r["action"], r["provider"])) for r in e.tracks)
        elif e.kind == "started":
            eta.working(tid, t)
        elif e.kind == "state" and e.state != "waiting":
            worked.add(tid)
            eta.working(tid, t)
        elif e.kind == "state" and tid not in worked:
            eta.waiting(tid, t)
        elif e.kind == "finished":
            eta.finished(tid, t, ok=e.track["status"] == "ok")
    return eta.left(at)


def replay_rich(events: list[tuple[float, musicbuild.Event]], at: float) -> float | None:
    """The old display: a rich Progress advanced by one per finished track."""
    from rich.progress import Progress

    clock = [0.0]
    progress = Progress(get_time=lambda: clock[0], disable=True)
    task = None
    for t, e in events:
        if t > at:
            break
        clock[0] = t
        if e.kind == "planned":
            task = progress.add_task("build", total=len(e.tracks))
        elif e.kind == "finished" and task is not None:
            progress.update(task, advance=1)
    clock[0] = at
    return None if task is None else progress.tasks[0].time_remaining


def score(events: list[tuple[float, musicbuild.Event]]) -> dict[str, Any]:
    end = events[-1][0]
    moments = [end * (i + 0.5) / SAMPLES for i in range(SAMPLES)]
    out: dict[str, Any] = {"build_s": round(end, 2)}
    for name, estimator in (("musicbuild", replay_ours), ("rich (before)", replay_rich)):
        errors = [abs(left - (end - at)) / end for at in moments if (left := estimator(events, at)) is not None]
        out[name] = {"answered": f"{len(errors)}/{SAMPLES}",
                     "median_err": f"{100 * statistics.median(errors):.0f}%" if errors else "-",
                     "worst_err": f"{100 * max(errors):.0f}%" if errors else "-"}
    return out


def hosted(work: Path, tracks: int, jobs: int, latency: tuple[float, float], scale: float) -> dict[str, Any]:
    os.environ["MUSICBUILD_TIME_SCALE"] = str(scale)
    os.environ["AIGATEWAY_API_KEY"] = "test-key"
    with AIgatewayEmulator(time_scale=scale, latency=latency, audio_seconds=2, seed=1) as gw:
        doc = {"version": 1, "defaults": {"format": "wav", "duration": 30},
               "providers": {"gw": {"type": "aigateway", "base_url": gw.url, "requests_per_minute": 100000,
                                    "max_concurrent": 64}},
               "tracks": [{"id": f"t{i:02d}", "provider": "gw", "prompt": f"theme {i}"} for i in range(tracks)]}
        (work / "musicbuild.yaml").write_text(json.dumps(doc))
        return score(record(work / "musicbuild.yaml", jobs))


def local(work: Path, tracks: int, jobs: int) -> dict[str, Any]:
    doc = {"version": 1, "defaults": {"provider": "local", "format": "mp3", "duration": 3},
           "tracks": [{"id": f"t{i:02d}", "prompt": f"theme {i}"} for i in range(tracks)]}
    (work / "musicbuild.yaml").write_text(json.dumps(doc))
    return score(record(work / "musicbuild.yaml", jobs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=0.02, help="real seconds per virtual second (hosted)")
    args = ap.parse_args()
    print(f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}")
    scenarios = {
        "hosted: 32 tracks, -j 4, 30-90 s jobs": lambda w: hosted(w, 32, 4, (30, 90), args.scale),
        "hosted: 8 tracks, -j 8 (one wave), 30-90 s jobs": lambda w: hosted(w, 8, 8, (30, 90), args.scale),
        "local: 24 tracks, -j 2": lambda w: local(w, 24, 2),
    }
    for name, run in scenarios.items():
        with tempfile.TemporaryDirectory(prefix="eta-bench-") as tmp:
            figures = run(Path(tmp))
        ours, old = figures["musicbuild"], figures["rich (before)"]
        print(f"{name} ({figures['build_s']} s): musicbuild answered {ours['answered']}, median error "
              f"{ours['median_err']}, worst {ours['worst_err']} | before: answered {old['answered']}, "
              f"median {old['median_err']}, worst {old['worst_err']}")


if __name__ == "__main__":
    main()
