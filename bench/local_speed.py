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
    print(f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | "
          f"cpus={os.cpu_count()} | python {platform.python_version()} | numpy {np.__version__}")
    synthesize(prompt="warm-up", duration=1.0, seed=0)  # module-level table caches
    factors = []
    for name, prompt, dur in SPECS:
        times = []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            synthesize(prompt=prompt, duration=dur, seed=rep)
            times.append(time.perf_counter() - t0)
        rtf = dur / statistics.median(times)
        factors.append(rtf)
        d = describe(prompt)
        print(f"{name:12s} {dur:6.0f}s  {d['key']:9s} {d['bpm']:5.0f} bpm  "
              f"median {statistics.median(times) * 1000:7.1f} ms  min {min(times) * 1000:7.1f} ms  "
              f"x{rtf:6.0f} real time")
    print(f"median real-time factor: x{statistics.median(factors):.0f}")


if __name__ == "__main__":
    main()
