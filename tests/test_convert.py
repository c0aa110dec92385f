"""Tests for musicbuild.audio.convert: every format encodes, decodes, and is deterministic."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import av
import mutagen.mp3
import numpy as np
import pytest
import soundfile as sf

from musicbuild.audio import convert
from musicbuild.audio.convert import FORMATS, decode, encode, encode_bytes, sniff_format

SR = 44100
DURATION = 2.0
TOLERANCE_S = 0.05


def make_signal(sr: int = SR, seconds: float = DURATION, seed: int = 1234) -> np.ndarray:
    """A 2 s stereo 'musical' signal: a chord with harmonics, tremolo and a bit of noise."""
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    left = np.zeros_like(t)
    right = np.zeros_like(t)
    for i, f0 in enumerate((220.0, 277.18, 329.63)):  # A major triad
        for h in range(1, 5):
            amp = 0.12 / h
            left += amp * np.sin(2 * np.pi * f0 * h * t + i)
            right += amp * np.sin(2 * np.pi * f0 * h * t + 0.3 * h + i)
    envelope = 0.7 + 0.3 * np.sin(2 * np.pi * 2.0 * t)
    stereo = np.stack([left * envelope, right * (1.0 - 0.3 * envelope)], axis=1)
    stereo += 0.01 * rng.standard_normal(stereo.shape)
    return (0.8 * stereo / np.max(np.abs(stereo))).astype(np.float32)


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return make_signal()


@pytest.fixture(scope="module")
def encoded(signal: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("encoded")
    paths = {}
    for fmt in FORMATS:
        paths[fmt] = out / f"song.{fmt}"
        encode(signal, SR, fmt, paths[fmt])
    return paths


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


@pytest.mark.parametrize("fmt", FORMATS)
def test_roundtrip_length_channels_and_content(fmt: str, encoded: dict[str, Path],
                                               signal: np.ndarray) -> None:
    samples, rate = decode(encoded[fmt])
    assert rate == SR
    assert samples.dtype == np.float32
    assert samples.ndim == 2 and samples.shape[1] == 2
    assert abs(samples.shape[0] / rate - DURATION) <= TOLERANCE_S
    # Aligned (no encoder delay left in) and channels not swapped.
    for ch in range(2):
        assert _corr(samples[:, ch], signal[:, ch]) > 0.95


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_bytes_equals_decode_path(fmt: str, encoded: dict[str, Path]) -> None:
    a, ra = decode(encoded[fmt])
    b, rb = decode(encoded[fmt].read_bytes())
    assert ra == rb and np.array_equal(a, b)


@pytest.mark.parametrize("fmt", ["mp3", "wav", "flac", "ogg"])
def test_soundfile_opens_output(fmt: str, encoded: dict[str, Path]) -> None:
    data, rate = sf.read(encoded[fmt], always_2d=True)
    assert rate == SR and data.shape[1] == 2
    assert abs(len(data) / rate - DURATION) <= TOLERANCE_S
    info = sf.info(encoded[fmt])
    expected = {"mp3": "MP3", "wav": "WAV", "flac": "FLAC", "ogg": "OGG"}[fmt]
    assert info.format == expected


def test_wav_and_flac_are_16_bit(encoded: dict[str, Path]) -> None:
    assert sf.info(encoded["wav"]).subtype == "PCM_16"
    assert sf.info(encoded["flac"]).subtype == "PCM_16"
    assert sf.info(encoded["ogg"]).subtype == "VORBIS"


def test_m4a_is_aac_in_mp4(encoded: dict[str, Path]) -> None:
    data = encoded["m4a"].read_bytes()
    assert data[4:12] == b"ftypM4A "
    with av.open(str(encoded["m4a"])) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        assert stream.codec_context.sample_rate == SR
        assert stream.codec_context.channels == 2
        assert abs(float(stream.duration * stream.time_base) - DURATION) <= TOLERANCE_S
        assert 150_000 <= stream.bit_rate <= 230_000  # default 192 kbps


def test_mp3_default_is_192k_cbr_with_gapless_header(encoded: dict[str, Path]) -> None:
    info = mutagen.mp3.MP3(encoded["mp3"]).info
    assert info.bitrate_mode == mutagen.mp3.BitrateMode.CBR
    assert abs(info.bitrate - 192_000) < 1000
    assert "LAME" in info.encoder_info  # LAME tag carries the delay/padding


@pytest.mark.parametrize("kbps", [128, 256, 320])
def test_mp3_bitrate_option(kbps: int, signal: np.ndarray) -> None:
    info = mutagen.mp3.MP3(io.BytesIO(encode_bytes(signal, SR, "mp3", bitrate_kbps=kbps))).info
    assert abs(info.bitrate - kbps * 1000) < 1000


def test_lossy_bitrate_changes_size(signal: np.ndarray) -> None:
    for fmt in ("m4a", "ogg"):
        low = encode_bytes(signal, SR, fmt, bitrate_kbps=96)
        high = encode_bytes(signal, SR, fmt, bitrate_kbps=320)
        assert len(high) > len(low) * 1.3, fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_deterministic(fmt: str, signal: np.ndarray, encoded: dict[str, Path]) -> None:
    first = encode_bytes(signal, SR, fmt)
    second = encode_bytes(signal, SR, fmt)
    assert first == second
    assert encoded[fmt].read_bytes() == first


def test_deterministic_across_processes(signal: np.ndarray) -> None:
    """libsndfile seeds the Ogg serial from the clock; a fresh process must agree."""
    code = (
        "import hashlib, sys\n"
        "sys.path.insert(0, %r)\n"
        "from test_convert import make_signal, SR\n"
        "from musicbuild.audio.convert import encode_bytes, FORMATS\n"
        "x = make_signal()\n"
        "for f in FORMATS: print(f, hashlib.sha256(encode_bytes(x, SR, f)).hexdigest())\n"
    ) % str(Path(__file__).parent)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parent.parent)
    theirs = dict(line.split() for line in result.stdout.splitlines())
    ours = {f: hashlib.sha256(encode_bytes(signal, SR, f)).hexdigest() for f in FORMATS}
    assert theirs == ours


def test_ogg_pages_have_fixed_serial_and_valid_crc(encoded: dict[str, Path]) -> None:
    data = encoded["ogg"].read_bytes()
    pos = 0
    pages = 0
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS"
        assert int.from_bytes(data[pos + 14:pos + 18], "little") == convert._OGG_SERIAL
        nsegs = data[pos + 26]
        length = 27 + nsegs + sum(data[pos + 27:pos + 27 + nsegs])
        page = bytearray(data[pos:pos + length])
        stored = bytes(page[22:26])
        page[22:26] = b"\0\0\0\0"
        assert _ogg_crc_reference(bytes(page)).to_bytes(4, "little") == stored
        pos += length
        pages += 1
    assert pages >= 3


def _ogg_crc_reference(data: bytes) -> int:
    """Straightforward bitwise Ogg CRC-32 (poly 0x04C11DB7, no reflection)."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


@pytest.mark.parametrize("fmt", FORMATS)
def test_sniff_format(fmt: str, encoded: dict[str, Path]) -> None:
    assert sniff_format(encoded[fmt].read_bytes()) == fmt
    assert sniff_format(encoded[fmt].read_bytes()[:64]) == fmt


def test_sniff_format_rejects_non_audio() -> None:
    assert sniff_format(b"") is None
    assert sniff_format(b"hello world, not audio") is None
    assert sniff_format(b"\x89PNG\r\n\x1a\n" + b"\0" * 32) is None
    assert sniff_format(b"{\"error\": \"quota\"}") is None
    assert sniff_format(b"\0\0\0\x18ftypheic" + b"\0" * 16) is None  # HEIC image


def test_sniff_mp3_with_id3_prefix() -> None:
    header = b"ID3\x04\x00\x00\x00\x00\x00\x05" + b"\0" * 5
    assert sniff_format(header + b"\xff\xfb\x90\x00") == "mp3"
    assert sniff_format(header + b"fLaC\0\0\0\x22") == "flac"


@pytest.mark.parametrize("bad", ["aiff", "MP4", "", "opus"])
def test_unknown_format_raises(bad: str, signal: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown audio format"):
        encode(signal, SR, bad, tmp_path / "x")
    with pytest.raises(ValueError, match="unknown audio format"):
        encode_bytes(signal, SR, bad)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_mono_and_other_rates(fmt: str) -> None:
    mono = make_signal(sr=48000, seconds=1.0)[:, 0]  # 1-D input is mono
    samples, rate = decode(encode_bytes(mono, 48000, fmt))
    assert rate == 48000 and samples.shape[1] == 1
    assert abs(samples.shape[0] / rate - 1.0) <= TOLERANCE_S


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("frames", [100, 1024, 5000, 123457])
def test_lengths_are_sample_exact(fmt: str, frames: int) -> None:
    """Encoder delay/padding is removed exactly (LAME gapless header, MP4 edit list)."""
    x = (0.1 * np.random.default_rng(frames).standard_normal((frames, 2))).astype(np.float32)
    samples, _ = decode(encode_bytes(x, SR, fmt))
    assert samples.shape == (frames, 2)


def test_empty_and_malformed_input_raise() -> None:
    for fmt in FORMATS:
        with pytest.raises(ValueError, match="empty"):
            encode_bytes(np.zeros((0, 2), np.float32), SR, fmt)
    with pytest.raises(ValueError, match="shaped"):
        encode_bytes(np.zeros((2, 2, 2), np.float32), SR, "wav")
    with pytest.raises(ValueError, match="sample rate"):
        encode_bytes(np.zeros((10, 2), np.float32), 96000, "mp3")
    with pytest.raises(ValueError, match="mono or stereo"):
        encode_bytes(np.zeros((10, 6), np.float32), SR, "m4a")


def test_out_of_range_samples_are_clipped_not_wrapped() -> None:
    loud = np.full((4410, 2), 1.5, dtype=np.float32)
    loud[::2] = -1.5
    samples, _ = decode(encode_bytes(loud, SR, "wav"))
    assert np.all(samples[1::2] > 0.99) and np.all(samples[::2] < -0.99)


def test_decode_garbage_raises() -> None:
    with pytest.raises(ValueError):
        decode(b"definitely not audio" * 100)


def test_a_long_ogg_encodes_without_crashing() -> None:
    """libsndfile's Vorbis encoder dies of SIGSEGV on one write of about a minute of audio (a 30 s
    track crashed whole builds): encoding writes in blocks. In a subprocess, so a crash is a failure."""
    code = ("import numpy as np; from musicbuild.audio.convert import encode_bytes, decode; "
            "a = (np.random.default_rng(0).standard_normal((90 * 44100, 2)) * 0.1).astype('float32'); "
            "data = encode_bytes(a, 44100, 'ogg'); print(decode(data)[0].shape[0])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    assert abs(int(proc.stdout) - 90 * 44100) < 4096
