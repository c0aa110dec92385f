"""Fuzz benchmark: N hypothesis-generated manifests through the real CLI; count what goes wrong.

Each manifest (``tests/manifest_strategies.py``: plausible structure, wrong types, hostile templates
and paths, every YAML feature, raw text damage) runs ``musicbuild validate`` and, when that passes,
``musicbuild plan`` (with ``--build``, also ``musicbuild build`` when every track is on the offline
``local`` provider: hosted ones would be contacted for real), each in a forked child of this process
(imports already done, so a case costs its own work), killed after ``--timeout`` seconds (a build,
which synthesizes and encodes real audio, after ``--build-timeout``). Printed: N, exit codes, tracebacks (grouped by
exception and place), hangs, error lines not of the FILE:LINE:COL form, the slowest case and the
largest memory growth of a case.

    python bench/fuzz_manifests.py [--examples 5000] [--timeout 10] [--seed 1] [--build]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from musicbuild.cli import main  # noqa: E402
from tests.manifest_strategies import FUZZ_ENV, write_inputs, yaml_texts  # noqa: E402

LINE = re.compile(r"^musicbuild\.yaml:(\d+:\d+:)? \S")  # FILE:LINE:COL: message, or FILE: message


def child(command: list[str], out_fd: int) -> None:
    """In the forked child: run one command, report as JSON on ``out_fd``, exit."""
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = io.StringIO()
    result: dict = {}
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                result["code"] = main(["-f", "musicbuild.yaml", *command])
            result["stdout"] = out.getvalue()[-20000:]
    except BaseException as exc:  # noqa: BLE001 - a traceback is what we are counting
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        result["traceback"] = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
        result["detail"] = "".join(traceback.format_exception(exc))[-1500:]
    result["stderr"] = err.getvalue()[-4000:]
    result["growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss) / 1024
    os.write(out_fd, json.dumps(result).encode())
    os._exit(0)


def run_forked(command: list[str], timeout: float) -> dict:
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        child(command, write_fd)
    os.close(write_fd)
    chunks, deadline = [], started + timeout
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([read_fd], [], [], max(left, 0))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            return {"hang": True, "seconds": timeout}
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b'{"traceback": "child died", "stderr": ""}')
    result["seconds"] = time.monotonic() - started
    return result


def _all_local(plan_json: str) -> bool:
    try:
        return all(t["provider"] == "local" for t in json.loads(plan_json)["tracks"])
    except (ValueError, KeyError, TypeError):
        return False


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=5000)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build", action="store_true", help="also build manifests whose tracks are all local")
    ap.add_argument("--build-timeout", type=float, default=120.0)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mb-fuzz-"))
    project = workdir / "project"
    project.mkdir()
    write_inputs(project)
    (workdir / "outside.txt").write_text("outside\n")
    os.chdir(project)
    for key in ("MUSICBUILD_CACHE_DIR", "MUSICBUILD_REMOTE_CACHE", "MUSICBUILD_MAX_TRACKS"):
        os.environ.pop(key, None)
    os.environ.update(FUZZ_ENV)
    os.environ["NO_COLOR"] = "1"

    stats: dict = {"cases": 0, "runs": 0, "codes": collections.Counter(), "tracebacks": collections.Counter(),
                   "hangs": 0, "stray": 0, "slowest": collections.defaultdict(float),
                   "most_memory": collections.defaultdict(float)}
    examples: dict = {}

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(text=yaml_texts())
    def one(text: str) -> None:
        for leftover in ("build", ".musicbuild", "out", "c", "musicbuild.lock"):
            path = project / leftover
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        (project / "musicbuild.yaml").write_text(text, "utf-8", errors="surrogateescape")
        stats["cases"] += 1
        commands = [["validate"], ["plan", "--json"]]
        for command in commands:
            result = run_forked(command, args.build_timeout if command[0] == "build" else args.timeout)
            stats["runs"] += 1
            if result.get("hang"):
                stats["hangs"] += 1
                stats["codes"][f"{command[0]} hang"] += 1
                examples.setdefault("hang", text)
                break
            if "traceback" in result:
                stats["tracebacks"][result["traceback"]] += 1
                examples.setdefault(result["traceback"], text + "\n" + result.get("detail", ""))
                break
            stats["codes"][f"{command[0]} {result['code']}"] += 1
            stray = [ln for ln in result["stderr"].splitlines() if ln and not LINE.match(ln)] if result["code"] else []
            if stray:
                stats["stray"] += 1
                examples.setdefault("stray: " + stray[0][:80], text)
            name = command[0]
            stats["slowest"][name] = max(stats["slowest"][name], result["seconds"])
            stats["most_memory"][name] = max(stats["most_memory"][name], result["growth_mb"])
            if command[0] == "plan" and result["code"] == 0 and args.build and _all_local(result["stdout"]):
                commands.append(["build", "-k"])
            if result["code"] != 0:
                break

    (project / "musicbuild.yaml").write_text("version: 1\ntracks: [{id: warm, prompt: up}]\n")
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        main(["-f", "musicbuild.yaml", "plan"])  # import what the commands import, once, before forking
    started = time.monotonic()
    one()
    wall = time.monotonic() - started
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"fuzzed manifests: {stats['cases']} (seed {args.seed}), CLI runs: {stats['runs']}, wall {wall:.0f} s")
    print(f"exit codes: {dict(sorted(stats['codes'].items()))}")
    print(f"tracebacks: {sum(stats['tracebacks'].values())} {dict(stats['tracebacks'])}")
    print(f"hangs (validate/plan over {args.timeout:g} s, build over {args.build_timeout:g} s): {stats['hangs']}")
    print(f"error lines not FILE:LINE:COL: {stats['stray']}")
    for name in stats["slowest"]:
        print(f"{name}: slowest run {stats['slowest'][name]:.2f} s, largest peak-memory growth "
              f"{stats['most_memory'][name]:.0f} MB")
    for name, text in list(examples.items())[:10]:
        print(f"\n--- example: {name}\n{text[:2000]}")


if __name__ == "__main__":
    main_bench()
