"""A build fleet on one account: real worker processes, a real redis-server, one shared cache.

Workers are separate ``musicbuild build`` processes, each in its own folder with its own local
cache (as ephemeral CI runners are), sharing a ``file://`` cache and, with a coordinator, one
Redis. The emulator enforces the account's rate limit with 429s and counts every create.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .emulators.aigateway import AIgatewayEmulator
from .remote_servers import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed "
                                                           "(apt-get install redis-server)")

SCALE = float(__import__("os").environ.get("FLEET_SCALE", "0.02"))  # 60 virtual seconds = 1.2 s
RPM = 30


def fleet_manifest(url: str, tracks: int, shared: Path) -> str:
    doc = {"version": 1, "defaults": {"format": "wav", "duration": 4},
           "cache": {"remote": shared.as_uri()},
           "providers": {"gw": {"type": "aigateway", "base_url": url, "requests_per_minute": RPM,
                                "max_concurrent": 4, "timeout": 3600}},
           "tracks": [{"id": f"t{i:03d}", "provider": "gw", "prompt": f"fleet cue {i}", "model": "acme/cue"}
                      for i in range(tracks)]}
    return json.dumps(doc, indent=1)


class Fleet:
    def __init__(self, root: Path, emu: AIgatewayEmulator, tracks: int, coordinator: str | None,
                 lease: float = 300) -> None:
        self.root, self.emu, self.tracks = root, emu, tracks
        self.shared = root / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "MUSICBUILD_TIME_SCALE": str(SCALE), "AIGATEWAY_API_KEY": emu.api_key,
                    "CI": "1", "MUSICBUILD_LEASE_SECONDS": str(lease)}
        self.env.pop("MUSICBUILD_CACHE_DIR", None)
        if coordinator:
            self.env["MUSICBUILD_COORDINATOR"] = coordinator
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "musicbuild.yaml").write_text(fleet_manifest(self.emu.url, self.tracks, self.shared))
        with open(folder / "build.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "musicbuild", "build", "-k", "--report", "report.json",
                                     *args], cwd=folder, env=self.env, stdout=log, stderr=log)
        self.procs[name] = proc
        return proc

    def wait(self, timeout: float = 240) -> dict[str, int]:
        codes = {name: proc.wait(timeout) for name, proc in self.procs.items()}
        return codes

    def log(self, name: str) -> str:
        return (self.root / name / "build.log").read_text(errors="replace")

    def report(self, name: str) -> dict[str, Any]:
        return json.loads((self.root / name / "report.json").read_text())

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def creates_per_prompt(emu: AIgatewayEmulator) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in list(emu.jobs.values()):
        counts[job.prompt] = counts.get(job.prompt, 0) + 1
    return counts


def four_hundred_twenty_nines(emu: AIgatewayEmulator) -> int:
    return sum(1 for e in emu.log if e.status == 429)


@pytest.fixture
def redis_server(tmp_path: Path):
    with RedisServer(tmp_path / "redis") as server:
        yield server


def test_four_workers_with_a_coordinator_share_one_accounts_limits(tmp_path: Path, redis_server: RedisServer) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=(5, 10), audio_seconds=2, rpm=RPM) as emu:
        fleet = Fleet(tmp_path, emu, 24, redis_server.url)
        try:
            for i in range(4):
                fleet.start(f"w{i}", "-v")
            codes = fleet.wait()
        finally:
            fleet.kill_all()
        assert codes == {f"w{i}": 0 for i in range(4)}, [fleet.log(f"w{i}")[-2000:] for i in range(4)]
        assert all(": another worker generates it" in fleet.log(f"w{i}") for i in range(4))  # its progress says so
        assert emu.requests_in_any_window(60.0) <= RPM
        assert four_hundred_twenty_nines(emu) <= 3
        assert creates_per_prompt(emu) == {f"fleet cue {i}": 1 for i in range(24)}  # every generation once
        for i in range(4):  # every worker ends with every output (from its own job or another's)
            assert len(list((tmp_path / f"w{i}" / "build").glob("*.wav"))) == 24
        workers = {row["job_id"]: name for name in (f"w{i}" for i in range(4))
                   for row in fleet.report(name)["tracks"] if row["charged_usd"] > 0}
        assert len(workers) == 24 and len(set(workers.values())) >= 3  # the work was split


def test_shards_without_a_coordinator_divide_the_limits(tmp_path: Path) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=(5, 10), audio_seconds=2, rpm=RPM) as emu:
        fleet = Fleet(tmp_path, emu, 16, None)
        try:
            for i in range(4):
                fleet.start(f"s{i}", "--shard", f"{i + 1}/4")
            codes = fleet.wait()
        finally:
            fleet.kill_all()
        assert codes == {f"s{i}": 0 for i in range(4)}, [fleet.log(f"s{i}")[-2000:] for i in range(4)]
        assert emu.requests_in_any_window(60.0) <= RPM and four_hundred_twenty_nines(emu) == 0
        assert creates_per_prompt(emu) == {f"fleet cue {i}": 1 for i in range(16)}


def wait_until(cond: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def shared_states(fleet: Fleet, redis_server: RedisServer) -> list[str]:
    """The states in the fleet's journal: Redis with a coordinator, the shared cache's jr/ without."""
    if "MUSICBUILD_COORDINATOR" in fleet.env:
        import redis

        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            return [json.loads(v)["state"] for key in client.scan_iter("mb:jr:*") for v in client.hvals(key)]
        finally:
            client.close()
    states = []
    for path in (fleet.shared / "jr").glob("[!.]*"):  # not the writers' temp files (renamed into place)
        try:
            states += [r["state"] for r in json.loads(path.read_text())]
        except FileNotFoundError:
            continue
    return states


@pytest.mark.parametrize("coordinated", [True, False], ids=["coordinator", "shards"])
def test_a_runner_killed_with_jobs_in_flight_is_replaced_without_paying_again(
        tmp_path: Path, redis_server: RedisServer, coordinated: bool) -> None:
    import shutil

    # jobs that cannot finish before the kill (20 s real): no slot frees, so no fifth create can be
    # between "sent" and its answer when the victim dies (that one would be ambiguous, rightly)
    with AIgatewayEmulator(time_scale=SCALE, latency=(1000, 1200), audio_seconds=2) as emu:
        fleet = Fleet(tmp_path, emu, 8, redis_server.url if coordinated else None, lease=60)
        try:
            shard = () if coordinated else ("--shard", "1/1")
            victim = fleet.start("victim", "-j", "8", *shard)
            # its four slots hold submitted jobs, in the fleet's journal too (no create between "sent" and
            # its answer): kill -9
            wait_until(lambda: emu.creates == 4 and shared_states(fleet, redis_server).count("submitted") == 4)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            shutil.rmtree(tmp_path / "victim")  # an ephemeral runner: its disk is gone
            emu.latency = 10.0
            for job in emu.jobs.values():  # the dead runner's jobs finish soon after its replacement starts
                job.latency = min(job.latency, emu.now() - job.created + 10.0)
            del fleet.procs["victim"]
            fleet.start("fresh", *shard)
            codes = fleet.wait()
        finally:
            fleet.kill_all()
        assert codes == {"fresh": 0}, fleet.log("fresh")[-3000:]
        assert emu.creates == 8, "the fresh runner paid again for jobs the dead one submitted"
        report = fleet.report("fresh")
        assert {t["status"] for t in report["tracks"]} == {"ok"}
        assert {t["job_id"] for t in report["tracks"]} == set(emu.jobs)


def test_redis_killed_mid_build_finishes_and_creates_nothing_twice(tmp_path: Path,
                                                                   redis_server: RedisServer) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=(5, 10), audio_seconds=2, rpm=RPM) as emu:
        fleet = Fleet(tmp_path, emu, 16, redis_server.url)
        try:
            for i in range(2):
                fleet.start(f"w{i}")
            wait_until(lambda: emu.creates >= 6)
            redis_server.stop()  # the coordinator dies mid-build
            codes = fleet.wait()
        finally:
            fleet.kill_all()
        assert set(codes.values()) <= {0, 1}, codes
        for i in range(2):
            log = fleet.log(f"w{i}")
            assert "Traceback" not in log and "coordinator" in log and "unreachable" in log, log[-2000:]
        assert max(creates_per_prompt(emu).values()) == 1  # nothing created twice
        assert emu.requests_in_any_window(60.0) <= RPM
