"""Command line: argv and environment in, exit status out. The only module that prints.

Every command's work is a call to the Python API (``api.py``); this module parses, prints and maps
errors to exit codes. Heavy modules (Jinja2, numpy, audio codecs) are imported only by commands
that need them, so a no-op ``build`` answered by the null-build stamp starts and finishes in a blink.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from . import __version__, api
from .api import EXIT_CLOSED_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .errors import MusicbuildError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 too, but we want one clean line
        raise _usage(self, _explain_argparse(message))

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(ns, "command", None)
            parser = _subparsers(self).get(command, self) if command else self
            raise _usage(parser, _unknown_arguments(extras, parser))
        return ns


def _usage(parser: argparse.ArgumentParser, message: str) -> UsageError:
    command = parser.prog.removeprefix("musicbuild").strip()  # main() prints the "musicbuild: "
    return UsageError(f"{command}: {message}" if command else message, f"see '{parser.prog} --help'")


def _explain_argparse(message: str) -> str:
    """argparse's message with a 'did you mean' for a mistyped command or choice."""
    from .schema import did_you_mean

    m = re.search(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if not m:
        return message
    what, value, choices = m.group(1), m.group(2), re.findall(r"'([^']*)'", m.group(3))
    if what == "COMMAND":
        return f"unknown command '{value}'{did_you_mean(value, choices)}; the commands are {', '.join(choices)}"
    return f"argument {what}: '{value}' is not one of {', '.join(choices)}{did_you_mean(value, choices)}"


def _unknown_arguments(extras: list[str], parser: argparse.ArgumentParser) -> str:
    from .schema import did_you_mean

    options = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    words = []
    for arg in extras:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            words.append(f"unknown option '{name}'{did_you_mean(name, options)}")
        else:
            words.append(f"unexpected argument '{arg}' ({parser.prog} takes no TARGET)")
    return "; ".join(words)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _number(kind: type, lowest: float, strict: bool = False, what: str = "") -> Callable[[str], Any]:
    """An argparse type that says what is wrong in words (never "invalid _positive_int value")."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
        if value != value or value < lowest or (strict and value == lowest):  # value != value: NaN
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value

    return parse


_positive_int = _number(int, 1, what="a whole number of at least 1")
_money = _number(float, 0, what="an amount in USD (0 or more)")
_days = _number(float, 0, what="a number of days (0 or more)")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like 2/4, not {text!r}") from None
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
    b.add_argument("--offline", action="store_true",
                   help="never contact a provider (build only from the local and shared caches), and update "
                        "musicbuild.lock: the assembly job of a CI fleet")
    b.add_argument("--shard", type=_shard, metavar="I/N",
                   help="generate only the I-th of N shares (CI fan-out); each provider's limits are divided by N")
    b.add_argument("--coordinator", metavar="URL",
                   help="a fleet's Redis (redis://...): fleet-wide limits, shared journal, claimed work "
                        "(overrides MUSICBUILD_COORDINATOR and cache.coordinator)")
    b.add_argument("--remote", metavar="URL", help="shared cache (overrides MUSICBUILD_REMOTE_CACHE and cache.remote)")
    p = cmd("plan", "show what build would do, why, and what it would cost")
    p.add_argument("--json", action="store_true")
    p.add_argument("--force", action="store_true")
    s = cmd("status", "per track: up to date, stale (why), missing or modified; and dead outputs")
    s.add_argument("--json", action="store_true")
    cmd("check", "exit 0 if everything is up to date, 1 if something would be built")
    cmd("validate", "check manifest, templates, files, provider options and credentials; no network", targets=False)
    c = cmd("clean", "remove built outputs (never the cache)")
    c.add_argument("--dry-run", action="store_true")
    c.add_argument("--dead", action="store_true",
                   help="remove only dead outputs: files musicbuild wrote that no track writes any more")
    g = cmd("gc", "remove cached audio outside the kept scopes (the local cache only)", targets=False)
    g.add_argument("--dry-run", action="store_true", help="print what would go and how much space comes back")
    g.add_argument("--keep", default="manifest,lock", metavar="SCOPES",
                   help="what protects a generation: manifest, lock, both (default: manifest,lock) or none")
    g.add_argument("--older-than", type=_days, metavar="DAYS", help="only remove generations at least this old")
    g.add_argument("--remote", nargs="?", const="", metavar="URL",
                   help="collect the shared cache instead (the configured one, or URL)")
    cmd("schema", "print the manifest JSON Schema", targets=False)
    cmd("verify", "check built outputs against musicbuild.lock (exit 1 naming any that differ)", targets=False)
    r = cmd("report", "the last build's results: its spend per provider, or --junit/--html", targets=False)
    r.add_argument("--journal", action="store_true",
                   help="spend of every paid job this cache's journal holds, per provider (to reconcile an invoice)")
    r.add_argument("--json", action="store_true", help="print the spend table as JSON")
    r.add_argument("--junit", type=Path, metavar="FILE", help="write them as JUnit XML")
    r.add_argument("--html", type=Path, metavar="FILE",
                   help="write a static review page (players, waveforms, label filter); audio is linked relative to it")
    pr = cmd("providers", "list the installed provider types (built-in and plugins), models and prices", targets=False)
    pr.add_argument("--json", action="store_true")
    i = cmd("init", "start a project here: a commented musicbuild.yaml, a .gitignore and, with --ci, a CI workflow",
            targets=False)
    i.add_argument("--ci", choices=("github", "gitlab"), help="also write the CI workflow for GitHub or GitLab")
    co = cmd("completion", "print the shell completion script (bash, zsh or fish)", targets=False)
    co.add_argument("shell", choices=("bash", "zsh", "fish"))
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
    for warning in result.report.get("warnings") or []:
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
    rows = api.plan(args.file, args.targets, force=args.force)
    if args.json:
        print(json.dumps({"version": 1, "tracks": rows}, indent=2))
        return EXIT_OK
    width = max([len(r["id"]) for r in rows] + [5])
    by_provider: dict[str, float] = {}
    for r in rows:
        reasons = ",".join(r["reasons"])
        cost = ("free" if not r["cost_usd"] else f"${r['cost_usd']:.4f}") if r["action"] in ("generate", "resume") else "-"
        note = ""
        if r.get("job"):
            note += f"  [{r['job']['state']} job {r['job'].get('job_id') or '(no id)'}]"
        if r.get("length") and r["action"] in ("generate", "resume"):
            note += f"  ({r['length']})"
        print(f"{r['id']:<{width}}  {r['action']:<11} {reasons:<28} {r['provider']:<10} {cost}{note}")
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
