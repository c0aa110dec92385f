"""The one interface every provider implements.

A provider turns a ``TrackSpec`` into audio bytes. It never touches the disk or the cache: the
executor hands it a ``JobHandle`` through which it reports every step of a paid job (the journal's
state machine, ``journal.py``), and stores what ``generate`` returns. Input rules are checked by
``check_track`` before any request.

Every provider class carries its metadata as ``info`` (a ``ProviderInfo``: models, prices, limits,
option schema). A plugin's class sets it; the built-in adapters get their row of
``catalog.BUILTIN`` when the class is defined, so SPEC 4's table stays in one place.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping, Protocol

from ..model import Generation, ProviderConfig, TrackSpec
from ..yamlsrc import Path_
from .catalog import BUILTIN, ProviderInfo, estimate_track


# where a job is, as ``JobHandle.progress`` reports it: the create is on its way; the service says
# the job waits in its queue; it runs and we poll it; its audio is coming down
STAGES = ("submitting", "queued", "polling", "downloading")


class JobRecordView(Protocol):
    """What a provider may read of its job's journal record."""

    @property
    def gen_key(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def job_id(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def model(self) -> str: ...
    @property
    def poll(self) -> Mapping[str, Any]: ...
    @property
    def charged_usd(self) -> float | None: ...
    @property
    def error(self) -> str | None: ...


class JobHandle(Protocol):
    """A provider's only way to change the state of the job it runs (the executor implements it).

    Call order: ``sent`` (from the HTTP layer, just before the create leaves), then ``submitted`` the
    moment the service returns a job id, ``update`` whenever polling learns something worth keeping,
    ``done`` once the service says the job finished (its slot is freed; downloads come from a CDN),
    or ``failed``/``gone``. A create that got no readable answer ends in ``ambiguous``; the
    service's own refusal in ``refused``. The executor records ``collected`` once the audio is stored.

    ``progress`` is no transition, only news for the live display: where the job is now, one of
    ``STAGES``. A provider that never calls it is shown as running.
    """

    @property
    def record(self) -> JobRecordView: ...
    def sent(self) -> None: ...
    def submitted(self, job_id: str, poll: Mapping[str, Any], charged_usd: float | None = None) -> None: ...
    def update(self, poll: Mapping[str, Any]) -> None: ...
    def done(self, poll: Mapping[str, Any] | None = None, charged_usd: float | None = None,
             basis: str | None = None) -> None: ...
    def failed(self, error: str, charged_usd: float | None = None, refunded_usd: float | None = None) -> None: ...
    def gone(self, error: str) -> None: ...
    def ambiguous(self, error: str) -> None: ...
    def refused(self, error: str) -> None: ...
    def progress(self, stage: str) -> None: ...


class Provider(ABC):
    type: ClassVar[str]
    info: ClassVar[ProviderInfo]
    paid: ClassVar[bool] = True  # its jobs cost money: journaled, budgeted, reported
    uses_http: ClassVar[bool] = True  # it is bound to the build's shared HTTP client (httpx)
    idempotent_create: ClassVar[bool] = False  # the service deduplicates a create sent again with its key

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
        """Attach the build's shared HTTP client (created inside the event loop; None when no
        provider of the build ``uses_http``)."""
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

    def idempotency_key(self, gen_key: str, attempt: int) -> str | None:
        """The key a new attempt's create carries (journaled before it is sent), if the service takes one."""
        return None

    @abstractmethod
    async def generate(self, spec: TrackSpec, job: JobHandle) -> Generation:
        """Run the job behind ``job`` to its audio: create it if its record is a fresh ``intent``,
        otherwise pick up where an earlier build left it (never creating it again)."""

    async def collect(self, job: JobHandle) -> Generation:
        """Finish a journaled job without its track spec (a paid job no track needs any more)."""
        raise NotImplementedError(f"{self.type} jobs cannot be collected")
