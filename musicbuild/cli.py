"""Command line: argv and environment in, exit status out. The only module that prints.

Every command's work is a call to the Python API (``api.py``); this module parses, prints and maps
errors to exit codes. Heavy modules (Jinja2, numpy, audio codecs) are imported only by commands
that need them, so a no-op ``build`` answered by the null-build stamp starts and finishes in a blink.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import api
from .api import EXIT_CLOSED_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .cliparse import build_parser
from .errors import MusicbuildError, UsageError


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
    if argv[:1] == ["__complete"]:  # the completion scripts ask: what could the last word be?
        from .completion import complete

        print("\n".join(complete(build_parser(), argv[1:])))
        return EXIT_OK
    args = build_parser().parse_args(argv)
    if not args.command:
        build_parser().print_help()
        return EXIT_USAGE
    args.file = Path(getattr(args, "file", "musicbuild.yaml"))
    args.verbose = getattr(args, "verbose", False)
    args.quiet = getattr(args, "quiet", False)
    handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
    return handler(args)


def _write_reports(args: argparse.Namespace, result: Any) -> None:
    """--report / --junit, after the summary was said (failing to write one is exit 1 then)."""
    if args.report or args.junit:
        api.write_reports(result, args.report, args.junit, on_warning=_warn)


def _warn(text: str) -> None:
    print(f"musicbuild: warning: {text}", file=sys.stderr)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


# -- commands ----------------------------------------------------------------------------------
def cmd_build(args: argparse.Namespace) -> int:
    from .progress import make_reporter

    reporter = make_reporter(args.quiet, args.verbose)
    try:
        result = api.build(args.file, args.targets, jobs=args.jobs, keep_going=args.keep_going, force=args.force,
                           max_cost=args.max_cost, locked=args.locked, frozen=args.frozen, offline=args.offline,
                           shard=args.shard, remote=args.remote, coordinator=args.coordinator,
                           on_event=None if args.quiet else reporter)
    finally:
        reporter.close()
    if result.noop:
        if args.verbose and not args.quiet:
            from .progress import describe

            for row in result.rows:
                print(describe(row), file=sys.stderr)
        _say(args, f"{len(result.rows)} tracks up to date, nothing to do")
        _write_reports(args, result)
        return EXIT_OK
    for warning in result.warnings:
        _warn(warning)
    _write_reports(args, result)
    _say(args, "{total} tracks: {generated} generated, {resumed} resumed, {materialized} materialized, "
               "{up_to_date} up to date, {failed} failed, {skipped} skipped; spent ${cost_usd:.2f}".format(**result.summary))
    if result.interrupted:
        _say(args, "interrupted: submitted jobs are journaled; the next build resumes them")
    elif result.budget_stopped and not result.summary["failed"]:
        _say(args, "stopped submitting: the next track would have taken spending past --max-cost")
    return result.exit_code


def cmd_plan(args: argparse.Namespace) -> int:
    rows = api._plan_rows(args.file, args.targets, args.force, None)  # (rows made as printed)
    if args.json:
        print(json.dumps({"version": 1, "tracks": list(rows)}, indent=2))
        return EXIT_OK
    ids = rows.ids() if hasattr(rows, "ids") else [r["id"] for r in rows]  # (rows may be made as read)
    width = max([len(i) for i in ids] + [5])
    by_provider: dict[str, float] = {}
    counts: dict[str, int] = {}
    lines = []
    for r in rows:
        reasons = ",".join(r["reasons"])
        cost = ("free" if not r["cost_usd"] else f"${r['cost_usd']:.4f}") if r["action"] in ("generate", "resume") else "-"
        note = ""
        if r.get("job"):
            note += f"  [{r['job']['state']} job {r['job'].get('job_id') or '(no id)'}]"
        if r.get("length") and r["action"] in ("generate", "resume"):
            note += f"  ({r['length']})"
        lines.append(f"{r['id']:<{width}}  {r['action']:<11} {reasons:<28} {r['provider']:<10} {cost}{note}\n")
        if len(lines) >= 4096:  # one write per block of lines (stdout redacts each write)
            sys.stdout.write("".join(lines))
            lines.clear()
        if r["action"] == "generate":
            by_provider[r["provider"]] = by_provider.get(r["provider"], 0.0) + r["cost_usd"]
        counts[r["action"]] = counts.get(r["action"], 0) + 1
    sys.stdout.write("".join(lines))
    print("\n" + ", ".join(f"{n} {a}" for a, n in sorted(counts.items())))
    for name, usd in sorted(by_provider.items()):
        print(f"estimated cost {name}: ${usd:.4f}")
    print(f"estimated total: ${sum(by_provider.values()):.4f}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    result = api.status(args.file, args.targets)
    dead = [{"path": d.rel, "track": d.track, "reason": d.reason, "modified": d.modified} for d in result.dead]
    if args.json:
        print(json.dumps({"version": 1, "tracks": result.tracks, "dead": dead}, indent=2))
        return EXIT_OK
    for r in result.tracks:
        why = f" ({', '.join(r['reasons'])})" if r["state"] == "stale" and r["reasons"] else ""
        print(f"{r['id']}: {r['state'].replace('-', ' ')}{why}")
    if dead:
        print(f"\n{len(dead)} dead output{'s' if len(dead) > 1 else ''} (written by musicbuild, no track writes them now; "
              "`musicbuild clean --dead` removes the unmodified ones):")
        for d in dead:
            print(f"  {d['path']}: {d['reason']}{'; modified since, kept' if d['modified'] else ''}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    try:
        stale = api.check(args.file, args.targets, on_warning=_warn)
    except MusicbuildError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return EXIT_USAGE
    if args.verbose:
        for r in stale:
            print(f"{r['id']}: {r['action']} ({', '.join(r['reasons'])})")
    return EXIT_FAILED if stale else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    manifest = api.validate(args.file)
    used = sorted({t.provider.name for t in manifest.tracks})
    _say(args, f"{args.file}: ok ({len(manifest.tracks)} tracks; providers: {', '.join(used)})")
    return EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    verb = "would remove" if args.dry_run else "removed"
    if args.dead:
        if args.targets:
            raise UsageError("clean --dead takes no TARGET: dead outputs belong to no track of the manifest")
        dead = api.clean_dead(args.file, dry_run=args.dry_run)
        for d in dead:
            _say(args, f"kept {d.rel}: modified since musicbuild wrote it ({d.reason})" if d.modified
                 else f"{verb} {d.rel} ({d.reason})")
        gone = sum(1 for d in dead if not d.modified)
        _say(args, f"{verb} {gone} dead output{'' if gone == 1 else 's'}")
        return EXIT_OK
    removed = api.clean(args.file, args.targets, dry_run=args.dry_run)
    for rel in removed:
        _say(args, f"{verb} {rel}")
    _say(args, f"{verb} {len(removed)} outputs (the cache is kept)")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    keep = set() if args.keep == "none" else {k.strip() for k in args.keep.split(",") if k.strip()}
    result = api.gc(args.file, keep=keep, older_than_days=args.older_than, dry_run=args.dry_run, remote=args.remote)
    if args.dry_run and args.verbose:
        for gen_key in result.generations:
            print(f"would remove generation {gen_key}")
    verb = "would free" if args.dry_run else "freed"
    where = "in the shared cache" if args.remote is not None else f"({result.kept_jobs} pending jobs kept)"
    _say(args, f"{verb} {result.bytes_freed / 1e6:.1f} MB: {len(result.generations)} generations, "
               f"{len(result.blobs)} blobs {where}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(api.manifest_schema())
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    problems, total = api.verify(args.file)
    for line in problems:
        print(line, file=sys.stderr)
    _say(args, f"{total - len(problems)} of {total} outputs match musicbuild.lock")
    return EXIT_FAILED if problems else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    if args.journal or not (args.junit or args.html):
        return _print_spend(args, api.spend(args.file, journal=args.journal))
    if args.junit:
        api.write_junit(args.junit, args.file)
    if args.html:
        api.write_review(args.html, args.file)
        _say(args, f"review page: {args.html}")
    return EXIT_OK


def _print_spend(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    """The spend table: estimate, charged, refunded, outstanding and net USD per provider."""
    table, what, collected = doc["spend"], doc["what"], doc["collected"]
    if args.json:
        print(json.dumps({"spend": table, "collected": collected}, indent=2))
        return EXIT_OK
    cols = ("estimated_usd", "charged_usd", "refunded_usd", "outstanding_usd", "cost_usd")
    heads = ("estimate", "charged", "refunded", "outstanding", "net")
    print(f"spend of {what} (USD)")
    print(f"{'provider':<14}" + "".join(f"{h:>12}" for h in heads))
    totals = dict.fromkeys(cols, 0.0)
    for name, row in sorted(table.items()):
        print(f"{name:<14}" + "".join(f"{row.get(c, 0.0):>12.4f}" if c in row else f"{'-':>12}" for c in cols))
        for c in cols:
            totals[c] += row.get(c, 0.0)
    print(f"{'total':<14}" + "".join(f"{totals[c]:>12.4f}" for c in cols))
    for job in collected or []:
        print(f"collected earlier paid job {job.get('job_id')} ({job.get('provider')}, was track {job.get('track')}): "
              f"{job.get('status')}, ${job.get('cost_usd', 0.0):.4f}")
    print("charged: what the services billed (their figure, else the delivered length at their price); "
          "outstanding: submitted jobs whose charge is not known yet, at their estimate")
    return EXIT_OK


def cmd_providers(args: argparse.Namespace) -> int:
    rows = api.installed_providers()
    if args.json:
        print(json.dumps({"version": 1, "providers": rows}, indent=2))
        return EXIT_OK
    for row in rows:
        origin = "built-in" if row["builtin"] else f"plugin {row['package']} {row['version']}"
        if row["error"]:
            print(f"{row['name']}  ({origin})  unusable: {row['error']}")
            continue
        models = ", ".join(row["models"]) or f"any model slug (default {row['default_model']})"
        print(f"{row['name']}  ({origin})  {row['description']}".rstrip())
        print(f"    models: {models}")
        prices = row["price"]
        print("    price: " + ("; ".join(f"{model} {terms}" for model, terms in prices.items())
                              if list(prices) != ["any model"] else prices["any model"]))
        if row["api_key_env"]:
            print(f"    key: ${row['api_key_env']}")
        if row["options"]:
            print(f"    options: {', '.join(row['options'])}")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    folder = args.file.parent if args.file.name == "musicbuild.yaml" else None
    if folder is None:
        raise UsageError("init writes musicbuild.yaml: pass -f DIR/musicbuild.yaml (or run it in the folder)")
    for path in api.init(folder, ci=args.ci):
        _say(args, f"wrote {path}")
    if args.ci:
        _say(args, "the workflow's jobs share audio through a shared cache: set MUSICBUILD_REMOTE_CACHE (and the "
                   "keys of your hosted providers) as CI secrets")
    _say(args, f"next: musicbuild{'' if folder == Path('.') else ' -f ' + str(args.file)} build")
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    from .completion import script

    sys.stdout.write(script(args.shell))
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": cmd_build, "plan": cmd_plan, "status": cmd_status, "check": cmd_check,
    "validate": cmd_validate, "clean": cmd_clean, "gc": cmd_gc, "schema": cmd_schema, "verify": cmd_verify,
    "report": cmd_report, "providers": cmd_providers, "init": cmd_init, "completion": cmd_completion,
}
