"""musicbuild: make for AI-generated music. The Python API (``musicbuild.api``) in short::

    import musicbuild
    rows = musicbuild.plan("musicbuild.yaml")          # what a build would do, per track
    result = musicbuild.build("musicbuild.yaml", jobs=4, on_event=print)
    print(result.summary["generated"], result.exit_code)

``import musicbuild`` loads nothing: the API and its exceptions are imported on first use (PEP 562),
and the heavy parts (Jinja2, numpy, the codecs) only when a function needs them. No name here may
be a submodule's: importing the submodule would rebind it (hence ``planner.py``, not ``plan.py``).
"""
from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing alone costs milliseconds
__version__ = "0.1.0"

_API = ("BuildResult", "Event", "Status", "TrackRow", "build", "check", "clean", "clean_dead", "gc", "init",
        "installed_providers", "last_report", "load", "manifest_schema", "plan", "status", "targets", "validate",
        "verify", "write_junit", "write_review")
_ERRORS = ("ConfigError", "ManifestError", "MusicbuildError", "UsageError")
__all__ = ["__version__", *_API, *_ERRORS]

if TYPE_CHECKING:
    from typing import Any

    from .api import (BuildResult, Event, Status, TrackRow, build, check, clean, clean_dead, gc, init,
                      installed_providers, last_report, load, manifest_schema, plan, status, targets, validate,
                      verify, write_junit, write_review)
    from .errors import ConfigError, ManifestError, MusicbuildError, UsageError


def __getattr__(name: str) -> Any:
    if name in _API or name in _ERRORS:
        from importlib import import_module

        value = getattr(import_module(".api" if name in _API else ".errors", __name__), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module 'musicbuild' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
