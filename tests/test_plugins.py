"""Provider plugins: the built-ins are entry points of the `musicbuild.providers` group, and a real
third-party distribution (tests/plugins/musicbuild-plugin-demo) installed into this venv is listed,
priced, validated and built with through the CLI, then uninstalled."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from musicbuild.providers.registry import BUILTIN_ENTRY_POINTS, GROUP, _load, installed

from .conftest import ROOT

PLUGIN = ROOT / "tests" / "plugins" / "musicbuild-plugin-demo"
MUSICBUILD = [sys.executable, "-m", "musicbuild"]


def test_builtins_are_registered_as_entry_points_like_any_plugin() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][GROUP]
    assert declared == BUILTIN_ENTRY_POINTS
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=GROUP) if ep.dist and ep.dist.name == "musicbuild"}
    assert found == BUILTIN_ENTRY_POINTS, "reinstall: pip install -e '.[test]'"
    for name, entry in installed().items():
        if entry.builtin:
            assert entry.cls is not None and entry.cls.info.name == name and entry.error is None


def test_a_broken_plugin_is_reported_not_fatal() -> None:
    missing = _load("ghost", "no_such_module_xyz:Provider", "ghost-plugin", "1.0")
    assert missing.cls is None and "cannot import no_such_module_xyz:Provider" in missing.error
    wrong = _load("jsonish", "json:dumps", "jsonish", "1.0")
    assert wrong.cls is None and "not a musicbuild.providers.base.Provider subclass" in wrong.error
    misnamed = _load("other", BUILTIN_ENTRY_POINTS["local"], "x", "1")
    assert misnamed.cls is None and "its info names it 'local'" in misnamed.error


@pytest.fixture(scope="module")
def demo_plugin(tmp_path_factory: pytest.TempPathFactory):
    """pip-install the demo plugin (from a copy: building writes into the source folder)."""
    for module in ("setuptools", "wheel"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is missing: pip install -e '.[test]' installs it (building the plugin needs it)")
    source = tmp_path_factory.mktemp("plugin") / "musicbuild-plugin-demo"
    shutil.copytree(PLUGIN, source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["install", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
                   check=True, capture_output=True, timeout=180)
    try:
        yield source
    finally:
        subprocess.run(pip + ["uninstall", "-y", "musicbuild-plugin-demo"], check=True, capture_output=True, timeout=120)


MANIFEST = """\
version: 1
providers:
  tones: {type: demo, model: tone-1, options: {wave: square}}
tracks:
  - {id: beep, provider: tones, prompt: "a beep", duration: 2, format: wav, options: {pitch: 880}}
  - {id: boop, provider: demo, model: tone-2, prompt: "a boop", duration: 1, format: flac}
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(MUSICBUILD + args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_an_installed_plugin_is_listed_priced_validated_and_builds(demo_plugin: Path, tmp_path: Path) -> None:
    listing = json.loads(_run(["providers", "--json"], tmp_path).stdout)["providers"]
    demo = next(p for p in listing if p["name"] == "demo")
    assert demo["package"] == "musicbuild-plugin-demo" and demo["version"] == "0.1.0" and not demo["builtin"]
    assert demo["models"] == ["tone-1", "tone-2"] and demo["options"] == ["pitch", "wave"]
    assert demo["price"] == {"tone-1": "$0.001/s", "other models": "$0.05/job"}
    assert "demo  (plugin musicbuild-plugin-demo 0.1.0)" in _run(["providers"], tmp_path).stdout

    (tmp_path / "musicbuild.yaml").write_text(MANIFEST)
    plan = {r["id"]: r for r in json.loads(_run(["plan", "--json"], tmp_path).stdout)["tracks"]}
    assert plan["beep"]["cost_usd"] == pytest.approx(0.002) and plan["boop"]["cost_usd"] == pytest.approx(0.05)
    build = _run(["build", "--report", "report.json"], tmp_path)
    assert build.returncode == 0, build.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert {t["id"]: t["status"] for t in report["tracks"]} == {"beep": "ok", "boop": "ok"}
    assert report["summary"]["cost_usd"] == pytest.approx(0.052)
    import soundfile as sf

    assert abs(sf.info(str(tmp_path / "build" / "beep.wav")).duration - 2) < 0.01

    # the plugin's option schema and its own rules are checked like any provider's
    (tmp_path / "musicbuild.yaml").write_text(MANIFEST.replace("pitch: 880", "pitch: 5, wavv: sine"))
    bad = _run(["validate"], tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "tracks[0].options.pitch: must be >= 20, not 5 [track beep]" in bad.stderr
    assert "tracks[0].options.wavv: unknown field 'wavv' (did you mean 'wave'?) [track beep]" in bad.stderr


def test_a_type_nothing_registers_is_a_manifest_error(project) -> None:
    project.write("version: 1\nproviders:\n  tones: {type: demoo}\ntracks:\n  - {id: a, prompt: x, provider: tones}\n")
    result = project.run("validate")
    assert result.code == 2
    assert "providers.tones.type: must be an installed provider type (local, aigateway" in result.err
