"""Outputs stay inside output_dir while folders move, and temp files belong to their builds.

- a folder inside output_dir swapped for a symlink during a real build: nothing is written outside;
- temp files carry their owner's pid: a build removes only those whose owner is gone (or, with the
  names of older versions, an hour old), once per folder; two builds sharing an output_dir coexist;
- ``clean`` removes stale temp files too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from musicbuild import confine
from musicbuild.confine import ConfinedOutput, OutsideOutputDir

from .conftest import Project


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MUSICBUILD_CACHE_DIR"}


def many_tracks(n: int, duration: float = 1.0, out: str = "music/{{ id }}.wav") -> str:
    lines = ["version: 1", f"defaults: {{provider: local, duration: {duration}, format: wav, out: \"{out}\"}}",
             "tracks:"]
    return "\n".join(lines + [f"  - {{id: cue-{i:03d}, prompt: cue number {i}}}" for i in range(n)]) + "\n"


def test_a_folder_swapped_for_a_symlink_during_a_build_is_never_written_through(tmp_path: Path) -> None:
    for attempt in range(3):  # the swap must land while the build is writing; retried if it came too late
        root = tmp_path / f"try{attempt}"
        project, outside = root / "project", root / "outside"
        project.mkdir(parents=True)
        outside.mkdir()
        (project / "musicbuild.yaml").write_text(many_tracks(40, duration=2.0))
        proc = subprocess.Popen([sys.executable, "-m", "musicbuild", "build", "-k", "--report", "r.json"],
                                cwd=project, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        music = project / "build" / "music"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (music.is_dir() and any(p.suffix == ".wav" for p in music.iterdir())):
            time.sleep(0.002)
        music.rename(project / "build" / "music-moved")
        music.symlink_to(outside, target_is_directory=True)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err
        assert list(outside.iterdir()) == [], "an output was written outside output_dir"
        rows = json.loads((project / "r.json").read_text())["tracks"]
        failed = [r for r in rows if r["status"] == "failed"]
        assert all("no longer a folder inside" in r["error"] for r in failed), failed
        moved = {p.name for p in (project / "build" / "music-moved").iterdir()}
        assert {Path(r["out"]).name for r in rows if r["status"] == "ok"} <= moved
        assert not any(name.startswith(".") for name in moved), "a temp file was left behind"
        if failed:
            assert proc.returncode == 1
            return
    pytest.fail("the build finished before the folder could be swapped, three times")


def test_the_rename_refuses_a_folder_that_became_a_symlink(tmp_path: Path) -> None:
    root, outside = tmp_path / "build", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    target = root / "a" / "b" / "x.wav"
    with pytest.raises(OutsideOutputDir, match="no longer a folder inside"):
        with ConfinedOutput(root, target, ".tmp.wav") as out:
            out.path.write_bytes(b"RIFF")
            (root / "a" / "b").rename(root / "a" / "old")
            (root / "a" / "b").symlink_to(outside, target_is_directory=True)
            out.commit()
    assert list(outside.iterdir()) == [] and list((root / "a" / "old").iterdir()) == []


def test_a_file_in_place_of_a_folder_is_refused_too(tmp_path: Path) -> None:
    root = tmp_path / "build"
    (root / "a").mkdir(parents=True)
    with ConfinedOutput(root, root / "a" / "x.wav", ".tmp") as out:
        out.path.write_bytes(b"data")
        (root / "a").rename(root / "gone")
        (root / "a").write_text("a file now")
        with pytest.raises(OutsideOutputDir):
            out.commit()
    assert (root / "a").read_text() == "a file now" and list((root / "gone").iterdir()) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temps(folder: Path, live_pid: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    names = {
        "live": f".cue-000.wav.mb{live_pid}-abcd1234.tmp.wav",
        "dead": f".cue-000.wav.mb{_dead_pid()}-abcd1234.tmp.wav",
        "old-legacy": ".cue-001.wav.k2j4h5g6.tmp.wav",
        "new-legacy": ".cue-002.wav.q1w2e3r4.tmp.wav",
        "user-file": ".notes.tmp.txt",
    }
    paths = {k: folder / v for k, v in names.items()}
    for path in paths.values():
        path.write_bytes(b"partial")
    hours_ago = time.time() - 7200
    os.utime(paths["old-legacy"], (hours_ago, hours_ago))
    return paths


def test_a_build_sweeps_only_temp_files_whose_owner_is_gone(project: Project) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        project.write(many_tracks(3, duration=0.3))
        temps = _temps(project.root / "build" / "music", sleeper.pid)
        project.build()
        assert temps["live"].exists(), "another running build's temp file was deleted"
        assert not temps["dead"].exists() and not temps["old-legacy"].exists()
        assert temps["new-legacy"].exists() and temps["user-file"].exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_each_folder_is_scanned_once_per_build(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    scanned: list[Path] = []
    real = confine.temp_files_in

    def counting(folder: Path) -> list[Path]:
        scanned.append(folder)
        return real(folder)

    monkeypatch.setattr(confine, "temp_files_in", counting)
    project.write(many_tracks(30, duration=0.1, out="{{ 'a' if id < 'cue-015' else 'b' }}/{{ id }}.wav"))
    project.build()
    assert sorted(p.name for p in scanned) == ["a", "b"]


def test_two_builds_with_separate_caches_share_an_output_dir(tmp_path: Path) -> None:
    (tmp_path / "musicbuild.yaml").write_text(many_tracks(16, duration=1.0))
    procs = []
    for name in ("cache-a", "cache-b"):
        env = {**_env(), "MUSICBUILD_CACHE_DIR": str(tmp_path / name)}
        procs.append(subprocess.Popen([sys.executable, "-m", "musicbuild", "build", "-j", "4"], cwd=tmp_path, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    music = tmp_path / "build" / "music"
    assert len(list(music.glob("*.wav"))) == 16 and not list(music.glob(".*"))


def test_clean_removes_stale_temp_files_anywhere_in_output_dir(project: Project) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        project.write(many_tracks(2, duration=0.3))
        project.build()
        temps = _temps(project.root / "build" / "old-out-folder", sleeper.pid)
        result = project.run("clean")
        assert result.code == 0, result.err
        assert "removed old-out-folder/" + temps["dead"].name in result.err
        assert not temps["dead"].exists() and not temps["old-legacy"].exists()
        assert temps["live"].exists() and temps["new-legacy"].exists() and temps["user-file"].exists()
        assert not (project.root / "build" / "music").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
