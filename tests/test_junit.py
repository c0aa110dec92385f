"""The JUnit report: one testcase per track, failures, skips and flaky retries, schema-valid."""
from __future__ import annotations

from pathlib import Path

import pytest
import xmlschema
from junitparser.xunit2 import JUnitXml

from .conftest import Project
from .emulators.aigateway import AIgatewayEmulator

SCHEMA = Path(__file__).parent / "junit.xsd"


def test_junit_report_marks_failed_skipped_and_flaky_tracks(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICBUILD_TIME_SCALE", "0.002")
    monkeypatch.setenv("AIGATEWAY_API_KEY", "test-key")
    with AIgatewayEmulator(time_scale=0.002, latency=10, audio_seconds=1, known_models=["sonauto/v2/text-to-music"]) as emu:
        project.write(f"""\
version: 1
defaults: {{format: wav, duration: 2}}
providers: {{gw: {{type: aigateway, base_url: "{emu.url}", max_concurrent: 1}}}}
tracks:
  - {{id: steady, prompt: calm}}
  - {{id: retried, provider: gw, prompt: retried cue}}
  - {{id: refused, provider: gw, prompt: x, model: no/such-model}}
""")
        emu.faults.rate_limit_storm = 2  # the first requests are refused: the track passes after retries
        junit = project.root / "junit.xml"
        result = project.run("build", "-k", "-j", "1", "--junit", str(junit))
        assert result.code == 1
    xmlschema.XMLSchema(str(SCHEMA)).validate(str(junit))
    suite = next(iter(JUnitXml.fromfile(str(junit))))
    cases = {case.name: case for case in suite}
    assert set(cases) == {"steady", "retried", "refused"}
    assert cases["steady"].is_passed and not cases["steady"].flaky_failures()
    assert cases["retried"].is_passed and cases["retried"].flaky_failures()
    assert "answered 404" in cases["refused"].result[0].message
    assert suite.tests == 3 and suite.failures == 1


def test_report_command_renders_the_last_build_again(project: Project) -> None:
    project.write("version: 1\ndefaults: {duration: 0.5, format: wav}\ntracks:\n  - {id: a, prompt: x}\n  - {id: b, prompt: y}\n")
    first, again = project.root / "first.xml", project.root / "again.xml"
    assert project.run("build", "--shard", "1/2", "--junit", str(first)).code == 0
    assert project.run("report", "--junit", str(again)).code == 0
    assert first.read_text() == again.read_text()
    xmlschema.XMLSchema(str(SCHEMA)).validate(str(again))
    cases = {c.name: c for c in next(iter(JUnitXml.fromfile(str(again))))}
    skipped = [c for c in cases.values() if c.is_skipped]
    assert len(cases) == 2 and all("another shard" in c.result[0].message for c in skipped)
