"""The README's test command runs as it is on a machine without nginx, Chromium or Redis: the tests
that need them skip, and the end of the run names what was skipped and how to install it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_missing_programs_are_named_at_the_end_of_the_run(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no chromium on this PATH
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_review.py::test_label_filter_and_search_in_chromium"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    lines = proc.stdout.splitlines()
    summary = next(line for line in lines if line.startswith("skipped because not installed:"))
    assert summary.startswith("skipped because not installed: chromium (1 test); to run them: "
                              "apt-get install chromium (.ci/run installs nginx and chromium)")
    assert lines[-1].startswith("1 skipped")
