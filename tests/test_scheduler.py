"""The scheduler against a rate-limited emulator: limits kept full, never exceeded, 429s survived."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable

import pytest

from .conftest import Project
from .emulators.aigateway import AIgatewayEmulator
from .emulators.verbatik import VerbatikEmulator

SCALE = 0.01  # 1 virtual minute = 0.6 s


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICBUILD_TIME_SCALE", str(SCALE))
    monkeypatch.setenv("AIGATEWAY_API_KEY", "test-key")


def tracks(n: int) -> str:
    return "".join(f"  - {{id: t{i:02d}, provider: gw, prompt: 'cue number {i}'}}\n" for i in range(n))


def write(project: Project, url: str, rpm: int, n: int, concurrent: int = 50) -> None:
    project.write(f"""\
version: 1
defaults: {{format: wav, duration: 10}}
providers:
  gw: {{type: aigateway, base_url: "{url}", requests_per_minute: {rpm}, max_concurrent: {concurrent}}}
tracks:
""" + tracks(n))


def test_thirty_requests_per_minute_never_exceeded_and_no_track_fails(project: Project) -> None:
    with AIgatewayEmulator(time_scale=SCALE, rpm=30, latency=(30, 90), audio_seconds=2) as emu:
        write(project, emu.url, rpm=30, n=24)
        report = project.build("-j", "50")
        assert report["summary"]["generated"] == 24 and report["summary"]["failed"] == 0
        assert emu.requests_in_any_window(60.0) <= 30
        assert not [e for e in emu.log if e.status == 429], "the client should stay under the limit by itself"
        assert emu.creates == 24


def test_a_server_stricter_than_configured_is_survived_through_retry_after(project: Project) -> None:
    with AIgatewayEmulator(time_scale=SCALE, rpm=20, latency=(30, 90), audio_seconds=2) as emu:
        write(project, emu.url, rpm=120, n=16)
        report = project.build("-j", "50")
        assert report["summary"]["generated"] == 16 and report["summary"]["failed"] == 0
        assert [e for e in emu.log if e.status == 429], "the server's limit was meant to bite"
        assert emu.creates == 16  # a 429 was not processed: re-sending the create is safe


def test_max_concurrent_bounds_jobs_in_flight(project: Project) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=20, audio_seconds=2) as emu:
        write(project, emu.url, rpm=100000, n=12, concurrent=3)
        project.build("-j", "8")
        jobs = sorted(emu.jobs.values(), key=lambda j: j.created)
        for job in jobs:  # at any creation time, at most 3 earlier jobs may still be unfinished
            running = [o for o in jobs if o.created <= job.created < o.created + o.latency]
            assert len(running) <= 3


def interrupt_build(project: Project, env: dict[str, str], ready: Callable[[], bool]) -> int:
    """Run `musicbuild build` in a subprocess, Ctrl-C it once `ready()`, return its exit status."""
    proc = subprocess.Popen([sys.executable, "-m", "musicbuild", "build"], cwd=project.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    return proc.returncode


def test_ctrl_c_while_a_create_waits_for_a_rate_slot_leaves_nothing_ambiguous(project: Project) -> None:
    with AIgatewayEmulator(time_scale=SCALE, rpm=2, latency=600, audio_seconds=2) as emu:
        write(project, emu.url, rpm=2, n=4)
        env = {**os.environ, "MUSICBUILD_TIME_SCALE": str(SCALE), "AIGATEWAY_API_KEY": "test-key"}
        # two creates go out; the other two are queued behind the 2-per-minute limit
        assert interrupt_build(project, env, lambda: emu.creates >= 2) == 130 and emu.creates == 2
        plan = {r["id"]: r["action"] for r in json.loads(project.run("plan", "--json").out)["tracks"]}
        assert sorted(plan.values()) == ["generate", "generate", "resume", "resume"]  # sent ones resume


def test_ctrl_c_during_a_create_keeps_it_journaled_as_possibly_paid(project: Project,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with VerbatikEmulator(time_scale=SCALE, latency=600, audio_seconds=2) as emu:  # its create blocks
        project.write(f"""\
version: 1
providers: {{vb: {{type: verbatik, base_url: "{emu.url}"}}}}
tracks:
  - {{id: song, provider: vb, prompt: a song, format: wav}}
""")
        env = {**os.environ, "MUSICBUILD_TIME_SCALE": str(SCALE), "VERBATIK_API_KEY": "test-key"}
        assert interrupt_build(project, env, lambda: emu.creates >= 1) == 130
        monkeypatch.setenv("VERBATIK_API_KEY", "test-key")
        again = project.run("build")
        assert again.code == 1 and "may have started a paid job" in again.err
        assert emu.creates == 1  # reported, not re-sent
