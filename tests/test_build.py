"""End-to-end builds on the local provider: what is built, what is free, what is never redone."""
from __future__ import annotations

import json
import os
import sqlite3
import zlib
from pathlib import Path

import soundfile as sf

from musicbuild.audio.tagging import read_tags

from .conftest import Project, actions

SMALL = """\
version: 1
vars: {game: Skyforge}
defaults: {provider: local, duration: 1.5, format: wav, metadata: {artist: Tester, album: "{{ game }} OST"}}
tracks:
  - id: calm
    prompt: calm harp theme for {{ game }}
    tags: [ambient]
    labels: [menu]
  - id: battle
    prompt: intense battle drums
    bpm: 150
    format: flac
    labels: [combat]
  - id: synth
    prompt: bright synth loop
    format: mp3
    metadata: {title: Synth Loop}
"""


def files_state(root: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file but reports and the SQLite index (whose WAL is checkpointed
    whenever the last connection of a worker thread is collected, even with nothing to write)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and "report.json" not in p.name and "index" not in p.parts}


def test_first_build_generates_real_tagged_audio(project: Project) -> None:
    project.write(SMALL)
    report = project.build()
    assert report["summary"]["generated"] == 3 and report["summary"]["failed"] == 0
    assert {"version", "manifest", "started_at", "finished_at", "summary", "tracks"} <= set(report)
    assert {"total", "up_to_date", "materialized", "resumed", "generated", "failed", "cost_usd"} <= set(report["summary"])
    for row in report["tracks"]:  # SPEC 6 row fields
        assert {"id", "out", "action", "reasons", "status", "gen_key", "provider", "model", "clips",
                "cost_usd", "seconds", "attempts", "error"} <= set(row)
        assert row["status"] == "ok" and row["clips"] == 1 and row["attempts"] == 1 and len(row["gen_key"]) == 64
    for rel, fmt in [("calm.wav", "WAV"), ("battle.flac", "FLAC"), ("synth.mp3", "MP3")]:
        info = sf.info(str(project.out(rel)))
        assert info.format == fmt and info.channels == 2
        assert abs(info.duration - 1.5) <= 0.1
        tags = read_tags(project.out(rel))
        assert tags["artist"] == "Tester" and tags["album"] == "Skyforge OST"
        prov = tags["provenance"]
        assert prov["PROVIDER"] == "local" and prov["MODEL"] == "synth-v1"
        assert prov["GEN_KEY"] == next(t["gen_key"] for t in report["tracks"] if t["out"] == rel)
        assert prov["JOB_ID"].startswith("local-") and prov["SEED"].isdigit()
    assert read_tags(project.out("synth.mp3"))["title"] == "Synth Loop"
    assert read_tags(project.out("calm.wav"))["title"] == "calm"  # default title: the id
    assert read_tags(project.out("battle.flac"))["bpm"] == "150"


def test_second_build_is_free_and_writes_nothing(project: Project) -> None:
    project.write(SMALL)
    project.build()
    before = files_state(project.root)
    report = project.build()
    assert set(actions(report).values()) == {"up-to-date"}
    assert report["summary"]["up_to_date"] == 3 and report["summary"]["cost_usd"] == 0
    assert files_state(project.root) == before
    # the same answer the long way, without the null-build stamp
    for stamp in (project.root / ".musicbuild" / "stamps").iterdir():
        stamp.unlink()
    report = project.build()
    assert set(actions(report).values()) == {"up-to-date"}
    assert {k: v for k, v in files_state(project.root).items() if not k.startswith(".musicbuild/") or "blobs" in k} == \
        {k: v for k, v in before.items() if not k.startswith(".musicbuild/") or "blobs" in k}


def test_editing_one_prompt_regenerates_exactly_that_track(project: Project) -> None:
    project.write(SMALL)
    first = project.build()
    project.edit("bright synth loop", "dark synth loop")
    report = project.build()
    assert actions(report) == {"calm": "up-to-date", "battle": "up-to-date", "synth": "generate"}
    synth = next(t for t in report["tracks"] if t["id"] == "synth")
    assert synth["reasons"] == ["spec-changed"]
    assert synth["gen_key"] != next(t for t in first["tracks"] if t["id"] == "synth")["gen_key"]


def test_editing_a_title_retags_without_generating(project: Project) -> None:
    project.write(SMALL)
    project.build()
    project.edit("title: Synth Loop", "title: Synth Loop (v2)")
    report = project.build()
    assert actions(report)["synth"] == "materialize"
    assert next(t for t in report["tracks"] if t["id"] == "synth")["reasons"] == ["metadata-changed"]
    assert report["summary"]["generated"] == 0
    assert read_tags(project.out("synth.mp3"))["title"] == "Synth Loop (v2)"


def test_deleted_output_and_format_change_come_from_the_cache(project: Project) -> None:
    project.write(SMALL)
    project.build()
    project.out("calm.wav").unlink()
    report = project.build()
    assert actions(report)["calm"] == "materialize"
    assert next(t for t in report["tracks"] if t["id"] == "calm")["reasons"] == ["output-missing"]
    project.edit("format: flac", "format: ogg")
    report = project.build()
    assert actions(report)["battle"] == "materialize" and report["summary"]["generated"] == 0
    assert sf.info(str(project.out("battle.ogg"))).format == "OGG"


def test_hand_edited_output_is_detected_and_restored(project: Project) -> None:
    project.write(SMALL)
    project.build()
    target = project.out("calm.wav")
    original = target.read_bytes()
    with target.open("r+b") as f:  # same size, different bytes: only the hash can tell
        f.seek(len(original) - 100)
        f.write(b"\x01" * 50)
    status = project.run("status", "--json")
    states = {r["id"]: r["state"] for r in json.loads(status.out)["tracks"]}
    assert states == {"calm": "modified", "battle": "up-to-date", "synth": "up-to-date"}
    assert project.run("check").code == 1
    report = project.build()
    calm = next(t for t in report["tracks"] if t["id"] == "calm")
    assert (calm["action"], calm["reasons"]) == ("materialize", ["output-modified"])
    assert target.read_bytes() == original
    assert project.run("check").code == 0


def test_touched_but_unchanged_output_is_up_to_date(project: Project) -> None:
    project.write(SMALL)
    project.build()
    target = project.out("battle.flac")
    data = target.read_bytes()
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    report = project.build()
    assert set(actions(report).values()) == {"up-to-date"}
    assert target.read_bytes() == data


def test_same_spec_gives_the_same_bytes_with_separate_caches(project: Project, monkeypatch) -> None:
    project.write(SMALL)
    project.build()
    first = {p.name: p.read_bytes() for p in (project.root / "build").iterdir()}
    project.run("clean")
    monkeypatch.setenv("MUSICBUILD_CACHE_DIR", str(project.root / "other-cache"))
    report = project.build()
    assert report["summary"]["generated"] == 3
    assert {p.name: p.read_bytes() for p in (project.root / "build").iterdir()} == first


def test_targets_by_id_glob_and_label(project: Project) -> None:
    project.write(SMALL)
    report = project.build("label:combat")
    assert [t["id"] for t in report["tracks"]] == ["battle"]
    report = project.build("s*", "calm")
    assert actions(report) == {"calm": "generate", "synth": "generate"}
    bad = project.run("build", "nope-*")
    assert bad.code == 2 and "no track matches 'nope-*'" in bad.err


def test_failure_stops_without_k_and_continues_with_k(project: Project) -> None:
    extra = "".join(f"  - {{id: extra{i}, prompt: extra {i}}}\n" for i in range(4))
    project.write(SMALL + extra)
    project.out("battle.flac").mkdir(parents=True)  # a folder where the file must go
    result = project.run("build", "-j", "1", "--report", str(project.root / "r.json"))
    assert result.code == 1
    report = json.loads((project.root / "r.json").read_text())
    statuses = {t["id"]: t["status"] for t in report["tracks"]}
    # jobs already running finish (as make does); nothing new starts after the failure
    assert statuses["battle"] == "failed" and list(statuses.values()).count("skipped") >= 3
    failed = next(t for t in report["tracks"] if t["id"] == "battle")
    assert failed["error"] and "Traceback" not in result.err
    result = project.run("build", "-k", "--report", str(project.root / "r.json"))
    report = json.loads((project.root / "r.json").read_text())
    assert result.code == 1
    assert {t["id"]: t["status"] for t in report["tracks"]} == {
        "calm": "ok", "battle": "failed", "synth": "ok", **{f"extra{i}": "ok" for i in range(4)}}
    assert not [p for p in project.root.rglob("*.tmp*")], "temp files left behind"


def test_plan_status_check_clean_and_gc(project: Project) -> None:
    project.write(SMALL)
    plan = project.run("plan", "--json")
    rows = json.loads(plan.out)["tracks"]
    assert {r["id"]: (r["action"], r["reasons"]) for r in rows} == {
        "calm": ("generate", ["new"]), "battle": ("generate", ["new"]), "synth": ("generate", ["new"])}
    assert not (project.root / "build").exists(), "plan must not write outputs"
    assert project.run("check").code == 1
    project.build()
    assert project.run("check").code == 0
    text = project.run("status").out
    assert "calm: up to date" in text
    removed = project.run("clean")
    assert removed.code == 0 and not project.out("calm.wav").exists()
    assert project.run("status").out.count("missing") == 3
    report = project.build()
    assert set(actions(report).values()) == {"materialize"}  # the cache survived clean
    project.edit("intense battle drums", "intense battle brass")
    project.build()
    dry = project.run("gc", "--dry-run")
    assert "would free" in dry.err and "1 generations" in dry.err
    gone = project.run("gc")
    assert "1 generations" in gone.err
    assert "0 generations" in project.run("gc", "--dry-run").err
    assert set(actions(project.build()).values()) == {"up-to-date"}


def test_cache_index_is_json_not_pickle(project: Project) -> None:
    project.write(SMALL)
    project.build()
    db = sqlite3.connect(project.root / ".musicbuild" / "index" / "cache.db")
    rows = db.execute("SELECT key, mode, value FROM Cache").fetchall()
    assert rows
    for key, mode, value in rows:
        assert mode != 4, f"{key} is pickled"
        json.loads(zlib.decompress(value))
    blobs = list((project.root / ".musicbuild" / "blobs").rglob("*"))
    assert any(sf.info(str(b)).format == "FLAC" for b in blobs if b.is_file())


def test_budget_refuses_before_any_request(project: Project) -> None:
    project.write("""\
        version: 1
        providers:
          gw: {type: aigateway, base_url: "http://127.0.0.1:9", api_key_env: MB_TEST_KEY}
        tracks:
          - {id: paid, provider: gw, prompt: a paid jingle, duration: 60}
        """)
    plan = json.loads(project.run("plan", "--json").out)["tracks"][0]
    # the default model (sonauto/v2) makes ~95 s songs whatever duration says: 95 s x $0.0013/s
    assert plan["cost_usd"] == plan["estimated_usd"] == 0.1235
    assert "picks the length" in plan["length"]
    result = project.run("build", "--max-cost", "0.05")
    assert result.code == 3 and "exceeds --max-cost" in result.err
    assert not (project.root / "build").exists()


def test_a_tracks_seconds_do_not_include_its_wait_for_a_slot(project: Project) -> None:
    # with -j 1 the four tracks run one after another: each one's seconds are its own work (about a
    # quarter of the build), not its work plus its wait for the slot (the last one: the whole build)
    import time

    project.write("version: 1\ndefaults: {provider: local, duration: 40, format: flac}\ntracks:\n"
                  + "".join(f"  - {{id: t{i}, prompt: 'slot test {i}'}}\n" for i in range(4)))
    began = time.monotonic()
    report = project.build("-j", "1")
    wall = time.monotonic() - began
    seconds = [t["seconds"] for t in report["tracks"]]
    assert max(seconds) < 0.7 * wall, (seconds, wall)
