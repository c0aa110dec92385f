"""Outputs deleted or edited while a build runs never end up "up to date".

The null-build stamp records only what the build wrote and saw at the end: a missing output never
matches, and an output that is not the file the cache recorded writing keeps the stamp from being
written at all. Afterwards ``check`` and ``status`` agree with ``verify`` and with the files.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

import musicbuild
from musicbuild import stamp
from musicbuild.api import Event
from musicbuild.cli import main
from musicbuild.progress import QuietReporter

from .conftest import Project


def tracks(n: int, duration: float = 0.5) -> str:
    lines = ["version: 1", f"defaults: {{provider: local, duration: {duration}, format: wav}}", "tracks:"]
    return "\n".join(lines + [f"  - {{id: t{i:02d}, prompt: tone {i}}}" for i in range(n)]) + "\n"


def delete(path: Path) -> None:
    path.unlink()


def append(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"junk")


def overwrite_same_size(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    time.sleep(0.01)  # a new mtime even on coarse clocks
    path.write_bytes(bytes(data))


class Saboteur(QuietReporter):
    """Damages the first output of the first track the moment that track is done (mid-build)."""

    def __init__(self, damage: Callable[[Path], None], output_dir: Path) -> None:
        self.damage = damage
        self.output_dir = output_dir
        self.hit: Path | None = None

    def finished(self, event: Event) -> None:
        row = event.track
        if self.hit is None and row is not None and row["status"] == "ok":
            self.hit = self.output_dir / (row["out"] if isinstance(row["out"], str) else row["out"][0])
            self.damage(self.hit)


@pytest.mark.parametrize("damage", [delete, append, overwrite_same_size])
def test_an_output_damaged_mid_build_is_never_recorded_as_fine(project: Project, damage: Callable[[Path], None],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    project.write(tracks(4))
    monkeypatch.chdir(project.root)
    saboteur = Saboteur(damage, project.root / "build")
    result = musicbuild.build(project.manifest, jobs=1, on_event=saboteur)  # a first build: no stamp yet
    assert all(row["status"] == "ok" for row in result.rows) and saboteur.hit is not None
    assert stamp.fresh_rows(project.manifest) is None, "the stamp promises an output that is not there"
    assert project.run("check").code == 1
    state = "missing" if damage is delete else "modified"
    assert f"{saboteur.hit.stem}: {state}" in project.run("status").out
    assert project.run("verify").code == 1
    second = project.build()
    assert second["summary"]["materialized"] == 1
    assert project.run("check").code == 0 and project.run("verify").code == 0


def test_a_stamp_that_recorded_a_missing_output_never_matches(project: Project) -> None:
    """A stamp is never written with an output missing; one whose output is gone now is no proof."""
    project.write(tracks(2))
    project.build()
    (path,) = (project.root / ".musicbuild" / "stamps").iterdir()
    header, files, _ = stamp._sections(path.read_bytes())
    output = next(line.split(b" ", 3)[3] for line in files if line.split(b" ", 3)[2] != b"-")
    Path(output.decode()).unlink()
    assert stamp.fresh_rows(project.manifest) is None
    assert project.run("check").code == 1


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


# enough outputs to write that a build lasts a while even when planning is quick (the edit loop's memo)
TRACKS = 30


def test_random_deletes_and_edits_during_builds_leave_check_status_and_verify_agreeing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(int(os.environ.get("MUSICBUILD_CHAOS_SEED", "9")))
    (tmp_path / "musicbuild.yaml").write_text(tracks(TRACKS, duration=2.0))
    monkeypatch.delenv("MUSICBUILD_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    build_dir = tmp_path / "build"

    def cli(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    damaged_total = 0
    for _round in range(3):
        for output in build_dir.glob("*.wav") if build_dir.is_dir() else ():
            output.unlink()  # every round materializes every track: seconds of outputs appearing to damage
        proc = subprocess.Popen([sys.executable, "-m", "musicbuild", "-q", "build"], cwd=tmp_path,
                                stderr=subprocess.PIPE, text=True)
        stop = time.monotonic() + rng.uniform(0.5, 3.0)  # then let the build end in peace, so the last
        while proc.poll() is None and time.monotonic() < stop:  # damage is not always after its stamp
            time.sleep(rng.uniform(0.0, 0.1))
            done = [p for p in build_dir.glob("*.wav") if not p.name.startswith(".")] if build_dir.is_dir() else []
            if done:
                try:
                    rng.choice([delete, append, overwrite_same_size])(rng.choice(done))
                    damaged_total += 1
                except FileNotFoundError:
                    pass
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        locked = json.loads((tmp_path / "musicbuild.lock").read_text())["tracks"]
        good = {tid: _sha(build_dir / block["outputs"][0]["path"]) == block["outputs"][0]["sha256"]
                for tid, block in locked.items()}
        assert len(good) == TRACKS
        verify, check, status = cli("verify"), cli("check"), cli("status")
        assert (verify[0] == 0) == all(good.values()) == (check[0] == 0), (good, verify[2])
        assert {line.split(".wav:")[0] for line in verify[2].splitlines() if ".wav:" in line} == {
            tid for tid, ok in good.items() if not ok}
        for line in status[1].splitlines():
            tid, state = line.split(": ", 1)
            assert (state == "up to date") == good[tid], (line, good)
    assert damaged_total >= 3, "the builds were too quick to be damaged while running"
