"""``musicbuild init``: a starter project from the templates shipped in ``musicbuild/templates/``.

Never overwrites: if the manifest or the CI file is already there, nothing is written. An existing
``.gitignore`` is kept and only gets the lines it lacks (as ``cargo init`` does).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .cache import atomic_write_bytes
from .errors import UsageError

CI_FILES = {"github": (".github/workflows/music.yml", "ci/github.yml"), "gitlab": (".gitlab-ci.yml", "ci/gitlab-ci.yml")}


def template(name: str) -> str:
    return resources.files("musicbuild").joinpath("templates", name).read_text("utf-8")


def write_project(folder: Path, ci: str | None = None) -> list[Path]:
    """Write the starter files into ``folder``; return what was written or extended."""
    files = {folder / "musicbuild.yaml": template("starter.yaml")}
    if ci is not None:
        if ci not in CI_FILES:
            raise UsageError(f"init --ci takes {' or '.join(CI_FILES)}, not {ci!r}")
        dest, name = CI_FILES[ci]
        files[folder / dest] = template(name)
    existing = [str(p) for p in files if p.exists()]
    if existing:
        raise UsageError(f"init would overwrite {', '.join(existing)}; nothing was written",
                         "move it away, or run init in another folder (-f DIR/musicbuild.yaml)")
    written = []
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, text.encode("utf-8"))
        written.append(path)
    if _extend_gitignore(folder / ".gitignore", template("gitignore")):
        written.append(folder / ".gitignore")
    return written


def _extend_gitignore(path: Path, wanted: str) -> bool:
    try:
        current = path.read_text("utf-8")
    except FileNotFoundError:
        current = None
    if current is None:
        atomic_write_bytes(path, wanted.encode("utf-8"))
        return True
    have = {line.strip() for line in current.splitlines()}
    missing = [line for line in wanted.splitlines() if line.strip() and not line.startswith("#") and line.strip() not in have]
    if not missing:
        return False
    header = [line for line in wanted.splitlines() if line.startswith("#")]
    sep = "" if current.endswith("\n") or not current else "\n"
    atomic_write_bytes(path, (current + sep + "\n".join(header + missing) + "\n").encode("utf-8"))
    return True
