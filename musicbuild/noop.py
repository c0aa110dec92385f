"""The entry point: a plain no-op ``musicbuild build`` answered before the CLI is even imported.

A no-op build is the command users run most (make/ninja's "nothing to do"), so its cost is mostly
interpreter start-up and imports. Here, ``build`` with no targets and no options other than
``-q`` and ``-f FILE`` asks the null-build stamp (``stamp.py``) with nothing but the standard
library's basics loaded; anything else (another command or option, a stale or damaged stamp, a
shared cache in the environment) goes to ``cli.main`` untouched, which answers exactly as before
(a damaged stamp is left for it to remove and report).
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Sequence


def _plain_build(argv: Sequence[str]) -> tuple[str, bool] | None:
    """(manifest file, quiet) for ``[-q] build [-q] [-f FILE]``, else None."""
    if "build" not in argv or argv.count("build") != 1:
        return None
    manifest, quiet, args = "musicbuild.yaml", False, list(argv)
    args.remove("build")
    while args:
        arg = args.pop(0)
        if arg in ("-q", "--quiet"):
            quiet = True
        elif arg in ("-f", "--file") and args and not args[0].startswith("-"):
            manifest = args.pop(0)
        else:
            return None
    return manifest, quiet


def try_noop(argv: Sequence[str]) -> int | None:
    """Exit status 0 if the stamp proves this build has nothing to do, else None."""
    plain = _plain_build(argv)
    if plain is None or os.environ.get("MUSICBUILD_REMOTE_CACHE"):
        return None
    from . import stamp

    try:
        count = stamp.fresh_count(plain[0], os.environ)
    except Exception:  # anything unexpected: the full CLI decides, with its error handling
        return None
    if count is None:
        return None
    if not plain[1]:
        print(f"{count} tracks up to date, nothing to do", file=sys.stderr)
    return 0


def main() -> None:
    code = try_noop(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    import gc

    # A command builds its plan as millions of small objects that all live to the end; the cyclic
    # collector's default (a pass every 700 allocations, each full pass over everything alive)
    # cost 20-70 % of planning a large manifest. Cycles are still collected, just in larger steps.
    gc.set_threshold(100_000, 50, 50)
    if _SHORT.intersection(sys.argv[1:2] + sys.argv[2:4]) and "build" not in sys.argv:
        # A read-only command ends in seconds: a leaked cycle lives no longer than the process, and
        # the collector's passes over the imported modules and the plan were a tenth of a `plan`.
        gc.disable()
    from .cli import main as cli_main

    gc.freeze()  # what importing made lives to the end: later passes need not walk it
    cli_main()


_SHORT = {"plan", "check", "status", "validate", "verify", "targets"}
