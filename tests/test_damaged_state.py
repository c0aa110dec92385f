"""Damaged state: derived state (stamp, last report, cache blobs) is thrown away and rebuilt with a
warning; user state (the lock) and unwritable places give one clean error. Never a traceback."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from musicbuild import stamp

from .conftest import Project

SMALL = """\
version: 1
defaults: {provider: local, duration: 0.5, format: wav}
tracks:
  - {id: rain, prompt: soft rain}
  - {id: wind, prompt: cold wind}
"""


def stamp_file(project: Project) -> Path:
    (stamp,) = (project.root / ".musicbuild" / "stamps").iterdir()
    return stamp


@pytest.mark.parametrize("damage", [b"[]", b"{}", b"not json", b"\xff\xfe", b'{"v": 1, "rows": 5}', b"[" * 100000,
                                    b'{"v": 1, "tool": "0.1.0", "inputs": 7}'])
def test_a_damaged_stamp_is_removed_with_a_warning(project: Project, damage: bytes) -> None:
    project.write(SMALL)
    project.build()
    stamp_file(project).write_bytes(damage)
    check = project.run("check")
    assert check.code == 0 and "Traceback" not in check.err
    result = project.run("build")
    assert result.code == 0 and "Traceback" not in result.err
    assert "up to date" in result.err or "0 generated" in result.err
    assert stamp._parse(stamp._sections(stamp_file(project).read_bytes())[2])["v"] == stamp.STAMP_VERSION  # written again
    assert "warning: the null-build stamp" in check.err and "was damaged" in check.err


@pytest.mark.parametrize("damage", [b"[]", b"\x00\x01", b'{"manifest": "m", "tracks": [5]}',
                                    b'{"manifest": "m", "tracks": [{"id": 1}]}', b"[" * 100000])
def test_a_damaged_last_report_is_removed_with_a_clean_error(project: Project, damage: bytes) -> None:
    project.write(SMALL)
    project.build()
    last = project.root / ".musicbuild" / "last-report.json"
    last.write_bytes(damage)
    result = project.run("report", "--junit", str(project.root / "j.xml"))
    assert result.code == 2 and "Traceback" not in result.err
    assert "last-report.json was damaged" in result.err and "run `musicbuild build`" in result.err
    assert not last.exists()
    project.build()
    assert project.run("report", "--junit", str(project.root / "j.xml")).code == 0


def test_a_cache_blob_replaced_by_a_folder_is_thrown_away(project: Project) -> None:
    project.write(SMALL)
    project.build()
    blobs = [p for p in (project.root / ".musicbuild" / "blobs").rglob("*") if p.is_file()]
    for blob in blobs:
        blob.unlink()
        (blob / "junk").mkdir(parents=True)
    shutil.rmtree(project.root / "build")
    result = project.run("build")
    assert result.code == 0, result.err
    assert "warning: the cache held a folder where audio belongs" in result.err
    assert all(b.is_file() for b in blobs)  # regenerated (local provider: free)
    assert project.run("build").code == 0


def test_the_cache_dir_being_a_file_is_a_clean_error(project: Project) -> None:
    project.write(SMALL)
    (project.root / ".musicbuild").write_text("I am a file")
    for command in ("build", "validate", "plan", "status"):
        result = project.run(command)
        assert result.code == 2 and "Traceback" not in result.err, result.err
        assert "cache_dir: .musicbuild is a file, not a folder" in result.err


def test_the_cache_dir_from_the_environment_being_a_file_is_a_clean_error(project: Project,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    project.write(SMALL)
    (project.root / "cachefile").write_text("x")
    monkeypatch.setenv("MUSICBUILD_CACHE_DIR", str(project.root / "cachefile"))
    result = project.run("validate")
    assert result.code == 2 and "MUSICBUILD_CACHE_DIR" in result.err and "is a file, not a folder" in result.err


GOOD_BLOCK = {"gen_key": "a" * 64, "provider": "local", "model": "synth-v1", "seed": 1, "job_ids": ["j"],
              "clips": "first", "outputs": [{"path": "rain.wav", "clip": 1, "output_key": "b" * 64, "sha256": "c" * 64}]}


def _lock(**changes: object) -> bytes:
    block = {**GOOD_BLOCK, **changes}
    return json.dumps({"version": 1, "tracks": {"rain": block}}).encode()


DAMAGED_LOCKS = {
    "not-utf8": b"\xff\xfe\x00garbage",
    "not-json": b"{version: 1",
    "deep-nesting": b"[" * 200000,
    "deep-object-nesting": b'{"a":' * 100000,
    "a-list": b"[1, 2]",
    "a-string": b'"lock"',
    "wrong-version": b'{"version": 2, "tracks": {}}',
    "tracks-a-list": b'{"version": 1, "tracks": [1]}',
    "block-a-number": b'{"version": 1, "tracks": {"rain": 5}}',
    "no-outputs": _lock(outputs=None),
    "outputs-a-dict": _lock(outputs={"a": 1}),
    "output-a-string": _lock(outputs=["x"]),
    "output-path-a-number": _lock(outputs=[{**GOOD_BLOCK["outputs"][0], "path": 5}]),
    "output-clip-a-string": _lock(outputs=[{**GOOD_BLOCK["outputs"][0], "clip": "one"}]),
    "output-clip-a-float": _lock(outputs=[{**GOOD_BLOCK["outputs"][0], "clip": 1.5}]),
    "seed-a-string": _lock(seed="x"),
    "seed-infinite": _lock(seed=1e400).replace(b"Infinity", b"1e400"),
    "seed-nan": _lock(seed=float("nan")),
    "seed-a-list": _lock(seed=[1]),
    "seed-true": _lock(seed=True),
    "gen-key-a-mapping": _lock(gen_key={"a": 1}),
    "provider-null": _lock(provider=None),
    "job-ids-a-number": _lock(job_ids=5),
    "job-ids-of-numbers": _lock(job_ids=[1, 2]),
    "clips-a-number": _lock(clips=2),
}


@pytest.mark.parametrize("case", list(DAMAGED_LOCKS))
def test_a_damaged_lock_is_a_clean_error(case: str, project: Project) -> None:
    project.write(SMALL)
    (project.root / "musicbuild.lock").write_bytes(DAMAGED_LOCKS[case])
    for command in (("build",), ("verify",), ("build", "--locked"), ("gc", "--dry-run")):
        result = project.run(*command)
        assert "Traceback" not in result.err
        assert result.code == 2, (command, result.err)
        assert "musicbuild.lock is damaged" in result.err and "delete it" in result.err, result.err


def test_disk_full_while_writing_the_reports_is_a_warning_and_a_clean_error(project: Project) -> None:
    """A file size limit makes writes fail as a full disk does (an OSError from write: EFBIG here,
    ENOSPC there). The no-op build answers from the stamp, records the build in last-report.json
    (derived state: a warning) and writes the JUnit file asked for (a clean error, exit 1)."""
    project.write(SMALL)
    project.build()
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.RLIM_INFINITY))\n"
              "from musicbuild.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    run = subprocess.run([sys.executable, "-c", script, "build", "--junit", "j.xml"], cwd=project.root,
                         capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "MUSICBUILD_CACHE_DIR"})
    assert "Traceback" not in run.stderr
    assert "2 tracks up to date, nothing to do" in run.stderr
    assert "warning: could not record this build for `musicbuild report` (File too large" in run.stderr
    assert "musicbuild: cannot write the report" in run.stderr and "File too large" in run.stderr
    assert run.returncode == 1, run.stderr
    assert not list(project.root.glob(".j.xml.*")) and not list((project.root / ".musicbuild").glob(".last*"))


def _without_root_powers() -> list[str]:
    """A command prefix under which file permissions bind: nothing for a normal user; as root (CI),
    a new user namespace (``unshare -U``), where root keeps its uid but loses CAP_DAC_OVERRIDE."""
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") and subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-U"]
    pytest.skip("running as root where 'unshare -U' is not allowed: permission bits cannot be tested")


def _run_read_only(args: list[str], cwd: Path, folder: Path) -> subprocess.CompletedProcess:
    prefix = _without_root_powers()
    env = {k: v for k, v in os.environ.items() if k != "MUSICBUILD_CACHE_DIR"}
    folder.chmod(0o555)
    try:
        return subprocess.run([*prefix, sys.executable, "-m", "musicbuild", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        folder.chmod(0o755)


def test_a_read_only_manifest_folder_is_a_clean_error_when_writing_the_lock(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "musicbuild.yaml").write_text(
        SMALL.replace("version: 1", f"version: 1\noutput_dir: {tmp_path}/out\ncache_dir: {tmp_path}/cache"))
    result = _run_read_only(["build"], project, project)
    assert "Traceback" not in result.stderr
    assert result.returncode == 1, result.stderr
    assert f"cannot write {project / 'musicbuild.lock'}: Permission denied" in result.stderr
    assert (tmp_path / "out" / "rain.wav").is_file()  # the work itself was done
    assert subprocess.run([sys.executable, "-m", "musicbuild", "build"], cwd=project).returncode == 0
    assert (project / "musicbuild.lock").is_file()


def test_clean_in_a_read_only_output_folder_is_a_clean_error(project: Project) -> None:
    project.write(SMALL)
    project.build()
    result = _run_read_only(["clean"], project.root, project.root / "build")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1, result.stderr
    assert "could not remove 2 files: rain.wav (Permission denied), wind.wav (Permission denied)" in result.stderr


def test_status_into_a_closed_pipe_exits_quietly(project: Project) -> None:
    lines = ["version: 1", "defaults: {provider: local, duration: 0.3, format: wav}", "tracks:"]
    lines += [f"  - {{id: t{i}, prompt: tone {i}}}" for i in range(5000)]
    project.manifest.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "musicbuild", "status"], cwd=project.root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = proc.wait(timeout=120)
    assert first == b"t0: missing\n"
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 141


def test_a_cache_dir_under_proc_is_refused_by_validate(project: Project) -> None:
    """As root, os.access says yes to /proc; opening the cache there would fail later."""
    project.write(SMALL.replace("version: 1", "version: 1\ncache_dir: \"{{ '/proc/musicbuild-cache' }}\""))
    result = project.run("validate")
    assert result.code == 2 and "cache_dir: is under /proc, where nothing can be kept" in result.err
