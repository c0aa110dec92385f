"""musicbuild.lock, --locked, --frozen, verify and --shard on the local provider."""
from __future__ import annotations

import json

import yaml

from .conftest import Project, actions

MANIFEST = """\
version: 1
defaults: {duration: 1, format: wav}
tracks:
  - {id: zeta, prompt: last by name}
  - {id: alpha, prompt: first by name, format: flac}
  - {id: duo, prompt: two, clips: all, out: "duo-{{ clip }}.wav"}
"""


def test_build_writes_a_sorted_lock_and_leaves_it_alone_when_nothing_changed(project: Project) -> None:
    project.write(MANIFEST)
    project.build()
    lock = project.root / "musicbuild.lock"
    text = lock.read_text()
    data = yaml.safe_load(text)
    assert list(data["tracks"]) == ["alpha", "duo", "zeta"]
    alpha = data["tracks"]["alpha"]
    assert alpha["provider"] == "local" and alpha["model"] == "synth-v1" and alpha["job_ids"]
    assert alpha["outputs"][0]["path"] == "alpha.flac" and len(alpha["outputs"][0]["sha256"]) == 64
    assert data["note"].startswith("written by `musicbuild build`")
    before = lock.stat().st_mtime_ns
    project.build()
    (project.root / ".musicbuild" / "stamps").rename(project.root / "old-stamps")  # force the full path
    project.build()
    assert lock.stat().st_mtime_ns == before


def test_locked_refuses_a_changed_prompt_before_any_work(project: Project) -> None:
    project.write(MANIFEST)
    project.build()
    lock_text = (project.root / "musicbuild.lock").read_text()
    assert project.run("build", "--locked").code == 0
    project.edit("last by name", "last by name remixed")
    result = project.run("build", "--locked")
    assert result.code == 3 and "zeta: its generation spec changed" in result.err
    assert (project.root / "musicbuild.lock").read_text() == lock_text
    assert project.run("plan", "--json").out.count('"generate"') == 1  # nothing was built
    assert project.run("build", "--frozen").code == 3


def test_frozen_builds_only_from_the_cache(project: Project, monkeypatch) -> None:
    project.write(MANIFEST)
    project.build()
    first = {p.name: p.read_bytes() for p in (project.root / "build").iterdir()}
    project.run("clean")
    report = project.build("--frozen")  # same cache: everything materializes
    assert set(actions(report).values()) == {"materialize"}
    assert {p.name: p.read_bytes() for p in (project.root / "build").iterdir()} == first
    project.run("clean")
    monkeypatch.setenv("MUSICBUILD_CACHE_DIR", str(project.root / "empty-cache"))
    result = project.run("build", "--frozen", "--report", str(project.root / "r.json"))
    assert result.code == 1 and "--frozen never contacts a provider" in result.err
    rows = json.loads((project.root / "r.json").read_text())["tracks"]
    assert {r["status"] for r in rows} == {"failed"}
    assert not [p for p in (project.root / "build").rglob("*") if p.is_file()]


def test_verify_names_tampered_and_missing_outputs(project: Project) -> None:
    project.write(MANIFEST)
    project.build()
    assert project.run("verify").code == 0
    with (project.root / "build" / "zeta.wav").open("r+b") as f:
        f.seek(-10, 2)
        f.write(b"x" * 10)
    (project.root / "build" / "duo-1.wav").unlink()
    result = project.run("verify")
    assert result.code == 1
    assert "zeta.wav: content differs from the lock (track zeta)" in result.err
    assert "duo-1.wav: missing (track duo)" in result.err
    assert "1 of 3 outputs match" in result.err


def test_shards_split_the_generations_between_them(project: Project, monkeypatch) -> None:
    project.write("version: 1\ndefaults: {duration: 0.5, format: wav}\ntracks:\n" +
                  "".join(f"  - {{id: t{i}, prompt: cue {i}}}\n" for i in range(12)))
    generated: list[str] = []
    for i in (1, 2, 3):
        monkeypatch.setenv("MUSICBUILD_CACHE_DIR", str(project.root / f"cache-{i}"))
        report = project.build("--shard", f"{i}/3")
        mine = [t["id"] for t in report["tracks"] if t["action"] == "generate" and t["status"] == "ok"]
        others = [t for t in report["tracks"] if t["status"] == "skipped"]
        assert all("another shard" in t["error"] for t in others)
        generated += mine
    assert sorted(generated) == sorted(f"t{i}" for i in range(12))  # each exactly once
    assert project.run("build", "--shard", "4/3").code == 2


def test_gc_scopes(project: Project) -> None:
    project.write(MANIFEST)
    project.build()  # cached: alpha0 duo0 zeta0; the lock records them
    project.edit("last by name", "last by name v2")
    project.build()  # + zeta1; the lock moves to zeta1: zeta0 is referenced by nothing
    project.edit("first by name", "first by name v2")  # the manifest now wants alpha1; the lock still has alpha0
    assert "1 generations" in project.run("gc", "--dry-run").err  # zeta0
    assert "1 generations" in project.run("gc", "--dry-run", "--keep", "lock").err  # zeta0
    assert "2 generations" in project.run("gc", "--dry-run", "--keep", "manifest").err  # zeta0 + alpha0
    assert "4 generations" in project.run("gc", "--dry-run", "--keep", "none").err
    assert "0 generations" in project.run("gc", "--dry-run", "--keep", "none", "--older-than", "1").err  # all young
    assert project.run("gc", "--keep", "bogus").code == 2
    assert "1 generations" in project.run("gc").err
    assert "0 generations" in project.run("gc", "--dry-run").err
