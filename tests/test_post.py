"""Delivery processing (musicbuild.audio.post) and the encode/tag additions it needs.

Loudness and true peak are checked with an independent BS.1770-4 meter written
here (K-weighting biquads from the standard's 48 kHz coefficients, 400 ms blocks
with 75 % overlap, -70 LUFS absolute and -10 LU relative gates; true peak via 4x
``scipy.signal.resample_poly``), not with pyloudnorm/soxr used by the code under test.
"""

from __future__ import annotations

import functools
import io
import math
import struct
from math import gcd
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf
from mutagen.flac import FLAC
from mutagen.oggvorbis import OggVorbis
from scipy.signal import lfilter, resample_poly

from musicbuild.audio.convert import decode, encode, encode_bytes
from musicbuild.audio.post import PRESETS, PostSpec, Processed, process
from musicbuild.audio.synth import synthesize
from musicbuild.audio.tagging import Tags, read_tags, write_tags

SR = 44100
STYLES = ("epic orchestral battle drums", "ambient")


# --- independent BS.1770-4 reference meter --------------------------------------------

# ITU-R BS.1770-4 Table 1 (pre-filter, high-shelf) and Table 2 (RLB high-pass), fs = 48 kHz.
_SHELF_B = [1.53512485958697, -2.69169618940638, 1.19839281085285]
_SHELF_A = [1.0, -1.69065929318241, 0.73248077421585]
_RLB_B = [1.0, -2.0, 1.0]
_RLB_A = [1.0, -1.99004745483398, 0.99007225036621]


def ref_loudness(x: np.ndarray, rate: int) -> float:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    if rate != 48000:
        g = gcd(48000, rate)
        x = resample_poly(x, 48000 // g, rate // g, axis=0)
    y = lfilter(_RLB_B, _RLB_A, lfilter(_SHELF_B, _SHELF_A, x, axis=0), axis=0)
    block, step = 19200, 4800  # 400 ms, 75 % overlap
    starts = np.arange(0, y.shape[0] - block + 1, step)
    csum = np.concatenate([np.zeros((1, y.shape[1])), np.cumsum(y * y, axis=0)])
    z = (csum[starts + block] - csum[starts]) / block  # (blocks, channels) mean square
    power = z.sum(axis=1)  # all channel weights are 1.0 for L/R/mono
    with np.errstate(divide="ignore"):
        lj = -0.691 + 10 * np.log10(power)
    abs_gated = power[lj > -70.0]
    if abs_gated.size == 0:
        return -math.inf
    rel = -0.691 + 10 * math.log10(abs_gated.mean()) - 10.0
    gated = power[(lj > -70.0) & (lj > rel)]
    return -0.691 + 10 * math.log10(gated.mean())


def ref_true_peak(x: np.ndarray) -> float:
    up = resample_poly(np.asarray(x, np.float64), 4, 1, axis=0)
    return 20 * math.log10(max(np.abs(up).max(), np.abs(x).max()))


@functools.lru_cache(maxsize=None)
def track(style: str, seconds: float = 30.0) -> np.ndarray:
    out = synthesize(prompt=style, duration=seconds, seed=7)
    out.setflags(write=False)
    return out


def spiky() -> np.ndarray:
    """A quiet pad with loud clicks: a crest factor our synth never reaches, so
    reaching a target needs real limiting (peak-to-loudness ratio ~31 dB)."""
    x = track("ambient").astype(np.float64) * 0.05
    t = np.arange(x.shape[0])
    for pos in range(SR // 2, x.shape[0], SR):
        x[pos : pos + 32] += (0.9 * np.sin(2 * np.pi * 3000 * t[:32] / SR) * np.hanning(32))[:, None]
    return x.astype(np.float32)


# --- loudness -------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_hits_target_and_ceiling(preset: str, style: str) -> None:
    target, ceiling = PRESETS[preset]
    got = process(track(style), SR, PostSpec(loudness=(target, ceiling)))
    measured, peak = ref_loudness(got.samples, SR), ref_true_peak(got.samples)
    assert abs(measured - target) <= 0.5, (preset, style, measured)
    assert peak <= ceiling, (preset, style, peak)
    # The reported numbers agree with the independent meter.
    assert got.loudness_lufs is not None and abs(got.loudness_lufs - measured) < 0.1
    assert got.true_peak_db is not None and abs(got.true_peak_db - peak) < 0.1
    assert got.samples.dtype == np.float32 and got.samples.shape == track(style).shape


@pytest.mark.parametrize("preset", ["streaming", "atsc-a85"])
def test_limiter_keeps_loudness_when_peaks_must_come_down(preset: str) -> None:
    target, ceiling = PRESETS[preset]
    x = spiky()
    plain_gain_peak = ref_true_peak(x) + target - ref_loudness(x, SR)
    assert plain_gain_peak > ceiling + 5  # pure gain could not meet the ceiling
    got = process(x, SR, PostSpec(loudness=(target, ceiling)))
    assert abs(ref_loudness(got.samples, SR) - target) <= 0.5
    assert ref_true_peak(got.samples) <= ceiling


@pytest.mark.parametrize("limited", [False, True])
def test_loudness_oversamples_once_to_limit_and_once_to_check(monkeypatch: pytest.MonkeyPatch, limited: bool) -> None:
    """Gain is linear, so one 4x oversampling serves every gain tried; a limited result is
    measured once more (its gain envelope moves the peaks), a pure gain needs no second look."""
    import musicbuild.audio.post as post

    real, calls = post.soxr.resample, []
    monkeypatch.setattr(post.soxr, "resample", lambda *a, **kw: calls.append(a[2]) or real(*a, **kw))
    x = spiky() if limited else track("ambient")
    got = process(x, SR, PostSpec(loudness=(-14.0, -1.0) if limited else PRESETS["ebu-r128"]))
    assert calls == [4 * SR] * (2 if limited else 1)
    assert got.true_peak_db is not None and abs(got.true_peak_db - ref_true_peak(got.samples)) < 0.1


def test_short_or_silent_input_skips_gain() -> None:
    short = track("ambient")[: SR // 5]  # 200 ms: shorter than one gating block
    got = process(short, SR, PostSpec(loudness=PRESETS["streaming"]))
    assert got.loudness_lufs is None
    np.testing.assert_array_equal(got.samples, short)
    silent = process(np.zeros((SR * 2, 2), np.float32), SR, PostSpec(loudness=(-14.0, -1.0)))
    assert silent.loudness_lufs is None and silent.true_peak_db is None
    assert not silent.samples.any()


def test_process_is_deterministic_and_default_is_identity() -> None:
    spec = PostSpec(loudness=(-16.0, -1.0), fit=10.0, loop_crossfade=0.5, sample_rate=48000)
    a, b = process(track("ambient"), SR, spec), process(track("ambient"), SR, spec)
    assert a.samples.tobytes() == b.samples.tobytes()
    same = process(track("ambient"), SR, PostSpec())
    np.testing.assert_array_equal(same.samples, track("ambient"))
    assert same.sample_rate == SR and same.loop is None


# --- fit / fade / loop --------------------------------------------------------------


@pytest.mark.parametrize("rate", [None, 48000])
def test_fit_gives_exact_length(rate: int | None) -> None:
    out_rate = rate or SR
    got = process(track("ambient"), SR, PostSpec(fit=15.0, sample_rate=rate))
    assert got.samples.shape == (15 * out_rate, 2) and got.sample_rate == out_rate
    padded = process(track("ambient", 5.0), SR, PostSpec(fit=7.5, sample_rate=rate))
    assert padded.samples.shape == (round(7.5 * out_rate), 2)
    assert not padded.samples[5 * out_rate + 100 :].any()  # padded with silence


def test_fade_out_ends_in_silence() -> None:
    got = process(track("epic orchestral battle drums"), SR, PostSpec(fit=15.0, fade_out=2.0)).samples
    assert got.shape[0] == 15 * SR
    assert np.abs(got[-1]).max() == 0.0
    assert np.abs(got[-SR // 100 :]).max() < 1e-3  # last 10 ms ~ silent
    before, late = np.abs(got[-3 * SR : -2 * SR]).max(), np.abs(got[-SR // 4 :]).max()
    assert late < 0.1 * before
    np.testing.assert_array_equal(got[: 13 * SR - 1], track("epic orchestral battle drums")[: 13 * SR - 1])
    alone = process(track("ambient", 5.0), SR, PostSpec(fade_out=1.0)).samples
    assert alone.shape[0] == 5 * SR and np.abs(alone[-1]).max() == 0.0


def seam_metrics(x: np.ndarray, k: int = 32) -> tuple[float, float, float]:
    """(seam jump, max |diff| within +-k frames of the seam, 99.9th pct |diff| in the track)."""
    seam = float(np.abs(x[0] - x[-1]).max())
    around = np.concatenate([x[-k:], x[:k]])
    local = float(np.abs(np.diff(around, axis=0)).max())
    typical = float(np.percentile(np.abs(np.diff(x, axis=0)), 99.9))
    return seam, local, typical


@pytest.mark.parametrize("style", STYLES)
def test_loop_seam_is_continuous(style: str) -> None:
    spec = PostSpec(fit=15.0, loop_crossfade=1.0, loudness=PRESETS["streaming"])
    got = process(track(style), SR, spec)
    n = 15 * SR
    assert got.samples.shape[0] == n and got.loop == (0, n)
    seam, local, typical = seam_metrics(got.samples)
    # Threshold: the 99.9th percentile of |x[i+1] - x[i]| over the whole track.
    assert seam <= typical and local <= typical, (seam, local, typical)
    # Control: the same material cut without a crossfade jumps far more at the seam.
    naive = process(track(style), SR, PostSpec(fit=15.0, loudness=PRESETS["streaming"])).samples
    assert seam_metrics(naive)[0] > seam
    unfit = process(track(style, 10.0), SR, PostSpec(loop_crossfade=0.5))
    assert unfit.loop == (0, round(9.5 * SR)) and unfit.samples.shape[0] == round(9.5 * SR)


def test_loop_spec_validation() -> None:
    with pytest.raises(ValueError, match="fade_out"):
        PostSpec(loop_crossfade=1.0, fade_out=1.0)
    with pytest.raises(ValueError, match="channels"):
        PostSpec(channels=3)
    with pytest.raises(ValueError, match="loop_crossfade"):
        process(track("ambient", 1.0), SR, PostSpec(loop_crossfade=0.8))


# --- trim / channels / resample -----------------------------------------------------


def test_trim_silence() -> None:
    core = track("ambient", 3.0)
    rng = np.random.default_rng(0)
    hiss = lambda n: (rng.standard_normal((n, 2)) * 10 ** (-80 / 20) / 4).astype(np.float32)  # noqa: E731
    x = np.concatenate([np.zeros((SR, 2), np.float32), hiss(SR // 2), core, hiss(SR), np.zeros((300, 2), np.float32)])
    got = process(x, SR, PostSpec(trim_silence=True)).samples
    thr = 10 ** (-60 / 20)
    assert np.abs(got[0]).max() > thr and np.abs(got[-1]).max() > thr
    assert core.shape[0] - SR // 10 <= got.shape[0] <= core.shape[0]
    lead = int(np.flatnonzero(np.abs(core).max(axis=1) > thr)[0])
    np.testing.assert_array_equal(got[:100], core[lead : lead + 100])


def test_channels_down_and_up() -> None:
    stereo = track("ambient", 2.0)
    mono = process(stereo, SR, PostSpec(channels=1)).samples
    assert mono.shape == (stereo.shape[0], 1)
    np.testing.assert_allclose(mono[:, 0], stereo.mean(axis=1), atol=1e-6)
    back = process(mono, SR, PostSpec(channels=2)).samples
    assert back.shape == stereo.shape and np.array_equal(back[:, 0], back[:, 1])
    one_d = process(mono[:, 0], SR, PostSpec(channels=2)).samples
    assert one_d.shape == stereo.shape


@pytest.mark.parametrize("rate", [22050, 48000])
def test_resample_keeps_pitch(rate: int) -> None:
    t = np.arange(2 * SR) / SR
    sine = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[:, None]
    got = process(sine, SR, PostSpec(sample_rate=rate))
    assert got.sample_rate == rate and abs(got.samples.shape[0] - 2 * rate) <= 1
    spectrum = np.abs(np.fft.rfft(got.samples[:, 0] * np.hanning(got.samples.shape[0])))
    peak_hz = np.argmax(spectrum) * rate / got.samples.shape[0]
    assert abs(peak_hz - 1000) < 2
    mid = got.samples[rate // 2 : -rate // 2, 0]
    assert abs(np.abs(mid).max() - 0.5) < 0.01


# --- encoding / tagging ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_bit_depth_24(fmt: str, tmp_path: Path) -> None:
    x = track("ambient", 1.0)
    encode(x, SR, fmt, tmp_path / f"a.{fmt}", bit_depth=24)
    assert sf.info(str(tmp_path / f"a.{fmt}")).subtype == "PCM_24"
    encode(x, SR, fmt, tmp_path / f"b.{fmt}")
    assert sf.info(str(tmp_path / f"b.{fmt}")).subtype == "PCM_16"
    back, _ = decode(tmp_path / f"a.{fmt}")
    assert np.abs(back - x).max() < 2.0 ** -22
    assert encode_bytes(x, SR, "ogg", bit_depth=24)[:4] == b"OggS"  # ignored for lossy
    with pytest.raises(ValueError, match="bit depth"):
        encode_bytes(x, SR, fmt, bit_depth=12)


def _smpl_loops(path: Path) -> list[tuple[int, int, int, int]]:
    """Raw RIFF walk (independent of musicbuild): [(period_ns, type, start, end)] per smpl chunk."""
    data, pos, out = path.read_bytes(), 12, []
    assert data[:4] == b"RIFF" and struct.unpack("<I", data[4:8])[0] == len(data) - 8
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"smpl":
            head = struct.unpack("<9I", body[:36])
            assert head[7] == 1 and size == 36 + 24 * head[7] + head[8]
            _i, kind, start, end, _f, _c = struct.unpack("<6I", body[36:60])
            out.append((head[2], kind, start, end))
        pos += 8 + size + (size & 1)
    assert pos == len(data)
    return out


def test_wav_smpl_loop(tmp_path: Path) -> None:
    path = tmp_path / "loop.wav"
    x = track("ambient", 2.0)
    encode(x, 48000, "wav", path)
    write_tags(path, "wav", Tags(title="Loop", loop=(0, 96000)))
    assert _smpl_loops(path) == [(20833, 0, 0, 95999)]
    assert read_tags(path)["loop"] == (0, 96000) and read_tags(path)["title"] == "Loop"
    write_tags(path, "wav", Tags(loop=(10, 500)))  # replaces, never duplicates
    assert _smpl_loops(path) == [(20833, 0, 10, 509)]
    assert read_tags(path)["loop"] == (10, 500)
    assert isinstance(mutagen.File(path), mutagen.wave.WAVE)
    back, rate = decode(path)
    assert rate == 48000 and back.shape == x.shape
    write_tags(path, "wav", Tags(title="plain"))
    assert _smpl_loops(path) == [] and read_tags(path)["loop"] is None


@pytest.mark.parametrize("fmt", ["ogg", "flac"])
def test_vorbis_loop_tags(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"loop.{fmt}"
    encode(track("ambient", 2.0), SR, fmt, path)
    write_tags(path, fmt, Tags(title="L", loop=(0, 88200)))
    raw = OggVorbis(path) if fmt == "ogg" else FLAC(path)
    assert raw["LOOPSTART"] == ["0"] and raw["LOOPLENGTH"] == ["88200"]
    got = read_tags(path)
    assert got["loop"] == (0, 88200) and "LOOPSTART" not in got["extra"]
    write_tags(path, fmt, Tags(title="L"))
    assert read_tags(path)["loop"] is None


def test_bad_loop_rejected_before_touching_file(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    encode(track("ambient", 1.0), SR, "wav", path)
    before = path.read_bytes()
    for bad in [(-1, 10), (0, 0), (1.5, 10), ("a", 1)]:
        with pytest.raises(ValueError, match="loop"):
            write_tags(path, "wav", Tags(loop=bad))  # type: ignore[arg-type]
    assert path.read_bytes() == before


@pytest.mark.parametrize("fmt", ["mp3", "wav", "flac", "ogg", "m4a"])
def test_replaygain_extra_round_trips(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"rg.{fmt}"
    encode(track("ambient", 1.0), SR, fmt, path)
    extra = {"REPLAYGAIN_TRACK_GAIN": "-6.10 dB", "REPLAYGAIN_TRACK_PEAK": "0.891251"}
    write_tags(path, fmt, Tags(extra=extra, provenance={"LOUDNESS": "-14.0 LUFS"}))
    got = read_tags(path)
    assert got["extra"] == extra and got["provenance"] == {"LOUDNESS": "-14.0 LUFS"}
    assert got["loop"] is None


def test_processed_to_file_end_to_end(tmp_path: Path) -> None:
    got: Processed = process(track("epic orchestral battle drums"), SR,
                             PostSpec(fit=12.0, loop_crossfade=0.5, sample_rate=48000,
                                      loudness=PRESETS["ebu-r128"]))
    path = tmp_path / "out.flac"
    encode(got.samples, got.sample_rate, "flac", path, bit_depth=24)
    write_tags(path, "flac", Tags(loop=got.loop))
    back, rate = sf.read(io.BytesIO(path.read_bytes()), dtype="float32", always_2d=True)
    assert rate == 48000 and back.shape[0] == 12 * 48000 == read_tags(path)["loop"][1]
    assert abs(ref_loudness(back, rate) - (-23.0)) <= 0.5
