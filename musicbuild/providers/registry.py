"""Provider plugins: every provider type, built-in or not, is an entry point of the group
``musicbuild.providers`` whose value is a ``Provider`` subclass carrying its ``info``.

musicbuild's own ``pyproject.toml`` registers the built-ins there exactly as a plugin registers its
own (``demo = "musicbuild_plugin_demo:DemoProvider"``). A plugin cannot replace a built-in type, and
a plugin that fails to import is listed as broken (``musicbuild providers``) instead of breaking
every command; a manifest that uses it gets the import error as its message.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from .catalog import ProviderInfo

if TYPE_CHECKING:
    from .base import Provider

GROUP = "musicbuild.providers"
# The built-ins as pyproject.toml registers them; used when musicbuild runs from a source tree
# that pip never installed (no entry-point metadata). A test keeps the two in step.
BUILTIN_ENTRY_POINTS = {
    "local": "musicbuild.providers.local:LocalProvider",
    "aigateway": "musicbuild.providers.aigateway:AIgatewayProvider",
    "verbatik": "musicbuild.providers.verbatik:VerbatikProvider",
    "sonauto": "musicbuild.providers.sonauto:SonautoProvider",
    "beatra": "musicbuild.providers.beatra:BeatraProvider",
}


@dataclass(frozen=True)
class Installed:
    """One registered provider type and where it came from."""

    name: str
    value: str  # "module:Class"
    dist: str  # the distribution that registered it ("musicbuild" for the built-ins)
    version: str
    cls: "type[Provider] | None" = None
    error: str | None = None  # why it cannot be used (import failed, not a Provider, ...)

    @property
    def builtin(self) -> bool:
        return self.dist == "musicbuild"


def _load(name: str, value: str, dist: str, version: str) -> Installed:
    from importlib import import_module

    from .base import Provider

    module, _, attr = value.partition(":")
    try:
        obj = import_module(module)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except Exception as exc:  # a broken plugin must not break musicbuild: report it instead
        return Installed(name, value, dist, version, error=f"cannot import {value}: {type(exc).__name__}: {exc}")
    if not (isinstance(obj, type) and issubclass(obj, Provider)):
        return Installed(name, value, dist, version, error=f"{value} is not a musicbuild.providers.base.Provider subclass")
    info = getattr(obj, "info", None)
    if not isinstance(info, ProviderInfo):
        return Installed(name, value, dist, version, error=f"{value} has no `info` (a ProviderInfo)")
    if info.name != name:
        return Installed(name, value, dist, version,
                         error=f"registered as '{name}' but its info names it '{info.name}'")
    return Installed(name, value, dist, version, cls=obj)


@functools.lru_cache(maxsize=1)
def installed() -> dict[str, Installed]:
    """Every registered provider type by name, broken ones included (built-ins first)."""
    from importlib.metadata import entry_points, version

    own: dict[str, str] = {}
    plugins = []
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        ver = ep.dist.version if ep.dist is not None else "?"
        if dist == "musicbuild":
            own[ep.name] = ep.value
        else:
            plugins.append((ep.name, ep.value, dist, ver))
    ver = version("musicbuild") if own else "source"
    found: dict[str, Installed] = {}
    for name in [*BUILTIN_ENTRY_POINTS, *sorted(set(own) - set(BUILTIN_ENTRY_POINTS))]:
        found[name] = _load(name, own.get(name) or BUILTIN_ENTRY_POINTS[name], "musicbuild", ver)
    for name, value, dist, ver in sorted(plugins, key=lambda p: (p[2], p[0])):
        if name in found:
            other = found[name]
            what = "a built-in type" if other.builtin else f"also registered by {other.dist}"
            found.setdefault(f"{name} ({dist})", Installed(name, value, dist, ver, error=f"ignored: '{name}' is {what}"))
            continue
        found[name] = _load(name, value, dist, ver)
    return found


@functools.lru_cache(maxsize=1)
def infos() -> dict[str, ProviderInfo]:
    """The usable provider types by name: what manifests may write as ``type:``."""
    return {name: entry.cls.info for name, entry in installed().items() if entry.cls is not None}


def adapter(name: str) -> "type[Provider] | None":
    entry = installed().get(name)
    return entry.cls if entry is not None else None


def problem(name: str) -> str | None:
    """Why type ``name`` is unusable when something registered it (a broken plugin), else None."""
    entry = installed().get(name)
    return entry.error if entry is not None else None


def price_table(info: ProviderInfo) -> Mapping[str, str]:
    """model -> its price terms in words ("other models", or "any model" when one price fits all)."""
    from .catalog import describe_price

    rest = "other models" if len(info.price) > 1 else "any model"
    return {(rest if model == "*" else model): describe_price(terms) for model, terms in info.price.items()}
