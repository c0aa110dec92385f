"""Null-build benchmark: how long does `musicbuild build` take when nothing changed?

Makes a 10,000-track manifest on the `local` provider twice (10,000 explicit entries, and one
100 x 100 matrix entry), builds each once, then times repeated no-op builds as a user runs them
(a fresh `musicbuild build -q` process each time). Also times the no-op build with the null-build
stamp removed (full parse, render, hash and stat of every output) for comparison.

    python bench/null_build.py [--tracks 10000] [--runs 7]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = """version: 1
vars: {{game: Bench}}
output_dir: out
defaults: {{provider: local, format: wav, duration: 0.25, metadata: {{album: "{{{{ game }}}} OST"}}}}
tracks:
"""


def entries_manifest(n: int) -> str:
    lines = [HEADER.format()]
    for i in range(n):
        lines.append(f'  - {{id: t{i:05d}, prompt: "calm theme {i} for {{{{ game }}}}", seed: {i}, out: "a/{i % 100:02d}/{{{{ id }}}}.wav"}}\n')
    return "".join(lines)


def matrix_manifest(n: int) -> str:
    side = int(round(n ** 0.5))
    values = ", ".join(str(v) for v in range(side))
    return HEADER.format() + (
        f'  - id: "m{{{{ a }}}}-{{{{ b }}}}"\n'
        f'    matrix: {{a: [{values}], b: [{values}]}}\n'
        f'    prompt: "{{{{ a }}}} calm theme {{{{ b }}}} for {{{{ game }}}}"\n'
        f'    out: "m/{{{{ a }}}}/{{{{ id }}}}.wav"\n')


def run(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def bench(name: str, text: str, runs: int, keep: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"mb-null-{name}-"))
    (root / "musicbuild.yaml").write_text(text)
    exe = [sys.executable, "-m", "musicbuild", "-q"]
    first = run(exe + ["build", "-j", "8"], root)
    noop = [run(exe + ["build"], root) for _ in range(runs)]
    slow = []
    for _ in range(max(1, runs // 3)):
        shutil.rmtree(root / ".musicbuild" / "stamps", ignore_errors=True)
        slow.append(run(exe + ["build"], root))
    check = [run(exe + ["check"], root) for _ in range(runs)]
    n_out = sum(1 for _ in (root / "out").rglob("*.wav"))
    print(f"{name:8s} tracks={n_out}  first build {first:7.1f} s  "
          f"no-op build median {statistics.median(noop):.3f} s (min {min(noop):.3f}, max {max(noop):.3f})  "
          f"check median {statistics.median(check):.3f} s  "
          f"no-op without stamp median {statistics.median(slow):.2f} s")
    if not keep:
        shutil.rmtree(root)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the temp folders")
    args = ap.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    bench("entries", entries_manifest(args.tracks), args.runs, args.keep)
    bench("matrix", matrix_manifest(args.tracks), args.runs, args.keep)


if __name__ == "__main__":
    main()
