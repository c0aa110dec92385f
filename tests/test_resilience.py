"""Resilience of hosted builds: real HTTP against the four service emulators, the real CLI.

Every test runs on the virtual clock (``SCALE`` real seconds per virtual second, shared by the
emulators and by musicbuild through ``MUSICBUILD_TIME_SCALE``), so 30-90 s jobs take milliseconds.
Manifests are written as JSON, which is YAML.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Iterable

import pytest
import soundfile as sf

from musicbuild.audio.tagging import read_tags

from .conftest import KEY_VARS, Project, Run, actions
from .hosted_support import (FAST, SCALE, blobs, build, one_track, outs, prompts, provider, rows, stray_temp_files,
                             wait_until, write_manifest)
from .emulators.aigateway import AIgatewayEmulator
from .emulators.base import DropConnection, Emulator, Response
from .emulators.beatra import BeatraEmulator
from .emulators.sonauto import SonautoEmulator
from .emulators.verbatik import VerbatikEmulator

# -- 1. a big build across every service ---------------------------------------------------------
def test_forty_tracks_across_all_four_services_then_a_free_rebuild(project: Project, env: dict[str, str]) -> None:
    lat = (30.0, 90.0)
    with AIgatewayEmulator(time_scale=SCALE, latency=lat, audio_seconds=3) as gw, \
            BeatraEmulator(time_scale=SCALE, latency=lat, audio_seconds=3) as bt, \
            VerbatikEmulator(time_scale=SCALE, latency=lat, audio_seconds=3) as vb, \
            SonautoEmulator(time_scale=SCALE, latency=lat, audio_seconds=3) as so:
        emus: list[Emulator] = [gw, bt, vb, so]
        tracks: list[dict[str, Any]] = []

        def add(n: int, prefix: str, **fields: Any) -> None:
            for i in range(n):
                tracks.append({"id": f"{prefix}-{i}", "prompt": f"{prefix} theme number {i}", **fields})

        add(6, "gw-v2", provider="gw", model="sonauto/v2/text-to-music")
        add(6, "gw-mm", provider="gw", model="sony-ai/mmaudio-v2-text-to-audio", tags=["ambient"])
        add(5, "bt-suno", provider="bt", model="suno-5.5", clips="all", out="{{ id }}-{{ clip }}.wav")
        add(5, "bt-mini", provider="bt", model="minimax-music-2.6")
        add(6, "vb", provider="vb", options={"num_songs": 2}, clips="all", out="{{ id }}-{{ clip }}.wav",
            tags=["pop"])
        add(6, "so-v2", provider="so", model="v2", bpm=100)
        add(6, "so-v3", provider="so", model="v3")
        assert len(tracks) == 40
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST), "bt": provider("beatra", bt, **FAST),
                                 "vb": provider("verbatik", vb, **FAST), "so": provider("sonauto", so, **FAST)},
                       tracks)
        started = time.monotonic()
        result, report = build(project, "-j", "16")
        assert result.code == 0, result.err
        assert report["summary"]["generated"] == 40 and report["summary"]["failed"] == 0
        by_id = rows(report)
        files = 0
        for row in by_id.values():
            paths = outs(row)
            assert len(paths) == (2 if row["id"].startswith(("bt-suno", "vb")) else 1), row
            for rel in paths:
                path = project.out(rel)
                info = sf.info(str(path))
                assert info.duration > 2.5 and info.samplerate > 0, rel
                prov = read_tags(path)["provenance"]
                assert prov["PROVIDER"] == row["provider"] and prov["MODEL"] == row["model"], (rel, prov)
                assert prov["JOB_ID"] == row["job_id"], (rel, prov)
                files += 1
        assert files == 40 + 5 + 6
        # the job ids are the services' own
        for row in by_id.values():
            job = row["job_id"]
            known = {"gw": gw.jobs, "bt": bt.tasks, "so": so.tasks}.get(row["provider"])
            if known is not None:
                assert job in known, row
            else:
                assert all(part in vb.tracks for part in job.split(",")) and len(job.split(",")) == 2
        # one create per track, each service saw each prompt exactly once
        for emu in emus:
            assert len(prompts(emu)) == len(set(prompts(emu)))
        assert sorted(p for e in emus for p in prompts(e)) == sorted(t["prompt"] for t in tracks)
        costs = [row["cost_usd"] for row in by_id.values()]
        assert all(c > 0 for c in costs)
        assert report["summary"]["cost_usd"] == pytest.approx(sum(costs)) and report["summary"]["cost_usd"] > 0
        assert by_id["bt-suno-0"]["cost_usd"] == pytest.approx(0.08)
        assert by_id["bt-mini-0"]["cost_usd"] == pytest.approx(0.05)
        # billed for the 3 s each service delivered, not the 4 s asked for (sonauto/v2 takes no duration)
        assert by_id["gw-v2-0"]["cost_usd"] == pytest.approx(0.0013 * 3)
        assert by_id["gw-mm-0"]["cost_usd"] == pytest.approx(0.0010 * 3)
        assert by_id["vb-0"]["cost_usd"] == pytest.approx(0.20 * 6 / 60)
        # every cent: per provider, the report's charges are what each service billed
        spend = report["spend"]
        assert spend["gw"]["charged_usd"] == pytest.approx(gw.cost_usd, abs=5e-5)
        assert spend["bt"]["charged_usd"] - spend["bt"]["refunded_usd"] == pytest.approx(
            (bt.credits_charged - bt.credits_refunded) / 1000)
        assert spend["vb"]["charged_usd"] == pytest.approx(vb.cost_usd, abs=5e-5)
        assert spend["so"]["charged_usd"] == pytest.approx(so.credits_used * 11 / 20000, abs=5e-5)
        assert all(row["cost_basis"] in ("billed", "measured", "price") for row in by_id.values())

        before = [len(e.log) for e in emus]
        result, again = build(project, "-j", "16")
        assert result.code == 0, result.err
        assert set(actions(again).values()) == {"up-to-date"} and again["summary"]["cost_usd"] == 0
        assert [len(e.log) for e in emus] == before
        # the same with the full check (a target list skips the null-build stamp)
        result, again = build(project, "-j", "16", "*")
        assert result.code == 0 and set(actions(again).values()) == {"up-to-date"}
        assert [len(e.log) for e in emus] == before
        assert stray_temp_files(project.root / "build") == []
        assert time.monotonic() - started < 15


# -- 2. kill -9 in the middle of a build, then build again -------------------------------------------
class HangingBeatra(BeatraEmulator):
    """Creates the task for ``hang_prompt`` (it exists and is charged) and never answers that request."""

    def __init__(self, hang_prompt: str, **kwargs: Any) -> None:
        self.hang_prompt = hang_prompt
        self.hanging = threading.Event()
        self.release = threading.Event()
        super().__init__(**kwargs)

    def create(self, req: Any, kind: str) -> Response:
        resp = super().create(req, kind)
        if resp.status == 202 and json.loads(req.body).get("prompt") == self.hang_prompt and not self.hanging.is_set():
            self.hanging.set()
            self.release.wait(30)
            raise DropConnection()
        return resp


def test_kill_9_mid_build_then_rerun_resumes_without_paying_twice(project: Project, env: dict[str, str]) -> None:
    long = (500.0, 600.0)  # 1.5-1.8 s real: the build is killed while these jobs run
    with AIgatewayEmulator(time_scale=SCALE, latency=long, audio_seconds=3) as gw, \
            HangingBeatra("bt-1 song", time_scale=SCALE, latency=long, audio_seconds=3) as bt, \
            VerbatikEmulator(time_scale=SCALE, latency=long, audio_seconds=3, respond_pending=True) as vb, \
            SonautoEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as so:
        limits = {"requests_per_minute": 100000}
        tracks = [{"id": f"gw-{i}", "provider": "gw", "prompt": f"gw-{i} song"} for i in range(4)]
        tracks += [{"id": f"bt-{i}", "provider": "bt", "model": "minimax-music-2.6", "prompt": f"bt-{i} song"}
                   for i in range(4)]
        tracks += [{"id": f"vb-{i}", "provider": "vb", "prompt": f"vb-{i} song"} for i in range(2)]
        tracks += [{"id": f"so-{i}", "provider": "so", "prompt": f"so-{i} song"} for i in range(2)]
        write_manifest(project, {"gw": provider("aigateway", gw, max_concurrent=2, **limits),
                                 "bt": provider("beatra", bt, max_concurrent=2, **limits),
                                 "vb": provider("verbatik", vb, max_concurrent=1, **limits),
                                 "so": provider("sonauto", so, max_concurrent=2, **limits)}, tracks)
        log = project.root / "killed.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "musicbuild", "-f", str(project.manifest), "build",
                                     "-j", "16"], cwd=project.root, env=env, stdout=sink, stderr=sink)
            try:
                # kill once the fast service is done and every slot of the slow ones holds a running job,
                # one of them a beatra create whose answer never came
                wait_until(lambda: (gw.creates == 2 and len(bt.tasks) == 2 and bt.hanging.is_set()
                                    and vb.creates == 1 and all(project.out(f"so-{i}.wav").exists() for i in (0, 1)))
                           or proc.poll() is not None, what="the build to fill its slots")
                time.sleep(0.25)  # let the journal catch up with the answers
                assert proc.poll() is None, log.read_text()
                os.kill(proc.pid, signal.SIGKILL)
                assert proc.wait(10) == -signal.SIGKILL
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                bt.release.set()
        # the killed build's jobs are still running on the services, and its journal knows them
        assert all(gw.state(j) == "running" for j in gw.jobs.values())
        assert all(bt.status(t) in ("queued", "running") for t in bt.tasks.values())
        before = {"gw": list(gw.jobs), "bt": list(bt.tasks), "vb": list(vb.tracks)}
        assert not any(project.out(f"{p}-{i}.wav").exists() for p in ("gw", "bt") for i in range(4))
        plan = {t["id"]: t["action"] for t in json.loads(project.run("plan", "--json").out)["tracks"]}
        assert sorted(a for i, a in plan.items() if a == "resume") == ["resume"] * 5, plan
        assert plan["bt-1"] == "resume" and plan["vb-0"] == "resume"
        for emu in (gw, bt, vb):
            emu.latency = 10.0  # jobs submitted from now on are quick; the running ones keep their latency

        result, report = build(project, "-j", "16")
        assert result.code == 0, result.err
        act = actions(report)
        assert {act["so-0"], act["so-1"]} <= {"up-to-date", "materialize"}
        assert sorted(act[f"gw-{i}"] for i in range(4)) == ["generate", "generate", "resume", "resume"]
        assert sorted(act[f"bt-{i}"] for i in range(4)) == ["generate", "generate", "resume", "resume"]
        assert act["bt-1"] == "resume"  # the unanswered create was journaled as an intent
        assert sorted(act[f"vb-{i}"] for i in range(2)) == ["generate", "resume"]
        by_id = rows(report)
        for row in by_id.values():
            assert row["status"] == "ok", row
            path = project.out(outs(row)[0])
            assert sf.info(str(path)).duration > 2.5
            if row["action"] == "resume":  # resumed tracks got the audio of the job the killed build paid for
                assert row["job_id"] in before.get(row["provider"], [row["job_id"]])
                assert read_tags(path)["provenance"]["JOB_ID"] == row["job_id"]
        # never paid twice: one job per track on every service
        for name, emu in (("gw", gw), ("bt", bt), ("vb", vb), ("so", so)):
            assert sorted(prompts(emu)) == sorted(t["prompt"] for t in tracks if t["provider"] == name), name
        assert bt.idempotent_replays == 1  # the lost create was re-sent with its Idempotency-Key and deduplicated
        assert len(bt.idempotency) == 4  # one key per submission
        assert bt.creates == 4 and vb.creates == 2 and gw.creates == 4
        assert stray_temp_files(project.root / "build") == []
        assert not [p for p in blobs(project) if len(p.name) != 64]
        result, report = build(project)
        assert result.code == 0 and set(actions(report).values()) == {"up-to-date"}


# -- 3. a create whose answer is lost on a service without idempotency ---------------------------------
def test_aigateway_dropped_create_is_reported_and_never_resent_until_forced(project: Project,
                                                                              env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        gw.faults.drop_after_create = 1
        write_manifest(project, {"gw": provider("aigateway", gw, requests_per_minute=100000, max_concurrent=1)},
                       [{"id": "lost", "provider": "gw", "prompt": "lost answer"},
                        {"id": "fine", "provider": "gw", "prompt": "fine answer"}])
        result, report = build(project, "-k")
        assert result.code == 1
        lost = rows(report)["lost"]
        assert lost["status"] == "failed"
        assert "may have started a paid job" in lost["error"] and "not re-sent" in lost["error"], lost["error"]
        assert "may have started a paid job" in result.err
        assert rows(report)["fine"]["status"] == "ok"
        assert gw.creates == 2 and len(gw.jobs) == 2  # the service did take the lost request

        posts = sum(1 for e in gw.log if e.method == "POST")
        result, report = build(project, "-k")
        assert result.code == 1
        lost = rows(report)["lost"]
        assert lost["action"] == "resume" and lost["status"] == "failed"
        assert "may have started a paid job" in lost["error"] and "--force" in lost["error"], lost["error"]
        assert sum(1 for e in gw.log if e.method == "POST") == posts and gw.creates == 2
        assert actions(report)["fine"] == "up-to-date"

        result, report = build(project, "--force", "lost")
        assert result.code == 0, result.err
        assert actions(report) == {"lost": "generate"} and gw.creates == 3
        assert sorted(prompts(gw)) == ["fine answer", "lost answer", "lost answer"]
        result, report = build(project)
        assert result.code == 0 and set(actions(report).values()) == {"up-to-date"} and gw.creates == 3


# -- 4. 401 / 402 stop a provider; a 400 fails one track -----------------------------------------------
SECRET = "sk-test-SECRET-1234567890"


def test_401_and_402_stop_only_their_provider_and_name_the_variable(project: Project, env: dict[str, str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGATEWAY_API_KEY", SECRET)
    monkeypatch.setenv("SONAUTO_API_KEY", SECRET)
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3, api_key=SECRET) as gw, \
            SonautoEmulator(time_scale=SCALE, latency=10, audio_seconds=3, api_key=SECRET) as so, \
            BeatraEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as bt:
        gw.faults.auth_error = True
        so.faults.payment_required = True
        one = {"requests_per_minute": 100000, "max_concurrent": 1}
        tracks = [{"id": f"{p}-{i}", "provider": p, "prompt": f"{p} {i}"} for p in ("gw", "so") for i in range(3)]
        tracks += [{"id": f"bt-{i}", "provider": "bt", "model": "minimax-music-2.6", "prompt": f"bt {i}"}
                   for i in range(3)]
        write_manifest(project, {"gw": provider("aigateway", gw, **one), "so": provider("sonauto", so, **one),
                                 "bt": provider("beatra", bt, **FAST)}, tracks)
        result, report = build(project, "-k")
        assert result.code == 1
        by_id = rows(report)
        for i in range(3):
            gw_err, so_err = by_id[f"gw-{i}"]["error"], by_id[f"so-{i}"]["error"]
            assert by_id[f"gw-{i}"]["status"] == "failed" and by_id[f"so-{i}"]["status"] == "failed"
            assert "AIGATEWAY_API_KEY" in gw_err and "rejected the API key" in gw_err, gw_err
            assert "SONAUTO_API_KEY" in so_err and "Insufficient credits" in so_err, so_err
            assert "no more jobs are submitted" in gw_err and "no more jobs are submitted" in so_err
            assert by_id[f"bt-{i}"]["status"] == "ok"
        # the first refusal stopped every later submission to that provider
        assert [(e.method, e.status) for e in gw.log] == [("POST", 401)]
        assert [(e.method, e.status) for e in so.log] == [("POST", 402)]
        assert gw.creates == 0 and so.creates == 0 and len(bt.tasks) == 3
        assert SECRET not in result.err + result.out + json.dumps(report)
        assert "AIGATEWAY_API_KEY" in result.err

        # fixed keys: the failed tracks build (nothing was journaled for them)
        gw.faults.auth_error = so.faults.payment_required = False
        result, report = build(project)
        assert result.code == 0, result.err
        assert sorted(set(actions(report).values())) == ["generate", "up-to-date"]
        assert gw.creates == 3 and so.creates == 3


def test_401_without_keep_going_skips_the_rest(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        gw.faults.auth_error = True
        write_manifest(project, {"gw": provider("aigateway", gw, requests_per_minute=100000, max_concurrent=1)},
                       [{"id": f"t{i}", "provider": "gw", "prompt": f"p{i}"} for i in range(3)])
        result, report = build(project)
        assert result.code == 1
        assert sorted(t["status"] for t in report["tracks"]) == ["failed", "skipped", "skipped"]
        assert len(gw.log) == 1


def test_service_rejection_fails_only_that_track_with_the_services_message(project: Project,
                                                                         env: dict[str, str]) -> None:
    # AIgateway answers 404 for a model it does not know (any slug passes our checks); Sonauto via fal
    # refuses prompt + tags + lyrics together, a rule the adapter does not know about
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3,
                           known_models=["sonauto/v2/text-to-music"]) as gw, \
            SonautoEmulator(time_scale=SCALE, latency=10, audio_seconds=3, strict_fal_rules=True) as so:
        one = {"requests_per_minute": 100000, "max_concurrent": 1}
        write_manifest(project, {"gw": provider("aigateway", gw, **one), "so": provider("sonauto", so, **one)}, [
            {"id": "gw-bad", "provider": "gw", "prompt": "x", "model": "acme/no-such-model"},
            {"id": "gw-ok", "provider": "gw", "prompt": "y"},
            {"id": "so-bad", "provider": "so", "prompt": "x", "tags": ["pop"], "lyrics": "la la",
             "instrumental": False},
            {"id": "so-ok", "provider": "so", "prompt": "y", "tags": ["pop"]},
        ])
        result, report = build(project, "-k")
        assert result.code == 1
        by_id = rows(report)
        assert by_id["gw-bad"]["status"] == "failed" and by_id["so-bad"]["status"] == "failed"
        assert "Model 'acme/no-such-model' not found" in by_id["gw-bad"]["error"]
        assert "404" in by_id["gw-bad"]["error"]
        assert "prompt, tags and lyrics cannot all be set" in by_id["so-bad"]["error"]
        assert "400" in by_id["so-bad"]["error"]
        assert by_id["gw-ok"]["status"] == "ok" and by_id["so-ok"]["status"] == "ok"
        assert "prompt, tags and lyrics cannot all be set" in result.err
        # nothing was journaled for the rejected tracks: a later build tries again
        plan = json.loads(project.run("plan", "--json").out)
        assert {t["id"]: t["action"] for t in plan["tracks"]} == {
            "gw-bad": "generate", "gw-ok": "up-to-date", "so-bad": "generate", "so-ok": "up-to-date"}


# -- 5. the API key never reaches any output ------------------------------------------------------------
def zlib_streams(data: bytes) -> Iterable[bytes]:
    """Everything that decompresses from any offset that looks like a zlib header (diskcache values)."""
    start = 0
    while (i := data.find(b"\x78", start)) >= 0:
        start = i + 1
        if data[i + 1:i + 2] not in (b"\x01", b"\x5e", b"\x9c", b"\xda"):
            continue
        try:
            out = zlib.decompressobj().decompress(data[i:i + 4_000_000])
        except zlib.error:
            continue
        if out:
            yield out


def sqlite_cells(path: Path) -> Iterable[bytes]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    if isinstance(cell, bytes):
                        yield cell
                        yield from zlib_streams(cell)
                    elif cell is not None:
                        yield str(cell).encode()
    finally:
        con.close()


def assert_secret_absent(secret: str, project: Project, *texts: str) -> int:
    """Scan texts, every file under the project (cache, outputs, reports) and the outputs' tags."""
    needle = secret.encode()
    for text in texts:
        assert secret not in text
    scanned = 0
    for path in project.root.rglob("*"):
        if not path.is_file() or path.name == "musicbuild.yaml":
            continue
        data = path.read_bytes()
        assert needle not in data, path
        for chunk in zlib_streams(data):
            assert needle not in chunk, path
        if data.startswith(b"SQLite format 3"):
            for cell in sqlite_cells(path):
                assert needle not in cell, path
        if path.parent.name == "build" or "build" in path.relative_to(project.root).parts[:1]:
            assert secret not in repr(read_tags(path)), path
        scanned += 1
    return scanned


def test_the_api_key_never_appears_in_output_reports_cache_or_tags(project: Project, env: dict[str, str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS:
        monkeypatch.setenv(var, SECRET)
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3, api_key=SECRET) as gw, \
            BeatraEmulator(time_scale=SCALE, latency=10, audio_seconds=3, api_key=SECRET) as bt, \
            VerbatikEmulator(time_scale=SCALE, latency=10, audio_seconds=3, api_key=SECRET) as vb, \
            SonautoEmulator(time_scale=SCALE, latency=10, audio_seconds=3, api_key=SECRET) as so:
        vb.faults.auth_error = True  # a 401 on the way
        so.faults.fail_jobs = 1.0  # and a failed job
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST), "bt": provider("beatra", bt, **FAST),
                                 "vb": provider("verbatik", vb, **FAST), "so": provider("sonauto", so, **FAST)}, [
            {"id": "gw", "provider": "gw", "prompt": "a", "format": "mp3"},
            {"id": "bt", "provider": "bt", "prompt": "b", "clips": "all", "out": "bt-{{ clip }}.flac",
             "format": "flac"},
            {"id": "vb", "provider": "vb", "prompt": "c"},
            {"id": "so", "provider": "so", "prompt": "d", "format": "ogg"},
            {"id": "gw2", "provider": "gw", "prompt": "e", "format": "m4a"},
        ])
        texts = []
        result, report = build(project, "-k", "-v")
        assert result.code == 1 and report["summary"]["failed"] == 2
        assert "VERBATIK_API_KEY" in result.err
        texts += [result.out, result.err]
        vb.faults.auth_error, so.faults.fail_jobs = False, 0.0
        result, report = build(project, "-v")
        assert result.code == 0, result.err
        texts += [result.out, result.err]
        for cmd in (("plan", "--json"), ("status",), ("check", "-v"), ("validate",), ("gc", "--dry-run")):
            run = project.run(*cmd)
            texts += [run.out, run.err]
        scanned = assert_secret_absent(SECRET, project, *texts)
        assert scanned >= 8
        assert sorted(p.name for p in (project.root / "build").iterdir()) == [
            "bt-1.flac", "bt-2.flac", "gw.mp3", "gw2.m4a", "so.ogg", "vb.wav"]


class EchoingGateway(AIgatewayEmulator):
    """Like some real services, its 401 quotes the key it was sent."""

    def _check_auth(self, req: Any) -> Response | None:
        denied = super()._check_auth(req)
        if denied is not None:
            sent = req.headers.get("authorization", "").removeprefix("Bearer ")
            return Response(401, self.error_body(401, f"Incorrect API key provided: {sent}"))
        return None


def test_a_service_that_echoes_the_key_does_not_leak_it(project: Project, env: dict[str, str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGATEWAY_API_KEY", SECRET)
    with EchoingGateway(time_scale=SCALE, latency=10, audio_seconds=3, api_key="another-key") as gw:
        one_track(project, gw)
        result, report = build(project, "-v")
        assert result.code == 1 and "AIGATEWAY_API_KEY" in result.err
        assert_secret_absent(SECRET, project, result.out, result.err)


def test_a_key_with_a_trailing_newline_is_not_mistaken_for_a_paid_job(project: Project, env: dict[str, str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGATEWAY_API_KEY", SECRET + "\n")  # as pasted into many CI secret stores
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3, api_key=SECRET) as gw:
        one_track(project, gw)
        result, report = build(project)
        assert SECRET not in result.err + json.dumps(report)
        assert "may have started a paid job" not in result.err, result.err
        monkeypatch.setenv("AIGATEWAY_API_KEY", SECRET)
        result, report = build(project)
        assert result.code == 0, result.err
        assert gw.creates == 1


# -- 6. faults --------------------------------------------------------------------------------------------
def arm_after_creates(emu: Emulator, creates: int, **faults: Any) -> None:
    """Switch ``faults`` on the moment the service has taken ``creates`` creates (e.g. a 5xx burst while polling)."""
    original = emu.count_create

    def count_create() -> None:
        try:
            original()
        finally:
            if emu.creates == creates:
                for name, value in faults.items():
                    setattr(emu.faults, name, value)

    emu.count_create = count_create  # type: ignore[method-assign]


def four_services(**kwargs: Any) -> tuple[AIgatewayEmulator, BeatraEmulator, VerbatikEmulator, SonautoEmulator]:
    return (AIgatewayEmulator(time_scale=SCALE, audio_seconds=3, **kwargs),
            BeatraEmulator(time_scale=SCALE, audio_seconds=3, **kwargs),
            VerbatikEmulator(time_scale=SCALE, audio_seconds=3, **kwargs),
            SonautoEmulator(time_scale=SCALE, audio_seconds=3, **kwargs))


def two_tracks_each(project: Project, emus: Iterable[Emulator], **cfg: Any) -> list[dict[str, Any]]:
    gw, bt, vb, so = emus
    tracks = [{"id": f"{p}-{i}", "provider": p, "prompt": f"{p} song {i}"} for p in ("gw", "bt", "vb", "so")
              for i in range(2)]
    for t in tracks:
        if t["provider"] == "bt":
            t["model"] = "minimax-music-2.6"
    settings = {**FAST, **cfg}
    write_manifest(project, {"gw": provider("aigateway", gw, **settings), "bt": provider("beatra", bt, **settings),
                             "vb": provider("verbatik", vb, **settings), "so": provider("sonauto", so, **settings)},
                   tracks)
    return tracks


def test_a_5xx_burst_while_polling_is_retried(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=(30, 60), audio_seconds=3) as gw, \
            SonautoEmulator(time_scale=SCALE, latency=(30, 60), audio_seconds=3) as so, \
            BeatraEmulator(time_scale=SCALE, latency=(30, 60), audio_seconds=3) as bt:
        arm_after_creates(gw, 3, server_errors=5, server_error_status=503)
        arm_after_creates(so, 3, server_errors=5, server_error_status=502)
        bt.faults.server_errors, bt.faults.server_error_status = 3, 500  # beatra: even its creates are retried
        tracks = [{"id": f"{p}-{i}", "provider": p, "prompt": f"{p} {i}"} for p in ("gw", "so", "bt") for i in range(3)]
        for t in tracks[6:]:
            t["model"] = "minimax-music-2.6"
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST), "so": provider("sonauto", so, **FAST),
                                 "bt": provider("beatra", bt, **FAST)}, tracks)
        result, report = build(project)
        assert result.code == 0, result.err
        assert report["summary"]["generated"] == 9
        assert [e.status for e in gw.log].count(503) == 5 and [e.status for e in so.log].count(502) == 5
        assert [e.status for e in bt.log].count(500) == 3
        assert any(e.method == "GET" and e.status == 503 for e in gw.log)
        for emu in (gw, so, bt):
            assert len(prompts(emu)) == 3 == len(set(prompts(emu)))


class GatewayTimeoutAfterCreate(AIgatewayEmulator):
    """The job is created upstream, then the gateway answers 504 (its upstream call timed out)."""

    timeouts = 1

    def create(self, req: Any) -> Response:
        resp = super().create(req)
        if resp.status == 202 and self.timeouts > 0:
            self.timeouts -= 1
            return self._error(504, "Upstream provider timed out", "timeout_error")
        return resp


def test_a_504_answer_to_a_create_is_treated_as_ambiguous(project: Project, env: dict[str, str]) -> None:
    with GatewayTimeoutAfterCreate(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        one_track(project, gw)
        result, report = build(project)
        assert result.code == 1 and gw.creates == 1  # not re-sent within the build: right
        result, report = build(project)
        assert gw.creates == 1, "the 504'd create was sent again: the job is paid twice"
        assert "may have started a paid job" in rows(report)["a"]["error"]


def test_a_429_storm_is_waited_out_without_duplicate_jobs(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=(30, 60), audio_seconds=3) as gw, \
            VerbatikEmulator(time_scale=SCALE, latency=(30, 60), audio_seconds=3) as vb, \
            SonautoEmulator(time_scale=SCALE, latency=(30, 60), audio_seconds=3, retry_after=False) as so:
        for emu in (gw, vb, so):
            emu.faults.rate_limit_storm = 12  # creates first: a 429 was not processed, so re-sending is safe
        tracks = [{"id": f"{p}-{i}", "provider": p, "prompt": f"{p} {i}"} for p in ("gw", "vb", "so") for i in range(3)]
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST), "vb": provider("verbatik", vb, **FAST),
                                 "so": provider("sonauto", so, **FAST)}, tracks)
        result, report = build(project)
        assert result.code == 0, result.err
        for name, emu in (("gw", gw), ("vb", vb), ("so", so)):
            assert [e.status for e in emu.log].count(429) == 12, name
            assert sorted(prompts(emu)) == sorted(t["prompt"] for t in tracks if t["provider"] == name), name
        assert gw.log[0].status == 429 and gw.log[0].method == "POST"


FAILURE_MESSAGES = {"gw": "Upstream provider failed to generate the track",
                    "bt": "The model failed to generate audio", "vb": "the model could not render this track",
                    "so": "Generation failed"}


def test_failed_jobs_fail_their_tracks_and_a_later_build_regenerates_them(project: Project,
                                                                          env: dict[str, str]) -> None:
    emus = four_services(latency=(30, 60))
    with emus[0], emus[1], emus[2], emus[3]:
        for emu in emus:
            emu.faults.fail_jobs = 1.0
        tracks = two_tracks_each(project, emus)
        result, report = build(project, "-k")
        assert result.code == 1 and report["summary"]["failed"] == 8
        for row in report["tracks"]:
            assert row["status"] == "failed" and FAILURE_MESSAGES[row["provider"]] in row["error"], row
            assert row["cost_usd"] == 0
        assert not blobs(project)
        for emu in emus:
            emu.faults.fail_jobs = 0.0
        result, report = build(project)
        assert result.code == 0, result.err
        assert set(actions(report).values()) == {"generate"}  # the journal entries were cleared, not resumed
        for emu in emus:
            assert len(prompts(emu)) == 4 and len(set(prompts(emu))) == 2
        assert len(tracks) == 8


def test_a_job_slower_than_the_timeout_stays_journaled_and_is_resumed(project: Project,
                                                                      env: dict[str, str]) -> None:
    emus = four_services(latency=30)
    with emus[0], emus[1], emus[2], emus[3]:
        gw, bt, vb, so = emus
        vb.respond_pending = True  # the synchronous default cannot outlast a timeout: its create blocks
        for emu in emus:
            emu.faults.slow_factor = 8  # 240 s
        two_tracks_each(project, emus, timeout=60)
        result, report = build(project, "-k")
        assert result.code == 1
        for row in report["tracks"]:
            assert row["status"] == "failed", row
            assert "not finished after 60 s" in row["error"] and "stays journaled" in row["error"], row["error"]
        creates = [e.creates for e in emus]
        assert creates == [2, 2, 2, 2]
        two_tracks_each(project, emus, timeout=900)  # a limit, not part of the generation key
        result, report = build(project)
        assert result.code == 0, result.err
        assert set(actions(report).values()) == {"resume"}
        assert [e.creates for e in emus] == creates
        assert report["summary"]["resumed"] == 8


@pytest.mark.parametrize("fault", ["non_audio", "oversized"])
def test_bad_downloads_fail_the_track_and_store_nothing(project: Project, env: dict[str, str],
                                                        monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    monkeypatch.setattr("musicbuild.providers.hosted.MAX_DOWNLOAD_BYTES", 2**20)
    emus = four_services(latency=(30, 60))
    with emus[0], emus[1], emus[2], emus[3]:
        for emu in emus:
            if fault == "non_audio":
                emu.faults.non_audio_downloads = True
            else:
                emu.faults.oversized_downloads = 3 * 2**20
        two_tracks_each(project, emus)
        result, report = build(project, "-k")
        assert result.code == 1 and report["summary"]["failed"] == 8
        expect = "is not audio" if fault == "non_audio" else "larger than 1 MiB"
        for row in report["tracks"]:
            assert row["status"] == "failed" and expect in row["error"], row["error"]
        assert blobs(project) == []
        assert not (project.root / "build").exists() or not list((project.root / "build").iterdir())
        # the jobs were paid and are journaled: fixed downloads resume them without a new create
        for emu in emus:
            emu.faults.non_audio_downloads, emu.faults.oversized_downloads = False, 0
        result, report = build(project)
        assert result.code == 0, result.err
        assert set(actions(report).values()) == {"resume"}
        assert [e.creates for e in emus] == [2, 2, 2, 2]
        assert len(blobs(project)) == 8


# -- 7. --max-cost -------------------------------------------------------------------------------------------
def test_max_cost_refuses_an_estimate_over_budget_before_any_request(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST)},
                       [{"id": f"t{i}", "provider": "gw", "prompt": f"p{i}", "duration": 30, "model": "acme/any"}
                        for i in range(4)])
        # 4 x 30 s x $0.0013/s = $0.156 (a slug that honours duration)
        result, report = build(project, "--max-cost", "0.15")
        assert result.code == 3, result.err
        assert "estimated cost $0.16 exceeds --max-cost $0.15" in result.err and "nothing was submitted" in result.err
        assert gw.log == [] and not (project.root / "build").exists()
        result, report = build(project, "--max-cost", "0.16")
        assert result.code == 0, result.err
        # the service delivered (and billed) 3 s each
        assert report["summary"]["cost_usd"] == pytest.approx(4 * 3 * 0.0013) and gw.creates == 4


def max_cost_overrun(project: Project, budget: str) -> tuple[Run, dict[str, Any], AIgatewayEmulator]:
    """Four 20 s tracks estimated at $0.026 each ($0.104) on a model that makes at least 40 s ($0.052)."""
    with AIgatewayEmulator(time_scale=SCALE, latency=10, models={"acme/long": (0.0013, 40.0, 190.0, 95.0)}) as gw:
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST)},
                       [{"id": f"t{i}", "provider": "gw", "prompt": f"p{i}", "duration": 20, "model": "acme/long"}
                        for i in range(4)])
        plan = json.loads(project.run("plan", "--json").out)
        assert sum(t["cost_usd"] for t in plan["tracks"]) == pytest.approx(0.104)
        result, report = build(project, "-j", "1", "--max-cost", budget)
        return result, report, gw


def test_max_cost_stops_submitting_when_actual_charges_run_over_the_estimate(project: Project,
                                                                             env: dict[str, str]) -> None:
    result, report, gw = max_cost_overrun(project, "0.104")
    assert result.code == 3, result.err
    assert "--max-cost" in result.err
    by_id = rows(report)
    statuses = [by_id[f"t{i}"]["status"] for i in range(4)]
    submitted = statuses.count("ok")
    assert 1 <= submitted < 4 and statuses == ["ok"] * submitted + ["skipped"] * (4 - submitted), statuses
    for row in by_id.values():
        if row["status"] == "skipped":
            assert "not submitted" in row["error"] and "--max-cost $0.10" in row["error"], row["error"]
            assert row["cost_usd"] == 0
    assert gw.creates == submitted and sorted(prompts(gw)) == [f"p{i}" for i in range(submitted)]
    assert report["summary"]["cost_usd"] == pytest.approx(0.052 * submitted)


def test_max_cost_is_not_exceeded_once_the_actual_charge_is_known(project: Project, env: dict[str, str]) -> None:
    result, report, gw = max_cost_overrun(project, "0.104")
    # t0 costs $0.052, t1 ($0.026 estimated) fits, then $0.104 is spent: t2 must not be submitted
    assert gw.creates == 2, f"{gw.creates} jobs submitted"
    assert report["summary"]["cost_usd"] <= 0.104 + 1e-9


# -- bugs found on the way ----------------------------------------------------------------------------------
def test_tracks_sharing_a_generation_key_pay_once(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST)}, [
            {"id": "theme-mp3", "provider": "gw", "prompt": "main theme", "seed": 7, "format": "mp3"},
            {"id": "theme-ogg", "provider": "gw", "prompt": "main theme", "seed": 7, "format": "ogg"}])
        plan = json.loads(project.run("plan", "--json").out)["tracks"]
        assert plan[0]["cost_usd"] > 0 and plan[1]["cost_usd"] == 0  # estimated once, as it is paid once
        result, report = build(project)
        assert result.code == 0, result.err
        assert len({t["gen_key"] for t in report["tracks"]}) == 1
        assert gw.creates == 1, "one generation key, two paid jobs"
        assert len({t["job_id"] for t in report["tracks"]}) == 1


def test_beatra_custom_mode_vocal_song_needs_title_and_lyrics_before_any_request(project: Project,
                                                                               env: dict[str, str]) -> None:
    with BeatraEmulator(time_scale=SCALE) as bt:
        write_manifest(project, {"bt": provider("beatra", bt)}, [
            {"id": "a", "provider": "bt", "model": "suno-5.5", "prompt": "x", "instrumental": False,
             "options": {"model_options": {"suno": {"custom_mode": True}}}}])
        result = project.run("build")
        assert result.code == 2, result.err
        assert "custom-mode vocal song needs lyrics" in result.err
        assert bt.log == []
