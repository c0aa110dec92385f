"""Scheduler benchmark: how close does `musicbuild build` get to what a provider's limits allow?

N tracks go to an AIgateway emulator (tests/emulators) with rate limit R requests/minute (polls
count; file downloads come from the CDN and do not), max_concurrent C and job latency L (fixed, or
uniform in 30-90 s). Time is virtual and scaled (MUSICBUILD_TIME_SCALE and the emulator share the
factor), so an hour of jobs runs in seconds; throughput is measured on the emulator's clock from the
first create to the last download.

The bound the limits allow:
- concurrency-bound (R large): C jobs in flight, each L long: C / L jobs per minute.
- rate-bound (R small): every job needs at least one create and one poll: R / 2 jobs per minute.

Also measured: a plain sequential loop (submit, poll every 5 s until done, download) on the same
emulator, and musicbuild's speed-up over it.

    python bench/scheduler.py            # the four standard scenarios
    python bench/scheduler.py --quick    # smaller N, for a smoke run
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.emulators.aigateway import AIgatewayEmulator  # noqa: E402
from tests.emulators.base import Emulator  # noqa: E402
from tests.emulators.beatra import BeatraEmulator  # noqa: E402

SERVICES = {"aigateway": AIgatewayEmulator, "beatra": BeatraEmulator}


def manifest(service: str, url: str, n: int, rpm: float, concurrent: int) -> str:
    model = ", model: minimax-music-2.6" if service == "beatra" else ""
    tracks = "".join(f"  - {{id: t{i:04d}, provider: p, prompt: 'bench cue {i}'{model}}}\n" for i in range(n))
    return (f"version: 1\ndefaults: {{format: wav, duration: 8}}\nproviders:\n"
            f"  p: {{type: {service}, base_url: '{url}', requests_per_minute: {rpm}, max_concurrent: {concurrent}}}\n"
            f"tracks:\n{tracks}")


def span_minutes(emu: Emulator) -> float:
    creates = [e.t for e in emu.log if e.method == "POST"]
    ends = [e.t for e in emu.log if e.public and e.status == 200]
    return (max(ends) - min(creates)) / 60.0


def run_musicbuild(n: int, rpm: float, conc: int, latency: float | tuple[float, float], scale: float,
                   service: str = "aigateway") -> tuple[float, int, float]:
    """(jobs per virtual minute, 429s, requests per job)."""
    with SERVICES[service](time_scale=scale, rpm=rpm, latency=latency, audio_seconds=1, seed=1) as emu:
        folder = Path(tempfile.mkdtemp(prefix="mb-sched-"))
        (folder / "musicbuild.yaml").write_text(manifest(service, emu.url, n, rpm, conc))
        env = {**os.environ, "MUSICBUILD_TIME_SCALE": str(scale), "AIGATEWAY_API_KEY": "test-key",
               "BEATRA_API_KEY": "test-key"}
        proc = subprocess.run([sys.executable, "-m", "musicbuild", "-q", "build", "-j", str(max(conc, 8))],
                              cwd=folder, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"build failed:\n{proc.stderr[-3000:]}")
        rejected = sum(1 for e in emu.log if e.status == 429)
        requests = sum(1 for e in emu.log if not e.public)
        return n / span_minutes(emu), rejected, requests / n


def run_sequential(n: int, latency: float | tuple[float, float], scale: float, poll: float = 5.0) -> float:
    """The loop people write first: one job at a time, poll every `poll` seconds."""
    with AIgatewayEmulator(time_scale=scale, latency=latency, audio_seconds=1, seed=2) as emu:
        headers = {"Authorization": "Bearer test-key"}
        with httpx.Client(base_url=emu.url, headers=headers, timeout=30) as client:
            for i in range(n):
                job = client.post("/v1/audio/music", json={"prompt": f"seq {i}", "duration": 8, "format": "wav"}).json()
                while True:
                    time.sleep(poll * scale)
                    r = client.get(f"/v1/jobs/{job['id']}")
                    if r.status_code == 200 and r.json()["status"] in ("completed", "failed"):
                        break
                client.get(r.json()["result"]["url"])
        return n / span_minutes(emu)


SCENARIOS = [
    # name, service, N, R (req/min), C, latency (virtual s)
    ("long, concurrency-bound", "aigateway", 120, 100000, 10, (30.0, 90.0)),
    ("long, rate-bound", "aigateway", 150, 30, 100, (30.0, 90.0)),
    ("mid, concurrency-bound", "beatra", 80, 60, 8, (15.0, 30.0)),
    ("short, rate-bound (beatra)", "beatra", 60, 60, 8, (5.0, 10.0)),
    ("short, concurrency-bound", "beatra", 80, 100000, 4, (5.0, 10.0)),
]


def bound_of(rpm: float, conc: int, lat: float | tuple[float, float]) -> float:
    """min(C / mean L, R / 2) jobs per minute: every job needs a create and at least one poll."""
    mean_l = lat if isinstance(lat, float) else sum(lat) / 2
    return min(conc * 60.0 / mean_l, rpm / 2.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a quarter of the tracks")
    ap.add_argument("--scale", type=float, default=0.1,
                    help="real seconds per virtual second (smaller magnifies the event loop's delays)")
    ap.add_argument("--only", help="run only scenarios whose name contains this")
    ap.add_argument("--no-loop", action="store_true", help="skip the sequential baseline")
    args = ap.parse_args()
    k = 4 if args.quick else 1
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
          f"time scale {args.scale}")
    print(f"{'scenario':28s} {'N':>4s} {'R':>6s} {'C':>4s} {'L':>6s}  {'jobs/min':>8s} {'bound':>6s} {'ratio':>6s}"
          f"  {'429s':>4s} {'req/job':>7s}  {'vs loop':>7s}")
    for name, service, n, rpm, conc, lat in SCENARIOS:
        if args.only and args.only not in name:
            continue
        achieved, rejected, per_job = run_musicbuild(max(8, n // k), rpm, conc, lat, args.scale, service)
        bound = bound_of(rpm, conc, lat)
        loop = "" if args.no_loop else f"{achieved / run_sequential(max(3, 12 // k), lat, args.scale):6.1f}x"
        print(f"{name:28s} {n // k:4d} {rpm if rpm < 1000 else 'inf':>6} {conc:4d} {f'{lat[0]:g}-{lat[1]:g}':>6}  "
              f"{achieved:8.2f} {bound:6.2f} {achieved / bound:6.2f}  {rejected:4d} {per_job:7.2f}  {loop:>7}")


if __name__ == "__main__":
    main()
