"""Fault-injection soak of the money path: does anything get paid twice, lost, or misreported?

N tracks go to the four service emulators (tests/emulators) while faults fire at random: 5xx
bursts, connections dropped right after a create took effect, 2xx create answers nobody can read,
jobs that fail on the service, and ``kill -9`` of the build at random moments. Then the build is
run again until nothing changes. Time is virtual and scaled, so it runs in seconds.

What it checks, from the emulators' own books:
- duplicates: for every prompt, every job but the last must have failed on the service; any other
  earlier job is a second paid job for one spec (must be 0: nothing is re-created without --force);
- billed vs charged: what the services billed for every job musicbuild knows, against what its
  journal (``musicbuild report --journal``) says was charged net of refunds (equal to the cent);
- ambiguous creates: jobs whose answer was lost or unreadable run and are billed on the service,
  but only the service knows their id: musicbuild counts them at their estimate, never re-sends
  them, and reports each track as needing --force.

    python bench/money_soak.py                      # 200 tracks, 3 kills
    python bench/money_soak.py --tracks 60 --kills 1 --seed 7
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.emulators.aigateway import AIgatewayEmulator  # noqa: E402
from tests.emulators.base import Emulator  # noqa: E402
from tests.emulators.beatra import BeatraEmulator  # noqa: E402
from tests.emulators.sonauto import SonautoEmulator  # noqa: E402
from tests.emulators.verbatik import VerbatikEmulator  # noqa: E402

SCALE = 0.003
KEYS = {"AIGATEWAY_API_KEY": "soak-key", "VERBATIK_API_KEY": "soak-key", "SONAUTO_API_KEY": "soak-key",
        "BEATRA_API_KEY": "soak-key"}
SONAUTO_USD_PER_CREDIT = 11 / 20000


def start_emulators(seed: int) -> dict[str, Emulator]:
    common: dict[str, Any] = {"time_scale": SCALE, "latency": (30.0, 90.0), "audio_seconds": 2.0,
                              "api_key": "soak-key"}
    return {"gw": AIgatewayEmulator(seed=seed, **common).start(),
            "bt": BeatraEmulator(seed=seed + 1, **common).start(),
            "vb": VerbatikEmulator(seed=seed + 2, respond_pending=True, **common).start(),
            "so": SonautoEmulator(seed=seed + 3, **common).start()}


def manifest(emus: dict[str, Emulator], n: int) -> str:
    providers = {name: {"type": {"gw": "aigateway", "bt": "beatra", "vb": "verbatik", "so": "sonauto"}[name],
                        "base_url": emu.url, "requests_per_minute": 100000, "max_concurrent": 8}
                 for name, emu in emus.items()}
    names = list(emus)
    tracks = []
    for i in range(n):
        name = names[i % len(names)]
        track: dict[str, Any] = {"id": f"{name}-{i:04d}", "provider": name, "prompt": f"soak {name} cue {i}"}
        if name == "bt":
            track["model"] = "minimax-music-2.6" if i % 3 else "suno-5.5"
        tracks.append(track)
    return json.dumps({"version": 1, "defaults": {"format": "wav", "duration": 4}, "providers": providers,
                       "tracks": tracks}, indent=1)


class FaultInjector(threading.Thread):
    """Flips faults on the emulators at random while a build runs."""

    def __init__(self, emus: dict[str, Emulator], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.emus, self.rng = emus, rng
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(0.05, 0.25)):
            emu = self.rng.choice(list(self.emus.values()))
            fault = self.rng.choice(("5xx", "drop", "unreadable", "none", "none"))
            with emu.lock:
                if fault == "5xx":
                    emu.faults.server_errors = self.rng.randint(1, 3)
                    emu.faults.server_error_status = self.rng.choice((500, 502, 503, 504))
                elif fault == "drop":
                    emu.faults.drop_after_create = 1
                elif fault == "unreadable":
                    emu.faults.unreadable_creates = 1

    def quiet(self) -> None:
        self.stop.set()
        self.join()
        for emu in self.emus.values():
            with emu.lock:
                emu.faults.server_errors = emu.faults.drop_after_create = emu.faults.unreadable_creates = 0


def run_build(folder: Path, env: dict[str, str], n: int, kill_after: float | None) -> dict[str, Any] | None:
    report = folder / f"report-{n}.json"
    cmd = [sys.executable, "-m", "musicbuild", "-q", "build", "-k", "-j", "16", "--report", str(report)]
    with open(folder / f"build-{n}.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=log)
        if kill_after is not None:
            try:
                proc.wait(kill_after)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(600)
    return json.loads(report.read_text()) if report.exists() else None


def billed_per_job(emus: dict[str, Emulator]) -> dict[tuple[str, str], float]:
    """What each service billed for each job, by (provider, job id as musicbuild journals it)."""
    gw, bt, vb, so = (emus[k] for k in ("gw", "bt", "vb", "so"))
    bill: dict[tuple[str, str], float] = {}
    for job in list(gw.jobs.values()):  # type: ignore[attr-defined]
        done = gw.state(job) == "completed"  # type: ignore[attr-defined]
        bill[("gw", job.id)] = gw.models.get(job.resolved_model, (0.0013,))[0] * job.duration if done else 0.0  # type: ignore[attr-defined]
    for task in list(bt.tasks.values()):  # type: ignore[attr-defined]
        refunded = bt.status(task) in ("failed", "canceled")  # type: ignore[attr-defined]
        bill[("bt", task["task_id"])] = 0.0 if refunded else task["price"] / 1000
    songs = list(vb.tracks.values())  # type: ignore[attr-defined]
    for i in range(0, len(songs)):  # num_songs 1: a job is one song
        t = songs[i]
        bill[("vb", t["id"])] = 0.0 if t["failed"] else 0.20 * t["seconds"] / 60
    for task in list(so.tasks.values()):  # type: ignore[attr-defined]
        ok = so.state(task) == "SUCCESS"  # type: ignore[attr-defined]
        bill[("so", task.id)] = task.credits * SONAUTO_USD_PER_CREDIT if ok else 0.0
    return bill


def jobs_by_prompt(emus: dict[str, Emulator]) -> dict[str, list[bool]]:
    """Per prompt, in creation order, whether each job failed on the service."""
    gw, bt, vb, so = (emus[k] for k in ("gw", "bt", "vb", "so"))
    out: dict[str, list[bool]] = {}
    for job in list(gw.jobs.values()):  # type: ignore[attr-defined]
        out.setdefault(job.prompt, []).append(job.failed)
    for task in list(bt.tasks.values()):  # type: ignore[attr-defined]
        out.setdefault(task["input"]["prompt"], []).append(bool(task["fail"]))
    for body, song in zip(list(vb.bodies), list(vb.tracks.values())):  # type: ignore[attr-defined]
        out.setdefault(body["prompt"], []).append(bool(song["failed"]))
    for task in list(so.tasks.values()):  # type: ignore[attr-defined]
        out.setdefault(task.prompt, []).append(task.failed)
    return out


def soak(tracks: int = 200, kills: int = 3, seed: int = 1, max_builds: int = 12,
         folder: Path | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    own = folder is None
    folder = Path(tempfile.mkdtemp(prefix="musicbuild-soak-")) if folder is None else folder
    emus = start_emulators(seed)
    for emu in emus.values():
        emu.faults.fail_jobs = 0.1
    env = {**os.environ, **KEYS, "MUSICBUILD_TIME_SCALE": str(SCALE), "CI": "1"}
    env.pop("MUSICBUILD_CACHE_DIR", None)
    started = time.monotonic()
    try:
        (folder / "musicbuild.yaml").write_text(manifest(emus, tracks))
        injector = FaultInjector(emus, rng)
        injector.start()
        builds, reports = 0, []
        for _ in range(kills):  # killed builds: they write no report
            run_build(folder, env, builds, kill_after=rng.uniform(0.4, 1.6))
            builds += 1
        injector.quiet()
        for emu in emus.values():
            emu.faults.fail_jobs = 0.05
        quiet_rounds = 0
        while builds < kills + max_builds and quiet_rounds < 2:  # rerun until nothing changes
            creates = sum(e.creates for e in emus.values())
            report = run_build(folder, env, builds, kill_after=None)
            builds += 1
            reports.append(report)
            done = sum(e.creates for e in emus.values()) == creates and not any(
                t["action"] in ("resume", "materialize") and t["status"] == "ok" for t in (report or {}).get("tracks", []))
            quiet_rounds = quiet_rounds + 1 if done else 0
        return measure(folder, emus, tracks, kills, builds, reports, time.monotonic() - started)
    finally:
        for emu in emus.values():
            emu.stop()
        if own:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


def measure(folder: Path, emus: dict[str, Emulator], tracks: int, kills: int, builds: int,
            reports: list[dict[str, Any] | None], seconds: float) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from musicbuild.journal import Journal

    records = list(Journal(folder / ".musicbuild").records())
    bill = billed_per_job(emus)
    known: dict[tuple[str, str], float] = {}
    for rec in records:
        if rec.job_id:
            known[(rec.provider, rec.job_id)] = known.get((rec.provider, rec.job_id), 0.0) + rec.net_usd
    billed_known = sum(bill.get(k, 0.0) for k in known)
    charged_known = sum(known.values())
    duplicates = sum(sum(1 for failed in jobs[:-1] if not failed) for jobs in jobs_by_prompt(emus).values())
    final = reports[-1] or {"tracks": []}
    status = [t["status"] for t in final["tracks"]]
    stuck = [t for t in final["tracks"] if t["status"] == "failed"]
    unknown_jobs = [k for k in bill if k not in known]
    return {
        "tracks": tracks, "kills": kills, "builds": builds, "seconds": round(seconds, 1),
        "creates": {name: emu.creates for name, emu in emus.items()},
        "duplicate_creates": duplicates,
        "failed_on_service": sum(sum(jobs) for jobs in jobs_by_prompt(emus).values()),
        "billed_total_usd": round(sum(bill.values()), 4),
        "billed_known_jobs_usd": round(billed_known, 4),
        "charged_in_journal_usd": round(charged_known, 4),
        "difference_usd": round(charged_known - billed_known, 6),
        "ambiguous_jobs": len(unknown_jobs),
        "billed_ambiguous_usd": round(sum(bill[k] for k in unknown_jobs), 4),
        "outstanding_in_journal_usd": round(sum(r.estimate_usd for r in records if r.state == "ambiguous"), 4),
        "ok_tracks": status.count("ok"),
        "tracks_needing_force": sum(1 for t in stuck if "--force" in (t.get("error") or "")),
        "other_failures": [t["error"] for t in stuck if "--force" not in (t.get("error") or "")][:5],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=200)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()}")
    result = soak(args.tracks, args.kills, args.seed)
    for key, value in result.items():
        print(f"{key:>28}: {value}")
    ok = result["duplicate_creates"] == 0 and abs(result["difference_usd"]) < 0.005
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
