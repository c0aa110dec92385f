"""Command line: argv and environment in, exit status out. The only module that prints.

Heavy modules (Jinja2, numpy, audio codecs) are imported only by commands that need them, so a
no-op ``build`` answered by the null-build stamp starts and finishes in a blink.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .errors import MusicbuildError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CLOSED_PIPE = 141  # what a shell reports for a process ended by SIGPIPE (`musicbuild status | head`)
LAST_REPORT = "last-report.json"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too, but we want one clean line
        raise UsageError(f"{self.prog}: {message}", f"see '{self.prog} --help'")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _money(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError("must look like 2/4") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError("needs 1 <= I <= N, e.g. 1/4 ... 4/4")
    return i, n


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-f", "--file", default=argparse.SUPPRESS, help="manifest (default ./musicbuild.yaml)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
    parser = _Parser(prog="musicbuild", description="Build AI-generated music from a manifest; never pay twice.",
                     parents=[common])
    parser.add_argument("--version", action="version", version=f"musicbuild {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def cmd(name: str, help: str, targets: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, parents=[common], description=help)
        if targets:
            p.add_argument("targets", nargs="*", metavar="TARGET", help="track id, glob over ids, or label:NAME")
        return p

    b = cmd("build", "build what is stale")
    b.add_argument("-j", "--jobs", type=_positive_int, default=8, help="jobs in flight (default 8)")
    b.add_argument("-k", "--keep-going", action="store_true", help="keep going after a track fails")
    b.add_argument("--force", action="store_true", help="re-generate even if cached (paid)")
    b.add_argument("--max-cost", type=_money, metavar="USD", help="refuse a build whose estimate exceeds this")
    b.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report")
    b.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report (one testcase per track)")
    b.add_argument("--locked", action="store_true", help="fail (exit 3) if the build would change musicbuild.lock")
    b.add_argument("--frozen", action="store_true",
                   help="never contact a provider: build only from the local and shared caches; "
                        "a musicbuild.lock, if present, must not change")
    b.add_argument("--shard", type=_shard, metavar="I/N", help="generate only the I-th of N shares (CI fan-out)")
    b.add_argument("--remote", metavar="URL", help="shared cache (overrides MUSICBUILD_REMOTE_CACHE and cache.remote)")
    p = cmd("plan", "show what build would do, why, and what it would cost")
    p.add_argument("--json", action="store_true")
    p.add_argument("--force", action="store_true")
    s = cmd("status", "per track: up to date, stale (why), missing or modified")
    s.add_argument("--json", action="store_true")
    cmd("check", "exit 0 if everything is up to date, 1 if something would be built")
    cmd("validate", "check manifest, templates, files, provider options and credentials; no network", targets=False)
    c = cmd("clean", "remove built outputs (never the cache)")
    c.add_argument("--dry-run", action="store_true")
    g = cmd("gc", "remove cached audio outside the kept scopes (the local cache only)", targets=False)
    g.add_argument("--dry-run", action="store_true", help="print what would go and how much space comes back")
    g.add_argument("--keep", default="manifest,lock", metavar="SCOPES",
                   help="what protects a generation: manifest, lock, both (default: manifest,lock) or none")
    g.add_argument("--older-than", type=float, metavar="DAYS", help="only remove generations at least this old")
    g.add_argument("--remote", nargs="?", const="", metavar="URL",
                   help="collect the shared cache instead (the configured one, or URL)")
    cmd("schema", "print the manifest JSON Schema", targets=False)
    cmd("verify", "check built outputs against musicbuild.lock (exit 1 naming any that differ)", targets=False)
    r = cmd("report", "render the last build's results again", targets=False)
    r.add_argument("--junit", type=Path, metavar="FILE", help="write them as JUnit XML")
    r.add_argument("--html", type=Path, metavar="FILE",
                   help="write a static review page (players, waveforms, label filter); audio is linked relative to it")
    return parser


def _interrupt_on_sigterm() -> None:
    """CI systems cancel with SIGTERM: stop like Ctrl-C so finished work and the journal are kept."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        pass


def main(argv: Sequence[str] | None = None) -> int:
    _interrupt_on_sigterm()
    from .console import redacted_streams, silence_closed_stdout

    with redacted_streams():  # no secret is ever printed, in any form
        try:
            code = _run(list(sys.argv[1:] if argv is None else argv))
            sys.stdout.flush()  # a reader that went away shows up here at the latest
        except BrokenPipeError:  # `musicbuild status | head`: stop quietly
            silence_closed_stdout()
            code = EXIT_CLOSED_PIPE
    if argv is None:
        sys.exit(code)
    return code


def _run(argv: list[str]) -> int:
    try:
        return _main(argv)
    except MusicbuildError as exc:
        for i, line in enumerate(exc.lines()):
            print(line if i or _is_diagnostic(exc) else f"musicbuild: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("musicbuild: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _is_diagnostic(exc: MusicbuildError) -> bool:
    from .errors import ManifestError

    return isinstance(exc, ManifestError)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.command:
        build_parser().print_help()
        return EXIT_USAGE
    args.file = Path(getattr(args, "file", "musicbuild.yaml"))
    args.verbose = getattr(args, "verbose", False)
    args.quiet = getattr(args, "quiet", False)
    handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
    return handler(args)


def _load(args: argparse.Namespace) -> Any:
    from . import redact
    from .manifest import load_manifest

    manifest = load_manifest(args.file)
    redact.remember_config([p.api_key_env for p in manifest.providers.values()],  # whatever their names
                           [manifest.remote, getattr(args, "remote", None)])
    return manifest


def _warn(text: str) -> None:
    print(f"musicbuild: warning: {text}", file=sys.stderr)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


# -- commands ----------------------------------------------------------------------------------
def cmd_build(args: argparse.Namespace) -> int:
    if not args.targets and not args.force and not args.shard and not args.remote:
        from . import stamp

        fresh = stamp.read_fresh(args.file, os.environ, _warn)
        if fresh is not None:
            rows = fresh["rows"]
            _say(args, f"{len(rows)} tracks up to date, nothing to do")
            if args.report or args.junit:
                from .report import noop_report

                _write_reports(args, noop_report(args.file, rows), Path(fresh["cache_dir"]))
            return EXIT_OK
    from .engine import BuildOptions, build
    from .progress import make_reporter
    from .report import report_document

    manifest = _load(args)
    reporter = make_reporter(args.quiet, args.verbose)
    options = BuildOptions(targets=tuple(args.targets), jobs=args.jobs, keep_going=args.keep_going,
                           force=args.force, max_cost=args.max_cost, locked=args.locked, frozen=args.frozen,
                           shard=args.shard, remote=args.remote)
    try:
        result = build(manifest, options, reporter)
    finally:
        reporter.close()
    summary = result.summary
    doc = report_document(summary)
    _write_reports(args, doc, manifest.cache_dir)
    for warning in summary.warnings:
        print(f"musicbuild: warning: {warning}", file=sys.stderr)
    counts = doc["summary"]
    _say(args, "{total} tracks: {generated} generated, {resumed} resumed, {materialized} materialized, "
               "{up_to_date} up to date, {failed} failed, {skipped} skipped; spent ${cost_usd:.2f}".format(**counts))
    if summary.interrupted:
        _say(args, "interrupted: submitted jobs are journaled; the next build resumes them")
        return EXIT_INTERRUPTED
    if summary.budget_stopped and not counts["failed"]:
        _say(args, "stopped submitting: the next track would have taken spending past --max-cost")
        return EXIT_REFUSED
    return EXIT_FAILED if counts["failed"] or counts["skipped"] > summary.shard_skipped else EXIT_OK


def _write_reports(args: argparse.Namespace, doc: dict[str, Any], cache_dir: Path | None) -> None:
    from .report import write_report

    if cache_dir is not None:  # `musicbuild report` renders the last build again
        try:
            write_report(cache_dir / LAST_REPORT, doc)
        except OSError as exc:  # derived state: the build itself is done
            _warn(f"could not record this build for `musicbuild report` ({exc.strerror}: {cache_dir / LAST_REPORT})")
    try:
        if args.report:
            write_report(args.report, doc)
        if args.junit:
            from .junit import write_junit

            write_junit(args.junit, doc)
    except OSError as exc:
        raise MusicbuildError(f"cannot write the report {exc.filename or ''}: {exc.strerror}",
                              "the build itself finished; free space or fix the path and run it again") from None


def _plan(args: argparse.Namespace, force: bool = False) -> tuple[Any, list[Any]]:
    from .cache import Cache
    from .engine import check_inputs, make_plan, select

    manifest = _load(args)
    specs = select(manifest, args.targets)
    check_inputs(manifest, specs, os.environ)
    with Cache(manifest.cache_dir) as cache:
        return manifest, make_plan(manifest, specs, cache, force)


def cmd_plan(args: argparse.Namespace) -> int:
    from .report import plan_row

    _, planned = _plan(args, args.force)
    rows = [plan_row(pt) for pt in planned]
    if args.json:
        print(json.dumps({"version": 1, "tracks": rows}, indent=2))
        return EXIT_OK
    width = max([len(r["id"]) for r in rows] + [5])
    by_provider: dict[str, float] = {}
    for r in rows:
        reasons = ",".join(r["reasons"])
        cost = ("free" if not r["cost_usd"] else f"${r['cost_usd']:.4f}") if r["action"] in ("generate", "resume") else "-"
        print(f"{r['id']:<{width}}  {r['action']:<11} {reasons:<28} {r['provider']:<10} {cost}")
        if r["action"] == "generate":
            by_provider[r["provider"]] = by_provider.get(r["provider"], 0.0) + r["cost_usd"]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["action"]] = counts.get(r["action"], 0) + 1
    print("\n" + ", ".join(f"{n} {a}" for a, n in sorted(counts.items())))
    for name, usd in sorted(by_provider.items()):
        print(f"estimated cost {name}: ${usd:.4f}")
    print(f"estimated total: ${sum(by_provider.values()):.4f}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from .maintenance import status_row

    _, planned = _plan(args)
    rows = [status_row(pt) for pt in planned]
    if args.json:
        print(json.dumps({"version": 1, "tracks": rows}, indent=2))
        return EXIT_OK
    for r in rows:
        why = f" ({', '.join(r['reasons'])})" if r["state"] == "stale" and r["reasons"] else ""
        print(f"{r['id']}: {r['state'].replace('-', ' ')}{why}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    try:
        if not args.targets:
            from . import stamp

            if stamp.fresh_rows(args.file, warn=_warn) is not None:
                return EXIT_OK
        _, planned = _plan(args)
    except MusicbuildError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return EXIT_USAGE
    stale = [pt for pt in planned if pt.action.value != "up-to-date"]
    if args.verbose:
        for pt in stale:
            print(f"{pt.spec.id}: {pt.action.value} ({', '.join(r.value for r in pt.reasons)})")
    return EXIT_FAILED if stale else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from .engine import check_inputs, credential_problems
    from .errors import ConfigError

    manifest = _load(args)
    check_inputs(manifest, list(manifest.tracks), os.environ)
    problems = credential_problems(list(manifest.tracks), os.environ)
    if problems:
        raise ConfigError("\n".join(problems))
    used = sorted({t.provider.name for t in manifest.tracks})
    _say(args, f"{args.file}: ok ({len(manifest.tracks)} tracks; providers: {', '.join(used)})")
    return EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    from .engine import select
    from .maintenance import clean

    manifest = _load(args)
    removed = clean(manifest, select(manifest, args.targets), dry_run=args.dry_run, whole=not args.targets)
    verb = "would remove" if args.dry_run else "removed"
    for rel in removed:
        _say(args, f"{verb} {rel}")
    _say(args, f"{verb} {len(removed)} outputs (the cache is kept)")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    from .maintenance import gc

    from .maintenance import GC_SCOPES

    keep = set() if args.keep == "none" else {k.strip() for k in args.keep.split(",") if k.strip()}
    if keep - set(GC_SCOPES):
        raise UsageError(f"gc --keep takes manifest, lock, manifest,lock or none, not {args.keep!r}")
    manifest = _load(args)
    if args.remote is not None:
        from .maintenance import gc_remote, kept_generations
        from .remote import open_remote

        url = args.remote or os.environ.get("MUSICBUILD_REMOTE_CACHE") or manifest.remote
        if not url:
            raise UsageError("gc --remote: no shared cache is configured", "pass --remote URL or set cache.remote")
        store = open_remote(url, env=os.environ)
        result = gc_remote(store, kept_generations(manifest, keep), args.older_than, args.dry_run)
        getattr(store, "close", lambda: None)()
    else:
        result = gc(manifest, keep=keep, older_than_days=args.older_than, dry_run=args.dry_run)
    if args.dry_run and args.verbose:
        for gen_key in result.generations:
            print(f"would remove generation {gen_key}")
    verb = "would free" if args.dry_run else "freed"
    where = "in the shared cache" if args.remote is not None else f"({result.kept_jobs} pending jobs kept)"
    _say(args, f"{verb} {result.bytes_freed / 1e6:.1f} MB: {len(result.generations)} generations, "
               f"{len(result.blobs)} blobs {where}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import schema_text

    sys.stdout.write(schema_text())
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from .lock import lock_path, read_lock
    from .maintenance import verify

    manifest = _load(args)
    entries = read_lock(lock_path(manifest.path))
    if entries is None:
        raise UsageError(f"no {lock_path(manifest.path).name} beside {args.file}", "run `musicbuild build` first")
    problems = verify(manifest.output_dir, entries)
    for line in problems:
        print(line, file=sys.stderr)
    total = sum(len(e.outputs) for e in entries.values())
    _say(args, f"{total - len(problems)} of {total} outputs match {lock_path(manifest.path).name}")
    return EXIT_FAILED if problems else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    if not args.junit and not args.html:
        raise UsageError("report needs --junit FILE and/or --html FILE")
    from .report import read_report

    manifest = _load(args)
    try:
        doc = read_report(manifest.cache_dir / LAST_REPORT)
    except ValueError as exc:
        raise UsageError(f"the record of the last build: {exc}", "run `musicbuild build` to record a new one") from None
    if doc is None:
        raise UsageError("no build has been recorded for this manifest yet", "run `musicbuild build` first")
    if args.junit:
        from .junit import write_junit

        write_junit(args.junit, doc)
    if args.html:
        from .review import write_review

        write_review(args.html, doc, manifest)
        _say(args, f"review page: {args.html}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": cmd_build, "plan": cmd_plan, "status": cmd_status, "check": cmd_check,
    "validate": cmd_validate, "clean": cmd_clean, "gc": cmd_gc, "schema": cmd_schema, "verify": cmd_verify,
    "report": cmd_report,
}
