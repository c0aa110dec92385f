"""When an output's format, `post:` or track changes: the plan's reasons (format-changed,
post-changed) and the dead outputs left behind (`status`, `clean --dead`)."""
from __future__ import annotations

import json
import shutil

from .conftest import Project, actions

TWO = """\
version: 1
defaults: {provider: local, duration: 1}
tracks:
  - {id: theme, prompt: calm harp, format: mp3}
  - {id: sting, prompt: short brass sting, format: wav}
"""


def _plan(project: Project) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads(project.run("plan", "--json").out)["tracks"]}


def _status(project: Project) -> dict:
    return json.loads(project.run("status", "--json").out)


def test_a_format_change_says_format_changed_and_leaves_a_dead_output(project: Project) -> None:
    project.write(TWO)
    project.build()
    project.edit("format: mp3", "format: ogg")
    row = _plan(project)["theme"]
    assert (row["action"], row["reasons"]) == ("materialize", ["format-changed"])
    report = project.build()
    assert actions(report)["theme"] == "materialize" and report["summary"]["generated"] == 0

    dead = _status(project)["dead"]
    assert dead == [{"path": "theme.mp3", "track": "theme", "reason": "track theme now writes theme.ogg",
                     "modified": False}]
    assert "theme.mp3: track theme now writes theme.ogg" in project.run("status").out
    result = project.run("clean", "--dead")
    assert result.code == 0 and "removed theme.mp3 (track theme now writes theme.ogg)" in result.err
    assert not project.out("theme.mp3").exists() and project.out("theme.ogg").exists()
    assert _status(project)["dead"] == [] and project.run("check").code == 0


def test_format_change_at_the_same_path_and_post_change(project: Project) -> None:
    project.write(TWO.replace("format: wav}", "format: wav, out: sting.audio}"))
    project.build()
    project.edit("format: wav, out", "format: flac, out")
    assert _plan(project)["sting"]["reasons"] == ["format-changed"]
    project.build()
    project.edit("format: flac, out: sting.audio}", "format: flac, out: sting.audio, post: {channels: 1}}")
    assert _plan(project)["sting"]["reasons"] == ["post-changed"]
    project.build()
    project.edit("post: {channels: 1}}", "post: {channels: 1}, metadata: {title: Sting}}")
    assert _plan(project)["sting"]["reasons"] == ["metadata-changed"]


def test_removed_tracks_leave_dead_outputs_only_unmodified_ones_are_removed(project: Project) -> None:
    project.write(TWO + "  - {id: extra, prompt: soft pad, format: flac}\n  - {id: gone, prompt: rain, format: wav}\n")
    project.build()
    project.write(TWO)
    (project.out("gone.wav")).write_bytes(project.out("gone.wav").read_bytes() + b"edited")
    (project.out("notes.txt")).write_text("not ours")
    dead = {d["path"]: d for d in _status(project)["dead"]}
    assert set(dead) == {"extra.flac", "gone.wav"}
    assert dead["extra.flac"]["reason"] == "track extra is no longer in the manifest"
    assert dead["gone.wav"]["modified"] is True

    assert project.run("clean", "--dead", "--dry-run").code == 0 and project.out("extra.flac").exists()
    result = project.run("clean", "--dead")
    assert "removed extra.flac" in result.err and "kept gone.wav: modified since musicbuild wrote it" in result.err
    assert not project.out("extra.flac").exists() and project.out("gone.wav").exists()
    assert project.out("notes.txt").exists() and project.out("theme.mp3").exists()
    assert project.run("clean", "--dead", "theme").code == 2  # dead outputs belong to no target


def test_the_lock_remembers_outputs_when_the_cache_is_gone(project: Project) -> None:
    project.write(TWO + "  - {id: gone, prompt: rain, format: wav}\n")
    project.build()
    project.write(TWO)
    shutil.rmtree(project.root / ".musicbuild")
    assert [d["path"] for d in _status(project)["dead"]] == ["gone.wav"]
    assert not (project.root / ".musicbuild").exists()  # status wrote nothing
    assert project.run("clean", "--dead").code == 0 and not project.out("gone.wav").exists()
