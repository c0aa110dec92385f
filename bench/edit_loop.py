"""Edit-loop benchmark (issue 11): what a rebuild costs after a small edit, at 10k and 100k tracks.

For each size N: a manifest of N explicit track entries on the ``local`` provider (short wav
tracks), built once; then, each step a fresh ``musicbuild`` process as users run it, medians of
``--runs``:

- no-op ``build`` (answered by the null-build stamp), next to ``make -q`` and ``ninja -n`` on
  equivalent target files in the same run (N explicit targets, each with its own dependency file);
- edit one prompt, then ``plan`` and ``build``;
- edit a top-level var that 1 % of the tracks use, then ``plan`` and ``build`` (those tracks are
  really generated again);
- peak RSS of each step (``wait4``'s ``ru_maxrss`` of the child).

    python bench/edit_loop.py [--tracks 10000,100000] [--runs 5] [--source DIR] [--fill auto|build|records]

``--source DIR`` runs the musicbuild package found in DIR (e.g. an older checkout made with
``git archive``) instead of this one, so two versions can be compared on the same machine.

The cold build: ``--fill build`` runs ``musicbuild build``; at 100k that is ~1 hour of synthesis
and encoding on 2 cores, so ``--fill records`` (the default above 20,000 tracks) writes a tiny
wav per output and the cache records a build would have written (one shared generation blob),
then runs one real ``musicbuild build``, which finds every output up to date and writes the lock
and the null-build stamp. Everything timed is the real CLI either way.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
SPECIAL_EVERY = 100  # one track in SPECIAL_EVERY uses the var `special`

HEADER = """version: 1
vars: {{game: Bench, special: "v0"}}
output_dir: out
defaults: {{provider: local, format: wav, duration: {seconds}, metadata: {{album: "{{{{ game }}}} OST"}}}}
tracks:
"""


def manifest_text(n: int, seconds: float) -> str:
    lines = [HEADER.format(seconds=seconds)]
    for i in range(n):
        theme = "{{ special }} theme" if i % SPECIAL_EVERY == 0 else "calm theme"
        lines.append(f'  - {{id: t{i:06d}, prompt: "{theme} {i} for {{{{ game }}}}", seed: {i}, '
                     f'out: "a/{i % 100:02d}/{{{{ id }}}}.wav"}}\n')
    return "".join(lines)


# -- running a child and measuring it ------------------------------------------------------------
@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mb: float


@dataclass
class Step:
    name: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)


def run(cmd: list[str], cwd: Path, env: dict[str, str], ok_codes: tuple[int, ...] = (0,)) -> Sample:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in ok_codes:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


# -- the anchors: make and ninja on N targets with a dependency file each -----------------------
def make_anchor_tree(root: Path, n: int) -> None:
    deps, outs = root / "deps", root / "out"
    for d in (deps, outs):
        d.mkdir(parents=True)
    names = [f"t{i:06d}" for i in range(n)]
    for name in names:
        (deps / f"{name}.txt").write_text(name)
    time.sleep(0.05)  # targets strictly newer than their dependencies
    for name in names:
        (outs / f"{name}.wav").write_text(name)
    with open(root / "Makefile", "w") as f:
        # no built-in rules (-rR): make would otherwise search implicit rules for every dependency
        f.write("MAKEFLAGS += -rR\n.SUFFIXES:\n\nall: " + " ".join(f"out/{x}.wav" for x in names) + "\n\n")
        for x in names:
            f.write(f"out/{x}.wav: deps/{x}.txt\n\tcp $< $@\n")
    with open(root / "build.ninja", "w") as f:
        f.write("rule cp\n  command = cp $in $out\n\n")
        for x in names:
            f.write(f"build out/{x}.wav: cp deps/{x}.txt\n")
    # ninja treats targets it has no log entry for as dirty: one real build writes .ninja_log
    subprocess.run(["ninja", "-j", "8"], cwd=root, check=True, stdout=subprocess.DEVNULL)


# -- the cold build ----------------------------------------------------------------------------
def tiny_wav(seconds: float = 0.01, rate: int = 44100) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0" * int(seconds * rate) * 4)
    return buf.getvalue()


FILL_RECORDS = r'''
import hashlib, os, sys
from pathlib import Path
from musicbuild.api import load
from musicbuild.cache import Cache
from musicbuild.engine import make_plan
manifest = load(Path("musicbuild.yaml"))
data = Path(sys.argv[1]).read_bytes()
sha, size = hashlib.sha256(data).hexdigest(), len(data)
with Cache(manifest.cache_dir) as cache:
    blob = cache.put_blob(data)
    planned = make_plan(manifest, list(manifest.tracks), cache, locked={})
    for pt in planned:
        cache.index.set("gen:" + pt.gen_key, {"provider": "local", "model": pt.spec.model, "job_id": None,
                        "seed": pt.spec.seed, "cost_usd": 0.0, "cost_basis": "price", "track": pt.spec.id,
                        "clips": [{"sha256": blob, "format": "wav", "bytes": size}], "created_at": 0.0})
        for po in pt.outputs:
            path = po.output.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            st = path.stat()
            cache.put_output(path, {"out_key": po.out_key, "gen_key": pt.gen_key, "sha256": sha,
                                    "size": st.st_size, "mtime_ns": st.st_mtime_ns, "track": pt.spec.id,
                                    "clip": po.output.clip, "parts": dict(po.parts)})
'''


def cold_build(root: Path, mode: str, exe: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    if mode == "records":
        (root / "tiny.wav").write_bytes(tiny_wav())
        subprocess.run([sys.executable, "-c", FILL_RECORDS, str(root / "tiny.wav")], cwd=root, env=env, check=True)
    run(exe + ["build", "-j", "8"], root, env)
    return time.perf_counter() - t0


# -- the edits ---------------------------------------------------------------------------------
def edit_prompt(manifest: Path, track: int, run_no: int) -> None:
    text = manifest.read_text()
    new, count = re.subn(rf'(id: t{track:06d}, prompt: ")([^"]*?)( \d+ for)', rf'\g<1>edit{run_no} theme\3', text)
    assert count == 1, track
    manifest.write_text(new)


def edit_var(manifest: Path, run_no: int) -> None:
    text = manifest.read_text()
    new, count = re.subn(r'special: "[^"]*"', f'special: "v{run_no + 1}"', text, count=1)
    assert count == 1
    manifest.write_text(new)


profiles: dict[int, str] = {}


def bench_size(n: int, runs: int, fill: str, seconds: float, source: Path, keep: bool, prof: bool) -> list[Step]:
    root = Path(tempfile.mkdtemp(prefix=f"mb-edit-{n}-"))
    project, anchors = root / "project", root / "anchors"
    project.mkdir()
    # -S and the libraries' folder on the path, as a plain (non-editable) install runs: the
    # editable install's import hook alone costs ~20 ms of every start-up
    libs = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), *libs]),
           "MUSICBUILD_MAX_TRACKS": str(max(n, 10_000))}
    env.pop("MUSICBUILD_REMOTE_CACHE", None)
    # with bytecode caching, as every install has it (an environment that turns it off made every
    # run compile the modules changed since the last .pyc: 0.1-0.2 s of each step here)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # what the installed `musicbuild` console script runs (its entry point), without runpy's `-m`
    exe = [sys.executable, "-S", "-c", "import sys; from musicbuild.noop import main; sys.exit(main())", "-q"]
    manifest = project / "musicbuild.yaml"
    manifest.write_text(manifest_text(n, seconds))
    mode = fill if fill != "auto" else ("build" if n <= 20_000 else "records")
    print(f"[{n}] cold build ({mode}) ...", flush=True)
    cold = cold_build(project, mode, exe, env)
    print(f"[{n}] cold build {cold:.1f} s; anchors ...", flush=True)
    make_anchor_tree(anchors, n)
    steps = {name: Step(name) for name in (
        "no-op build", "make -q", "ninja -n", "edit prompt: plan", "edit prompt: build",
        "edit 1% var: plan", "edit 1% var: build")}
    for r in range(runs):  # interleaved, so load on the machine hits every step alike
        steps["make -q"].samples.append(run(["make", "-q", "all"], anchors, env))
        steps["ninja -n"].samples.append(run(["ninja", "-n"], anchors, env))
        steps["no-op build"].samples.append(run(exe + ["build"], project, env))
        track = (r * 7919 + 1) % n
        edit_prompt(manifest, track + (track % SPECIAL_EVERY == 0), r)  # not one of the var's tracks
        steps["edit prompt: plan"].samples.append(run(exe + ["plan"], project, env))
        steps["edit prompt: build"].samples.append(run(exe + ["build"], project, env))
        edit_var(manifest, r)
        steps["edit 1% var: plan"].samples.append(run(exe + ["plan"], project, env))
        steps["edit 1% var: build"].samples.append(run(exe + ["build"], project, env))
        print(f"[{n}] run {r + 1}/{runs} done", flush=True)
    if prof:
        profiles[n] = profile(project, env, exe, root)
    if not keep:
        shutil.rmtree(root)
    else:
        print(f"[{n}] kept {root}")
    return list(steps.values())


# -- where the time goes: cProfile of `plan` and `build` after one edited prompt -----------------
# (label, [(file suffix, function name)]): the cumulative time of the first function found; the
# functions of one label do not call each other, and the labels are (nearly) disjoint.
CATEGORIES = [
    ("imports", [("<frozen importlib._bootstrap>", "_find_and_load")]),
    ("provider registry (plugins)", [("providers/registry.py", "installed")]),
    ("YAML parse with locations", [("musicbuild/yamlsrc.py", "load_yaml")]),
    ("text split into entries", [("musicbuild/yamlsplit.py", "split_tracks")]),
    ("schema validation", [("musicbuild/schema.py", "validate")]),
    ("memo read + entry decode", [("musicbuild/specmemo.py", "read"), ("musicbuild/specmemo.py", "spec"),
                                  ("musicbuild/specmemo.py", "get_list")]),
    ("stamp read for clean tracks", [("musicbuild/stamp.py", "read_outputs")]),
    ("clean tracks: stat + rows", [("musicbuild/cleanset.py", "take")]),
    ("memo validity checks", [("musicbuild/fastload.py", "_valid")]),
    ("defaults/matrix merge + render (changed entries)", [("musicbuild/manifest.py", "_expand")]),
    ("  of which Jinja rendering", [("musicbuild/render.py", "render")]),
    ("  of which output path confinement", [("musicbuild/trackbuild.py", "_confine")]),
    ("protected paths", [("musicbuild/manifest.py", "_protect")]),
    ("key hashing", [("musicbuild/keys.py", "generation_key"), ("musicbuild/keys.py", "output_key"),
                     ("musicbuild/keys.py", "tag_fields"), ("musicbuild/keys.py", "output_parts")]),
    ("cache look-ups (open, one-pass read, queries)", [("musicbuild/cache.py", "__init__"), ("musicbuild/cache.py", "get_output"),
                        ("musicbuild/cache.py", "get_generation"), ("musicbuild/cache.py", "live_job"),
                        ("musicbuild/cache.py", "generation_record")]),
    ("output stat", [("musicbuild/planner.py", "check_output")]),
    ("lock read", [("musicbuild/lock.py", "read_lock"), ("musicbuild/lock.py", "read")]),
    ("lock entries + write", [("musicbuild/lock.py", "updated_entries"), ("musicbuild/lock.py", "write_lock"),
                              ("musicbuild/incremental.py", "update_lock")]),
    ("stamp", [("musicbuild/engine.py", "_update_stamp"), ("musicbuild/stamp.py", "read_fresh")]),
    ("report (rows, last report, printing)", [("musicbuild/api.py", "_write_reports"),
                                              ("musicbuild/report.py", "plan_row"),
                                              ("musicbuild/cleanset.py", "plan_row"),
                                              ("musicbuild/report.py", "report_document")]),
    ("memo save", [("musicbuild/specmemo.py", "save")]),
    ("executor (generate + write the edited track)", [("asyncio/runners.py", "run")]),
]


def profile(project: Path, env: dict[str, str], exe: list[str], out: Path) -> str:
    import pstats

    edit_prompt(project / "musicbuild.yaml", 3, 999)
    lines = []
    for command in ("plan", "build"):
        prof = out / f"{command}.prof"
        run([exe[0], "-S", "-m", "cProfile", "-o", str(prof), "-m", "musicbuild", "-q", command], project, env)
        stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
        total = max(ct for (_, _, _, ct, _) in stats.values())
        lines.append(f"\n`{command}` after one edited prompt: {total:.2f} s under cProfile")
        lines.append("| part | CPU s | share |\n|---|---|---|")
        for label, funcs in CATEGORIES:
            cum = 0.0
            for (file, _, name), (_, _, _, ct, _) in stats.items():
                if any(file.endswith(f) and name == fn for f, fn in funcs):
                    cum += ct
            if cum >= 0.005:
                lines.append(f"| {label} | {cum:.2f} | {cum / total:.0%} |")
    return "\n".join(lines)


def table(n: int, steps: list[Step]) -> str:
    by = {s.name: s for s in steps}
    ninja, make = by["ninja -n"].median("wall"), by["make -q"].median("wall")
    rows = [f"\n{n:,} tracks (medians of {len(steps[0].samples)})",
            "| step | wall | CPU | peak RSS | / ninja -n | / make -q |", "|---|---|---|---|---|---|"]
    for s in steps:
        wall = s.median("wall")
        rows.append(f"| {s.name} | {wall:.3f} s | {s.median('cpu'):.3f} s | {s.median('rss_mb'):.0f} MB "
                    f"| {wall / ninja:.2f}x | {wall / make:.2f}x |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracks", default="10000,100000", help="comma-separated sizes")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="track duration")
    ap.add_argument("--fill", choices=("auto", "build", "records"), default="auto")
    ap.add_argument("--source", type=Path, default=HERE, help="folder holding the musicbuild package to run")
    ap.add_argument("--keep", action="store_true", help="keep the temp folders")
    ap.add_argument("--profile", action="store_true", help="also cProfile plan and build after an edit")
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
          f"load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; source {args.source}")
    out = []
    for n in (int(x) for x in args.tracks.split(",")):
        out.append(table(n, bench_size(n, args.runs, args.fill, args.seconds, args.source.resolve(), args.keep,
                                       args.profile)))
        out.append(profiles.get(n, ""))
        print(out[-1], flush=True)
    load = os.getloadavg()
    print(f"\nload at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
