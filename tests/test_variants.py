"""Each adapter against each documented variant and fault its service may show (CONTRACTS.md's
conflicts and unknowns, as emulator switches): jobs forgotten after a retention period, 401/402
on a poll, Retry-After as an HTTP date, Verbatik songs that fail after pending or come without a
URL. Every case counts the creates: a variant must never cost a second paid job."""
from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from musicbuild.providers.http import retry_after

from .conftest import Project
from .emulators.aigateway import AIgatewayEmulator
from .emulators.base import Emulator
from .emulators.beatra import BeatraEmulator
from .emulators.sonauto import SonautoEmulator
from .emulators.verbatik import VerbatikEmulator
from .hosted_support import FAST, SCALE, build, provider, rows, write_manifest

ASYNC = {"aigateway": AIgatewayEmulator, "sonauto": SonautoEmulator, "beatra": BeatraEmulator}
ALL = {**ASYNC, "verbatik": VerbatikEmulator}
KEY_VAR = {"aigateway": "AIGATEWAY_API_KEY", "sonauto": "SONAUTO_API_KEY", "beatra": "BEATRA_API_KEY",
           "verbatik": "VERBATIK_API_KEY"}


def one(project: Project, kind: str, emu: Emulator, **cfg: Any) -> None:
    track: dict[str, Any] = {"id": "a", "provider": "p", "prompt": "theme"}
    if kind == "beatra":
        track["model"] = "minimax-music-2.6"
    write_manifest(project, {"p": provider(kind, emu, **FAST, **cfg)}, [track])


def after_first_create(emu: Emulator, **faults: Any) -> None:
    original = emu.count_create

    def arm() -> None:
        original()
        for name, value in faults.items():
            setattr(emu.faults, name, value)

    emu.count_create = arm  # type: ignore[method-assign]


@pytest.mark.parametrize("kind", sorted(ASYNC))
def test_a_job_forgotten_after_its_retention_ends_gone(project: Project, env: dict[str, str], kind: str) -> None:
    with ASYNC[kind](time_scale=SCALE, latency=400, audio_seconds=3, retention=100) as emu:
        one(project, kind, emu, timeout=30)
        assert build(project)[0].code == 1 and emu.creates == 1
        emu.sleep(110)
        one(project, kind, emu, timeout=900)
        result, report = build(project)
        assert result.code == 1 and "no longer knows job" in rows(report)["a"]["error"], result.err
        assert build(project)[0].code == 1 and emu.creates == 1  # gone is an end state: not re-sent
        emu.latency = 10.0
        assert build(project, "--force")[0].code == 0 and emu.creates == 2


@pytest.mark.parametrize("status", [401, 402])
@pytest.mark.parametrize("kind", sorted(ASYNC))
def test_401_or_402_on_a_poll_keeps_the_job(project: Project, env: dict[str, str], kind: str, status: int) -> None:
    with ASYNC[kind](time_scale=SCALE, latency=30, audio_seconds=3) as emu:
        after_first_create(emu, **{"auth_error" if status == 401 else "payment_required_all": True})
        one(project, kind, emu)
        result, report = build(project)
        row = rows(report)["a"]
        assert result.code == 1 and KEY_VAR[kind] in row["error"] and str(status) in row["error"]
        assert row["outstanding_usd"] > 0 or row["charged_usd"] > 0  # the job was paid for
        emu.faults.auth_error = emu.faults.payment_required_all = False
        emu.count_create = type(emu).count_create.__get__(emu)  # type: ignore[method-assign]
        result, report = build(project)
        assert result.code == 0, result.err
        assert rows(report)["a"]["action"] == "resume" and emu.creates == 1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after(answer("7"), 1) == 7.0
    assert 8.0 <= retry_after(answer(formatdate(time.time() + 10, usegmt=True)), 1) <= 10.0
    assert retry_after(answer(formatdate(time.time() - 10, usegmt=True)), 1) == 0.0
    assert 4.0 <= retry_after(answer(formatdate(time.time() + 5, usegmt=True)), 1, scale=1.0) <= 5.0
    assert 0.0 < retry_after(answer("soon"), 1) <= 4.0  # unreadable: a backoff


@pytest.mark.parametrize("kind", sorted(ALL))
def test_a_retry_after_date_is_waited_out(project: Project, env: dict[str, str], kind: str) -> None:
    with ALL[kind](time_scale=SCALE, latency=10, audio_seconds=3, retry_after_format="http-date") as emu:
        emu.faults.rate_limit_storm = 1
        one(project, kind, emu)
        result, _ = build(project)
        assert result.code == 0, result.err
        statuses = [(e.method, e.status, e.t) for e in emu.log if not e.public]
        assert statuses[0][:2] == ("POST", 429) and statuses[1][0] == "POST" and emu.creates == 1
        waited = (statuses[1][2] - statuses[0][2]) * SCALE  # real seconds between the 429 and the retry
        assert waited >= 0.5, f"the retry came {waited:.2f} s after a Retry-After date ~1-2 s ahead"


def test_a_verbatik_song_that_fails_after_pending_fails_its_track_not_the_timeout(project: Project,
                                                                                 env: dict[str, str]) -> None:
    with VerbatikEmulator(time_scale=SCALE, latency=30, audio_seconds=3, respond_pending=True) as vb:
        vb.faults.fail_jobs = 1.0
        one(project, "verbatik", vb)
        result, report = build(project)
        row = rows(report)["a"]
        assert result.code == 1 and "Track generation failed" in row["error"] and row["cost_usd"] == 0
        assert vb.cost_usd == 0
        vb.faults.fail_jobs = 0.0
        assert build(project)[0].code == 0 and vb.creates == 2  # failed, not charged: a new attempt


def test_a_verbatik_ready_song_without_a_url_is_named_not_a_traceback(project: Project, env: dict[str, str]) -> None:
    with VerbatikEmulator(time_scale=SCALE, latency=10, audio_seconds=3, null_urls="ready") as vb:
        write_manifest(project, {"p": provider("verbatik", vb, **FAST)},
                       [{"id": "a", "provider": "p", "prompt": "theme", "options": {"store_audio": False}},
                        {"id": "b", "provider": "p", "prompt": "other theme"}])
        result, report = build(project, "-k")
        assert "no audio URL" in rows(report)["a"]["error"] and "Traceback" not in result.err
        assert rows(report)["b"]["status"] == "ok"  # store_audio: true (the default) gets its URL
        assert vb.creates == 2
