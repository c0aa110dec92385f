"""Materialization throughput: what writing an output costs, stage by stage, next to the raw encoder.

    python bench/materialize.py [--seconds 30] [--runs 3] [--tracks 1000] [--track-seconds 5]
                                [--skip-per-output] [--skip-frozen] [--memory 100,400]

1. Per output (one cached ``local`` track of --seconds, every format): the real ``materialize()``
   with its stages timed in CPU seconds (median of --runs): decode (read + verify the cached blob,
   decode it; for lossy outputs with ``post:`` also the decode of the written file to measure it),
   process (``post:`` DSP and loudness/true-peak measurement), encode, tag, write (temp file, fsync,
   hash, rename, index). Next to it, in the same run, on the same cached blob: the system ``ffmpeg``
   encoding it to the same format and bitrate (child CPU), and a plain copy of the blob (+ fsync).
   For mp3 also the LAME that the wheels ship (PyAV's libmp3lame) fed from memory: the encoder's
   own speed with nothing of musicbuild around it.
2. The same with ``post: {loudness: streaming}``: the CPU that loudness delivery adds per track.
3. Frozen assembly: N cached tracks (filled by a cold build), outputs deleted, then a fresh
   ``musicbuild build --frozen`` process writes N mp3s: wall and CPU per output, next to ffmpeg
   encoding the same N blobs to mp3 with as many processes at a time as there are cores.
4. ``--memory 100,400``: peak RSS of cold builds (10 s mp3 tracks) of those sizes.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musicbuild.audio import convert, post, tagging  # noqa: E402

FORMATS = ("mp3", "ogg", "m4a", "flac", "wav")
FFMPEG_CODEC = {  # the system ffmpeg doing what musicbuild does by default for each format
    "mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "4"],  # libsndfile's default Vorbis quality (~128 kbps)
    "m4a": ["-c:a", "aac", "-b:a", "192k"],
    "flac": ["-c:a", "flac", "-sample_fmt", "s16"],
    "wav": ["-c:a", "pcm_s16le"],
}
STAGES = ("decode", "process", "encode", "tag")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def machine() -> str:
    return f"{platform.platform()}, {os.cpu_count()} cpus, Python {platform.python_version()}"


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cli(folder: Path, *args: str, cache: Path | None = None) -> dict[str, float]:
    """Run ``musicbuild`` in a fresh process: its wall time, CPU (all threads), peak RSS, and how
    long its threads sat runnable waiting for a core (Linux schedstat: the machine's other load)."""
    env = {**ENV, "MUSICBUILD_CACHE_DIR": str(cache)} if cache else ENV
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "musicbuild", "-q", *args], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    waited: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:  # per thread, the last reading before it exits
        while not done.wait(0.05):
            for stat in Path(f"/proc/{proc.pid}/task").glob("*/schedstat"):
                try:
                    waited[stat.parent.name] = int(stat.read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"musicbuild {' '.join(args)} failed:\n{proc.stderr.read().decode()[-3000:] if proc.stderr else ''}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
            "waited": sum(waited.values()) / 1e9}


# --- 1 + 2: one output, stage by stage ---------------------------------------------------------

class StageClock:
    """Wraps the stage functions that ``materialize`` reaches through module attributes and
    charges their thread CPU time to a stage (outermost call only: process() measures too)."""

    TARGETS = {"decode": [(convert, "decode")], "process": [(post, "process"), (post, "true_peak_db"),
                                                             (post, "integrated_loudness")],
               "encode": [(convert, "encode_bytes")], "tag": [(tagging, "write_tags")]}

    def __init__(self) -> None:
        self.spent = dict.fromkeys(STAGES, 0.0)
        self.calls: dict[str, int] = {}  # function name -> outermost calls
        self.local = threading.local()

    def wrap(self, stage: str, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            if getattr(self.local, "busy", False):
                return fn(*a, **kw)
            self.local.busy = True
            self.calls[name] = self.calls.get(name, 0) + 1
            t0 = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                self.spent[stage] += time.thread_time() - t0
                self.local.busy = False
        return timed

    @contextmanager
    def installed(self, cache: Any) -> Iterator[None]:
        saved = [(mod, name, getattr(mod, name)) for pairs in self.TARGETS.values() for mod, name in pairs]
        for stage, pairs in self.TARGETS.items():
            for mod, name in pairs:
                setattr(mod, name, self.wrap(stage, getattr(mod, name), name))
        cache.read_blob = self.wrap("decode", cache.read_blob, "read_blob")  # reading + verifying the blob is decoding's
        try:
            yield
        finally:
            for mod, name, fn in saved:
                setattr(mod, name, fn)
            del cache.read_blob


def stage_manifest(seconds: float) -> str:
    rows = []
    for fmt in FORMATS:  # same words and seed: one generation shared by every output
        common = f"prompt: 'driving synthwave chase', seed: 11, duration: {seconds}, format: {fmt}"
        rows.append(f"  - {{id: plain-{fmt}, {common}}}\n")
        rows.append(f"  - {{id: loud-{fmt}, {common}, post: {{loudness: streaming}}}}\n")
    return "version: 1\ndefaults: {provider: local}\ntracks:\n" + "".join(rows)


def pyav_mp3(samples: Any, rate: int) -> bytes:
    """The LAME the wheels ship (PyAV's libmp3lame), fed from memory: the encoder's own speed."""
    from fractions import Fraction

    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3", options={"fflags": "+bitexact", "id3v2_version": "0"}) as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="stereo")
        stream.codec_context.bit_rate = 192_000
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def per_output(seconds: float, runs: int) -> None:
    from musicbuild.cache import Cache
    from musicbuild.engine import make_plan
    from musicbuild.manifest import load_manifest
    from musicbuild.materialize import materialize

    work = Path(tempfile.mkdtemp(prefix="mb-mat-"))
    (work / "musicbuild.yaml").write_text(stage_manifest(seconds))
    cli(work, "build")
    manifest = load_manifest(work / "musicbuild.yaml")
    have_ffmpeg = shutil.which("ffmpeg") is not None
    rows: dict[str, dict[str, float]] = {}
    with Cache(manifest.cache_dir) as cache:
        planned = {pt.spec.id: pt for pt in make_plan(manifest, list(manifest.tracks), cache)}
        record = cache.get_generation(next(iter(planned.values())).gen_key)
        blob = cache.blob_path(record["clips"][0]["sha256"])
        for pt in planned.values():
            samples: list[dict[str, float]] = []
            for _ in range(runs):
                clock = StageClock()
                with clock.installed(cache):
                    t0 = time.thread_time()
                    materialize(cache, pt.spec, pt.gen_key, record, pt.outputs[0])
                    total = time.thread_time() - t0
                samples.append({**clock.spent, "write": total - sum(clock.spent.values()), "total": total,
                                "encodes": clock.calls.get("encode_bytes", 0), "decodes": clock.calls.get("decode", 0)})
            rows[pt.spec.id] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        anchors: dict[str, float] = {}
        for fmt in FORMATS if have_ffmpeg else ():
            spent = []
            for _ in range(runs):
                c0 = children_cpu()
                subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(blob), *FFMPEG_CODEC[fmt], str(work / f"ff.{fmt}")],
                               check=True)
                spent.append(children_cpu() - c0)
            anchors[fmt] = statistics.median(spent)
        copies = []
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            shutil.copyfile(blob, work / "copy.flac")
            with open(work / "copy.flac", "rb+") as f:
                os.fsync(f.fileno())
            copies.append((time.process_time() - c0, time.perf_counter() - t0))
        decoded, rate = convert.decode(blob)
        lame = []
        for _ in range(runs):
            t0 = time.thread_time()
            pyav_mp3(decoded, rate)
            lame.append(time.thread_time() - t0)
    copy_cpu, copy_wall = (statistics.median(c[i] for c in copies) for i in (0, 1))
    print(f"\n1. One output of a {seconds:g} s track (cached FLAC {blob.stat().st_size / 1e6:.1f} MB), "
          f"CPU seconds, median of {runs}")
    print("| output | decode | process | encode | tag | write | total | ffmpeg, same file | ratio | plain copy | decodes, encodes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        fmt = name.split("-")[1]
        anchor = anchors.get(fmt)
        ratio = f"{row['total'] / anchor:.2f}x" if anchor else "n/a"
        print(f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in (*STAGES, "write", "total"))
              + f" | {anchor if anchor else float('nan'):.3f} | {ratio} | {copy_cpu:.4f} ({copy_wall * 1e3:.0f} ms wall)"
              + f" | {row['decodes']:.0f}, {row['encodes']:.0f} |")
    lame_cpu = statistics.median(lame)
    mp3 = rows["plain-mp3"]["total"]
    print(f"mp3: the LAME the wheels ship (PyAV libmp3lame, in-process, from memory) takes {lame_cpu:.3f} s: "
          f"musicbuild's whole mp3 output is {mp3 / lame_cpu:.2f}x that"
          + (f"; the system ffmpeg (its own libmp3lame build) takes {anchors['mp3']:.3f} s, "
             f"{mp3 / anchors['mp3']:.2f}x" if have_ffmpeg else "; no system ffmpeg for the other anchor"))
    print("\n2. post: {loudness: streaming}, CPU added per track")
    for fmt in FORMATS:
        print(f"   {fmt}: +{rows[f'loud-{fmt}']['total'] - rows[f'plain-{fmt}']['total']:.3f} s "
              f"(process {rows[f'loud-{fmt}']['process']:.3f} s)")
    shutil.rmtree(work, ignore_errors=True)


# --- 3: frozen assembly ------------------------------------------------------------------------

def many(n: int, seconds: float, fmt: str) -> str:
    tracks = "".join(f"  - {{id: t{i:05d}, prompt: 'bench cue {i % 7} {i}', seed: {i}}}\n" for i in range(n))
    return f"version: 1\ndefaults: {{provider: local, format: {fmt}, duration: {seconds}}}\ntracks:\n{tracks}"


def frozen(n: int, seconds: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="mb-frozen-"))
    manifest = work / "musicbuild.yaml"
    manifest.write_text(many(n, seconds, "wav"))
    fill = cli(work, "build")  # the cache fill: generations + cheap wav outputs
    shutil.rmtree(work / "build")
    (work / "musicbuild.lock").unlink()
    manifest.write_text(many(n, seconds, "mp3"))
    got = cli(work, "build", "--frozen")
    outputs = list((work / "build").glob("*.mp3"))
    if len(outputs) != n:
        sys.exit(f"frozen build wrote {len(outputs)} of {n} outputs")
    blobs = [p for p in (work / ".musicbuild" / "blobs").rglob("*") if p.is_file()]
    cores = os.cpu_count() or 1
    anchors = {}
    if shutil.which("ffmpeg"):
        (work / "ff").mkdir()

        def encode(i_blob: tuple[int, Path]) -> None:
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(i_blob[1]), *FFMPEG_CODEC["mp3"],
                            str(work / "ff" / f"{i_blob[0]}.mp3")], check=True)

        c0, t0 = children_cpu(), time.perf_counter()
        with ThreadPoolExecutor(cores) as pool:
            list(pool.map(encode, enumerate(blobs)))
        anchors["ffmpeg"] = (time.perf_counter() - t0, children_cpu() - c0)
    def codec_only(blob: Path) -> None:  # what any encoder must do: decode the blob, encode mp3
        samples, rate = convert.decode(blob)
        convert.encode_bytes(samples, rate, "mp3")

    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(cores) as pool:
        list(pool.map(codec_only, blobs))
    anchors["codec"] = (time.perf_counter() - t0, time.process_time() - c0)
    (work / "copy").mkdir()
    t0, c0 = time.perf_counter(), time.process_time()
    for i, blob in enumerate(blobs):
        dest = work / "copy" / f"{i}.flac"
        shutil.copyfile(blob, dest)
        with open(dest, "rb+") as f:
            os.fsync(f.fileno())
    anchors["copy"] = (time.perf_counter() - t0, time.process_time() - c0)
    print(f"\n3. Frozen assembly of {n} cached {seconds:g} s tracks to mp3 ({cores} cores; "
          f"cache fill: cold build to wav {fill['wall']:.1f} s)")
    print("| | wall | wall per output | CPU | CPU per output | CPU vs wheels' codecs | CPU vs ffmpeg | wall vs ffmpeg |")
    print("|---|---|---|---|---|---|---|---|")
    ff, codec = anchors.get("ffmpeg"), anchors["codec"]

    def line(name: str, wall: float, cpu: float) -> None:
        vs = f" {cpu / ff[1]:.2f}x | {wall / ff[0]:.2f}x |" if ff else " n/a | n/a |"
        print(f"| {name} | {wall:.1f} s | {wall / n * 1e3:.1f} ms | {cpu:.1f} s | {cpu / n * 1e3:.1f} ms "
              f"| {cpu / codec[1]:.2f}x |{vs}")

    line("`musicbuild build --frozen`", got["wall"], got["cpu"])
    line(f"wheels' codecs alone (libsndfile FLAC decode + LAME), {cores} threads, in-process", *codec)
    if ff:
        line(f"system ffmpeg (libmp3lame), {cores} processes at a time", *ff)
    line("plain copy + fsync of each blob", *anchors["copy"])
    print(f"peak RSS of the frozen build: {got['rss_mb']:.0f} MB; its threads were runnable but waiting for a core "
          f"(other load on the machine) for {got['waited']:.1f} s in all, on a CPU for {got['cpu']:.1f} s")
    shutil.rmtree(work, ignore_errors=True)


# --- 4: memory of a cold build -----------------------------------------------------------------

def memory(sizes: list[int]) -> None:
    print("\n4. Cold build (local provider, 10 s mp3 tracks): peak RSS")
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix="mb-rss-"))
        (work / "musicbuild.yaml").write_text(many(n, 10, "mp3"))
        got = cli(work, "build")
        print(f"   {n} tracks: peak RSS {got['rss_mb']:.0f} MB, wall {got['wall']:.1f} s, CPU {got['cpu']:.1f} s, "
              f"waiting for a core {got['waited']:.1f} s")
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the per-output track")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tracks", type=int, default=1000, help="frozen assembly size")
    ap.add_argument("--track-seconds", type=float, default=5.0, help="length of each frozen-assembly track")
    ap.add_argument("--skip-per-output", action="store_true")
    ap.add_argument("--skip-frozen", action="store_true")
    ap.add_argument("--memory", default="", help="comma-separated cold-build sizes for peak RSS, e.g. 100,400")
    args = ap.parse_args()
    print(f"machine: {machine()}; ffmpeg: {shutil.which('ffmpeg') or 'not installed'}")
    if not args.skip_per_output:
        per_output(args.seconds, args.runs)
    if not args.skip_frozen:
        frozen(args.tracks, args.track_seconds)
    if args.memory:
        memory([int(n) for n in args.memory.split(",")])


if __name__ == "__main__":
    main()
