"""Shared fixtures: run the real CLI in-process against manifests written into tmp_path."""
from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from musicbuild.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Real programs some tests start. A missing one skips those tests (never fails the run), and the
# end of the run says which were skipped and how to install what they need.
INSTALL = {
    "nginx": "apt-get install nginx", "chromium": "apt-get install chromium",
    "redis-server": "apt-get install redis-server", "bash": "apt-get install bash", "zsh": "apt-get install zsh",
    "fish": "apt-get install fish",
    "setuptools": "pip install -e '.[test]'", "wheel": "pip install -e '.[test]'",
}
_MISSING = re.compile(r"\b([\w.-]+) (?:is )?(?:not installed|missing)", re.I)


def needs(tool: str) -> pytest.MarkDecorator:
    """Skip unless ``tool`` is on PATH, with a reason the end-of-run summary recognises."""
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} is not installed ({INSTALL[tool]})")


def pytest_configure(config: pytest.Config) -> None:
    """Tests that press Ctrl-C need the programs they start to hear it. A shell without job control
    starts background commands (`cmd &` in a script, some CI runners) with SIGINT ignored, and a
    child inherits that; a handler installed here is reset to the default in every child instead."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    missing: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        found = _MISSING.search(reason)
        if found:
            tool = found.group(1).lower()
            missing[tool] = missing.get(tool, 0) + 1
    if not missing:
        return
    tools = ", ".join(f"{tool} ({n} test{'s' if n > 1 else ''})" for tool, n in sorted(missing.items()))
    commands = sorted({INSTALL.get(tool, f"install {tool}") for tool in missing})
    apt = [c.split()[-1] for c in commands if c.startswith("apt-get install ")]
    hints = ([f"apt-get install {' '.join(apt)}"] if apt else []) + [c for c in commands if not c.startswith("apt-get")]
    terminalreporter.write_line(f"skipped because not installed: {tools}; to run them: {'; '.join(hints)} "
                                "(.ci/run installs nginx and chromium), then the same test command", yellow=True)


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
