"""What a manifest may name as a path, checked while it loads, before any work.

- Any path text: no NUL byte, no name longer than the file system allows.
- Inputs (``prompt_file``, ``lyrics_file``, ``metadata.cover``, ``reference_audio``) resolve, after
  symlinks, inside the manifest's folder tree, or under a folder the manifest allows explicitly::

      inputs:
        allow: [/srv/shared-lyrics, ../common]

  and are ordinary files: never a FIFO, a device, a folder, or anything under /proc, /sys or /dev
  (not even when allowed), so ``lyrics_file: /proc/self/environ`` cannot put the environment into
  a track's tags or a provider's request.
- Outputs never land on the manifest, the lock, an input the manifest reads, or inside cache_dir.
- ``output_dir`` and ``cache_dir`` are folders (or can be created); the cache can be written.
"""
from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Iterable

NAME_MAX = 255  # bytes per file name on every common file system
PATH_MAX = 4096
SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))  # never inputs; the first two never folders we write


class PathProblem(ValueError):
    """A path the manifest may not use; ``args[0]`` is the user-facing message."""


def text_problem(text: str) -> str | None:
    """Why ``text`` can never name a file, or None."""
    if "\0" in text:
        return "contains a NUL byte (\\0), which no file name can hold"
    for part in text.replace("\\", "/").split("/"):
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > NAME_MAX:
            return (f"has a name of {size} bytes ('{part[:24]}...'); file systems allow at most "
                    f"{NAME_MAX} bytes per name")
    if len(text.encode("utf-8", "surrogateescape")) >= PATH_MAX:
        return f"is longer than the {PATH_MAX} bytes a path may have"
    return None


def inside(path: Path, folder: Path) -> bool:
    if path.is_absolute() and folder.is_absolute():  # by text: `in path.parents` makes every parent
        base = str(folder)
        return path == folder or str(path).startswith(base if base.endswith(os.sep) else base + os.sep)
    return path == folder or folder in path.parents


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


class InputPolicy:
    """Resolves the input paths of one manifest (relative to ``root``) and refuses the unsafe ones."""

    def __init__(self, root: Path, allowed: Iterable[Path] = ()) -> None:
        self.root = root
        self.allowed = tuple(allowed)

    def resolve(self, rel: str) -> Path:
        problem = text_problem(rel)
        if problem:
            raise PathProblem(f"the path {problem}")
        try:
            real = (self.root / rel).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise PathProblem(f"cannot resolve {rel}: {getattr(exc, 'strerror', None) or exc}") from None
        system = next((s for s in SYSTEM_ROOTS if inside(real, s)), None)
        if system is not None:
            raise PathProblem(f"{rel} is a system file (under {system}), not an input; inputs must be ordinary files")
        if not inside(real, self.root) and not any(inside(real, a) for a in self.allowed):
            where = "" if str(real) == rel else f" (it resolves to {real})"
            raise PathProblem(f"{rel} is outside the manifest's folder{where}; inputs stay inside it unless the "
                              f"manifest allows a folder that holds them, e.g. inputs: {{allow: [{real.parent}]}}")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise PathProblem(missing_file(rel, real)) from None
        except OSError as exc:
            raise PathProblem(f"cannot read {rel}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise PathProblem(f"{rel} is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise PathProblem(f"{rel} is a {_kind(st.st_mode)}, not an ordinary file; inputs must be ordinary files")
        return real


def missing_file(rel: str, path: Path) -> str:
    hint = ""
    if path.parent.is_dir():
        names = sorted(p.name for p in path.parent.iterdir())
        close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
        if close:
            hint = f" (did you mean '{PurePosixPath(rel).parent / close[0]}'?)"
    else:
        hint = f" (there is no folder {PurePosixPath(rel).parent}/)"
    return f"file not found: {rel}{hint}; paths are relative to the manifest's folder"


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """The bytes of an input file, refusing one larger than ``limit``."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise PathProblem(f"{what} is larger than {limit:,} bytes; refusing to read it")
    return data


def dir_problem(text: str, root: Path, *, writable: bool) -> str | None:
    """Why ``text`` (relative to ``root``) cannot be the output or cache folder, or None."""
    if not text.strip():
        return "is empty: name a folder"
    problem = text_problem(text)
    if problem:
        return problem
    path = root / text
    system = next((s for s in SYSTEM_ROOTS[:2] if inside(path.resolve(), s)), None)  # /dev/shm is fine
    if system is not None:
        return f"is under {system}, where nothing can be kept"
    probe = path
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():
            return f"{probe} is a dangling symlink"
        probe = probe.parent
    if not probe.is_dir():
        return (f"{text} is a file, not a folder" if probe == path else
                f"cannot be created: {probe} is a file, not a folder")
    if writable and not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable, so the cache cannot be kept there"
    return None


def protected_problem(output: Path, manifest: Path, lock: Path, inputs: set[Path], cache_dir: Path) -> str | None:
    """Why a build must never write ``output``, or None."""
    if output == manifest:
        return "is the manifest itself; building it would overwrite the manifest"
    if output == lock:
        return f"is the lock file; building it would overwrite {lock.name}"
    if output in inputs:
        return "is an input file this manifest reads; building it would overwrite that input"
    if inside(output, cache_dir):
        return "is inside cache_dir, whose files only the cache may write"
    return None


def sniff_audio(path: Path) -> str | None:
    """Why ``path`` is not an audio file (judged by its content), or None."""
    from .audio.convert import sniff_format  # codecs load only for a manifest with reference audio

    with open(path, "rb") as f:
        head = f.read(1 << 20)  # an ID3 tag with a cover may come first
    return None if sniff_format(head) else "is not audio (judged by its content: not WAV, FLAC, Ogg, MP3 or M4A)"
