"""Fleet benchmark: N identical workers, one account, one Redis coordinator, one shared cache.

Each worker is a separate `musicbuild build` process with its own local cache (ephemeral runners);
they share a file:// cache and a real redis-server. The AIgateway emulator enforces the account's
rate limit (R requests/minute, 429 above it) and counts every create. Time is virtual and scaled
(``--scale``: real seconds per virtual second; the default 0.05 keeps event-loop delays small
against 3 s polls).

The account's bound: every job needs a create and at least one poll, so R/2 jobs per minute (the
jobs are short, 5-10 s, so max_concurrent is not what binds). Throughput is measured on the
emulator's clock from the first create to the last download.

Also the ephemeral-runner case: a worker killed (kill -9) with jobs in flight, its disk deleted, a
fresh worker started: creates repeated must be 0.

    python bench/fleet.py                       # 1, 2, 4 and 8 workers + the kill case
    python bench/fleet.py --workers 4 --tracks 40
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tests.test_fleet as fleet_tests  # noqa: E402
from tests.emulators.aigateway import AIgatewayEmulator  # noqa: E402
from tests.remote_servers import RedisServer  # noqa: E402


def run(workers: int, tracks: int, rpm: int, scale: float, coordinated: bool = True) -> dict[str, float]:
    fleet_tests.SCALE = scale
    fleet_tests.RPM = rpm
    folder = Path(tempfile.mkdtemp(prefix="musicbuild-fleet-"))
    try:
        with RedisServer(folder / "redis") as redis, \
                AIgatewayEmulator(time_scale=scale, latency=(5, 10), audio_seconds=2, rpm=rpm) as emu:
            fleet = fleet_tests.Fleet(folder, emu, tracks, redis.url if coordinated else None)
            started = time.monotonic()
            for i in range(workers):
                share = () if coordinated else ("--shard", f"{i + 1}/{workers}")
                fleet.start(f"w{i}", *share)
            codes = fleet.wait(600)
            wall = time.monotonic() - started
            creates = [e.t for e in emu.log if e.method == "POST"]
            ends = [e.t for e in emu.log if e.public and e.status == 200]
            minutes = (max(ends) - min(creates)) / 60
            per_prompt = fleet_tests.creates_per_prompt(emu)
            return {"workers": workers, "ok": all(c == 0 for c in codes.values()), "jobs_per_min": tracks / minutes,
                    "bound": rpm / 2, "ratio": tracks / minutes / (rpm / 2),
                    "peak_60s": emu.requests_in_any_window(60.0), "429s": fleet_tests.four_hundred_twenty_nines(emu),
                    "requests_per_job": sum(1 for e in emu.log if not e.public) / tracks,
                    "duplicates": sum(n - 1 for n in per_prompt.values()), "wall_s": wall}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def kill_case(scale: float, coordinated: bool) -> dict[str, float]:
    fleet_tests.SCALE = scale
    folder = Path(tempfile.mkdtemp(prefix="musicbuild-fleet-kill-"))
    try:
        with RedisServer(folder / "redis") as redis, \
                AIgatewayEmulator(time_scale=scale, latency=(150, 200), audio_seconds=2) as emu:
            fleet = fleet_tests.Fleet(folder, emu, 8, redis.url if coordinated else None, lease=60)
            share = () if coordinated else ("--shard", "1/1")
            victim = fleet.start("victim", "-j", "8", *share)
            fleet_tests.wait_until(lambda: emu.creates == 4
                                   and fleet_tests.shared_states(fleet, redis).count("submitted") == 4)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            shutil.rmtree(folder / "victim")
            del fleet.procs["victim"]
            emu.latency = 10.0
            fleet.start("fresh", *share)
            codes = fleet.wait(600)
            return {"coordinated": coordinated, "ok": codes == {"fresh": 0}, "creates": emu.creates,
                    "repeated": emu.creates - 8}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--tracks", type=int, default=40)
    parser.add_argument("--rpm", type=int, default=30)
    parser.add_argument("--scale", type=float, default=0.05)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()}; "
          f"{args.tracks} tracks, {args.rpm} requests/min, jobs 5-10 s, scale {args.scale}")
    print(f"{'workers':>7} {'mode':>11} {'jobs/min':>9} {'bound':>6} {'ratio':>6} {'peak/60s':>9} {'429s':>5} "
          f"{'req/job':>8} {'dup':>4} {'wall s':>7}")
    for n in args.workers:
        for coordinated in (True, False):
            r = run(n, args.tracks, args.rpm, args.scale, coordinated)
            mode = "coordinator" if coordinated else "shards"
            print(f"{n:>7} {mode:>11} {r['jobs_per_min']:>9.2f} {r['bound']:>6.1f} {r['ratio']:>6.2f} "
                  f"{r['peak_60s']:>9} {r['429s']:>5} {r['requests_per_job']:>8.2f} {r['duplicates']:>4} "
                  f"{r['wall_s']:>7.1f}{'' if r['ok'] else '  (a worker failed)'}")
    for coordinated in (True, False):
        k = kill_case(args.scale, coordinated)
        print(f"kill -9 with 4 jobs in flight, fresh runner, {'coordinator' if coordinated else 'shards'}: "
              f"creates {k['creates']} for 8 tracks, repeated {k['repeated']}, ok {k['ok']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
