"""The edit loop's fixed cost (issue 11): what planning and building a manifest of built-in types
imports. The provider registry answers built-in types from ``catalog.BUILTIN`` (no adapter module,
no entry-point scan), Jinja waits for a template that is more than ``{{ name }}``s, and httpx, PyAV
and asyncio wait for a build that needs them. Each check runs in a fresh interpreter."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from musicbuild import specmemo
from musicbuild.providers import registry
from musicbuild.providers.catalog import BUILTIN, TYPES

MANIFEST = """\
version: 1
vars: {game: Moonfall}
output_dir: out
providers:
  studio: {type: local, options: {sample_rate: 22050}}
defaults: {format: wav, duration: 0.2, metadata: {album: "{{ game }} OST"}}
tracks:
  - {id: title, prompt: "title theme for {{ game }}", seed: 1}
  - {id: forest, provider: studio, prompt: "calm forest", seed: 2}
"""

# runs in the project folder; prints which of the watched modules each step left loaded
SCRIPT = """\
import json, sys
from musicbuild import api
WATCH = %r
steps = {}
api.plan("musicbuild.yaml")
steps["plan"] = sorted(m for m in WATCH if m in sys.modules)
%s
print(json.dumps(steps))
"""
BUILD = """\
api.build("musicbuild.yaml")
steps["build"] = sorted(m for m in WATCH if m in sys.modules)
"""
ADAPTERS = [value.partition(":")[0] for name, value in registry.BUILTIN_ENTRY_POINTS.items() if name != "local"]
NOT_FOR_PLAN = ["httpx", "importlib.metadata", "jinja2", "asyncio", "av", *ADAPTERS]
NOT_FOR_BUILD = ["httpx", "importlib.metadata", "jinja2", "av", *ADAPTERS]


def _loaded(project: Path, build: bool) -> dict[str, list[str]]:
    (project / "musicbuild.yaml").write_text(MANIFEST)
    code = SCRIPT % (sorted(set(NOT_FOR_PLAN + NOT_FOR_BUILD)), BUILD if build else "")
    run = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_planning_builtin_types_imports_no_adapter_no_plugin_scan_no_jinja(tmp_path: Path) -> None:
    steps = _loaded(tmp_path, build=False)
    assert [m for m in steps["plan"] if m in NOT_FOR_PLAN] == []


def test_a_local_build_imports_no_http_client_and_no_ffmpeg(tmp_path: Path) -> None:
    steps = _loaded(tmp_path, build=True)
    assert [m for m in steps["build"] if m in NOT_FOR_BUILD] == []
    assert (tmp_path / "out" / "title.wav").is_file() and (tmp_path / "out" / "forest.wav").is_file()


def test_builtin_infos_are_one_table_that_the_adapters_carry() -> None:
    assert list(BUILTIN) == list(registry.BUILTIN_ENTRY_POINTS)
    for name, info in BUILTIN.items():
        cls = registry.adapter(name)
        assert cls is not None and cls.info is info and TYPES[name] is info and registry.problem(name) is None
    assert list(TYPES)[:len(BUILTIN)] == list(BUILTIN)  # listing adds the plugins after the built-ins


def test_installing_or_removing_a_distribution_changes_the_code_fingerprint(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fingerprint = specmemo.code_fingerprint.__wrapped__  # uncached
    monkeypatch.syspath_prepend(str(tmp_path))
    before = fingerprint()
    (tmp_path / "musicbuild_plugin_x-1.0.dist-info").mkdir()
    installed = fingerprint()
    (tmp_path / "musicbuild_plugin_x-1.0.dist-info").rename(tmp_path / "musicbuild_plugin_x-1.1.dist-info")
    upgraded = fingerprint()
    assert len({before, installed, upgraded}) == 3
    (tmp_path / "musicbuild_plugin_x-1.1.dist-info").rmdir()
    assert fingerprint() == before
