"""The one interface every provider implements.

A provider turns a ``TrackSpec`` into audio bytes. It never touches the disk or the cache: the
executor hands it ``on_job`` to journal a job id the moment the service returns one, and stores
what ``generate``/``resume`` return. Input rules are checked by ``check_track`` before any request.

Every provider class carries its metadata as ``info`` (a ``ProviderInfo``: models, prices, limits,
option schema). A plugin's class sets it; the built-in adapters get their row of
``catalog.BUILTIN`` when the class is defined, so SPEC 4's table stays in one place.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Mapping

from ..model import Generation, ProviderConfig, TrackSpec
from ..yamlsrc import Path_
from .catalog import BUILTIN, ProviderInfo, estimate_track

OnJob = Callable[[dict[str, Any] | None], None]  # None: forget the journal entry


class Provider(ABC):
    type: ClassVar[str]
    info: ClassVar[ProviderInfo]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "info" in cls.__dict__ and "type" not in cls.__dict__:
            cls.type = cls.info.name
        elif "type" in cls.__dict__ and "info" not in cls.__dict__ and cls.type in BUILTIN:
            cls.info = BUILTIN[cls.type]

    def __init__(self, config: ProviderConfig, env: Mapping[str, str], client: Any = None) -> None:
        self.config = config
        self.env = env
        self.client = client  # the shared httpx.AsyncClient for hosted services

    def bind(self, client: Any) -> None:
        """Attach the build's shared HTTP client (created inside the event loop)."""
        self.client = client

    @property
    def name(self) -> str:
        return self.config.name

    def check_track(self, spec: TrackSpec) -> list[tuple[Path_, str]]:
        """Violations of the service's documented input rules, as (field path, message).

        The default checks ``options`` against ``info.options_schema`` (if the class has one)."""
        schema = getattr(self.info, "options_schema", None) if hasattr(self, "info") else None
        if schema is None:
            return []
        from ..schema import validate_against

        return [(("options", *path), message) for path, message in validate_against(schema, dict(spec.options))]

    def estimate_cost(self, spec: TrackSpec) -> float:
        return estimate_track(self.config.price, self.config.type, spec.model, spec.duration, spec.options)

    @abstractmethod
    async def generate(self, spec: TrackSpec, gen_key: str, on_job: OnJob,
                       on_remote_done: Callable[[float], None] = lambda cost: None) -> Generation:
        """Submit, wait, download; call ``on_job`` with the journal entry as soon as a job exists
        and ``on_remote_done`` once the service has finished it (before downloading)."""

    async def resume(self, spec: TrackSpec, gen_key: str, job: Mapping[str, Any],
                     on_remote_done: Callable[[float], None] = lambda cost: None) -> Generation:
        """Finish a job an earlier build submitted (never submits again)."""
        raise NotImplementedError(f"{self.type} jobs cannot be resumed")
