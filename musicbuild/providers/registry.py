"""Provider plugins: every provider type, built-in or not, is an entry point of the group
``musicbuild.providers`` whose value is a ``Provider`` subclass carrying its ``info``.

musicbuild's own ``pyproject.toml`` registers the built-ins there exactly as a plugin registers its
own (``demo = "musicbuild_plugin_demo:DemoProvider"``). The built-ins are known without reading
those entry points (their infos are ``catalog.BUILTIN``; using one imports its module alone). A plugin cannot replace a built-in type, and
a plugin that fails to import is listed as broken (``musicbuild providers``) instead of breaking
every command; a manifest that uses it gets the import error as its message.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping

from .catalog import BUILTIN, ProviderInfo

if TYPE_CHECKING:
    from .base import Provider

GROUP = "musicbuild.providers"
# The built-ins as pyproject.toml registers them (a test keeps the two in step); loaded from here,
# so they work from a source tree that pip never installed (no entry-point metadata) too.
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


@functools.lru_cache(maxsize=None)
def _builtin(name: str) -> Installed:
    """A built-in type, importing its adapter module alone (a local build never loads httpx)."""
    return _load(name, BUILTIN_ENTRY_POINTS[name], "musicbuild", "source")


@functools.lru_cache(maxsize=1)
def _scan() -> tuple[str, dict[str, Installed]]:
    """(musicbuild's version, every registered type that is not a built-in, broken ones included).

    The entry-point scan (importlib.metadata, then each plugin's import) runs only when a name is
    not built-in or every type is listed: planning a manifest of built-in types never pays for it."""
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
    for name in sorted(set(own) - set(BUILTIN_ENTRY_POINTS)):
        found[name] = _load(name, own[name], "musicbuild", ver)
    for name, value, dist, dist_ver in sorted(plugins, key=lambda p: (p[2], p[0])):
        if name in BUILTIN_ENTRY_POINTS or name in found:
            other = found.get(name)
            what = f"also registered by {other.dist}" if other is not None and not other.builtin else "a built-in type"
            found.setdefault(f"{name} ({dist})", Installed(name, value, dist, dist_ver, error=f"ignored: '{name}' is {what}"))
            continue
        found[name] = _load(name, value, dist, dist_ver)
    return ver, found


@functools.lru_cache(maxsize=1)
def installed() -> dict[str, Installed]:
    """Every registered provider type by name, broken ones included (built-ins first)."""
    ver, others = _scan()
    return {**{name: replace(_builtin(name), version=ver) for name in BUILTIN_ENTRY_POINTS}, **others}


@functools.lru_cache(maxsize=1)
def infos() -> dict[str, ProviderInfo]:
    """The usable provider types by name: what manifests may write as ``type:``. A built-in's info
    is its row of ``catalog.BUILTIN`` (which its adapter class carries), so no adapter is imported."""
    plugins = {name: entry.cls.info for name, entry in _scan()[1].items() if entry.cls is not None}
    return {**{name: BUILTIN[name] for name in BUILTIN_ENTRY_POINTS}, **plugins}


def _entry(name: str) -> Installed | None:
    return _builtin(name) if name in BUILTIN_ENTRY_POINTS else _scan()[1].get(name)


def adapter(name: str) -> "type[Provider] | None":
    entry = _entry(name)
    return entry.cls if entry is not None else None


def problem(name: str) -> str | None:
    """Why type ``name`` is unusable when something registered it (a broken plugin), else None."""
    entry = _entry(name)
    return entry.error if entry is not None else None


def price_table(info: ProviderInfo) -> Mapping[str, str]:
    """model -> its price terms in words ("other models", or "any model" when one price fits all)."""
    from .catalog import describe_price

    rest = "other models" if len(info.price) > 1 else "any model"
    return {(rest if model == "*" else model): describe_price(terms) for model, terms in info.price.items()}
