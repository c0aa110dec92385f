"""What a manifest's template renders may still spend, and the error for going over a limit.

Apart from ``sandbox.py`` (which builds on Jinja) so that loading a manifest whose templates only
substitute variables never imports Jinja (~30 ms of each edit-loop command): ``render.py`` and the
fast loader keep a budget from the start and reach the sandbox only for a real template.
"""
from __future__ import annotations


class TemplateLimit(Exception):
    """A template went over one of the limits; ``args[0]`` says which."""


class TemplateTimeout(TemplateLimit):
    pass


class TimeBudget:
    """The render time of one manifest's templates (see ``sandbox.py``'s docstring)."""

    def __init__(self) -> None:
        self.stopped = 0.0  # seconds spent in renders the deadline stopped
        self.timed_out: set[str] = set()  # their sources
