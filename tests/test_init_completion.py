"""`musicbuild init` (a starter project that builds) and shell completion (scripts checked by each
shell's own parser, and the words they get back from `musicbuild __complete`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from musicbuild.cli import main

from .conftest import EXAMPLES, Project, needs

MUSICBUILD_EXE = str(Path(sys.executable).parent / "musicbuild")


def test_init_writes_a_starter_that_builds_and_never_overwrites(project: Project) -> None:
    assert project.run("init", "--ci", "github").code == 0
    manifest = project.manifest.read_text()
    assert "provider: local" in manifest and "matrix:" in manifest and "labels:" in manifest
    assert "# providers:\n#   gateway:\n#     type: aigateway" in manifest  # the hosted block, commented out
    assert (project.root / ".gitignore").read_text().splitlines()[-2:] == ["/.musicbuild/", "/build/music/"]
    workflow = project.root / ".github" / "workflows" / "music.yml"
    assert workflow.read_text() == (EXAMPLES / "ci" / "github" / "music.yml").read_text()

    report = project.build()
    assert report["summary"]["generated"] == 5 and report["summary"]["failed"] == 0
    assert (project.root / "build" / "music" / "levels" / "caves" / "combat.ogg").is_file()
    assert project.run("check").code == 0
    assert [r["id"] for r in project.build("label:menu")["tracks"]] == ["main-menu"]

    before = {p: p.read_bytes() for p in (project.manifest, workflow, project.root / ".gitignore")}
    refused = project.run("init", "--ci", "gitlab")
    assert refused.code == 2 and "init would overwrite" in refused.err and "nothing was written" in refused.err
    assert not (project.root / ".gitlab-ci.yml").exists()
    assert all(p.read_bytes() == data for p, data in before.items())


def test_init_extends_an_existing_gitignore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/\n/.musicbuild/")
    assert main(["-f", str(tmp_path / "musicbuild.yaml"), "init", "--ci", "gitlab"]) == 0
    assert (tmp_path / ".gitignore").read_text().startswith("node_modules/\n/.musicbuild/\n# musicbuild:")
    assert (tmp_path / ".gitignore").read_text().endswith("/build/music/\n")
    assert (tmp_path / ".gitlab-ci.yml").read_text() == (EXAMPLES / "ci" / "gitlab" / ".gitlab-ci.yml").read_text()


def _complete(project: Project, *words: str) -> list[str]:
    project.capsys.readouterr()
    assert main(["__complete", "-f", str(project.manifest), *words]) == 0
    out, err = project.capsys.readouterr()
    assert err == ""
    return [line.split("\t")[0] for line in out.splitlines() if line]


def test_completion_offers_commands_options_ids_and_labels(project: Project) -> None:
    project.write("""\
version: 1
defaults: {provider: local}
tracks:
  - {id: main-menu, prompt: calm, labels: [menu]}
  - id: "level-{{ n }}"
    matrix: {n: [1, 2]}
    prompt: "level {{ n }}"
    labels: [levels, "act-{{ n }}"]
""")
    assert _complete(project, "bu") == ["build"]
    assert _complete(project, "build", "") == ["main-menu", "level-1", "level-2", "label:menu", "label:levels",
                                               "label:act-1", "label:act-2"]
    assert _complete(project, "status", "label:act") == ["label:act-1", "label:act-2"]
    assert _complete(project, "build", "--ke") == ["--keep-going"]
    assert _complete(project, "init", "--ci", "") == ["github", "gitlab"]
    assert _complete(project, "build", "--report", "") == ["@files"]
    assert _complete(project, "completion", "") == ["bash", "zsh", "fish"]
    broken = project.write("version: [")
    assert _complete(project, "build", "") == [] and broken.exists()  # a broken manifest: no words, no noise


@pytest.mark.parametrize("shell, check", [
    pytest.param("bash", ["bash", "-n"], marks=needs("bash")),
    pytest.param("zsh", ["zsh", "-n"], marks=needs("zsh")),
    pytest.param("fish", ["fish", "--no-execute"], marks=needs("fish")),
])
def test_completion_scripts_pass_their_shells_syntax_check(project: Project, shell: str, check: list[str]) -> None:
    result = project.run("completion", shell)
    assert result.code == 0
    script = project.root / f"musicbuild.{shell}"
    script.write_text(result.out)
    done = subprocess.run(check + [str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


GAME = EXAMPLES / "game-score" / "musicbuild.yaml"


@needs("bash")
def test_bash_completion_completes_labels_across_the_colon(project: Project) -> None:
    script = project.root / "musicbuild.bash"
    script.write_text(project.run("completion", "bash").out)
    probe = f"""
source {script}
ask() {{ COMP_LINE="$1"; COMP_POINT=${{#COMP_LINE}}; read -ra COMP_WORDS <<< "$COMP_LINE"
        COMP_WORDS[0]={MUSICBUILD_EXE}; _musicbuild; echo "${{COMPREPLY[*]}}"; }}
ask "musicbuild -f {GAME} build label:level-c"
ask "musicbuild -f {GAME} build game-"
ask "musicbuild pl"
"""
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert out == ["level-caves level-citadel", "game-over", "plan"]  # bash replaces only the part after ':'


@needs("fish")
def test_fish_completion_asks_musicbuild(tmp_path: Path) -> None:
    script = tmp_path / "musicbuild.fish"
    script.write_text(subprocess.run([MUSICBUILD_EXE, "completion", "fish"], capture_output=True, text=True,
                                     check=True).stdout)
    env = {**os.environ, "PATH": f"{Path(MUSICBUILD_EXE).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C 'musicbuild -f {GAME} build label:comb'"],
                         capture_output=True, text=True, timeout=60, env=env).stdout
    assert out.split() == ["label:combat"]
