"""Delivery processing applied when materializing: trim, channels, resample, fit, loop, loudness.

:func:`process` is pure and deterministic (numpy, soxr, pyloudnorm; no randomness, no
threads whose scheduling could change results), so the same cached audio and
:class:`PostSpec` always give the same samples and therefore the same output bytes.

Steps, always in this order (each one optional)::

    trim_silence -> channels -> resample -> fit (+ fade_out) -> loop -> loudness

Loudness normalisation measures integrated loudness with ``pyloudnorm`` (ITU-R
BS.1770-4), applies gain to reach the target and keeps the *true* peak (4x
oversampled) under the ceiling with a look-ahead brick-wall limiter (gain envelope
computed on the oversampled peaks, held and smoothed so it never exceeds the gain a
sample needs).  Limiting lowers loudness a little, so gain and limiting are iterated
until the measured loudness is on target (within ~0.05 LU in practice).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pyloudnorm
import soxr

__all__ = ["PRESETS", "PostSpec", "Processed", "process", "integrated_loudness", "true_peak_db"]

# name -> (target integrated loudness in LUFS, true-peak ceiling in dBTP)
PRESETS: dict[str, tuple[float, float]] = {
    "streaming": (-14.0, -1.0),
    "apple": (-16.0, -1.0),
    "ebu-r128": (-23.0, -1.0),
    "atsc-a85": (-24.0, -2.0),
    "console": (-23.0, -1.0),
    "mobile": (-18.0, -1.0),
}

SILENCE_DBFS = -60.0  # trim_silence threshold (per-frame peak over channels)
_OVERSAMPLE = 4  # true-peak oversampling factor (BS.1770-4 Annex 2)
_LIMIT_MARGIN_DB = 0.2  # limiter aims this far below the ceiling (resampler differences)
_LOOKAHEAD_S = 0.005  # limiter attack / look-ahead
_HOLD_S = 0.050  # limiter hold before gain recovers
_MAX_ROUNDS = 8  # gain/limit iterations
_TOLERANCE_LU = 0.02


@dataclass(frozen=True)
class PostSpec:
    """What to do to the decoded audio before encoding; the defaults do nothing."""

    loudness: tuple[float, float] | None = None  # (target LUFS, true-peak ceiling dBTP)
    fit: float | None = None  # exact length in seconds (trim or pad with silence)
    fade_out: float = 0.0  # seconds of fade-out at the end (applied with fit, or alone)
    trim_silence: bool = False  # cut leading/trailing silence (below -60 dBFS) first
    loop_crossfade: float | None = None  # make it loop: crossfade the tail into the head
    sample_rate: int | None = None  # resample with soxr (very high quality)
    channels: int | None = None  # 1 (downmix) or 2 (duplicate mono)

    def __post_init__(self) -> None:
        if self.loudness is not None:
            target, ceiling = self.loudness
            if not (math.isfinite(target) and math.isfinite(ceiling)) or ceiling > 0:
                raise ValueError(f"invalid loudness (target LUFS, ceiling dBTP): {self.loudness!r}")
        if self.fit is not None and not (math.isfinite(self.fit) and self.fit > 0):
            raise ValueError(f"fit must be a positive number of seconds, got {self.fit!r}")
        if not (math.isfinite(self.fade_out) and self.fade_out >= 0):
            raise ValueError(f"fade_out must be >= 0 seconds, got {self.fade_out!r}")
        if self.loop_crossfade is not None:
            if not (math.isfinite(self.loop_crossfade) and self.loop_crossfade > 0):
                raise ValueError(f"loop_crossfade must be > 0 seconds, got {self.loop_crossfade!r}")
            if self.fade_out > 0:
                raise ValueError("fade_out and loop_crossfade cannot be combined "
                                 "(a faded tail cannot loop seamlessly)")
        if self.sample_rate is not None and self.sample_rate <= 0:
            raise ValueError(f"invalid sample_rate {self.sample_rate!r}")
        if self.channels not in (None, 1, 2):
            raise ValueError(f"channels must be 1 or 2, got {self.channels!r}")


@dataclass(frozen=True)
class Processed:
    samples: np.ndarray  # float32 (frames, channels)
    sample_rate: int
    loudness_lufs: float | None  # integrated loudness after processing (None: undefined)
    true_peak_db: float | None  # true peak after processing, dBTP (None: silent)
    loop: tuple[int, int] | None  # (start frame, length in frames) of the loop region


# --- measurement ----------------------------------------------------------------


def integrated_loudness(samples: np.ndarray, sample_rate: int) -> float | None:
    """BS.1770-4 integrated loudness in LUFS via pyloudnorm; None if undefined.

    Undefined means: shorter than one 400 ms gating block, or silent/below the
    absolute gate (pyloudnorm returns -inf).
    """
    x = np.asarray(_as_2d(samples), dtype=np.float64)  # no copy when it already is
    if x.shape[0] <= int(0.4 * sample_rate) or x.shape[1] > 5:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        value = float(pyloudnorm.Meter(sample_rate).integrated_loudness(x))
    return value if math.isfinite(value) else None


def _oversampled(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """4x oversampled copy in float32: ample for a peak measurement, and a third faster than float64."""
    return soxr.resample(np.asarray(x, dtype=np.float32), sample_rate, sample_rate * _OVERSAMPLE, quality="HQ")


def _abs_peak(a: np.ndarray) -> float:
    """max(|a|) without an |a| temporary the size of the signal."""
    return max(float(a.max()), -float(a.min())) if a.size else 0.0


def true_peak_db(samples: np.ndarray, sample_rate: int) -> float | None:
    """True peak in dBTP (4x oversampled with soxr); None for silence or no frames."""
    x = _as_2d(samples)
    if x.shape[0] == 0:
        return None
    peak = max(_abs_peak(x), _abs_peak(_oversampled(x, sample_rate)))
    return 20.0 * math.log10(peak) if peak > 0 else None


# --- helpers --------------------------------------------------------------------


def _as_2d(samples: np.ndarray) -> np.ndarray:
    arr = np.asarray(samples)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"samples must be shaped (frames, channels), got {arr.shape}")
    return arr


def _frame_peak(x: np.ndarray) -> np.ndarray:
    """max(|x|) over channels per frame (a column loop: reducing axis 1 is slow)."""
    out = np.abs(x[:, 0])
    for c in range(1, x.shape[1]):
        np.maximum(out, np.abs(x[:, c]), out=out)
    return out


def _running_min(a: np.ndarray, width: int) -> np.ndarray:
    """out[n] = min(a[n : n + width]) (window truncated at the end); O(n log width)."""
    out = a.copy()
    span = 1
    while span < width:
        step = min(span, width - span)
        np.minimum(out[:-step], out[step:], out=out[:-step])
        span += step
    return out


def _moving_average(a: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` (odd) samples, edge-padded."""
    half = width // 2
    padded = np.pad(a, (half, half), mode="edge")
    csum = np.concatenate(([0.0], np.cumsum(padded)))
    return (csum[width:] - csum[:-width]) / width


def _trim_silence(x: np.ndarray) -> np.ndarray:
    level = _frame_peak(x)
    loud = np.flatnonzero(level > 10.0 ** (SILENCE_DBFS / 20.0))
    if loud.size == 0:
        return x  # all silence: nothing sensible to keep, leave it alone
    return x[loud[0] : loud[-1] + 1]


def _set_channels(x: np.ndarray, channels: int) -> np.ndarray:
    if x.shape[1] == channels:
        return x
    if channels == 1:
        return x.mean(axis=1, keepdims=True)
    if x.shape[1] == 1:
        return np.repeat(x, 2, axis=1)
    raise ValueError(f"cannot convert {x.shape[1]} channels to {channels}")


def _resample(x: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    if rate == new_rate or x.shape[0] == 0:
        return x
    return np.asarray(soxr.resample(x, rate, new_rate, quality="VHQ"), dtype=np.float64)


def _fit(x: np.ndarray, frames: int) -> np.ndarray:
    if x.shape[0] >= frames:
        return x[:frames]
    return np.concatenate([x, np.zeros((frames - x.shape[0], x.shape[1]), x.dtype)])


def _fade_out(x: np.ndarray, frames: int) -> np.ndarray:
    frames = min(frames, x.shape[0])
    if frames <= 0:
        return x
    # Raised-cosine from 1 to exactly 0 on the last frame.
    t = np.arange(1, frames + 1) / frames
    x = x.copy()
    x[-frames:] *= (0.5 + 0.5 * np.cos(np.pi * t))[:, None]
    return x


def _loop(x: np.ndarray, cross: int) -> np.ndarray:
    """Equal-power crossfade of the last ``cross`` frames into the first ``cross``.

    The result has ``len(x) - cross`` frames; its frame 0 equals x[len - cross]
    (the fade-in gain is 0 there), which is exactly the frame that followed the
    result's last frame in the original, so the loop seam is continuous.
    """
    n = x.shape[0] - cross
    if cross <= 0:
        return x
    if n < cross:
        raise ValueError(f"loop_crossfade ({cross} frames) needs at least {2 * cross} frames "
                         f"of audio, got {x.shape[0]}")
    t = (np.arange(cross) / cross)[:, None]
    out = x[:n].copy()
    out[:cross] = x[:cross] * np.sin(0.5 * np.pi * t) + x[n:] * np.cos(0.5 * np.pi * t)
    return out


def _peak_envelope(x: np.ndarray, rate: int) -> np.ndarray:
    """Per frame, the highest |sample| over channels and over the 4x oversampled points around it.

    Gain is linear and so is resampling: the envelope of ``g * x`` is ``g`` times this one, so
    :func:`_normalize` oversamples once, however many gains it tries."""
    frames = x.shape[0]
    up = _frame_peak(_oversampled(x, rate))
    up = np.pad(up, (0, max(0, frames * _OVERSAMPLE - up.size)))[: frames * _OVERSAMPLE]
    peak = _frame_peak(x)
    for k in range(_OVERSAMPLE):
        np.maximum(peak, up[k::_OVERSAMPLE], out=peak)
    # Inter-sample peaks between frame n-1 and n belong to both frames.
    peak[1:] = np.maximum(peak[1:], peak[:-1])
    return peak


def _limiter_gain(peak: np.ndarray, rate: int, ceiling_db: float) -> np.ndarray | None:
    """Look-ahead brick-wall limiter gain per frame for a true-peak envelope; None if none is needed."""
    ceiling = 10.0 ** (ceiling_db / 20.0)
    frames = peak.shape[0]
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    if need.min() >= 1.0:
        return None
    look = max(1, int(round(_LOOKAHEAD_S * rate)))
    hold = max(look, int(round(_HOLD_S * rate)))
    # held[n] = min(need[n - hold : n + look + 1]); averaging over +-look/2 then
    # only mixes values whose windows contain n, so gain[n] <= need[n].
    padded = np.concatenate([np.ones(hold), need, np.ones(look)])
    held = _running_min(padded, hold + look + 1)[:frames]
    half = look // 2
    return _moving_average(held, 2 * half + 1) if half else held


def _normalize(x: np.ndarray, rate: int, target: float,
               ceiling: float) -> tuple[np.ndarray, float | None, float | None]:
    """Gain to ``target`` LUFS with the true peak kept under ``ceiling`` dBTP (limiting as needed).

    Returns the samples with their integrated loudness and true peak where those are already
    known from the measurements made here (None where they are not), so nothing is measured twice."""
    measured = integrated_loudness(x, rate)
    if measured is None:
        return x, None, None  # undefined loudness (too short / silent): leave the level alone
    envelope = _peak_envelope(x, rate)
    gain_db = target - measured
    y, got = x, None
    for _ in range(_MAX_ROUNDS):
        level = 10.0 ** (gain_db / 20.0)
        gain = _limiter_gain(envelope * level, rate, ceiling - _LIMIT_MARGIN_DB)
        if gain is None:  # pure gain: loudness and true peak scale with it
            peak = float(envelope.max()) * level
            return x * level, measured + gain_db, 20.0 * math.log10(peak) if peak > 0 else None
        y = x * (level * gain)[:, None]
        got = integrated_loudness(y, rate)
        if got is None or abs(got - target) <= _TOLERANCE_LU:
            break
        gain_db += target - got
    return y, got, None  # limited: the gain envelope moved the true peak, measure it on the result


# --- public API -------------------------------------------------------------------


def process(samples: np.ndarray, sample_rate: int, post: PostSpec) -> Processed:
    """Apply ``post`` to float samples (frames, channels); see the module docstring."""
    if sample_rate <= 0:
        raise ValueError(f"invalid sample rate {sample_rate}")
    x = np.nan_to_num(_as_2d(samples).astype(np.float64), copy=False)
    rate = int(sample_rate)

    if post.trim_silence:
        x = _trim_silence(x)
    if post.channels is not None:
        x = _set_channels(x, post.channels)
    if post.sample_rate is not None and post.sample_rate != rate:
        x = _resample(x, rate, int(post.sample_rate))
        rate = int(post.sample_rate)

    cross = int(round(post.loop_crossfade * rate)) if post.loop_crossfade else 0
    if post.fit is not None:
        # With a loop, build fit + crossfade frames so the looped result is exactly fit long.
        x = _fit(x, int(round(post.fit * rate)) + cross)
    if post.fade_out > 0:
        x = _fade_out(x, int(round(post.fade_out * rate)))
    loop = None
    if post.loop_crossfade:
        x = _loop(x, cross)
        loop = (0, int(x.shape[0]))

    loudness = peak = None
    if post.loudness is not None:
        x, loudness, peak = _normalize(x, rate, float(post.loudness[0]), float(post.loudness[1]))
    out = np.ascontiguousarray(x, dtype=np.float32)
    if peak is None:
        peak = true_peak_db(out, rate)
    if loudness is None:
        loudness = integrated_loudness(out, rate)
    if post.loudness is not None and peak is not None and peak > post.loudness[1] - 0.05:
        # Safety net: never exceed the ceiling, whatever the limiter left behind. True peak and
        # loudness both move by the gain, so neither is measured again.
        scale_db = post.loudness[1] - 0.05 - peak
        out *= np.float32(10.0 ** (scale_db / 20.0))
        peak += scale_db
        loudness = None if loudness is None else loudness + scale_db
    return Processed(samples=out, sample_rate=rate, loudness_lufs=loudness, true_peak_db=peak, loop=loop)
