"""A/B of the no-op paths against another version of musicbuild, interleaved run by run.

On a shared or busy machine two separate runs of ``null_build.py`` can differ by more than the
change being measured; here both versions answer the same built project alternately, so load
hits both alike. BEFORE is a source tree of the other version (e.g. ``git worktree add /tmp/base
main`` or ``git archive main | tar -x -C /tmp/base``); it runs with ``PYTHONPATH=BEFORE``, this
checkout as installed. Times are wall-clock medians of fresh processes: ``import musicbuild``, a
no-op ``build -q`` and ``check`` (answered by the null-build stamp), and a no-op build with the
stamp removed (the full parse, render, plan and stat path).

    python bench/null_build_ab.py --before /tmp/base [--tracks 1000] [--runs 15]
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
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from null_build import entries_manifest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="source tree of the other version")
    ap.add_argument("--tracks", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    if not (args.before / "musicbuild" / "__init__.py").is_file():
        sys.exit(f"{args.before} holds no musicbuild/ package")
    after_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    before_env = {**after_env, "PYTHONPATH": str(args.before.resolve())}
    root = Path(tempfile.mkdtemp(prefix="mb-ab-"))
    (root / "musicbuild.yaml").write_text(entries_manifest(args.tracks))
    exe = [sys.executable, "-m", "musicbuild"]
    subprocess.run(exe + ["-q", "build", "-j", "8"], cwd=root, env=after_env, check=True)

    def unstamp() -> None:
        shutil.rmtree(root / ".musicbuild" / "stamps", ignore_errors=True)

    def timed(cmd: list[str], env: dict[str, str], prepare: Callable[[], None] | None) -> float:
        if prepare:
            prepare()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr.decode()[-2000:]}")
        return elapsed

    cases = [("import musicbuild", [sys.executable, "-c", "import musicbuild"], None, args.runs),
             ("no-op build -q", exe + ["-q", "build"], None, args.runs),
             ("check", exe + ["check"], None, args.runs),
             ("no-op build without stamp", exe + ["-q", "build"], unstamp, max(3, args.runs // 3))]
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, Python {platform.python_version()}; "
          f"{args.tracks} tracks; before = {args.before}")
    for name, cmd, prepare, runs in cases:
        for env in (before_env, after_env):  # warm up (and write .pyc files)
            timed(cmd, env, prepare)
        before, after = [], []
        for _ in range(runs):
            before.append(timed(cmd, before_env, prepare))
            after.append(timed(cmd, after_env, prepare))
        b, a = statistics.median(before), statistics.median(after)
        print(f"{name:27s} before {b * 1000:7.1f} ms   after {a * 1000:7.1f} ms   after/before {a / b:.2f}   (n={runs})")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
