"""The exception tree. Every error the user can see is a ``MusicbuildError``.

    MusicbuildError                 exit 1 unless a subclass says otherwise
    ├── UsageError                  exit 2  bad command line (unknown target, bad option value)
    ├── ManifestError               exit 2  one or more Diagnostics (file:line:col: path: message)
    ├── ConfigError                 exit 2  environment problems found before any work (missing key)
    ├── BudgetError                 exit 3  refused by --max-cost
    ├── CacheError                  exit 1  the cache directory is unusable
    └── ProviderError               a track's generation failed; carried as a value in its Outcome
        └── ProviderAuthError       401/402: stop submitting to that provider

Errors raised inside a track's work are caught by the executor and become that track's failed
``Outcome``; only errors that make the whole build meaningless propagate to the CLI, which maps
them to one message line and ``exit_code``. Messages never contain secrets.
"""
from __future__ import annotations

from dataclasses import dataclass

from .redact import redact


class MusicbuildError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        message = redact(message)  # services quote keys back; no exception may carry one
        super().__init__(message)
        self.message = message
        self.hint = redact(hint) if hint else hint

    def lines(self) -> list[str]:
        out = [self.message]
        if self.hint:
            out.append(f"hint: {self.hint}")
        return out


class UsageError(MusicbuildError):
    exit_code = 2


class ConfigError(MusicbuildError):
    exit_code = 2


class BudgetError(MusicbuildError):
    exit_code = 3


class CacheError(MusicbuildError):
    exit_code = 1


class ProviderError(MusicbuildError):
    """A generation failed; ``retryable`` says whether a later build may succeed unchanged."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProviderAuthError(ProviderError):
    pass


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a manifest, pinned to where the user wrote it."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ManifestError(MusicbuildError):
    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(set(diagnostics), key=lambda d: (d.file, d.line, d.col, d.path, d.message))
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    def lines(self) -> list[str]:
        return [str(d) for d in self.diagnostics]
