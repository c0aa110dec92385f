"""Temp files and confined writes: an output lands inside output_dir, whatever moves meanwhile.

Temp files are named ``.<target>.mb<pid>-<random>.tmp[.<ext>]`` beside their target, so the final
rename is atomic and every temp file names the process that owns it. A temp file is stale only when
that process is gone (or, for the pid-less names of older versions, when it is an hour old): two
builds with separate caches that share an output_dir never delete each other's temp files. Stale
ones are swept once per folder per build (one directory scan, not one per output) and by ``clean``.

An output's folder is checked when the manifest loads, but a folder inside output_dir can be
swapped for a symlink while a build runs. So outputs are written through directory file
descriptors: the folder is opened from output_dir one name at a time with ``O_NOFOLLOW`` (a symlink
or a file where a folder was is refused), the temp file is created in it, and at the moment of the
rename the folder is opened the same way again and the rename goes from one descriptor to the
other. Libraries that want a path write to ``/proc/self/fd/<dir fd>/<temp name>`` (Linux), which
names the opened folder itself, not whatever the path leads to now.
"""
from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path
from typing import Iterable

from .errors import MusicbuildError

_NAME_BUDGET = 180  # of the target's name in a temp name (a name may have at most 255 bytes)
TEMP_NAME = re.compile(r"^\..*\.mb(?P<pid>\d+)-[A-Za-z0-9_]{8}\.tmp(?:\.[A-Za-z0-9]+)?$")
LEGACY_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(?:\.[A-Za-z0-9]+)?$")  # before the pid was in it
LEGACY_AGE = 3600.0
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_FD_PATHS = Path("/proc/self/fd").is_dir()


class OutsideOutputDir(MusicbuildError):
    """A folder on the way to an output is a symlink (or a file) now: writing there could leave output_dir."""


def temp_prefix(target_name: str) -> str:
    return f".{target_name[:_NAME_BUDGET]}.mb{os.getpid()}-"


def new_temp(dir_fd: int, target_name: str, suffix: str = ".tmp") -> str:
    """Create an empty temp file for ``target_name`` in the folder open as ``dir_fd``; its name.

    Created 0666 less the umask (outputs are for sharing), never through a symlink."""
    for _ in range(100):
        name = temp_prefix(target_name) + os.urandom(4).hex() + suffix
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                             0o666, dir_fd=dir_fd))
            return name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name")


def owner_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_stale_temp(name: str, mtime: float, now: float | None = None) -> bool:
    found = TEMP_NAME.match(name)
    if found:
        return not owner_alive(int(found["pid"]))
    return bool(LEGACY_TEMP_NAME.match(name)) and (now or time.time()) - mtime > LEGACY_AGE


def sweep(folder: Path) -> list[Path]:
    """Remove the stale temp files directly in ``folder`` (one scan); return them."""
    removed = []
    for path in temp_files_in(folder):
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            continue  # gone meanwhile, or not ours to remove
    return removed


def sweep_folders(folders: Iterable[Path]) -> list[Path]:
    return [p for folder in sorted(set(folders)) for p in sweep(folder)]


def temp_files(root: Path) -> list[Path]:
    """Stale musicbuild temp files anywhere under ``root`` (for ``clean``)."""
    return [p for folder, _dirs, _files in os.walk(root) for p in temp_files_in(Path(folder))]


def temp_files_in(folder: Path) -> list[Path]:
    """Stale musicbuild temp files directly in ``folder``."""
    found = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.startswith(".") or ".tmp" not in entry.name:
            continue
        try:
            if entry.is_file(follow_symlinks=False) and is_stale_temp(entry.name, entry.stat(follow_symlinks=False).st_mtime, now):
                found.append(Path(entry.path))
        except OSError:
            continue
    return found


def open_folder(root: Path, parts: Iterable[str], create: bool) -> int:
    """A descriptor of ``root/parts...``, opened one name at a time without following symlinks."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
                nxt = _open_child(fd, part)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise OutsideOutputDir(f"{part} is no longer a folder inside {root} (a symlink or a file took "
                                           "its place); refusing to write through it") from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(fd: int, part: str) -> int:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise OutsideOutputDir(f"{part} was replaced by a symlink or a file while it was created") from None
        raise


class ConfinedOutput:
    """A temp file beside ``target`` (inside ``root``), renamed into place by ``commit``.

    Use as a context manager; ``path`` is where libraries write the temp file. On an error the temp
    file is removed and the target is left as it was."""

    def __init__(self, root: Path, target: Path, suffix: str) -> None:
        self.root, self.target = root, target
        self.parts = target.parent.relative_to(root).parts  # ValueError if outside: a bug upstream
        self.dir_fd = open_folder(root, self.parts, create=True)
        try:
            self.name = new_temp(self.dir_fd, target.name, suffix)
        except BaseException:
            os.close(self.dir_fd)
            raise
        self.path = Path(f"/proc/self/fd/{self.dir_fd}/{self.name}") if _FD_PATHS else target.parent / self.name

    def commit(self) -> os.stat_result:
        """Rename the temp file onto the target, through the target's folder as it is now."""
        final = open_folder(self.root, self.parts, create=False)
        try:
            os.replace(self.name, self.target.name, src_dir_fd=self.dir_fd, dst_dir_fd=final)
            self.name = ""
            return os.stat(self.target.name, dir_fd=final, follow_symlinks=False)
        finally:
            os.close(final)

    def __enter__(self) -> "ConfinedOutput":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.name:
                os.unlink(self.name, dir_fd=self.dir_fd)
        except OSError:
            pass
        finally:
            os.close(self.dir_fd)
