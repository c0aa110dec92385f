"""Review page benchmark: a 500-track build, its review page, and how fast Chromium opens it.

Makes a manifest of N tracks on the `local` provider (1 s WAV each, five labels), builds it, then
times `write_review` in-process (decode + waveform + HTML for every output) and a fresh
`musicbuild report --html` process, prints the page size, and opens the page in headless Chromium
twice with `--dump-dom`: as a user gets it (first 20 players load their metadata, the rest as they
scroll near) and with `#all` (every player's metadata loaded). For each: the process wall time and
the page's own `performance.now()` at the moment the last player reported (`data-ms`).

    python bench/review_page.py [--tracks 500] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABELS = ["menu", "combat", "ambient", "boss", "stinger"]


def manifest(n: int) -> str:
    lines = ["version: 1", "output_dir: out", "defaults: {provider: local, format: wav, duration: 1}", "tracks:"]
    for i in range(n):
        labels = f"[{LABELS[i % 5]}, set-{i // 100}]"
        lines.append(f'  - {{id: t{i:03d}, prompt: "theme {i}: calm strings & <harp> arpeggios", seed: {i}, '
                     f'tags: [orchestral, calm], labels: {labels}}}')
    return "\n".join(lines) + "\n"


def chromium(page: Path, fragment: str, profile: Path) -> tuple[float, dict[str, str]]:
    exe = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if not exe:
        raise SystemExit("chromium not found (apt-get install chromium)")
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--allow-file-access-from-files",
            "--virtual-time-budget=30000", "--dump-dom", page.as_uri() + fragment]
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    body = re.search(r"<body([^>]*)>", done.stdout)
    data = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1))) if body else {}
    return wall, data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, default=500)
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="review-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    env.pop("MUSICBUILD_CACHE_DIR", None)
    exe = [sys.executable, "-m", "musicbuild"]
    try:
        (work / "musicbuild.yaml").write_text(manifest(args.tracks))
        t0 = time.perf_counter()
        subprocess.run([*exe, "-q", "-f", str(work / "musicbuild.yaml"), "build"], check=True, env=env, cwd=ROOT)
        print(f"build of {args.tracks} tracks (local, 1 s WAV): {time.perf_counter() - t0:.1f} s")

        import json

        from musicbuild.manifest import load_manifest
        from musicbuild.review import write_review

        m = load_manifest(work / "musicbuild.yaml")
        report = json.loads((m.cache_dir / "last-report.json").read_text())
        page = work / "review.html"
        t0 = time.perf_counter()
        write_review(page, report, m)
        gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([*exe, "-q", "-f", str(work / "musicbuild.yaml"), "report", "--html", str(page)],
                       check=True, env=env, cwd=ROOT)
        cli = time.perf_counter() - t0
        size = page.stat().st_size
        text = page.read_text()
        print(f"page: {size:,} bytes ({size / args.tracks:,.0f} per track), {text.count('<audio ')} players")
        print(f"generate: write_review {gen:.2f} s in-process; `musicbuild report --html` process {cli:.2f} s")
        for fragment, what in (("", "as opened (20 eager, rest lazy)"), ("#all", "every player (#all)")):
            wall, data = chromium(page, fragment, work / f"profile{fragment.strip('#')}")
            print(f"chromium {what}: --dump-dom {wall:.2f} s wall; loaded {data.get('loaded')}/"
                  f"{data.get('audio')}, failed {data.get('failed')}, in-page last metadata at "
                  f"{data.get('ms', 'n/a (not all loaded)')} ms")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
