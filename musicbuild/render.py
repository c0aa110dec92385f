"""Sandboxed Jinja2 rendering: every manifest string and prompt/lyrics file is a template.

The sandbox (``sandbox.py``) stops a manifest from reaching Python internals and bounds what a
render may cost; StrictUndefined turns a misspelt variable into an error instead of an empty prompt
that would still cost money to generate.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Mapping

from .renderbudget import TemplateLimit, TimeBudget

if TYPE_CHECKING:
    import jinja2

    from .sandbox import BoundedSandbox


class RenderError(Exception):
    """A template failed; ``args[0]`` is the user-facing message."""


_SYNTAX_HINT = "write variables as {{ name }} and blocks as {% if ... %}...{% endif %}"


class Renderer:
    def __init__(self) -> None:
        self._sandbox: BoundedSandbox | None = None
        self._compiled: dict[str, jinja2.Template] = {}
        self._time = TimeBudget()

    @property
    def _env(self) -> BoundedSandbox:
        """The Jinja sandbox, made for the first template that is more than ``{{ name }}``s: a
        manifest of plain text and variables (an edit loop's usual change) never imports Jinja."""
        if self._sandbox is None:
            import jinja2

            from .sandbox import BoundedSandbox

            self._sandbox = BoundedSandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                           autoescape=False)
        return self._sandbox

    def render(self, source: str, context: Mapping[str, Any], origin: str | None = None) -> str:
        """Render ``source``; ``origin`` names the file it came from, for messages."""
        if "{" not in source:  # fast path: most fields are plain text
            return source
        simple = _substitute(source, context)
        if simple is not None:
            return simple
        import jinja2

        from .sandbox import render_bounded

        template = self._compiled.get(source)
        try:
            if template is None:
                template = self._compiled[source] = self._env.from_string(source)
            return render_bounded(template, context, self._time, source)
        except TemplateLimit as exc:
            message = f"template stopped: {exc.args[0]}; templates are for text, not computation (see 'Limits' in the README)"
            line = _template_line(exc)
        except jinja2.TemplateSyntaxError as exc:
            message, line = f"template syntax error: {(exc.message or '').rstrip('.')}; {_SYNTAX_HINT}", exc.lineno
        except jinja2.UndefinedError as exc:
            message, line = _undefined_message(exc, context), _template_line(exc)
        except jinja2.exceptions.SecurityError as exc:
            message = (f"template not allowed: {str(exc).rstrip('.')} (templates are sandboxed: use variables "
                       "and filters, not Python internals)")
            line = _template_line(exc)
        except Exception as exc:  # filters raising on bad input, e.g. int('x')
            message, line = f"template failed: {type(exc).__name__}: {exc}", _template_line(exc)
        raise RenderError(_located(message, source, origin, line))

    def render_tree(self, value: Any, context: Mapping[str, Any]) -> Any:
        """Render every string inside lists and mappings (used for `options`, `vars`)."""
        if isinstance(value, str):
            return self.render(value, context)
        if isinstance(value, list):
            return [self.render_tree(v, context) for v in value]
        if isinstance(value, dict):
            return {k: self.render_tree(v, context) for k, v in value.items()}
        return value


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _substitute(source: str, context: Mapping[str, Any]) -> str | None:
    """Render ``{{ name }}``-only templates without compiling them, or return None.

    Compiling a Jinja template costs ~0.3 ms; a 10,000-track manifest has thousands of distinct
    prompts that only substitute variables. Output is identical to Jinja's (``str`` of the value);
    anything else (filters, blocks, unknown names) goes through Jinja for its semantics and errors.
    """
    parts = _PLACEHOLDER.split(source)
    literals, names = parts[0::2], parts[1::2]
    if any("{{" in lit or "{%" in lit or "{#" in lit for lit in literals):
        return None
    out = [literals[0]]
    for name, literal in zip(names, literals[1:]):
        if name not in context:
            return None
        value = context[name]
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            return None  # let Jinja format None, booleans, lists, mappings
        out.append(str(value))
        out.append(literal)
    return "".join(out)


def _template_line(exc: BaseException) -> int | None:
    """The template line an exception was raised on (Jinja rewrites tracebacks to point there)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _located(message: str, source: str, origin: str | None, line: int | None) -> str:
    if origin:
        return f"{origin}, line {line}: {message}" if line else f"{origin}: {message}"
    if line and source.rstrip("\n").count("\n"):
        return f"{message} (template line {line})"
    return message


def _undefined_message(exc: jinja2.UndefinedError, context: Mapping[str, Any]) -> str:
    import difflib

    msg = exc.message or "undefined variable"
    # jinja says: 'mood' is undefined
    if msg.endswith(" is undefined") and msg.startswith("'"):
        name = msg.split("'")[1]
        close = difflib.get_close_matches(name, [str(k) for k in context], n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        known = ", ".join(sorted(str(k) for k in context)) or "none"
        return f"undefined variable '{name}'{hint}; known: {known}"
    return msg


def to_number(text: Any, *, integer: bool) -> float | int:
    """Convert a rendered numeric field; raise ValueError with a user-facing message."""
    if isinstance(text, bool):
        raise ValueError(f"must be a number, not {text}")
    if isinstance(text, (int, float)):
        value = text
    else:
        s = str(text).strip()
        try:
            value = int(s) if integer else float(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                raise ValueError(f"must be a number, but the template gave {s!r}") from None
            if not f.is_integer():
                raise ValueError(f"must be a whole number, but the template gave {s!r}") from None
            value = int(f)
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"must be a whole number, not {value}")
        value = int(value)
    return value
