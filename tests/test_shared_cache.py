"""The shared team cache end to end: two machines, four shards, a remote that dies (SPEC 6)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from .conftest import Project
from .emulators.aigateway import AIgatewayEmulator
from .remote_servers import NGINX, MotoS3, Nginx

SCALE = "0.002"


def manifest(emu_url: str, n: int, prompt: str = "cue") -> str:
    tracks = "".join(f"  - {{id: t{i:03d}, prompt: '{prompt} {i}'}}\n" for i in range(n))
    return (f"version: 1\ndefaults: {{provider: gw, format: wav, duration: 2}}\n"
            f"providers: {{gw: {{type: aigateway, base_url: '{emu_url}', max_concurrent: 16, timeout: 1000000}}}}\n"
            f"tracks:\n{tracks}")  # timeout in virtual seconds: 1.8 real ones would be too tight under load


@pytest.fixture(params=["file", "s3", "http"])
def remote(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A shared cache URL on each backend, with its credentials in the environment."""
    if request.param == "file":
        yield f"file://{tmp_path / 'team-cache'}"
    elif request.param == "s3":
        with MotoS3() as s3:
            for k, v in MotoS3.ENV.items():
                monkeypatch.setenv(k, v)
            monkeypatch.setenv("MUSICBUILD_REMOTE_STORAGE_OPTIONS", f'{{"client_kwargs": {{"endpoint_url": "{s3.endpoint}"}}}}')
            s3.create_bucket("team")
            yield "s3://team/music"
    else:
        if NGINX is None:
            pytest.skip("nginx is not installed (apt-get install nginx)")
        server = Nginx(tmp_path / "nginx")
        server.start()
        try:
            yield server.url + "/cache"
        finally:
            server.stop()


@pytest.fixture
def hosted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICBUILD_TIME_SCALE", SCALE)
    monkeypatch.setenv("AIGATEWAY_API_KEY", "test-key")


def machine(project: Project, name: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    """Another checkout of the same project with its own empty local cache."""
    root = project.root / name
    root.mkdir()
    for f in ("musicbuild.yaml", "musicbuild.lock"):
        if (project.root / f).exists():
            shutil.copy(project.root / f, root / f)
    monkeypatch.setenv("MUSICBUILD_CACHE_DIR", str(root / ".cache"))
    return Project(root, project.capsys)


def test_machine_b_assembles_byte_identical_outputs_without_any_provider_request(
        project: Project, remote: str, hosted: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICBUILD_REMOTE_CACHE", remote)
    with AIgatewayEmulator(time_scale=float(SCALE), latency=(30, 90), audio_seconds=2) as emu:
        a = machine(project, "a", monkeypatch)
        a.write(manifest(emu.url, 5))
        report = a.build()
        assert report["summary"]["generated"] == 5 and report["remote"]["uploaded"] == 5
        shutil.copy(a.root / "musicbuild.lock", project.root / "musicbuild.lock")
        shutil.copy(a.manifest, project.manifest)
        requests = len(emu.log)
        b = machine(project, "b", monkeypatch)
        report = b.build("--frozen")
        assert len(emu.log) == requests, "machine B talked to the provider"
        assert set(t["action"] for t in report["tracks"]) == {"materialize"} and report["remote"]["fetched"] == 5
        for out in (a.root / "build").iterdir():
            assert (b.root / "build" / out.name).read_bytes() == out.read_bytes()
        assert b.run("verify").code == 0
        tampered = b.root / "build" / "t003.wav"
        tampered.write_bytes(tampered.read_bytes()[:-4] + b"\0\0\0\0")
        result = b.run("verify")
        assert result.code == 1 and "t003.wav: content differs from the lock" in result.err
        b.edit("cue 1'", "cue 1 remixed'")
        result = b.run("build", "--locked")
        assert result.code == 3 and "t001: its generation spec changed" in result.err
        assert len(emu.log) == requests


def test_frozen_with_the_remote_down_is_an_error_but_a_normal_build_only_warns(
        project: Project, hosted: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from .remote_servers import closed_port

    with AIgatewayEmulator(time_scale=float(SCALE), latency=10, audio_seconds=1) as emu, closed_port() as port:
        monkeypatch.setenv("MUSICBUILD_REMOTE_CACHE", f"http://127.0.0.1:{port}/cache")
        project.write(manifest(emu.url, 2))
        result = project.run("build")
        assert result.code == 0 and "warning: shared cache" in result.err and "unavailable" in result.err
        project.run("clean")
        monkeypatch.setenv("MUSICBUILD_CACHE_DIR", str(project.root / "empty"))
        result = project.run("build", "--frozen")
        assert result.code != 0 and "Traceback" not in result.err


def test_four_shards_generate_each_track_once_and_a_frozen_build_assembles_all(
        project: Project, tmp_path: Path, hosted: None) -> None:
    remote = f"file://{tmp_path / 'team-cache'}"
    with AIgatewayEmulator(time_scale=float(SCALE), latency=(5, 15), audio_seconds=0.5) as emu:
        project.write(manifest(emu.url, 200))
        env = {**os.environ, "MUSICBUILD_REMOTE_CACHE": remote}
        procs = []
        for i in range(1, 5):
            shard_env = {**env, "MUSICBUILD_CACHE_DIR": str(tmp_path / f"shard-{i}")}
            procs.append(subprocess.Popen([sys.executable, "-m", "musicbuild", "build", "-j", "16",
                                           "--shard", f"{i}/4"], cwd=project.root, env=shard_env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for proc in procs:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, "\n".join(line for line in err.splitlines() if " ok " not in line and "start " not in line)[-3000:]
        prompts = [job.prompt for job in emu.jobs.values()]
        assert len(prompts) == 200 and len(set(prompts)) == 200  # each track generated exactly once
        before = len(emu.log)
        (project.root / "musicbuild.lock").unlink(missing_ok=True)  # each shard wrote only its share
        final = subprocess.run([sys.executable, "-m", "musicbuild", "-q", "build", "--frozen"], cwd=project.root,
                               env={**env, "MUSICBUILD_CACHE_DIR": str(tmp_path / "assembly")},
                               capture_output=True, text=True, timeout=240)
        assert final.returncode == 0, final.stderr
        assert len(emu.log) == before
        assert len(list((project.root / "build").glob("*.wav"))) == 200


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx)")
def test_a_remote_killed_mid_build_loses_nothing_and_a_later_build_uploads(
        project: Project, tmp_path: Path, hosted: None, monkeypatch: pytest.MonkeyPatch) -> None:
    server = Nginx(tmp_path / "nginx")
    server.start()
    monkeypatch.setenv("MUSICBUILD_REMOTE_CACHE", server.url + "/cache")
    with AIgatewayEmulator(time_scale=float(SCALE), latency=(30, 90), audio_seconds=1) as emu:
        project.write(manifest(emu.url, 12))
        env = {**os.environ}
        proc = subprocess.Popen([sys.executable, "-m", "musicbuild", "build"], cwd=project.root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while emu.creates < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.stop()  # the remote dies while the jobs run
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "warning: shared cache" in err
        assert len(list((project.root / "build").glob("*.wav"))) == 12  # the build finished locally
        # jobs that finished before the remote died were written through; the rest waits for it
        reached = len([p for p in server.root.rglob("*") if p.parent.name == "ac"])
        assert reached < 12
        server = Nginx(tmp_path / "nginx")  # back (on a new port, same storage)
        server.start()
        try:
            monkeypatch.setenv("MUSICBUILD_REMOTE_CACHE", server.url + "/cache")
            creates = emu.creates
            report = project.build()
            assert set(t["action"] for t in report["tracks"]) == {"up-to-date"} and emu.creates == creates
            assert report["remote"]["uploaded"] == 12  # a new URL: nothing is marked uploaded there yet
            assert len([p for p in server.root.rglob("*") if p.parent.name == "ac"]) == 12
        finally:
            server.stop()


def test_gc_touches_the_shared_cache_only_when_asked(project: Project, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    team = tmp_path / "team-cache"
    monkeypatch.setenv("MUSICBUILD_REMOTE_CACHE", f"file://{team}")
    project.write("version: 1\ndefaults: {duration: 0.5, format: wav}\ntracks:\n  - {id: a, prompt: one}\n  - {id: b, prompt: two}\n")
    project.build()
    project.edit("prompt: two", "prompt: two v2")
    project.build()
    records = lambda: sorted(p.name for p in (team / "ac").iterdir())  # noqa: E731
    assert len(records()) == 3
    assert "1 generations" in project.run("gc").err  # the local cache only
    assert len(records()) == 3
    dry = project.run("gc", "--remote", "--dry-run")
    assert "would free" in dry.err and "1 generations" in dry.err and "shared cache" in dry.err
    assert len(records()) == 3
    assert "1 generations, 0 blobs" in project.run("gc", "--remote").err  # fresh blobs get an hour's grace
    assert len(records()) == 2
    monkeypatch.setenv("MUSICBUILD_CACHE_DIR", str(tmp_path / "fresh"))
    project.run("clean")
    report = project.build("--frozen")  # what the manifest uses is still shared
    assert report["remote"]["fetched"] == 2


def test_a_new_track_goes_through_the_ci_flow_and_the_lock_comes_back(project: Project, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Committed lock + a pushed track: shards generate it, --frozen would refuse (the lock changes),
    --offline assembles every output from the shared cache and writes the updated lock."""
    monkeypatch.setenv("MUSICBUILD_REMOTE_CACHE", f"file://{tmp_path / 'team'}")
    tracks = "".join(f"  - {{id: t{i}, prompt: 'steady cue {i}'}}\n" for i in range(3))
    project.write(f"version: 1\ndefaults: {{duration: 1, format: wav}}\ntracks:\n{tracks}")
    project.build()  # the committed state: lock for t0..t2
    locked = (project.root / "musicbuild.lock").read_text()
    project.write(f"version: 1\ndefaults: {{duration: 1, format: wav}}\ntracks:\n{tracks}"
                  "  - {id: t3, prompt: 'a new cue'}\n")
    for i in (1, 2):  # the generate stage: fresh runners, each its share
        monkeypatch.setenv("MUSICBUILD_CACHE_DIR", str(tmp_path / f"runner-{i}"))
        result = project.run("build", "--shard", f"{i}/2")
        assert result.code == 0, result.err
        (project.root / "musicbuild.lock").write_text(locked)  # runners do not push their lock
    shutil.rmtree(project.root / "build")
    monkeypatch.setenv("MUSICBUILD_CACHE_DIR", str(tmp_path / "assemble"))
    result = project.run("build", "--frozen")
    assert result.code == 3 and "would change musicbuild.lock" in result.err and "t3" in result.err
    result = project.run("build", "--offline")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (project.root / "build").iterdir()) == ["t0.wav", "t1.wav", "t2.wav", "t3.wav"]
    lock = (project.root / "musicbuild.lock").read_text()
    assert '"t3"' in lock and lock != locked
    assert project.run("verify").code == 0
    assert project.run("build", "--frozen").code == 0  # the updated lock, committed, holds
