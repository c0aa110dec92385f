"""The Jinja2 sandbox manifest templates run in, and what one render may cost.

Jinja's own sandbox keeps templates away from Python internals; it does not stop
``{{ 'a' * 10**9 }}`` (a gigabyte), ``{{ 3**1000000000 }}`` (minutes of arithmetic) or nested
loops that never end. Here every operation that can make something much bigger than its operands is
checked before it runs, everything a render produces is counted, and the render has a deadline:

- a value (string, list) a template makes, and its whole output: at most ``MAX_TEXT`` characters;
- all values one render makes together: at most ``MAX_WORK`` characters;
- integers from arithmetic: at most ``MAX_INT_BITS`` bits;
- one render: at most ``MAX_RENDER_SECONDS`` of wall-clock time (SIGALRM, main thread only; the
  size limits hold everywhere). A template stopped by the deadline fails at once when it is rendered
  again (the next matrix combination), and once stopped renders have taken ``MAX_STOPPED_SECONDS``
  together no more templates are rendered: the manifest has failed already.

Operators (``* ** + %``) go through ``call_binop`` (Jinja's ``intercepted_binops``), ``~`` and
buffered blocks through a small code generator, filters through wrappers, methods through ``call``.
Breaking a limit raises ``TemplateLimit``, which the renderer reports as a manifest error.
"""
from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
from typing import Any, Callable, Iterator

from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment

import time

from .limits import MAX_INT_BITS, MAX_RENDER_SECONDS, MAX_STOPPED_SECONDS, MAX_TEXT, MAX_WORK
from .renderbudget import TemplateLimit, TemplateTimeout, TimeBudget

SIZED = (str, bytes, list, tuple, dict, set, frozenset)
REMOVED_FILTERS = ("urlize",)  # adds its options' text to every URL in the value: no use in a prompt
REMOVED_GLOBALS = ("lipsum",)  # lipsum(n) writes n paragraphs
REMOVED_METHODS = ("translate", "maketrans")  # a table can map one character to a megabyte
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d*)(?:\.(\d*))?")  # widths and precisions
_FIELD = re.compile(r"\{([^{}]*)\}")  # str.format fields, innermost


_state = threading.local()


def _charge(size: int) -> None:
    _state.work = getattr(_state, "work", 0) + size
    if _state.work > MAX_WORK:
        raise TemplateLimit(f"one render made more than {MAX_WORK:,} characters of text")


def weight(value: Any, stop: int = MAX_WORK) -> int:
    """About how many characters ``value`` takes as text: strings, and lists, tuples and mappings
    with everything in them (a list holding one megabyte string a thousand times weighs a
    gigabyte). Iterative, and it stops counting past ``stop``."""
    total, stack = 0, [value]
    while stack and total <= stop:
        v = stack.pop()
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += len(v)
            stack.extend(v)
        elif isinstance(v, dict):
            total += len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, int):
            total += max(1, v.bit_length() // 3)  # its decimal digits, roughly
        else:
            total += 1
    return total


def _bounded(value: Any) -> Any:
    """Count ``value`` against the render's budget; refuse one that is too big on its own."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimit(f"a number of {value.bit_length():,} bits (at most {MAX_INT_BITS:,})")
    if isinstance(value, SIZED):
        size = weight(value)
        if size > MAX_TEXT:
            raise TemplateLimit(f"a value of more than {MAX_TEXT:,} characters or items")
        _charge(size)
    return value


def _at_most(size: int, what: str) -> None:
    if size > MAX_TEXT:
        raise TemplateLimit(f"{what} would make {size:,} characters or items (at most {MAX_TEXT:,})")


def _length(value: Any) -> int:
    return weight(value, MAX_TEXT)


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}`` value before it becomes text: a big list must not be str()-ed first."""
    _at_most(weight(value, MAX_TEXT), "printing a value")
    return value


def _check_binop(op: str, left: Any, right: Any) -> None:
    ints = isinstance(left, int) and isinstance(right, int)
    if op == "**" and ints and right > 0 and abs(left) > 1:
        if right * math.log2(abs(left)) > MAX_INT_BITS:
            raise TemplateLimit(f"{left} ** {right} would have more than {MAX_INT_BITS:,} bits")
    elif op == "*" and ints:
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise TemplateLimit(f"a product would have more than {MAX_INT_BITS:,} bits")
    elif op == "*":
        seq, times = (left, right) if isinstance(left, SIZED) else (right, left)
        if isinstance(seq, SIZED) and isinstance(times, int):
            _at_most(_length(seq) * max(times, 0), "repeating a value")
    elif op == "+" and isinstance(left, SIZED) and isinstance(right, SIZED):
        _at_most(_length(left) + _length(right), "joining two values")
    elif op == "%" and isinstance(left, str):
        _at_most(len(left) + _length(right), "formatting")
        _check_widths(_printf_numbers(left), right)


def _printf_numbers(fmt: str) -> list[str]:
    return [n for pair in _PRINTF.findall(fmt) for n in pair]


def _format_numbers(fmt: str) -> list[str]:
    return [n for field in _FIELD.findall(fmt) for n in re.findall(r"\d+", field)]


def _check_widths(numbers: list[str], args: Any) -> None:
    """printf/format widths and precisions: a '%999999999d' or '{:>999999999}' is a gigabyte."""
    widest = max((int(n) for n in numbers if n), default=0)
    if widest > MAX_TEXT:
        raise TemplateLimit(f"a format width of {widest:,} (at most {MAX_TEXT:,})")
    values = args if isinstance(args, (tuple, list)) else (args.values() if isinstance(args, dict) else (args,))
    if any(isinstance(v, int) and abs(v) > MAX_TEXT for v in values):  # widths given as '*' or '{:{}}'
        raise TemplateLimit(f"a number over {MAX_TEXT:,} given to a format")
    _at_most(sum(_length(v) for v in values), "formatting")


def _check_join(sep: Any, items: list) -> None:
    total = _length(sep) * max(len(items) - 1, 0)
    _at_most(total, "joining")
    for item in items:
        total += _length(item)
        _at_most(total, "joining")


def _listed(items: Any) -> list:
    """``items`` as a list (a generator is read once, here), refusing more than ``MAX_TEXT``."""
    if isinstance(items, (list, tuple, str, dict, set, frozenset)) and len(items) > MAX_TEXT:
        raise TemplateLimit(f"more than {MAX_TEXT:,} items")
    out = []
    for item in items:
        out.append(item)
        if len(out) > MAX_TEXT:
            raise TemplateLimit(f"more than {MAX_TEXT:,} items")
    return out


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        _at_most(len(text) + hits * len(new), "replace")


def _check_method(name: str, owner: Any, args: tuple, kwargs: dict) -> None:
    """Methods of str and friends that can make far more than they are given."""
    if name in REMOVED_METHODS:
        raise TemplateLimit(f"'{name}' is not available in templates")
    numbers = [a for a in (*args, *kwargs.values()) if isinstance(a, int) and not isinstance(a, bool)]
    if any(abs(n) > MAX_TEXT for n in numbers):
        raise TemplateLimit(f"a number over {MAX_TEXT:,} given to {name}()")
    if name == "join" and args:
        _check_join(owner, args[0])  # ``call`` passed it as a list
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, *args[:3])
    elif name in ("format", "format_map") and isinstance(owner, str):
        _check_widths(_format_numbers(owner), (*args, *kwargs.values()))
    elif name == "expandtabs" and isinstance(owner, str):
        _at_most(len(owner) + owner.count("\t") * (numbers[0] if numbers else 8), "expandtabs")


# Filters that size their output from an argument: a precheck on (value, args, kwargs).
def _filter_checks() -> dict[str, Callable[..., None]]:
    def indent(value: Any, width: Any = 4, *args: Any, **kw: Any) -> None:
        width = kw.get("width", width)
        size = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        _at_most(len(str(value)) + size * (str(value).count("\n") + 1), "indent")

    def counts(value: Any, n: Any = 1, *args: Any, **kw: Any) -> None:
        if isinstance(n, int):
            _at_most(abs(n), "a width or count")

    def wordwrap(value: Any, width: Any = 79, break_long: Any = True, wrapstring: Any = None, *a: Any, **kw: Any) -> None:
        wrap = kw.get("wrapstring", wrapstring)
        _at_most(len(str(value)) * (len(wrap) + 1) if isinstance(wrap, str) else 0, "wordwrap")

    def tojson(value: Any, indent: Any = None) -> None:
        if isinstance(indent, int) and indent > 16:
            raise TemplateLimit(f"tojson indent {indent} (at most 16)")

    def total(value: Any, attribute: Any = None, start: Any = 0) -> None:
        if not isinstance(start, (int, float)):  # sum(lists, start=[]) copies quadratically, in C
            raise TemplateLimit("sum with a start that is not a number")

    return {
        "center": counts, "indent": indent, "batch": counts, "slice": counts, "wordwrap": wordwrap,
        "tojson": tojson, "sum": total, "format": lambda value, *args, **kw: _check_widths(_printf_numbers(str(value)), args or kw),
        "join": lambda value, d="", *a, **kw: _check_join(d, value),  # the wrapper made value a list
        "replace": lambda value, old="", new="", count=None, *a: _check_replace(str(value), old, new, -1 if count is None else count),
    }


def _wrap_filter(name: str, fn: Callable[..., Any], check: Callable[..., None] | None) -> Callable[..., Any]:
    passes = getattr(fn, "jinja_pass_arg", None)  # context/eval_context/environment come first
    first = 1 if passes else 0

    def bounded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > first:  # most filters make text of their value first: weigh it before
            if name == "join":
                args = (*args[:first], _listed(args[first]), *args[first + 1:])
            _at_most(_length(args[first]), f"the {name} filter")
        if check is not None:
            check(*args[first:], **kwargs)
        return _bounded(fn(*args, **kwargs))

    if passes is not None:
        bounded.jinja_pass_arg = passes  # type: ignore[attr-defined]
    bounded.__name__ = name
    return bounded


class _Buffer(list):
    """The output buffer of ``{% set %}``/``{% filter %}``/macro blocks, which do not stream."""

    def append(self, item: Any) -> None:
        _charge(_length(item))
        super().append(item)

    def extend(self, items: Any) -> None:
        for item in items:
            self.append(item)


class _CodeGenerator(CodeGenerator):
    def buffer(self, frame: Any) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")

    def visit_Concat(self, node: Any, frame: Any) -> None:  # the ~ operator
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(finalize=_finalize, **kwargs)
        checks = _filter_checks()
        for name in REMOVED_FILTERS:
            self.filters.pop(name, None)
        for name in REMOVED_GLOBALS:
            self.globals.pop(name, None)
        self.filters = {name: _wrap_filter(name, fn, checks.get(name)) for name, fn in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _bounded(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(owner, (str, bytes, int, float, list, tuple, dict)):
            name = getattr(target, "__name__", "")
            if name == "join" and args:
                args = (_listed(args[0]), *args[1:])
            _check_method(name, owner, args, kwargs)
        return _bounded(super().call(__context, __obj, *args, **kwargs))

    @staticmethod
    def bounded_buffer() -> _Buffer:
        return _Buffer()

    @staticmethod
    def bounded_concat(parts: tuple) -> str:
        _at_most(sum(map(_length, parts)), "joining with ~")
        return _bounded("".join([str(p) for p in parts]))


def render_bounded(template: Any, context: Any, budget: TimeBudget, source: str) -> str:
    """Render with the work count reset, the output streamed and counted, under the deadline."""
    if source in budget.timed_out:
        raise TemplateTimeout(f"the render took longer than {MAX_RENDER_SECONDS:g} s (already for other values)")
    left = MAX_STOPPED_SECONDS - budget.stopped
    if left <= 0:
        raise TemplateTimeout("not rendered: this manifest's templates have run out of time already")
    _state.work = 0
    chunks, size = [], 0
    started = time.monotonic()
    try:
        with deadline(min(MAX_RENDER_SECONDS, left)):
            for chunk in template.generate(context):
                size += len(chunk)
                if size > MAX_TEXT:
                    raise TemplateLimit(f"the output passed {MAX_TEXT:,} characters")
                chunks.append(chunk)
    except TemplateTimeout:
        budget.stopped += time.monotonic() - started
        budget.timed_out.add(source)
        raise
    return "".join(chunks)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``TemplateLimit`` in the main thread if the block takes longer than ``seconds``.

    Elsewhere (a worker thread, a platform without SIGALRM, an alarm already in use) it does
    nothing: the size limits still bound what a template can do."""
    usable = (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
              and signal.getitimer(signal.ITIMER_REAL)[0] == 0)
    if not usable:
        yield
        return
    armed = [True]

    def on_alarm(signum: int, frame: Any) -> None:
        if armed[0]:
            raise TemplateTimeout(f"the render took longer than {seconds:.2g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
