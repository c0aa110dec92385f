"""Provider adapters behind ``base.Provider``: the built-ins, one module each, and plugins, all
found through the ``musicbuild.providers`` entry-point group (``registry.py``)."""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError
from ..model import ProviderConfig
from .base import Provider
from .catalog import ProviderInfo
from .registry import adapter, installed


def is_available(type_name: str) -> bool:
    return adapter(type_name) is not None


def create_provider(config: ProviderConfig, env: Mapping[str, str], client: Any = None) -> Provider:
    cls = adapter(config.type)
    if cls is None:
        entry = installed().get(config.type)
        why = entry.error if entry is not None else "no installed package registers it"
        raise ConfigError(f"provider '{config.name}': type '{config.type}' is not available ({why})",
                          "`musicbuild providers` lists what is installed")
    return cls(config, env, client)


__all__ = ["Provider", "ProviderInfo", "create_provider", "is_available", "installed"]
