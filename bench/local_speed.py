"""Real-time factor of the built-in ``local`` generator (audio seconds per wall second).

Run: python bench/local_speed.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from musicbuild.audio.synth import describe, synthesize  # noqa: E402

SPECS = [
    ("ambient", "calm ambient pads", 30.0),
    ("orchestral", "epic orchestral battle strings", 30.0),
    ("edm", "energetic edm synth", 30.0),
    ("jazz", "chill jazz lofi", 30.0),
    ("chiptune", "8-bit chiptune boss", 30.0),
    ("rock", "rock guitar driving", 30.0),
    ("piano-180s", "calm piano", 180.0),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    load = f" | load avg {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | "
          f"cpus={os.cpu_count()}{load} | python {platform.python_version()} | numpy {np.__version__}")
    synthesize(prompt="warm-up", duration=1.0, seed=0)  # module-level table caches
    factors = []
    for name, prompt, dur in SPECS:
        times, cpu = [], []
        for rep in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            synthesize(prompt=prompt, duration=dur, seed=rep)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        rtf = dur / statistics.median(times)
        factors.append(rtf)
        d = describe(prompt)
        print(f"{name:12s} {dur:5.0f}s  {d['key']:9s} {d['bpm']:4.0f} bpm  wall median {statistics.median(times) * 1000:6.1f} ms"
              f" (min {min(times) * 1000:6.1f})  x{rtf:4.0f} real time  (CPU-time x{dur / statistics.median(cpu):4.0f})")
    print(f"median real-time factor: x{statistics.median(factors):.0f}  (wall clock; other load on the machine lowers it)")


if __name__ == "__main__":
    main()
