"""Never pay twice, never lose a paid result, report every cent (issue 8), against the emulators.

Each test provokes one hole in the money path (an unreadable create answer, --force on a live job,
a replayed idempotency key, a partial delivery, a job past its retention, a lost cache...) through
the real CLI, then counts what the emulator created and billed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from musicbuild.audio.tagging import read_tags
from musicbuild.journal import JOURNAL_NAME, Journal

from .conftest import Project
from .emulators.aigateway import AIgatewayEmulator
from .emulators.base import Emulator
from .emulators.beatra import BeatraEmulator
from .emulators.sonauto import SonautoEmulator
from .emulators.verbatik import VerbatikEmulator
from .hosted_support import FAST, SCALE, build, prompts, provider, rows, write_manifest

AMBIGUOUS = "may have started a paid job"


def journal(project: Project) -> Journal:
    return Journal(project.root / ".musicbuild")


def states(project: Project) -> list[str]:
    return sorted(r.state for r in journal(project).records())


def gw_track(project: Project, gw: AIgatewayEmulator, **fields: Any) -> None:
    write_manifest(project, {"gw": provider("aigateway", gw, **FAST, **fields.pop("cfg", {}))},
                   [{"id": "a", "provider": "gw", "prompt": "a theme", **fields}])


# -- 1. a 2xx answer the adapter cannot read is an ambiguous create -------------------------------------
@pytest.mark.parametrize("kind", ["aigateway", "sonauto", "verbatik"])
def test_an_unreadable_create_answer_is_ambiguous_and_never_paid_twice(project: Project, env: dict[str, str],
                                                                         kind: str) -> None:
    cls = {"aigateway": AIgatewayEmulator, "sonauto": SonautoEmulator, "verbatik": VerbatikEmulator}[kind]
    with cls(time_scale=SCALE, latency=10, audio_seconds=3) as emu:
        emu.faults.unreadable_creates = 1
        if kind == "sonauto":
            emu.faults.unreadable_body = b'{"status": "ok"}'  # JSON, 200, but no task_id
        write_manifest(project, {"p": provider(kind, emu, **FAST)}, [{"id": "a", "provider": "p", "prompt": "theme"}])
        result, report = build(project)
        assert result.code == 1 and emu.creates == 1
        assert AMBIGUOUS in rows(report)["a"]["error"] and "--force" in rows(report)["a"]["error"]
        assert states(project) == ["ambiguous"]
        assert rows(report)["a"]["outstanding_usd"] > 0  # possibly paid: counted at the estimate
        for _ in range(2):  # never re-sent by a later build
            result, report = build(project)
            assert result.code == 1 and emu.creates == 1, "the unreadable create was sent again: paid twice"
            assert AMBIGUOUS in rows(report)["a"]["error"]
        result, report = build(project, "--force", "a")
        assert result.code == 0, result.err
        assert emu.creates == 2 and states(project) == ["collected", "superseded"]


def test_a_wrapped_create_answer_is_read_not_paid_again(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3, create_shape="wrapped") as gw:
        gw_track(project, gw)
        result, _ = build(project)
        assert result.code == 0, result.err
        assert gw.creates == 1 and states(project) == ["collected"]


def test_beatra_sends_an_unanswered_create_again_with_its_own_key(project: Project, env: dict[str, str]) -> None:
    with BeatraEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as bt:
        bt.faults.unreadable_creates = 1
        write_manifest(project, {"bt": provider("beatra", bt, **FAST)},
                       [{"id": "a", "provider": "bt", "model": "minimax-music-2.6", "prompt": "theme"}])
        result, first = build(project)
        assert result.code == 1 and "same Idempotency-Key" in rows(first)["a"]["error"]
        result, second = build(project)
        assert result.code == 0, result.err
        assert bt.creates == 1 and bt.idempotent_replays == 1 and len(bt.tasks) == 1
        # one task, one charge, reported once across both builds
        spent = first["summary"]["cost_usd"] + second["summary"]["cost_usd"]
        charged = sum(r["charged_usd"] for r in (rows(first)["a"], rows(second)["a"]))
        assert charged == pytest.approx(0.05) and bt.credits_charged == 50
        assert spent == pytest.approx(0.05 + rows(first)["a"]["outstanding_usd"])


# -- 2. --force never orphans a submitted job --------------------------------------------------------------
def test_force_collects_the_submitted_job_first_and_keeps_it_as_a_take(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=200, audio_seconds=3) as gw:
        gw_track(project, gw, cfg={"timeout": 60})
        result, report = build(project)
        assert result.code == 1 and "not finished after 60 s" in rows(report)["a"]["error"]
        first_job = next(iter(gw.jobs))
        gw.latency = 10.0
        gw_track(project, gw, cfg={"timeout": 900})
        result, report = build(project, "--force", "a")
        assert result.code == 0, result.err
        assert gw.creates == 2, "--force must collect the paid job, then create one more"
        second_job = [j for j in gw.jobs if j != first_job][0]
        row = rows(report)["a"]
        assert row["job_id"] == second_job and row["charged_usd"] == pytest.approx(2 * 3 * 0.0013)
        assert read_tags(project.out("a.wav"))["provenance"]["JOB_ID"] == second_job
        from musicbuild.cache import Cache

        with Cache(project.root / ".musicbuild") as cache:
            record = cache.get_generation(row["gen_key"])
            assert record is not None and record["job_id"] == second_job
            assert [e["job_id"] for e in record["earlier"]] == [first_job]  # the paid take is kept
            assert all(cache.has_blob(c["sha256"]) for c in record["earlier"][0]["clips"])
        assert states(project) == ["collected", "collected"]


# -- 3. beatra: a new key for every deliberate attempt; a replay is never new spend ---------------------------
def test_beatra_force_in_the_idempotency_window_is_a_new_paid_attempt(project: Project, env: dict[str, str]) -> None:
    with BeatraEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as bt:
        write_manifest(project, {"bt": provider("beatra", bt, **FAST)},
                       [{"id": "a", "provider": "bt", "model": "minimax-music-2.6", "prompt": "theme"}])
        assert build(project)[0].code == 0
        result, report = build(project, "--force")
        assert result.code == 0, result.err
        assert bt.creates == 2 and bt.idempotent_replays == 0 and len(bt.idempotency) == 2
        assert rows(report)["a"]["cost_usd"] == pytest.approx(0.05) and bt.credits_charged == 100


def test_beatra_failures_never_lock_a_spec_out(project: Project, env: dict[str, str]) -> None:
    with BeatraEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as bt:
        bt.faults.fail_jobs = 1.0
        write_manifest(project, {"bt": provider("beatra", bt, **FAST)},
                       [{"id": "a", "provider": "bt", "model": "minimax-music-2.6", "prompt": "theme"}])
        for _ in range(2):
            result, report = build(project)
            assert result.code == 1 and "failed" in rows(report)["a"]["error"]
            assert rows(report)["a"]["cost_usd"] == 0  # charged at create, refunded on failure
        result, report = build(project, "--force")
        assert result.code == 1 and bt.creates == 3
        bt.faults.fail_jobs = 0.0
        result, report = build(project)
        assert result.code == 0, result.err
        assert bt.creates == 4 and bt.idempotent_replays == 0
        assert (bt.credits_charged - bt.credits_refunded) / 1000 == pytest.approx(report["summary"]["cost_usd"])


# -- 4. a seed the service cannot use is not a variation -----------------------------------------------------
def test_a_seed_the_service_cannot_use_does_not_pay_twice(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw, \
            VerbatikEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as vb:
        tracks = [{"id": "menu", "provider": "gw", "prompt": "calm theme"},
                  {"id": "pause", "provider": "gw", "prompt": "calm theme"},  # same spec, another id
                  {"id": "v1", "provider": "gw", "prompt": "calm theme", "seed": 1},  # a written seed: deliberate
                  {"id": "vb-a", "provider": "vb", "prompt": "calm theme"},  # Verbatik takes a seed: two songs
                  {"id": "vb-b", "provider": "vb", "prompt": "calm theme"}]
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST), "vb": provider("verbatik", vb, **FAST)},
                       tracks)
        plan = {t["id"]: t for t in json.loads(project.run("plan", "--json").out)["tracks"]}
        assert plan["menu"]["gen_key"] == plan["pause"]["gen_key"] != plan["v1"]["gen_key"]
        assert plan["pause"]["estimated_usd"] == 0  # paid once, by menu
        assert plan["vb-a"]["gen_key"] != plan["vb-b"]["gen_key"]
        result, _ = build(project)
        assert result.code == 0, result.err
        assert gw.creates == 2 and vb.creates == 2


# -- 5 and 6. Verbatik: keep what was delivered; URLs that outlive a crash --------------------------------------
def test_verbatik_keeps_the_delivered_song_when_the_other_fails(project: Project, env: dict[str, str]) -> None:
    with VerbatikEmulator(time_scale=SCALE, latency=10, audio_seconds=3, partial_failure=True) as vb:
        write_manifest(project, {"vb": provider("verbatik", vb, **FAST)}, [
            {"id": "all", "provider": "vb", "prompt": "jingle", "options": {"num_songs": 2}, "clips": "all",
             "out": "all-{{ clip }}.wav"},
            {"id": "first", "provider": "vb", "prompt": "sting", "options": {"num_songs": 2}}])
        result, report = build(project, "-k")
        assert result.code == 1
        both, first = rows(report)["all"], rows(report)["first"]
        assert both["status"] == "failed" and "delivered 1 of 2" in both["error"] and "song 2" in both["error"]
        assert project.out("all-1.wav").exists() and not project.out("all-2.wav").exists()
        assert first["status"] == "ok" and first["partial"]["delivered"] == 1
        # each billed for the one song it delivered, as the service billed
        assert both["charged_usd"] == first["charged_usd"] == pytest.approx(0.20 * 3 / 60)
        assert report["summary"]["cost_usd"] == pytest.approx(vb.cost_usd)
        result, report = build(project, "-k")  # the delivered song is kept: nothing is paid again
        assert result.code == 1 and vb.creates == 2 and report["summary"]["cost_usd"] == 0
        assert "delivered 1 of 2" in rows(report)["all"]["error"]


def test_verbatik_asks_for_stored_audio_and_survives_missing_and_expired_urls(project: Project,
                                                                              env: dict[str, str]) -> None:
    with VerbatikEmulator(time_scale=SCALE, latency=30, audio_seconds=3, respond_pending=True,
                          null_urls="pending") as nourl, \
            VerbatikEmulator(time_scale=SCALE, latency=100, audio_seconds=3, respond_pending=True,
                             url_ttl=50) as expiring:
        write_manifest(project, {"a": provider("verbatik", nourl, **FAST),
                                 "b": provider("verbatik", expiring, **FAST, timeout=30)}, [
            {"id": "no-url", "provider": "a", "prompt": "jingle"},
            {"id": "expired-1", "provider": "b", "prompt": "sting one", "options": {"store_audio": False}},
            {"id": "expired-2", "provider": "b", "prompt": "sting two", "options": {"store_audio": False}}])
        result, report = build(project, "-k")
        assert result.code == 1, result.err
        assert nourl.bodies[0]["store_audio"] is True  # the default: URLs that outlive a crash
        assert "no audio URL" in rows(report)["no-url"]["error"]
        assert all("not finished after 30 s" in rows(report)[t]["error"] for t in ("expired-1", "expired-2"))
        expiring.sleep(200)  # the unstored URLs expire before the next build looks
        result, report = build(project, "-k")
        for track in ("expired-1", "expired-2"):  # the file host's 403 is no authentication failure
            error = rows(report)[track]["error"]
            assert "expired" in error and "API key" not in error, error
        assert expiring.creates == 2 and "Traceback" not in result.err


# -- 7. beatra statuses the docs do not list yet -----------------------------------------------------------------
def test_beatra_statuses_it_does_not_document_are_still_running(project: Project, env: dict[str, str]) -> None:
    with BeatraEmulator(time_scale=SCALE, latency=30, audio_seconds=3,
                        extra_statuses=("preparing", "post_processing")) as bt:
        write_manifest(project, {"bt": provider("beatra", bt, **FAST)},
                       [{"id": "a", "provider": "bt", "model": "minimax-music-2.6", "prompt": "theme"}])
        result, report = build(project)
        assert result.code == 0, result.err
        assert bt.creates == 1 and rows(report)["a"]["cost_usd"] == pytest.approx(0.05)
        seen = {bt.status(t, t["start"] + 0.6 * (t["end"] - t["start"])) for t in bt.tasks.values()}
        assert seen == {"preparing"}  # the emulator did show them


# -- 8. a job the service forgot -----------------------------------------------------------------------------------
def test_a_job_past_the_retention_is_gone_named_and_force_moves_on(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=400, audio_seconds=3, retention=100) as gw:
        gw_track(project, gw, cfg={"timeout": 30})
        assert build(project)[0].code == 1 and gw.creates == 1  # timed out: still journaled
        gw.sleep(110)  # past the service's retention
        gw_track(project, gw, cfg={"timeout": 900})
        result, report = build(project)
        assert result.code == 1 and "no longer knows job" in rows(report)["a"]["error"], result.err
        assert states(project) == ["gone"]
        polls = len(gw.log)
        result, report = build(project)  # an explicit end state: not polled again, forever
        assert result.code == 1 and "no longer knows job" in rows(report)["a"]["error"] and len(gw.log) == polls
        plan = json.loads(project.run("plan", "--json").out)["tracks"][0]
        assert plan["job"]["state"] == "gone"
        gw.latency = 10.0
        result, _ = build(project, "--force")
        assert result.code == 0, result.err
        assert gw.creates == 2 and states(project) == ["collected", "superseded"]


# -- 9. cost is what the service billed ----------------------------------------------------------------------------
def test_cost_is_what_was_billed_not_what_was_asked(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=10, url_variant="result.file_url") as gw, \
            VerbatikEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as vb:
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST), "vb": provider("verbatik", vb, **FAST)}, [
            # mmaudio clamps 60 s to 30 s; the answer has no result.duration: the delivered audio is measured
            {"id": "sfx", "provider": "gw", "model": "sony-ai/mmaudio-v2-text-to-audio", "prompt": "rain", "duration": 60},
            {"id": "song", "provider": "vb", "prompt": "pop song", "duration": 180, "options": {"num_songs": 2},
             "clips": "all", "out": "song-{{ clip }}.wav"}])
        plan = {t["id"]: t for t in json.loads(project.run("plan", "--json").out)["tracks"]}
        assert plan["sfx"]["estimated_usd"] == pytest.approx(0.0010 * 30)
        assert plan["song"]["estimated_usd"] == pytest.approx(0.20 * 95 / 60 * 2)  # Sonauto v2's ~95 s, not 180
        assert "picks the length" in plan["song"]["length"]
        text = project.run("plan").out
        assert "picks the length" in text and "clamps duration" in text
        result, report = build(project)
        assert result.code == 0, result.err
        sfx, song = rows(report)["sfx"], rows(report)["song"]
        assert sfx["cost_basis"] == "measured" and sfx["charged_usd"] == pytest.approx(gw.cost_usd, abs=1e-4)
        assert song["charged_usd"] == pytest.approx(vb.cost_usd) == pytest.approx(0.20 * 6 / 60)
        assert report["spend"]["vb"]["estimated_usd"] == pytest.approx(0.20 * 95 / 60 * 2)


# -- 10. paid jobs that fail locally keep their cost -------------------------------------------------------------
def test_a_paid_job_whose_download_fails_is_reported_with_its_cost(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        gw.faults.non_audio_downloads = True
        gw_track(project, gw)
        result, report = build(project)
        assert result.code == 1 and rows(report)["a"]["charged_usd"] == pytest.approx(3 * 0.0013)
        assert report["summary"]["cost_usd"] == pytest.approx(gw.cost_usd)
        gw.faults.non_audio_downloads = False
        result, report = build(project)  # collected, not charged again in the report
        assert result.code == 0 and gw.creates == 1 and report["summary"]["cost_usd"] == 0


def test_402_on_a_poll_keeps_the_job_and_its_cost(project: Project, env: dict[str, str]) -> None:
    with SonautoEmulator(time_scale=SCALE, latency=30, audio_seconds=3) as so:
        write_manifest(project, {"so": provider("sonauto", so, **FAST)},
                       [{"id": f"t{i}", "provider": "so", "prompt": f"song {i}"} for i in range(2)])
        original = so.count_create

        def then_402() -> None:
            original()
            so.faults.payment_required_all = True  # the balance ran out while the job runs

        so.count_create = then_402  # type: ignore[method-assign]
        result, report = build(project, "-k", "-j", "1")
        assert result.code == 1 and so.creates == 1
        t0, t1 = rows(report)["t0"], rows(report)["t1"]
        assert "SONAUTO_API_KEY" in t0["error"] and t0["outstanding_usd"] == pytest.approx(0.055)
        assert t1["status"] == "failed" and "no more jobs are submitted" in t1["error"]
        so.faults.payment_required_all = False
        so.count_create = original  # type: ignore[method-assign]
        result, report = build(project)
        assert result.code == 0, result.err
        assert rows(report)["t0"]["action"] == "resume" and so.creates == 2


def test_max_cost_counts_a_timed_out_job_until_the_service_says(project: Project, env: dict[str, str]) -> None:
    # t0 costs twice its estimate (the model makes at least 40 s); t1 then times out, still running and
    # possibly paid: with $0.078 counted, t2 ($0.026 more) would pass the $0.08 budget
    with AIgatewayEmulator(time_scale=SCALE, latency=10, models={"acme/long": (0.0013, 40.0, 190.0, 95.0)}) as gw:
        original = gw.count_create

        def slow_after_first() -> None:
            original()
            gw.latency = 400.0

        gw.count_create = slow_after_first  # type: ignore[method-assign]
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST, timeout=30)},
                       [{"id": f"t{i}", "provider": "gw", "prompt": f"p{i}", "model": "acme/long", "duration": 20}
                        for i in range(3)])
        result, report = build(project, "-k", "-j", "1", "--max-cost", "0.08")
        assert gw.creates == 2, "a slow job timed out and the build spent past the budget"
        assert rows(report)["t0"]["charged_usd"] == pytest.approx(0.052)
        assert rows(report)["t1"]["outstanding_usd"] == pytest.approx(0.026)
        assert rows(report)["t2"]["status"] == "skipped" and "--max-cost" in rows(report)["t2"]["error"]
        assert report["summary"]["cost_usd"] <= 0.08


# -- 11. the spend table -------------------------------------------------------------------------------------------
def test_reports_carry_estimates_charges_and_a_spend_table(project: Project, env: dict[str, str]) -> None:
    with BeatraEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as bt, \
            AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        bt.faults.fail_jobs = 1.0
        write_manifest(project, {"bt": provider("beatra", bt, **FAST), "gw": provider("aigateway", gw, **FAST)}, [
            {"id": "b", "provider": "bt", "model": "suno-5.5", "prompt": "theme"},
            {"id": "g", "provider": "gw", "prompt": "theme", "model": "acme/any", "duration": 10}])
        plan = json.loads(project.run("plan", "--json").out)["tracks"]
        assert {t["id"]: t["estimated_usd"] for t in plan} == {"b": 0.08, "g": 0.013}
        result, report = build(project, "-k")
        assert result.code == 1
        b, g = rows(report)["b"], rows(report)["g"]
        assert (b["estimated_usd"], b["charged_usd"], b["refunded_usd"], b["cost_usd"]) == (0.08, 0.08, 0.08, 0)
        assert (g["estimated_usd"], g["charged_usd"], g["cost_basis"]) == (0.013, pytest.approx(0.0039), "measured")
        assert report["spend"]["bt"] == {"estimated_usd": 0.08, "charged_usd": 0.08, "refunded_usd": 0.08,
                                         "outstanding_usd": 0.0, "cost_usd": 0.0}
        text = project.run("report").out
        assert "refunded" in text and "outstanding" in text
        lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith(("bt ", "gw "))}
        assert lines["bt"] == ["0.0800", "0.0800", "0.0800", "0.0000", "0.0000"]
        assert lines["gw"][1] == "0.0039"
        table = json.loads(project.run("report", "--journal", "--json").out)["spend"]
        assert table["bt"]["charged_usd"] == 0.08 and table["bt"]["refunded_usd"] == 0.08 and table["bt"]["jobs"] == 1


# -- 13. a lost cache is not a reason to pay -----------------------------------------------------------------------
def three_tracks(project: Project, gw: AIgatewayEmulator) -> None:
    write_manifest(project, {"gw": provider("aigateway", gw, **FAST)},
                   [{"id": f"t{i}", "provider": "gw", "prompt": f"theme {i}"} for i in range(3)])


def test_a_deleted_cache_costs_nothing_the_lock_vouches_for_the_outputs(project: Project, env: dict[str, str]) -> None:
    import shutil

    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        three_tracks(project, gw)
        assert build(project)[0].code == 0 and gw.creates == 3
        shutil.rmtree(project.root / ".musicbuild")
        result, report = build(project)
        assert result.code == 0, result.err
        assert gw.creates == 3 and set(r["action"] for r in report["tracks"]) == {"up-to-date"}
        project.out("t1.wav").write_bytes(b"edited by hand")  # the lock vouches only for what it pinned
        plan = {t["id"]: t["action"] for t in json.loads(project.run("plan", "--json").out)["tracks"]}
        assert plan == {"t0": "up-to-date", "t1": "generate", "t2": "up-to-date"}


def test_a_damaged_index_is_set_aside_and_nothing_is_paid_again(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        three_tracks(project, gw)
        assert build(project)[0].code == 0
        (project.root / "build" / "t2.wav").unlink()  # needs the cached generation again
        db = project.root / ".musicbuild" / "index" / "cache.db"
        db.write_bytes(b"this is not a database" * 100)
        result, report = build(project)
        assert result.code == 0, result.err
        assert "cache index was damaged" in result.err
        assert gw.creates == 3  # the journal found the generation's blobs, the lock the other outputs
        assert {r["id"]: r["action"] for r in report["tracks"]} == {"t0": "up-to-date", "t1": "up-to-date",
                                                                    "t2": "materialize"}


def test_a_damaged_journal_stops_the_build_before_anything_is_paid(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        three_tracks(project, gw)
        assert build(project)[0].code == 0
        path = project.root / ".musicbuild" / JOURNAL_NAME
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]))
        project.edit("theme 0", "theme zero")
        result = project.run("build")
        assert result.code == 2 and gw.creates == 3
        assert f"{JOURNAL_NAME} is damaged at line 2" in result.err and "nothing will be submitted" in result.err
        assert "Traceback" not in result.err


def test_a_torn_last_journal_line_is_a_crash_not_damage(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    rec = j.begin("k" * 64, provider="p", type="aigateway", base_url="", model="m", track="t", estimate_usd=1.0)
    j.move(rec, "sent")
    j.close()
    with (tmp_path / JOURNAL_NAME).open("ab") as f:
        f.write(b'{"gen_key": "kkk", "sta')  # the write a kill -9 cut short
    again = Journal(tmp_path)
    assert again.live("k" * 64).state == "sent"
    again.move(again.live("k" * 64), "ambiguous", error="x")
    assert b"sta\n" not in (tmp_path / JOURNAL_NAME).read_bytes()  # rewritten without the torn line
    assert Journal(tmp_path).live("k" * 64).state == "ambiguous"


def test_the_journal_is_written_again_when_its_folder_is_deleted_mid_build(tmp_path: Path) -> None:
    import shutil

    j = Journal(tmp_path / "cache")
    rec = j.begin("k" * 64, provider="p", type="aigateway", base_url="", model="m", track="t", estimate_usd=1.0)
    rec = j.move(j.move(rec, "sent"), "submitted", job_id="job-1")
    shutil.rmtree(tmp_path / "cache")  # rm -rf .musicbuild while the build runs
    j.move(rec, "done")
    back = Journal(tmp_path / "cache")
    assert back.live("k" * 64).state == "done" and back.live("k" * 64).job_id == "job-1"


def test_the_state_machine_refuses_edges_it_does_not_have(tmp_path: Path) -> None:
    from musicbuild.journal import TRANSITIONS, TransitionError

    j = Journal(tmp_path)
    rec = j.begin("k" * 64, provider="p", type="aigateway", base_url="", model="m", track="t", estimate_usd=1.0)
    with pytest.raises(TransitionError):
        j.move(rec, "submitted")  # a create that was never marked sent cannot have a job id
    with pytest.raises(TransitionError):
        j.begin("k" * 64, provider="p", type="aigateway", base_url="", model="m", track="t", estimate_usd=1.0)
    assert TRANSITIONS["collected"] == frozenset() and "refused" in TRANSITIONS["sent"]


def test_adopting_the_fleets_journal_never_unplugs_it_for_other_threads(tmp_path: Path) -> None:
    # a collected job is stored from a worker thread while the event loop adopts a dead runner's
    # records: that move must still reach the fleet's journal, not be dropped for the moment
    class Mirror:
        display = "memory"

        def __init__(self) -> None:
            self.put_states: list[tuple[str, str]] = []
            self.docs: dict[str, list[dict]] = {}

        def get(self, gen_key: str) -> list[dict]:
            return self.docs.get(gen_key, [])

        def put(self, doc: dict) -> None:
            self.put_states.append((doc["gen_key"], doc["state"]))

    mirror = Mirror()
    j = Journal(tmp_path, mirror=mirror)
    mine = j.begin("a" * 64, provider="p", type="aigateway", base_url="", model="m", track="t", estimate_usd=1.0)
    other = Journal(tmp_path / "dead-runner")
    dead = other.begin("b" * 64, provider="p", type="aigateway", base_url="", model="m", track="u", estimate_usd=1.0)
    mirror.docs["b" * 64] = [other.move(dead, "sent").to_json()]
    remember = j._remember
    seen: list[object] = []

    def meanwhile(rec):  # what another thread's move would find while the adopted record is written
        remember(rec)
        seen.append(j.mirror)
    j._remember = meanwhile  # type: ignore[method-assign]
    assert j.adopt_shared(["b" * 64]) == 1
    assert seen == [mirror]  # still plugged in: a concurrent move reaches the fleet's journal
    j.move(mine, "sent")
    assert ("a" * 64, "sent") in mirror.put_states
    assert ("b" * 64, "sent") not in mirror.put_states  # what came from the fleet is not written back


# -- a paid job whose track changed is still collected -----------------------------------------------------------
def test_a_paid_job_whose_spec_changed_is_collected_not_orphaned(project: Project, env: dict[str, str]) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=200, audio_seconds=3) as gw:
        gw_track(project, gw, cfg={"timeout": 60})
        assert build(project)[0].code == 1  # timed out, still running on the service
        gw.latency = 10.0
        write_manifest(project, {"gw": provider("aigateway", gw, **FAST)},
                       [{"id": "a", "provider": "gw", "prompt": "a new theme"}])  # the user changed the prompt
        result, report = build(project)
        assert result.code == 0, result.err
        assert [c["status"] for c in report["collected"]] == ["collected"]
        assert report["collected"][0]["charged_usd"] == pytest.approx(3 * 0.0013)
        assert report["summary"]["cost_usd"] == pytest.approx(gw.cost_usd)
        gw_track(project, gw)  # back to the old prompt: its paid audio is in the cache
        result, report = build(project)
        assert result.code == 0 and rows(report)["a"]["action"] == "materialize" and gw.creates == 2


def emulator_creates(*emus: Emulator) -> list[int]:
    return [e.creates for e in emus]


def test_the_same_prompt_reaches_each_service_once(project: Project, env: dict[str, str]) -> None:
    """A guard for the tests above: the emulators count what they were sent."""
    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        three_tracks(project, gw)
        assert build(project)[0].code == 0
        assert sorted(prompts(gw)) == ["theme 0", "theme 1", "theme 2"] and emulator_creates(gw) == [3]


# -- the soak: every fault at once, kill -9 three times ------------------------------------------------------
def test_a_fault_injection_soak_pays_once_and_reports_every_cent(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.money_soak import soak

    result = soak(tracks=120, kills=3, seed=3, folder=tmp_path)
    assert result["duplicate_creates"] == 0, result
    assert abs(result["difference_usd"]) < 0.005, result  # the journal's charges are the services' bills
    assert result["other_failures"] == [], result
    # every track ends built or, when its create's answer was lost, asking for --force (never re-sent)
    assert result["ok_tracks"] + result["tracks_needing_force"] == 120, result
    assert result["tracks_needing_force"] >= result["ambiguous_jobs"]


def test_a_generation_cached_under_the_0_1_key_is_adopted_not_paid_again(project: Project,
                                                                         env: dict[str, str]) -> None:
    import shutil

    from musicbuild.cache import Cache
    from musicbuild.keys import legacy_generation_key
    from musicbuild.manifest import load_manifest

    with AIgatewayEmulator(time_scale=SCALE, latency=10, audio_seconds=3) as gw:
        gw_track(project, gw)
        result, report = build(project)
        assert result.code == 0 and gw.creates == 1
        new = rows(report)["a"]["gen_key"]
        old = legacy_generation_key(load_manifest(project.manifest).tracks[0])
        assert old is not None and old != new
        with Cache(project.root / ".musicbuild") as cache:  # what musicbuild 0.1 left: the key with the seed
            cache.index.set("gen:" + old, cache.index.pop("gen:" + new))
        (project.root / ".musicbuild" / JOURNAL_NAME).unlink()  # 0.1 had no journal file
        (project.root / "musicbuild.lock").unlink()
        shutil.rmtree(project.root / "build")
        result, report = build(project)
        assert result.code == 0, result.err
        assert rows(report)["a"]["action"] == "materialize" and gw.creates == 1


def test_a_job_in_the_0_1_index_journal_is_resumed_not_paid_again(project: Project, env: dict[str, str]) -> None:
    from musicbuild.cache import Cache

    with AIgatewayEmulator(time_scale=SCALE, latency=400, audio_seconds=3) as gw:
        gw_track(project, gw, cfg={"timeout": 30})
        result, report = build(project)  # times out: the job is journaled and still running
        assert result.code == 1 and gw.creates == 1
        gen_key, job_id = rows(report)["a"]["gen_key"], next(iter(gw.jobs))
        (project.root / ".musicbuild" / JOURNAL_NAME).unlink()  # what musicbuild 0.1 left instead:
        with Cache(project.root / ".musicbuild") as cache:
            cache.index.set("job:" + gen_key, {"provider": "gw", "type": "aigateway", "state": "submitted",
                                               "job_id": job_id, "model": "sonauto/v2/text-to-music"})
            cache.index.delete("meta:journal-file")
        gw.latency = 10.0
        gw_track(project, gw, cfg={"timeout": 900})
        result, report = build(project)
        assert result.code == 0, result.err
        assert rows(report)["a"]["action"] == "resume" and rows(report)["a"]["job_id"] == job_id
        assert gw.creates == 1 and states(project) == ["collected"]


def test_a_paid_job_of_a_track_left_unplanned_as_up_to_date_is_no_orphan(tmp_path: Path) -> None:
    """The incremental path plans only changed tracks; a live job of an unchanged track is not
    collected as an orphan (a plan of every track would not either: the track is in the manifest)."""
    from types import SimpleNamespace

    from musicbuild.jobs import orphans

    j = Journal(tmp_path)
    rec = j.begin("u" * 64, provider="p", type="aigateway", base_url="", model="m", track="t", estimate_usd=1.0)
    j.move(j.move(rec, "sent"), "submitted", job_id="job-1")
    providers = {"p": SimpleNamespace(type="aigateway", config=SimpleNamespace(base_url=None))}
    assert [r.job_id for r in orphans(j, providers, [])] == ["job-1"]  # no track wants it: collected
    assert orphans(j, providers, [], also_wanted={"u" * 64}) == []  # its track is up to date, unplanned
