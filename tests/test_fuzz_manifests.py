"""Fuzzed manifests (``manifest_strategies.py``) through the real CLI, in process.

For every example: ``validate`` (and ``plan`` when it passes) exits 0 or 2, never raises, prints
only error lines that start with ``FILE:LINE:COL:`` (or ``FILE:`` for whole-file problems), takes
under 2 s and grows the process's peak memory by less than 200 MB. Environment problems (an unset
key variable) print ``musicbuild: ...`` lines; the fuzz sets every variable it names so that only
manifest problems remain.

Bounded for CI (``MUSICBUILD_FUZZ_EXAMPLES``, default 1000, about 20 s); run more with e.g.
``MUSICBUILD_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz_manifests.py``, or
``bench/fuzz_manifests.py``, which also catches hangs and counts everything.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from musicbuild.cli import main

from .manifest_strategies import FUZZ_ENV, write_inputs, yaml_texts

EXAMPLES = int(os.environ.get("MUSICBUILD_FUZZ_EXAMPLES", "1000"))
LINE = re.compile(r"^musicbuild\.yaml:(\d+:\d+:)? \S")  # FILE:LINE:COL: message, or FILE: message
MAX_SECONDS = 2.0
MAX_GROWTH_MB = 200


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("fuzz") / "project"
    root.mkdir()
    write_inputs(root)
    (root.parent / "outside.txt").write_text("outside the manifest's folder\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for key in ("MUSICBUILD_CACHE_DIR", "MUSICBUILD_REMOTE_CACHE", "MUSICBUILD_MAX_TRACKS"):
            mp.delenv(key, raising=False)
        for key, value in FUZZ_ENV.items():
            mp.setenv(key, value)
        mp.setenv("NO_COLOR", "1")
        yield root


def check_case(root: Path, text: str) -> list[str]:
    """Run one fuzzed manifest; return what went wrong (empty: fine)."""
    for leftover in ("build", ".musicbuild", "out", "c", "musicbuild.lock"):
        path = root / leftover
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
    (root / "musicbuild.yaml").write_text(text, "utf-8", errors="surrogateescape")
    problems = []
    commands = [("validate",), ("plan",)]
    for command in commands:
        before, started = peak_mb(), time.monotonic()
        code, _out, err = run_cli("-f", "musicbuild.yaml", *command)
        seconds, growth = time.monotonic() - started, peak_mb() - before
        if code not in (0, 2):
            problems.append(f"{command[0]} exited {code}: {err}")
        if code != 0:
            problems += [f"{command[0]}: stray line {line!r}" for line in err.splitlines() if line and not LINE.match(line)]
        if code == 2 and not err.strip():
            problems.append(f"{command[0]} failed without a message")
        if seconds > MAX_SECONDS:
            problems.append(f"{command[0]} took {seconds:.2f} s")
        if growth > MAX_GROWTH_MB:
            problems.append(f"{command[0]} grew the peak memory by {growth:.0f} MB")
        if code != 0:
            break
    return problems


@settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                 HealthCheck.function_scoped_fixture])
@given(text=yaml_texts())
def test_fuzzed_manifests_fail_cleanly(fuzz_root: Path, text: str) -> None:
    problems = check_case(fuzz_root, text)
    assert not problems, "\n".join(problems) + "\n--- manifest ---\n" + text[:3000]
