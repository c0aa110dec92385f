"""Plain data passed between the layers: specs in, plans through, outcomes out."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    base_url: str | None
    api_key_env: str | None
    model: str | None
    requests_per_minute: float
    max_concurrent: int
    poll_interval: float
    timeout: float
    price: Mapping[str, float] | None
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Metadata:
    title: str
    artist: str | None = None
    album: str | None = None
    album_artist: str | None = None
    genre: str | None = None
    year: str | None = None
    track_number: str | None = None
    comment: str | None = None
    copyright: str | None = None
    publisher: str | None = None
    cover: Path | None = None
    id3v23: bool = False


@dataclass(frozen=True)
class OutputSpec:
    clip: int  # 1-based index of the provider's clip this file holds
    rel: str  # relative to output_dir, as rendered
    path: Path  # absolute
    root: Path | None = None  # output_dir, resolved: the output is written only through folders inside it


@dataclass(frozen=True)
class TrackSpec:
    """One fully rendered track: everything needed to generate and materialize it."""

    id: str
    index: int  # position in the manifest's `tracks:` list (before matrix expansion)
    provider: ProviderConfig
    model: str
    prompt: str
    tags: tuple[str, ...]
    lyrics: str | None
    instrumental: bool
    seed: int
    duration: float
    bpm: float | None
    format: str
    outputs: tuple[OutputSpec, ...]
    options: Mapping[str, Any]
    clips: str  # first | all | longest | closest-duration | loudest (which take(s) become outputs)
    reference_audio: Path | None
    metadata: Metadata
    labels: tuple[str, ...]
    files: tuple[Path, ...] = ()  # every input file this track read (prompt, lyrics, cover, reference)
    post: Mapping[str, Any] = field(default_factory=dict)  # delivery processing (SPEC 1 `post:`)
    seed_given: bool = False  # the manifest wrote the seed (else it is derived from the id)


class Action(str, enum.Enum):
    UP_TO_DATE = "up-to-date"
    MATERIALIZE = "materialize"
    RESUME = "resume"
    GENERATE = "generate"


class Reason(str, enum.Enum):
    NEW = "new"
    SPEC_CHANGED = "spec-changed"
    OUTPUT_MISSING = "output-missing"
    OUTPUT_MODIFIED = "output-modified"
    METADATA_CHANGED = "metadata-changed"
    FORMAT_CHANGED = "format-changed"  # the output format changed (at the same path or a new one)
    POST_CHANGED = "post-changed"  # the delivery processing (`post:`) changed
    FORCED = "forced"


@dataclass(frozen=True)
class PlannedOutput:
    output: OutputSpec
    out_key: str
    state: str  # ok | missing | modified | stale | unknown
    restat: tuple[int, int] | None = None  # content unchanged but stat moved: refresh the record
    parts: Mapping[str, str] = field(default_factory=dict)  # what the output key is made of (keys.output_parts)
    recovered: Mapping[str, Any] | None = None  # the cache lost its record; the lock vouched: write it back


@dataclass(frozen=True)
class PlannedTrack:
    spec: TrackSpec
    gen_key: str
    outputs: tuple[PlannedOutput, ...]
    action: Action
    reasons: tuple[Reason, ...]
    est_cost_usd: float
    job: Mapping[str, Any] | None = None  # the journaled job a resume picks up: state, job id
    length_note: str | None = None  # the service picks the length: what the estimate assumed


@dataclass(frozen=True)
class Clip:
    """Audio as the provider delivered it (bytes of a real audio file)."""

    data: bytes
    format: str


@dataclass(frozen=True)
class Generation:
    """What a provider delivered for one job, and what the service charged for it."""

    clips: tuple[Clip, ...]
    provider: str
    model: str
    job_id: str | None
    cost_usd: float  # net: charged - refunded
    attempts: int = 1
    cost_basis: str = "price"  # billed (the service's figure) | measured (delivered length x price) | price
    partial: Mapping[str, Any] | None = None  # fewer clips than asked for: expected, delivered, errors


@dataclass
class Outcome:
    id: str
    out: list[str]
    action: Action
    reasons: tuple[Reason, ...]
    status: str  # ok | failed | skipped
    gen_key: str
    provider: str
    model: str
    clips: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None
    job_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # chosen takes, measured loudness
    estimated_usd: float = 0.0  # the plan's estimate
    charged_usd: float = 0.0  # charges this build learnt (the service's figure, else measured)
    refunded_usd: float = 0.0
    outstanding_usd: float = 0.0  # submitted here, charge not known yet: counted at the estimate
    cost_basis: str | None = None


@dataclass
class BuildSummary:
    manifest: str
    started_at: str
    finished_at: str = ""
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    budget_stopped: bool = False  # --max-cost kept some tracks from being submitted
    shard_skipped: int = 0  # tracks left to other shards (not failures)
    warnings: list[str] = field(default_factory=list)
    remote: dict[str, Any] | None = None  # what the shared cache moved
    collected: list[dict[str, Any]] = field(default_factory=list)  # paid jobs no track needs any more, collected
    rows: list[dict[str, Any]] | None = None  # the report's rows when not all from ``outcomes`` (incremental.py)

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "failed")

    @property
    def cost_usd(self) -> float:
        return round(sum(o.cost_usd for o in self.outcomes) + sum(c["cost_usd"] for c in self.collected), 6)
