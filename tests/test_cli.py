"""The command line as users and CI meet it: the README's commands, Ctrl-C, progress output."""
from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from musicbuild.audio.tagging import read_tags

from .conftest import EXAMPLES, ROOT, Project

MUSICBUILD = [sys.executable, "-m", "musicbuild"]


def test_readme_opens_with_the_two_commands() -> None:
    blocks = (ROOT / "README.md").read_text().split("```sh\n")
    first, second = blocks[1].split("\n```")[0], blocks[2].split("\n```")[0]
    assert "pip install -e ." in first and "musicbuild -f examples/quickstart/musicbuild.yaml build" in first
    assert "pip install -e '.[test]'" in second and "pytest" in second
    assert second.strip() in (ROOT / ".ci" / "run").read_text(), ".ci/run must run the README's test command"


def test_quickstart_builds_as_the_readme_says(example) -> None:
    project: Project = example("quickstart")
    proc = subprocess.run(MUSICBUILD + ["-f", "musicbuild.yaml", "build"], cwd=project.root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    outputs = {"levels/forest-day.ogg": "OGG", "boss-battle.flac": "FLAC", "main-menu.mp3": "MP3"}
    for rel, fmt in outputs.items():
        path = project.root / "build" / "music" / rel
        info = sf.info(str(path))
        assert info.format == fmt and info.channels == 2
        assert abs(info.duration - 12) <= 0.1
        tags = read_tags(path)
        assert tags["album"] == "Skyforge OST" and tags["artist"] == "Skyforge Audio"
        assert set(tags["provenance"]) == {"GEN_KEY", "PROVIDER", "MODEL", "SEED", "PROMPT", "JOB_ID"}
        assert tags["year"] == "2026"
    again = subprocess.run(MUSICBUILD + ["-f", "musicbuild.yaml", "build"], cwd=project.root,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "up to date" in again.stderr


def test_examples_build(example) -> None:
    project: Project = example("ad-jingles")
    report = project.build("-j", "4")
    assert report["summary"]["generated"] == 8 and report["summary"]["failed"] == 0
    jingle = project.root / "build" / "jingles" / "globex" / "jingle-globex-30s.mp3"
    tags = read_tags(jingle)
    assert tags["id3_version"] == (2, 3, 0) and tags["cover"] == (project.root / "art" / "globex.png").read_bytes()
    assert "Globex, the world is yours!" in tags["lyrics"] and "Every road" in tags["lyrics"]
    assert "Every road" not in read_tags(jingle.with_name("jingle-globex-15s.mp3"))["lyrics"]
    assert abs(sf.info(str(jingle)).duration - 30) <= 0.1
    wav = read_tags(project.root / "build" / "jingles" / "radio-bed-wav.wav")
    assert wav["wav_info"]["INAM"] == "Radio bed (Summer 2026)"
    m4a = read_tags(project.root / "build" / "jingles" / "social-cut.m4a")
    assert m4a["provenance"]["PROVIDER"] == "local"


def test_game_score_matrix_and_labels(example) -> None:
    project: Project = example("game-score")
    plan = json.loads(project.run("plan", "--json").out)["tracks"]
    ids = [r["id"] for r in plan]
    assert len(ids) == 10 and "level-forest-victory" not in ids
    assert next(r for r in plan if r["id"] == "level-caves-combat")["labels"] == ["level-caves", "combat"]
    report = project.build("label:level-caves")
    assert sorted(t["id"] for t in report["tracks"]) == ["level-caves-combat", "level-caves-explore", "level-caves-victory"]
    assert (project.root / "build" / "score" / "caves" / "combat.ogg").exists()


def _many(project: Project, n: int = 24) -> None:
    tracks = "".join(f"  - {{id: t{i:02d}, prompt: 'steady electronic groove {i}'}}\n" for i in range(n))
    project.write("version: 1\ndefaults: {duration: 4, format: flac}\ntracks:\n" + tracks)


def _ctrl_c_after(project: Project, outputs: int, *args: str) -> str:
    """``build -j 2 ARGS``, interrupted with SIGINT once ``outputs`` files are written: its stderr."""
    proc = subprocess.Popen(MUSICBUILD + ["build", "-j", "2", *args], cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((project.root / "build").glob("*.flac"))) < outputs:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    return err


def test_ctrl_c_exits_130_leaves_no_partial_files_and_next_build_resumes(project: Project) -> None:
    _many(project)
    err = _ctrl_c_after(project, 3)
    assert "Traceback" not in err
    assert not [p for p in project.root.rglob("*") if ".tmp" in p.name]
    done = sorted(p.name for p in (project.root / "build").glob("*.flac"))
    assert 3 <= len(done) < 24
    for name in done:  # every file at a target is complete
        assert abs(sf.info(str(project.root / "build" / name)).duration - 4) < 0.01
    report = project.build()
    acts = {t["id"]: t["action"] for t in report["tracks"]}
    assert all(acts[name[:-5]] == "up-to-date" for name in done)
    assert report["summary"]["failed"] == 0 and len(list((project.root / "build").glob("*.flac"))) == 24


def test_an_interrupted_build_counts_and_locks_what_it_finished(project: Project) -> None:
    _many(project, 16)
    report = project.root / "interrupted.json"
    _ctrl_c_after(project, 2, "--report", str(report))
    written = {p.name[:-5] for p in (project.root / "build").glob("*.flac")}
    doc = json.loads(report.read_text())
    ok = {t["id"] for t in doc["tracks"] if t["status"] == "ok"}
    assert ok == written and 2 <= len(ok) < 16, (ok, written)  # every file written is counted, none more
    assert doc["summary"]["skipped"] == 16 - len(ok) and doc["interrupted"] is True
    lock = json.loads((project.root / "musicbuild.lock").read_text())["tracks"]
    assert set(lock) == written  # finished tracks are locked
    verify = subprocess.run(MUSICBUILD + ["verify"], cwd=project.root, capture_output=True, text=True)
    assert verify.returncode == 1  # the lock does not cover the manifest
    missing = sorted({f"t{i:02d}" for i in range(16)} - written)
    assert all(f"{track}: not in musicbuild.lock" in verify.stderr for track in missing), verify.stderr
    project.build()
    assert project.run("verify").code == 0


def test_plain_progress_lines_in_ci_and_quiet(project: Project) -> None:
    _many(project, 3)
    env = {**os.environ, "CI": "true"}
    proc = subprocess.run(MUSICBUILD + ["build"], cwd=project.root, capture_output=True, text=True, env=env)
    lines = proc.stderr.splitlines()
    assert lines[0] == "3 tracks, 3 to build"
    assert sum(1 for ln in lines if ln.startswith("[") and " ok generate " in ln) == 3
    assert "\x1b[" not in proc.stderr
    quiet = subprocess.run(MUSICBUILD + ["-q", "build", "--force"], cwd=project.root, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def _run_in_pty(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def test_live_progress_on_a_terminal_honours_no_color(project: Project) -> None:
    _many(project, 3)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    screen = _run_in_pty(MUSICBUILD + ["build"], project.root, env)
    assert "3/3" in screen and "spent $0.00" in screen
    assert "\x1b[" in screen  # live display with colour
    env["NO_COLOR"] = "1"
    screen = _run_in_pty(MUSICBUILD + ["build", "--force"], project.root, env)
    assert "3/3" in screen
    assert not any(f"\x1b[{c}m" in screen for c in ("31", "32", "33", "35", "36")), "colours despite NO_COLOR"


def test_examples_validate() -> None:
    for manifest in sorted(EXAMPLES.glob("*/musicbuild.yaml")):
        proc = subprocess.run(MUSICBUILD + ["-f", str(manifest), "validate"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_schema_command_prints_the_schema(capsys) -> None:
    from musicbuild.cli import main

    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "musicbuild manifest"


def test_sigterm_stops_like_ctrl_c(project: Project) -> None:
    _many(project, 12)
    proc = subprocess.Popen(MUSICBUILD + ["build", "-j", "2"], cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((project.root / "build").glob("*.flac")):
        time.sleep(0.05)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err


def test_a_second_concurrent_build_is_refused(project: Project) -> None:
    from musicbuild.cache import exclusive_build

    _many(project, 2)
    with exclusive_build(project.root / ".musicbuild"):
        result = project.run("build")
    assert result.code == 1 and "another build is using the cache" in result.err
    assert project.run("build").code == 0
