"""Make docs/progress.png: the live display of a real build, taken from a real terminal.

Starts an AIgateway emulator (tests/emulators, virtual clock: 1 virtual second = 0.1 s) and builds
a 22-track manifest (18 hosted tracks, 4 local ones) with ``musicbuild build -j 4 -k`` in a tmux
session of 100x18. When the build is well under way (some tracks done, the ETA known, jobs queued
and polled at the provider) the pane is captured with its colours (``tmux capture-pane -e -p``),
turned into SVG by rich (``Text.from_ansi`` + ``Console.export_svg``) and into PNG by headless
Chromium. Needs tmux and chromium; run from the repository root with the test extra installed:

    python docs/progress_screenshot.py [--out docs/progress.png] [--keep DIR]
"""
from __future__ import annotations

import argparse
import io
import json
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

SCALE = 0.1  # real seconds per virtual second
COLS, ROWS = 100, 18
SESSION = "musicbuild-progress-shot"


def manifest(url: str) -> dict:
    moods = ["calm", "tense", "heroic", "eerie", "playful", "sombre"]
    tracks = [{"id": f"{area}-{mood}", "provider": "gw", "prompt": f"{mood} {area} theme, orchestral",
               "tags": [mood], "model": "sonauto/v2/text-to-music"}
              for area in ("forest", "caves", "castle") for mood in moods]
    tracks += [{"id": f"ui-{name}", "provider": "local", "prompt": f"{name} sting", "duration": 3}
               for name in ("click", "confirm", "error", "level-up")]
    return {"version": 1, "defaults": {"format": "ogg", "duration": 30, "out": "{{ id }}.{{ format }}"},
            "providers": {"gw": {"type": "aigateway", "base_url": url, "requests_per_minute": 600,
                                 "max_concurrent": 4}},
            "tracks": tracks}


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def interesting(screen: str) -> bool:
    """Mid-build: some tracks done, the ETA known, and jobs at the provider in more than one state."""
    done = re.search(r"(\d+)/(\d+)", screen)
    states = sum(word in screen for word in ("queued at", "polling", "submitting", "downloading", "encoding",
                                             "generating"))
    return bool(done) and 6 <= int(done.group(1)) <= 16 and "ETA " in screen and "estimating" not in screen \
        and states >= 3


def capture(folder: Path, timeout: float = 120.0) -> str:
    env = f"MUSICBUILD_TIME_SCALE={SCALE} AIGATEWAY_API_KEY=test-key"
    command = f"cd {folder} && env {env} {sys.executable} -m musicbuild build -j 4 -k; sleep 600"
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    tmux("new-session", "-d", "-s", SESSION, "-x", str(COLS), "-y", str(ROWS), command)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if interesting(tmux("capture-pane", "-t", SESSION, "-p")):
                return tmux("capture-pane", "-t", SESSION, "-p", "-e")
            time.sleep(0.1)
        raise SystemExit("the build never showed a mid-build screen worth a picture")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


def to_png(ansi: str, out: Path, work: Path) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(record=True, width=COLS, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    lines = ansi.rstrip("\n").split("\n")
    while lines and not Text.from_ansi(lines[-1]).plain.strip():
        lines.pop()  # the empty rows under the display
    console.print(Text.from_ansi("$ musicbuild build -j 4 -k\n" + "\n".join(lines)), soft_wrap=True)
    svg = console.export_svg(title="musicbuild build")
    width, height = (int(float(v)) for v in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())
    page = work / "progress.html"
    page.write_text(f"<html><body style='margin:0;background:#fff'>{svg}</body></html>")
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if chromium is None:
        raise SystemExit("chromium not found (apt-get install chromium)")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--force-device-scale-factor=1", f"--user-data-dir={work / 'profile'}",
                    f"--window-size={width},{height}", f"--screenshot={out.resolve()}", page.as_uri()],
                   check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "progress.png")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("tmux not found (apt-get install tmux)")
    from tests.emulators.aigateway import AIgatewayEmulator

    work = args.keep or Path(tempfile.mkdtemp(prefix="progress-shot-"))
    work.mkdir(parents=True, exist_ok=True)
    with AIgatewayEmulator(time_scale=SCALE, latency=(40, 90), seed=7) as gw:
        gw.faults.fail_jobs = 0.12
        (work / "musicbuild.yaml").write_text(json.dumps(manifest(gw.url), indent=1))
        ansi = capture(work)
    to_png(ansi, args.out, work)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) from a capture of {len(ansi)} bytes")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    os.environ.pop("MUSICBUILD_TIME_SCALE", None)


if __name__ == "__main__":
    main()
