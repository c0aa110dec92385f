"""The command line's grammar: every command, option and choice, and argparse's complaints turned
into one clean line (with a did-you-mean) instead of its usage dump. ``completion.py`` reads the
same parser, so what TAB offers is what the parser takes."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from . import __version__
from .errors import UsageError


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
