"""What leaves through stdout and stderr: redacted (``redact.py``), and quiet when the reader goes away."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from .redact import RedactingStream


@contextlib.contextmanager
def redacted_streams() -> Iterator[None]:
    """Route ``sys.stdout``/``sys.stderr`` (and so every print, progress line and rich display)
    through the redaction for the duration of a command."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(stdout), RedactingStream(stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def silence_closed_stdout() -> None:
    """After the reader closed the pipe (`musicbuild status | head`): point stdout at /dev/null so the
    interpreter's final flush does not complain about it either."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (embedded use, tests)
        pass
