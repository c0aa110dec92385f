"""The exception tree. Every error the user can see is a ``MusicbuildError``.

    MusicbuildError                 exit 1 unless a subclass says otherwise
    ├── UsageError                  exit 2  bad command line (unknown target, bad option value)
    ├── ManifestError               exit 2  one or more Diagnostics (file:line:col: path: message)
    ├── ConfigError                 exit 2  environment problems found before any work (missing key)
    ├── BudgetError                 exit 3  refused by --max-cost
    ├── CacheError                  exit 1  the cache directory is unusable
    ├── ProviderError               a track's generation failed; carried as a value in its Outcome
    │   ├── ProviderAuthError       401/402/403: stop submitting to that provider
    │   ├── AmbiguousCreate         a create may have reached the service; no readable answer
    │   ├── RemoteJobFailed         the service ran the job and says it failed
    │   └── JobGone                 the service no longer knows a journaled job
    └── (journal.JournalError)      exit 2  the job journal cannot be read or written

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
    """A generation failed; ``retryable`` says whether a later build may succeed unchanged.

    ``status`` is the HTTP status when the service itself answered with an error: a 4xx answer to a
    create is the service's own "no" (nothing was created); anything else after a create may have
    left is an ambiguous create.
    """

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None,
                 detail: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.detail = detail  # the service's own words, when it answered

    @property
    def refused(self) -> bool:
        return self.status is not None and 400 <= self.status < 500


class ProviderAuthError(ProviderError):
    pass


class AmbiguousCreate(ProviderError):
    """A create request may have reached the service but no readable answer came back."""


class RemoteJobFailed(ProviderError):
    """The service ran the job and reports it failed."""


class JobGone(ProviderError):
    """The service no longer knows a job we journaled (it expired after the service's retention)."""


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
