"""The providers a manifest's tracks may name: those it declares under ``providers:``, then every
installed provider type under its own name with the type's defaults (``provider: aigateway``).

Built-in types are there from the start. A plugin type is added the first time a track looks its
name up, so loading a manifest that names built-in types only never scans the plugin entry points
(importlib.metadata and every plugin's import: a tenth of a second of each edit-loop command).
Iterating therefore lists the declared providers, the built-in types and the plugin types looked
up so far; whoever needs every installable name asks ``catalog.TYPES``.
"""
from __future__ import annotations

from typing import Iterator, Mapping

from .model import ProviderConfig
from .providers.catalog import BUILTIN, TYPES, ProviderInfo


def implicit(name: str, info: ProviderInfo) -> ProviderConfig:
    """Type ``name`` used as a provider with nothing but its defaults."""
    return ProviderConfig(name=name, type=name, base_url=info.base_url, api_key_env=info.api_key_env,
                          model=info.default_model, requests_per_minute=info.requests_per_minute,
                          max_concurrent=info.max_concurrent, poll_interval=info.poll_interval,
                          timeout=info.timeout, price=None, options={})


class ProviderSet(Mapping[str, ProviderConfig]):
    def __init__(self, declared: Mapping[str, ProviderConfig]) -> None:
        self._known: dict[str, ProviderConfig] = dict(declared)
        for name, info in BUILTIN.items():
            self._known.setdefault(name, implicit(name, info))

    def __getitem__(self, name: str) -> ProviderConfig:
        found = self._known.get(name)
        if found is None:
            info = TYPES[name]  # KeyError for a name no installed type has (scans the plugins once)
            found = self._known[name] = implicit(name, info)
        return found

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except (KeyError, TypeError):
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)

    def __repr__(self) -> str:
        return f"ProviderSet({self._known!r})"
