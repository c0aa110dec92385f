"""The Python API (`import musicbuild`): the README's example, the same rows as the JSON report,
events, errors; the CLI doing its work only through it; read-only commands writing nothing; and
command-line mistakes answered in words."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import musicbuild
from musicbuild.cli import main

from .conftest import EXAMPLES, ROOT, Project

SMALL = """\
version: 1
defaults: {provider: local, format: wav, duration: 1}
tracks:
  - {id: menu, prompt: calm harp, labels: [ui]}
  - {id: boss, prompt: boss battle drums, labels: [combat]}
"""


def _readme_python() -> str:
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_runs(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "quickstart", tmp_path / "examples" / "quickstart",
                    ignore=shutil.ignore_patterns("build", ".musicbuild", "musicbuild.lock"))
    proc = subprocess.run([sys.executable, "-c", _readme_python()], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("forest-day generate ['new'] $0.00") and len([ln for ln in lines if " ok " in ln]) == 3
    assert "3 generated, 0 up to date" in proc.stdout


def test_rows_events_and_report_are_the_clis(project: Project) -> None:
    project.write(SMALL)
    planned = musicbuild.plan(project.manifest)
    assert planned == json.loads(project.run("plan", "--json").out)["tracks"]
    assert [r["id"] for r in musicbuild.plan(project.manifest, ["label:combat"])] == ["boss"]

    events: list[musicbuild.Event] = []
    result = musicbuild.build(project.manifest, jobs=2, report=project.root / "r.json", on_event=events.append)
    assert result.ok and result.exit_code == 0 and not result.noop
    assert result.report == json.loads((project.root / "r.json").read_text())
    assert events[0].kind == "planned" and [r["id"] for r in events[0].tracks] == ["menu", "boss"]
    assert sorted(e.kind for e in events[1:] if e.kind != "state") == ["finished"] * 2 + ["started"] * 2
    assert {e.state for e in events if e.kind == "state"} >= {"generating", "encoding"}  # tests/test_progress.py
    finished = {e.track["id"]: e.track for e in events if e.kind == "finished"}
    assert finished == {r["id"]: r for r in result.rows}
    assert musicbuild.last_report(project.manifest) == result.report

    count = len(events)
    again = musicbuild.build(project.manifest, on_event=events.append)  # a path, no targets: the stamp answers
    assert again.noop and again.ok and len(events) == count
    assert [r["action"] for r in again.rows] == ["up-to-date", "up-to-date"]
    assert musicbuild.check(project.manifest) == [] and musicbuild.status(project.manifest).dead == []


def test_errors_carry_the_cli_message_and_exit_code(project: Project) -> None:
    project.write(SMALL)
    with pytest.raises(musicbuild.UsageError) as caught:
        musicbuild.build(project.manifest, ["bos"])
    assert caught.value.exit_code == 2 and caught.value.message == "no track matches 'bos' (did you mean 'boss'?)"
    project.write(SMALL.replace("prompt: calm harp", "promt: calm harp"))
    with pytest.raises(musicbuild.ManifestError) as bad:
        musicbuild.load(project.manifest)
    assert "unknown field 'promt' (did you mean 'prompt'?)" in bad.value.message


def test_the_cli_works_only_through_the_api() -> None:
    tree = ast.parse((ROOT / "musicbuild" / "cli.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
                and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
                 and node.module is None for alias in node.names}
    # api does the work; the rest parse, print (console: redacted streams), show progress or complete words
    assert imported <= {"api", "cliparse", "errors", "schema", "progress", "completion", "console", "__version__"}, imported


def test_importing_musicbuild_loads_nothing_until_used() -> None:
    heavy = ["jinja2", "yaml", "jsonschema", "numpy", "httpx", "rich", "diskcache", "mutagen", "soundfile"]
    code = ("import sys; before = set(sys.modules); import musicbuild; print(sorted(set(sys.modules) - before)); "
            f"musicbuild.plan; print([m for m in {heavy!r} if m in sys.modules], 'build' in dir(musicbuild))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["['musicbuild']", "[] True"]  # the API itself loads on first use, and nothing heavy with it


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_read_only_commands_write_nothing_in_a_fresh_folder(project: Project) -> None:
    project.write(SMALL)
    before = _tree(project.root)
    for args in (["plan"], ["plan", "--json"], ["status"], ["status", "--json"], ["check"], ["validate"],
                 ["gc", "--dry-run"], ["clean", "--dry-run"], ["clean", "--dead", "--dry-run"], ["verify"],
                 ["providers"], ["schema"], ["report", "--html", "r.html"]):
        result = project.run(*args)
        assert result.code in (0, 1, 2) and "Traceback" not in result.err, (args, result.err)
        assert _tree(project.root) == before, f"`musicbuild {' '.join(args)}` wrote something"


@pytest.mark.parametrize("url", ["ftp://x.invalid/cache", "foo://bucket/cache"])
def test_a_remote_we_cannot_use_is_a_usage_error(project: Project, url: str) -> None:
    project.write(SMALL)
    before = _tree(project.root)
    result = project.run("build", "--remote", url)
    assert result.code == 2 and result.err.startswith(f"musicbuild: --remote: ") and url.split("/")[0] in result.err
    assert _tree(project.root) == before


@pytest.mark.parametrize("args, message", [
    (["biuld"], "musicbuild: unknown command 'biuld' (did you mean 'build'?); the commands are build, plan,"),
    (["build", "--forse"], "musicbuild: build: unknown option '--forse' (did you mean '--force'?)"),
    (["plan", "--jsn"], "musicbuild: plan: unknown option '--jsn' (did you mean '--json'?)"),
    (["validate", "menu"], "musicbuild: validate: unexpected argument 'menu' (musicbuild validate takes no TARGET)"),
    (["build", "-j", "x"], "musicbuild: build: argument -j/--jobs: must be a whole number of at least 1, not 'x'"),
    (["build", "-j", "0"], "musicbuild: build: argument -j/--jobs: must be a whole number of at least 1, not '0'"),
    (["build", "--max-cost", "nan"], "musicbuild: build: argument --max-cost: must be an amount in USD (0 or more)"),
    (["gc", "--older-than", "soon"], "musicbuild: gc: argument --older-than: must be a number of days (0 or more)"),
    (["build", "--shard", "x"], "musicbuild: build: argument --shard: must look like 2/4, not 'x'"),
    (["init", "--ci", "gitub"], "musicbuild: init: argument --ci: 'gitub' is not one of github, gitlab (did you mean 'github'?)"),
    (["build", "mneu"], "musicbuild: no track matches 'mneu' (did you mean 'menu'?)"),
    (["build", "label:combt"], "musicbuild: no track matches 'label:combt' (did you mean 'label:combat'?)"),
    (["build", "label:zzz"], "musicbuild: no track matches 'label:zzz' (the labels are combat, ui)"),
])
def test_command_line_mistakes_are_answered_in_words(project: Project, args: list[str], message: str) -> None:
    project.write(SMALL)
    result = project.run(*args)
    assert result.code == 2 and result.err.startswith(message), result.err
    assert "_int" not in result.err and "invalid" not in result.err and "Traceback" not in result.err
