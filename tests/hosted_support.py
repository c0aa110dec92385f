"""What the hosted-provider tests share: the virtual clock, manifests against emulators, reports.

Every test runs on the virtual clock (``SCALE`` real seconds per virtual second, shared by the
emulators and by musicbuild through ``MUSICBUILD_TIME_SCALE``, set by the ``env`` fixture in
conftest), so 30-90 s jobs take milliseconds. Manifests are written as JSON, which is YAML.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from .conftest import Project, Run
from .emulators.aigateway import AIgatewayEmulator
from .emulators.base import Emulator
from .emulators.beatra import BeatraEmulator
from .emulators.sonauto import SonautoEmulator
from .emulators.verbatik import VerbatikEmulator

SCALE = 0.003  # real seconds per virtual second
FAST = {"requests_per_minute": 100000, "max_concurrent": 16}  # limits out of the way


def provider(type_: str, emu: Emulator, **cfg: Any) -> dict[str, Any]:
    return {"type": type_, "base_url": emu.url, **cfg}


def write_manifest(project: Project, providers: dict[str, dict[str, Any]], tracks: list[dict[str, Any]],
                   **defaults: Any) -> None:
    doc = {"version": 1, "defaults": {"format": "wav", "duration": 4, **defaults}, "providers": providers,
           "tracks": tracks}
    project.write(json.dumps(doc, indent=1))


def one_track(project: Project, gw: AIgatewayEmulator) -> None:
    write_manifest(project, {"gw": provider("aigateway", gw, **FAST)}, [{"id": "a", "provider": "gw", "prompt": "a"}])


def build(project: Project, *args: str) -> tuple[Run, dict[str, Any]]:
    """``musicbuild build --report`` in process: the run (exit code, stdout, stderr) and the report."""
    report = project.root / "report.json"
    report.unlink(missing_ok=True)
    result = project.run("build", "--report", str(report), *args)
    return result, (json.loads(report.read_text()) if report.exists() else {})


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in report["tracks"]}


def outs(row: dict[str, Any]) -> list[str]:
    return row["out"] if isinstance(row["out"], list) else [row["out"]]


def blobs(project: Project) -> list[Path]:
    return [p for p in (project.root / ".musicbuild" / "blobs").rglob("*") if p.is_file()]


def stray_temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.startswith("."))]


def prompts(emu: Emulator) -> list[str]:
    """The prompt of every job the service accepted, in order (without the appended style line)."""
    if isinstance(emu, AIgatewayEmulator):
        sent = [j.body["prompt"] for j in list(emu.jobs.values())]
    elif isinstance(emu, BeatraEmulator):
        sent = [t["input"]["prompt"] for t in list(emu.tasks.values())]
    elif isinstance(emu, SonautoEmulator):
        sent = [t.body["prompt"] for t in list(emu.tasks.values())]
    else:
        assert isinstance(emu, VerbatikEmulator)
        sent = [b["prompt"] for b in list(emu.bodies)]
    return [p.split("\nStyle: ")[0] for p in sent]


def wait_until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
