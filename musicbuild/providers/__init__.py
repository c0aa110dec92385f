"""Provider adapters, one module each, behind ``base.Provider``."""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError
from ..model import ProviderConfig
from .base import Provider
from .aigateway import AIgatewayProvider
from .beatra import BeatraProvider
from .local import LocalProvider
from .sonauto import SonautoProvider
from .verbatik import VerbatikProvider

ADAPTERS: dict[str, type[Provider]] = {
    "local": LocalProvider, "aigateway": AIgatewayProvider, "verbatik": VerbatikProvider, "sonauto": SonautoProvider,
    "beatra": BeatraProvider,
}


def is_available(type_name: str) -> bool:
    return type_name in ADAPTERS


def create_provider(config: ProviderConfig, env: Mapping[str, str], client: Any = None) -> Provider:
    cls = ADAPTERS.get(config.type)
    if cls is None:
        raise ConfigError(
            f"provider '{config.name}': the {config.type} adapter is not available in this version of "
            "musicbuild; only 'local' can build (plan and validate work for every type)")
    return cls(config, env, client)


__all__ = ["Provider", "create_provider", "is_available", "ADAPTERS"]
