"""musicbuild: make for AI-generated music. The Python API (``musicbuild.api``) in short::

    import musicbuild
    rows = musicbuild.plan("musicbuild.yaml")          # what a build would do, per track
    result = musicbuild.build("musicbuild.yaml", jobs=4, on_event=print)
    print(result.summary["generated"], result.exit_code)

Importing it is cheap: the heavy parts load when a function needs them.
"""
__version__ = "0.1.0"

# (no API name may be a submodule's: importing the submodule would rebind it, hence plan.py is planner.py)
from .api import (BuildResult, Event, Status, TrackRow, build, check, clean, clean_dead, gc, init, installed_providers,
                  last_report, load, manifest_schema, plan, status, targets, validate, verify, write_junit,
                  write_review)
from .errors import ConfigError, ManifestError, MusicbuildError, UsageError

__all__ = ["BuildResult", "ConfigError", "Event", "ManifestError", "MusicbuildError", "Status", "TrackRow",
           "UsageError", "__version__", "build", "check", "clean", "clean_dead", "gc", "init", "installed_providers",
           "last_report", "load", "manifest_schema", "plan", "status", "targets", "validate", "verify", "write_junit",
           "write_review"]
