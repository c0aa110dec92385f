"""What a provider type is, as data: models, prices, limits, defaults (SPEC 4's table).

``ProviderInfo`` is the metadata every provider class carries as ``info`` (built-ins get their row
of ``BUILTIN`` below; a plugin's class sets its own). ``TYPES`` maps the *installed* type names to
their info: the built-ins and every plugin registered under the ``musicbuild.providers`` entry-point
group (see ``registry.py``). Looking up a built-in type answers from ``BUILTIN``; only listing the
types or looking up another name resolves the plugin registry. Prices are USD and can be overridden per
provider with ``price:``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..lazymap import LazyMapping

# The price terms a provider (or a manifest's `price:`) may state; several add up.
PRICE_TERMS = ("usd_per_job", "usd_per_second", "usd_per_minute", "usd_per_song", "usd_per_extra_song",
               "usd_per_credit")


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    default_model: str = "default"
    models: tuple[str, ...] = ()  # known models; empty = any slug accepted
    price: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: {"*": {"usd_per_job": 0.0}})
    requests_per_minute: float = 60.0
    max_concurrent: int = 4
    poll_interval: float = 5.0
    timeout: float = 1800.0  # per job; a stuck job stays journaled and the next build resumes it
    takes_reference_audio: bool = False
    max_duration: float = 600.0
    clips: Mapping[str, int] = field(default_factory=lambda: {"*": 1})  # model (or "*") -> clips per job
    description: str = ""
    # JSON Schema of the `options` mapping; when set, Provider.check_track checks options against it
    options_schema: Mapping[str, Any] | None = None
    takes_seed: bool = True  # False: a seed changes nothing, so a derived one stays out of the key


ProviderType = ProviderInfo  # the name before plugins

LOCAL_MODEL = "synth-v1"

BUILTIN: dict[str, ProviderInfo] = {
    t.name: t
    for t in (
        ProviderInfo("local", None, None, LOCAL_MODEL, (LOCAL_MODEL,), {"*": {"usd_per_job": 0.0}},
                     requests_per_minute=1e9, max_concurrent=2, poll_interval=0.0, timeout=600.0,
                     description="built-in offline synthesizer"),
        ProviderInfo("aigateway", "https://api.aigateway.sh", "AIGATEWAY_API_KEY",
                     "sonauto/v2/text-to-music", (),
                     {"sonauto/v2/text-to-music": {"usd_per_second": 0.0013},
                      "sony-ai/mmaudio-v2-text-to-audio": {"usd_per_second": 0.0010},
                      "*": {"usd_per_second": 0.0013}},
                     description="AIgateway /v1/audio/music (any model slug)", takes_seed=False),
        ProviderInfo("verbatik", "https://api.verbatik.com", "VERBATIK_API_KEY", "sonauto-v2",
                     (), {"*": {"usd_per_minute": 0.20}}, description="Verbatik text-to-music (Sonauto v2)"),
        # 100 credits a song, 150 for two, at the Starter plan's $11 / 20,000 credits
        ProviderInfo("sonauto", "https://api.sonauto.ai", "SONAUTO_API_KEY", "v2", ("v2", "v3"),
                     {"*": {"usd_per_job": 0.055, "usd_per_extra_song": 0.0275}},
                     description="Sonauto generations v2/v3"),
        ProviderInfo("beatra", "https://api.beatra.ai", "BEATRA_API_KEY", "suno-5.5",
                     ("suno-5.5", "minimax-music-2.6"),
                     {"suno-5.5": {"usd_per_job": 0.080}, "minimax-music-2.6": {"usd_per_job": 0.050}},
                     takes_reference_audio=True, clips={"suno-5.5": 2, "*": 1},
                     description="beatra music tasks (suno, minimax)", takes_seed=False),
    )
}


def _installed() -> Mapping[str, ProviderInfo]:
    from .registry import infos  # the plugin registry, looked up on first use

    return infos()


TYPES: Mapping[str, ProviderInfo] = LazyMapping(_installed, known=BUILTIN)


def clip_count(type_name: str, model: str, options: Mapping[str, object]) -> int:
    """How many clips one generation returns (decides the outputs of `clips: all`)."""
    if type_name in ("verbatik", "sonauto"):
        n = options.get("num_songs", 1)
        return n if isinstance(n, int) and n in (1, 2) else 1
    clips = TYPES[type_name].clips
    return clips.get(model, clips.get("*", 1))


def cost_of(price: Mapping[str, float], clip_seconds: list[float]) -> float:
    """USD for one job that delivered clips of these lengths, under ``price`` terms (they add up)."""
    total, songs = sum(clip_seconds), len(clip_seconds)
    cost = price.get("usd_per_job", 0.0)
    cost += price.get("usd_per_second", 0.0) * total
    cost += price.get("usd_per_minute", 0.0) * total / 60.0
    cost += price.get("usd_per_song", 0.0) * songs
    cost += price.get("usd_per_extra_song", 0.0) * max(0, songs - 1)
    return round(cost, 6)


def estimate_cost(price: Mapping[str, float], duration: float, clips: int) -> float:
    """USD for one generation of ``clips`` clips of ``duration`` seconds each."""
    return cost_of(price, [duration] * clips)


@dataclass(frozen=True)
class Length:
    """How long a service's clip will really be, whatever the track's ``duration`` says."""

    seconds: float | None  # None: the model decides and nothing is published
    controlled: bool  # the service honours the requested duration
    note: str | None = None  # said in `plan` when the user cannot control the length


SONAUTO_V2_SECONDS = 95.0  # "one ~1:35 song" (CONTRACTS 2b): v2 takes no duration
MMAUDIO_RANGE = (1.0, 30.0)


def expected_length(type_name: str, model: str, duration: float) -> Length:
    """What the service will produce for a requested ``duration`` (CONTRACTS.md per service)."""
    if type_name == "aigateway":
        if model.startswith("sonauto/"):
            return Length(SONAUTO_V2_SECONDS, False, f"{model} picks the length (~95 s); duration is not honoured")
        if model.startswith("sony-ai/mmaudio"):
            lo, hi = MMAUDIO_RANGE
            seconds = min(hi, max(lo, duration))
            note = None if seconds == duration else f"{model} clamps duration to {lo:g}-{hi:g} s ({seconds:g} s)"
            return Length(seconds, True, note)
        return Length(duration, True)
    if type_name == "verbatik":
        return Length(SONAUTO_V2_SECONDS, False, "Verbatik (Sonauto v2) picks the length (~95 s); it has no duration field")
    if type_name == "sonauto":
        if model == "v3":
            return Length(180.0, False, "Sonauto v3 picks the length (2-4 min); it has no duration field")
        return Length(SONAUTO_V2_SECONDS, False, "Sonauto v2 makes ~95 s songs; it has no duration field")
    if type_name == "beatra":
        return Length(None, False, f"{model} picks the length; beatra has no duration field (describe it in the prompt)")
    return Length(duration, True)


def uses_seed(type_name: str, model: str) -> bool:
    """Whether the service takes a seed: a seed it cannot use does not change what it generates
    (``ProviderInfo.takes_seed``; Sonauto's v3 takes none, its v2 does)."""
    if type_name == "sonauto":
        return model != "v3"
    info = TYPES.get(type_name)
    return info.takes_seed if info is not None else True


def price_for(type_name: str, model: str) -> Mapping[str, float]:
    table = TYPES[type_name].price
    return table.get(model) or table.get("*") or {}


def estimate_track(price_override: Mapping[str, float] | None, type_name: str, model: str,
                   duration: float, options: Mapping[str, object]) -> float:
    """Estimated USD for generating one track (before any request), for what the service will
    really produce, not for a duration it ignores."""
    price = price_override or price_for(type_name, model)
    seconds = expected_length(type_name, model, duration).seconds
    return estimate_cost(price, duration if seconds is None else seconds, clip_count(type_name, model, options))


def describe_price(terms: Mapping[str, float]) -> str:
    """``{"usd_per_second": 0.0013}`` as ``$0.0013/s``; several terms joined with ``+``."""
    units = {"usd_per_job": "/job", "usd_per_second": "/s", "usd_per_minute": "/min per song",
             "usd_per_song": "/song", "usd_per_extra_song": "/extra song", "usd_per_credit": "/credit"}
    parts = [f"${value:g}{units.get(term, ' ' + term)}" for term, value in terms.items() if value]
    return " + ".join(parts) or "free"
