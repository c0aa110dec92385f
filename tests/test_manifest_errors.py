"""The catalogue of manifest mistakes in ``tests/manifests/<case>/``: each must fail cleanly.

Every case folder holds a ``musicbuild.yaml`` with one real-world mistake (plus any files it needs)
and ``expected.txt``: the exact stderr lines, as the CLI prints them when run from the case folder
with ``-f musicbuild.yaml``. Both ``validate`` and ``build`` must exit 2 with exactly those lines, no
traceback, and write nothing (no output dir, no cache dir, no file at all).

``validate`` runs in-process through ``musicbuild.cli.main`` for every case and, for every eighth
case, also as a real ``python -m musicbuild`` subprocess (the entry point, its streams and exit
status; a subprocess costs ~0.5 s of CPU, the whole catalogue in-process a few seconds); ``build``
runs in-process.

Regenerate the expected files after changing a message with::

    UPDATE_EXPECTED=1 .venv/bin/python -m pytest tests/test_manifest_errors.py

and then read every changed line: it must name the field, say what is wrong and, where possible,
what would be right.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from musicbuild.cli import main

CASES_DIR = Path(__file__).resolve().parent / "manifests"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "musicbuild.yaml").is_file())
UPDATE = os.environ.get("UPDATE_EXPECTED") == "1"
KEY_VARS = ("AIGATEWAY_API_KEY", "VERBATIK_API_KEY", "SONAUTO_API_KEY", "BEATRA_API_KEY")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MUSICBUILD_CACHE_DIR", *KEY_VARS)}
    env["NO_COLOR"] = "1"
    return env


def _copy(case: str, dest: Path) -> Path:
    shutil.copytree(CASES_DIR / case, dest, ignore=shutil.ignore_patterns("expected.txt"))
    return dest


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _expected(case: str) -> list[str]:
    path = CASES_DIR / case / "expected.txt"
    assert path.is_file(), f"{path} is missing: run with UPDATE_EXPECTED=1 and review it"
    return _lines(path.read_text("utf-8"))


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, dict, dict]]:
    """``musicbuild -f musicbuild.yaml validate`` in a copy of every case: (code, stderr, tree before, after)."""
    base = tmp_path_factory.mktemp("validate")
    env = _env()

    def run(case: str) -> tuple[str, tuple[int, str, dict, dict]]:
        root = _copy(case, base / "subprocess" / case)
        before = _tree(root)
        proc = subprocess.run([sys.executable, "-m", "musicbuild", "-f", "musicbuild.yaml", "validate"],
                              cwd=root, env=env, capture_output=True, text=True, timeout=120)
        return case, (proc.returncode, proc.stderr, before, _tree(root))

    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) + 1)) as pool:
        real = dict(pool.map(run, CASES[::8]))
    results: dict[str, tuple[int, str, dict, dict]] = {}
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MUSICBUILD_CACHE_DIR", *KEY_VARS):
            mp.delenv(var, raising=False)
        mp.setenv("NO_COLOR", "1")
        for case in CASES:
            root = _copy(case, base / "in-process" / case)
            before = _tree(root)
            mp.chdir(root)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(["-f", "musicbuild.yaml", "validate"])
            results[case] = (code, err.getvalue(), before, _tree(root))
    for case, (code, err, _, _) in real.items():  # the real entry point says exactly the same
        assert (code, _lines(err)) == (results[case][0], _lines(results[case][1])), case
    if UPDATE:
        for case, (_, err, _, _) in results.items():
            (CASES_DIR / case / "expected.txt").write_text("".join(line + "\n" for line in _lines(err)), "utf-8")
    return results


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES)
def test_validate_fails_with_the_expected_lines(case: str, validated: dict) -> None:
    code, err, before, after = validated[case]
    assert "Traceback" not in err, err
    assert code == 2, err
    assert _lines(err) == _expected(case)
    assert after == before, "validate must not write anything"


@pytest.mark.parametrize("case", CASES)
def test_build_fails_the_same_way_and_writes_nothing(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(case, tmp_path / case)
    before = _tree(root)
    monkeypatch.chdir(root)
    for var in ("MUSICBUILD_CACHE_DIR", *KEY_VARS):
        monkeypatch.delenv(var, raising=False)
    code = main(["-f", "musicbuild.yaml", "build"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert code == 2, err
    if not UPDATE:
        assert _lines(err) == _expected(case)
    assert out == ""
    assert not (root / "build").exists() and not (root / ".musicbuild").exists()
    assert _tree(root) == before, "build must not write anything when the manifest is wrong"


@pytest.mark.parametrize("case", CASES)
def test_expected_lines_are_well_formed(case: str) -> None:
    """Every line is FILE:LINE:COL: [path: ]message, for this manifest, sorted by position."""
    if UPDATE:
        pytest.skip("regenerating")
    positions = []
    for line in _expected(case):
        file, lineno, col, rest = line.split(":", 3)
        assert file == "musicbuild.yaml" and lineno.isdigit() and col.isdigit() and rest.startswith(" "), line
        assert len(rest.strip()) > 20, f"message too terse to act on: {line}"
        positions.append((int(lineno), int(col)))
    assert positions and positions == sorted(positions)


def test_file_names_are_printed_as_given_relative_to_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    _copy("many-errors", tmp_path / "game")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUSICBUILD_CACHE_DIR", raising=False)
    assert main(["-f", "game/musicbuild.yaml", "validate"]) == 2
    err = _lines(capsys.readouterr().err)
    assert err == ["game/" + line for line in _expected("many-errors")]
