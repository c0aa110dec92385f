"""Checking a track's provider ``options`` against a table of rules, one message per problem."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ..yamlsrc import Path_

Rule = tuple[Callable[[Any], bool], str]  # (accepts the value, what it must be)


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def between(lo: float, hi: float) -> Rule:
    return (lambda v: number(v) and lo <= v <= hi, f"a number from {lo:g} to {hi:g}")


def one_of(*choices: Any) -> Rule:
    return (lambda v: v in choices or str(v) in map(str, choices), " or ".join(map(str, choices)))


BOOL: Rule = (lambda v: isinstance(v, bool), "true or false")


def check_options(service: str, options: Mapping[str, Any], rules: Mapping[str, Rule]) -> list[tuple[Path_, str]]:
    problems: list[tuple[Path_, str]] = []
    for key, value in options.items():
        if key not in rules:
            problems.append((("options", key), f"{service} has no option '{key}' (it takes: {', '.join(rules)})"))
            continue
        accepts, want = rules[key]
        if not accepts(value):
            problems.append((("options", key), f"must be {want}, not {value!r}"))
    if "output_bit_rate" in options and options.get("output_format", "flac") not in ("mp3", "m4a"):
        problems.append((("options", "output_bit_rate"), "only applies to output_format mp3 or m4a"))
    return problems
