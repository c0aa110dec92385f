"""Shared fixtures: run the real CLI in-process against manifests written into tmp_path."""
from __future__ import annotations

import json
import os
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from musicbuild.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@dataclass
class Run:
    code: int
    out: str
    err: str


class Project:
    """A manifest folder in tmp_path and helpers to build it like a user would."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys

    @property
    def manifest(self) -> Path:
        return self.root / "musicbuild.yaml"

    def write(self, text: str, name: str = "musicbuild.yaml") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def edit(self, old: str, new: str) -> None:
        text = self.manifest.read_text()
        assert old in text, f"{old!r} not in manifest"
        self.manifest.write_text(text.replace(old, new, 1))

    def run(self, *args: str) -> Run:
        self.capsys.readouterr()
        code = main(["-f", str(self.manifest), *args])
        captured = self.capsys.readouterr()
        return Run(code, captured.out, captured.err)

    def build(self, *args: str) -> dict:
        report = self.root / "report.json"
        report.unlink(missing_ok=True)
        result = self.run("build", "--report", str(report), *args)
        assert result.code == 0, result.err
        return json.loads(report.read_text())

    def out(self, rel: str) -> Path:
        return self.root / "build" / rel


@pytest.fixture
def project(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.delenv("MUSICBUILD_CACHE_DIR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return Project(tmp_path, capsys)


@pytest.fixture
def example(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Copy an example folder (without build products) into tmp_path."""
    monkeypatch.delenv("MUSICBUILD_CACHE_DIR", raising=False)

    def copy(name: str) -> Project:
        dest = tmp_path / name
        shutil.copytree(EXAMPLES / name, dest, ignore=shutil.ignore_patterns("build", ".musicbuild", "musicbuild.lock"))
        return Project(dest, capsys)

    return copy


KEY_VARS = ("AIGATEWAY_API_KEY", "VERBATIK_API_KEY", "SONAUTO_API_KEY", "BEATRA_API_KEY")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a build: time scale and every provider's key (also for subprocesses)."""
    monkeypatch.setenv("MUSICBUILD_TIME_SCALE", str(hosted_scale()))
    monkeypatch.setenv("CI", "1")  # plain progress lines, never the live display
    for var in KEY_VARS:
        monkeypatch.setenv(var, "test-key")
    return dict(os.environ)



def hosted_scale() -> float:
    from .hosted_support import SCALE

    return SCALE


def actions(report: dict) -> dict[str, str]:
    return {t["id"]: t["action"] for t in report["tracks"]}
