"""Decode and encode audio for musicbuild (no tagging here; see ``tagging.py``).

Everything written by this module is *deterministic*: the same samples always
produce byte-identical files, because the build tool hashes outputs to decide
what is stale.  Two encoders are not deterministic out of the box and are
handled explicitly:

* libsndfile's Ogg writer seeds the Ogg stream serial number from the clock;
  we rewrite the serial to a constant and recompute every page CRC.
* FFmpeg's MP4 muxer embeds its version string and the encoder's name; we use
  the ``bitexact`` flags so those do not vary between builds.

Lossy codecs add encoder delay/padding.  MP3 is written by LAME inside
libsndfile, which emits a LAME/Xing gapless header that mpg123 (libsndfile's
decoder) honours.  For AAC the MP4 edit list (sample-exact because the movie
timescale equals the sample rate) trims the priming samples, and decode cuts
the tail padding to the track duration recorded in the container.
"""

from __future__ import annotations

import io
import zlib
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

FORMATS: tuple[str, ...] = ("mp3", "wav", "flac", "ogg", "m4a")

DEFAULT_BITRATE_KBPS = 192

# Constant Ogg serial number so Vorbis output does not depend on the clock.
_OGG_SERIAL = 0x6D627569  # "mbui"

# (soundfile format, subtype) for formats written through libsndfile.
_SF_FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}

# Approximate nominal bitrate (kbps, 44.1 kHz stereo) of Vorbis quality levels
# 0..10, used to turn a requested bitrate into libvorbis' VBR quality knob.
# ISO-BMFF major brands used by audio files (excludes HEIC/AVIF images etc.).
_MP4_AUDIO_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"mp41", b"mp42", b"isom",
                               b"iso2", b"iso4", b"iso5", b"iso6", b"dash", b"F4A "})

_VORBIS_KBPS = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 500)


def _check_fmt(fmt: str) -> str:
    norm = fmt.lower().lstrip(".")
    if norm not in FORMATS:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return norm


def _prepare(samples: np.ndarray) -> np.ndarray:
    """Return C-contiguous float32 (frames, channels) samples clipped to [-1, 1].

    Clipping matters: libsndfile's float->int conversion wraps around instead
    of saturating, which would turn loud peaks into full-scale clicks.
    """
    arr = np.asarray(samples, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"samples must be shaped (frames, channels), got {arr.shape}")
    if arr.shape[0] == 0:
        # Several encoders emit undecodable files for zero frames; refuse early.
        raise ValueError("cannot encode empty audio (0 frames)")
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.ascontiguousarray(np.clip(arr, -1.0, 1.0))


def _mp3_compression_level(sample_rate: int, kbps: int) -> float:
    """Map a CBR bitrate to libsndfile's compression level for MP3.

    libsndfile (mpeg_l3_encode.c) picks ``bitrate = max - level * (max - min)``
    with (min, max) depending on the MPEG version implied by the sample rate;
    we invert that, nudging slightly so the int truncation lands on ``kbps``.
    """
    if sample_rate >= 32000:
        lo, hi = 32, 320
    elif sample_rate >= 16000:
        lo, hi = 8, 160
    else:
        lo, hi = 8, 64
    kbps = min(max(kbps, lo), hi)
    level = (hi - kbps - 0.25) / (hi - lo)
    return min(max(level, 0.0), 1.0)


def _vorbis_compression_level(kbps: int) -> float:
    """Map an approximate bitrate to libsndfile's Vorbis level (1 - quality/10)."""
    quality = float(np.interp(kbps, _VORBIS_KBPS, np.arange(11)))
    return min(max(1.0 - quality / 10.0, 0.0), 1.0)


# --- Ogg serial rewriting ---------------------------------------------------

# Ogg uses the non-reflected CRC-32 (poly 0x04C11DB7, init 0); zlib's crc32 is
# the reflected variant, so feed it bit-reversed bytes and reverse the result.
_BITSWAP = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    crc = (~zlib.crc32(page.translate(_BITSWAP), 0xFFFFFFFF)) & 0xFFFFFFFF
    return int.from_bytes(crc.to_bytes(4, "big").translate(_BITSWAP), "little")


def _fix_ogg_serial(data: bytes, serial: int = _OGG_SERIAL) -> bytes:
    """Rewrite every page's stream serial to ``serial`` and fix page CRCs."""
    out = bytearray()
    pos = 0
    serial_bytes = serial.to_bytes(4, "little")
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS" or pos + 27 > len(data):
            raise ValueError("malformed Ogg stream from encoder")
        nsegs = data[pos + 26]
        header_len = 27 + nsegs
        body_len = sum(data[pos + 27 : pos + header_len])
        page = bytearray(data[pos : pos + header_len + body_len])
        page[14:18] = serial_bytes
        page[22:26] = b"\0\0\0\0"
        page[22:26] = _ogg_crc(bytes(page)).to_bytes(4, "little")
        out += page
        pos += header_len + body_len
    return bytes(out)


# --- encoding ---------------------------------------------------------------


# PCM subtypes for wav/flac by bit depth (``bit_depth=None`` keeps 16-bit).
_PCM_SUBTYPES = {16: "PCM_16", 24: "PCM_24"}


WRITE_BLOCK = 65536  # frames per libsndfile write


def _encode_soundfile(arr: np.ndarray, sample_rate: int, fmt: str, bitrate_kbps: int | None,
                      bit_depth: int | None = None) -> bytes:
    sf_format, subtype = _SF_FORMATS[fmt]
    if fmt in ("wav", "flac") and bit_depth is not None:
        subtype = _PCM_SUBTYPES[bit_depth]
    kwargs: dict[str, object] = {}
    if fmt == "mp3":
        kbps = bitrate_kbps or DEFAULT_BITRATE_KBPS
        kwargs = {"bitrate_mode": "CONSTANT",
                  "compression_level": _mp3_compression_level(sample_rate, kbps)}
    elif fmt == "ogg" and bitrate_kbps:
        kwargs = {"compression_level": _vorbis_compression_level(bitrate_kbps)}
    buf = io.BytesIO()
    try:
        with sf.SoundFile(buf, "w", samplerate=sample_rate, channels=arr.shape[1],
                          format=sf_format, subtype=subtype, **kwargs) as f:
            for start in range(0, len(arr), WRITE_BLOCK):  # libsndfile's Vorbis encoder crashes (SIGSEGV)
                f.write(arr[start:start + WRITE_BLOCK])   # on one write of a minute or so of audio
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ValueError(f"cannot encode {fmt} at {sample_rate} Hz, "
                         f"{arr.shape[1]} channel(s): {exc}") from exc
    data = buf.getvalue()
    if fmt == "ogg":
        data = _fix_ogg_serial(data)
    return data


def _encode_m4a(arr: np.ndarray, sample_rate: int, bitrate_kbps: int | None, out: BinaryIO) -> None:
    """AAC-LC in an MP4 ('M4A ' brand) container via PyAV, bit-exact mode."""
    channels = arr.shape[1]
    if channels > 2:
        raise ValueError("m4a encoding supports mono or stereo only")
    layout = "mono" if channels == 1 else "stereo"
    # movie_timescale = sample rate keeps the edit list (which trims encoder
    # padding on decode) sample-exact instead of millisecond-rounded.
    options = {"fflags": "+bitexact", "movie_timescale": str(sample_rate)}
    import av  # FFmpeg (~50 ms to load) only for m4a: wav/flac/mp3/ogg are libsndfile's

    with av.open(out, "w", format="ipod", options=options) as container:
        stream = container.add_stream("aac", rate=sample_rate, layout=layout)
        ctx = stream.codec_context
        ctx.bit_rate = (bitrate_kbps or DEFAULT_BITRATE_KBPS) * 1000
        ctx.flags |= av.codec.context.Flags.bitexact
        ctx.time_base = Fraction(1, sample_rate)
        stream.time_base = Fraction(1, sample_rate)
        # One frame for the whole signal: PyAV cuts it into the encoder's frame size in C (the
        # same bytes as feeding 1024-sample frames from a Python loop).
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr.T), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = 0
        frame.time_base = Fraction(1, sample_rate)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def encode_bytes(samples: np.ndarray, sample_rate: int, fmt: str, *,
                 bitrate_kbps: int | None = None, bit_depth: int | None = None) -> bytes:
    """Encode float samples (frames, channels) to ``fmt`` and return the file bytes.

    Used for cache blobs (FLAC) and by :func:`encode`.  ``bitrate_kbps``
    applies to lossy formats only (mp3 CBR, m4a AAC, ogg approximate VBR
    quality) and is ignored for wav/flac.  ``bit_depth`` (16, the default, or
    24) applies to wav/flac only and is ignored for lossy formats.
    """
    fmt = _check_fmt(fmt)
    if sample_rate <= 0:
        raise ValueError(f"invalid sample rate {sample_rate}")
    if bit_depth is not None and bit_depth not in _PCM_SUBTYPES:
        raise ValueError(f"unsupported bit depth {bit_depth!r}; expected 16 or 24")
    arr = _prepare(samples)
    if fmt == "m4a":
        buf = io.BytesIO()
        _encode_m4a(arr, sample_rate, bitrate_kbps, buf)
        return buf.getvalue()
    return _encode_soundfile(arr, sample_rate, fmt, bitrate_kbps, bit_depth)


def encode(samples: np.ndarray, sample_rate: int, fmt: str, dest: Path, *,
           bitrate_kbps: int | None = None, bit_depth: int | None = None) -> None:
    """Write float32 samples shaped (frames, channels) to ``dest`` in ``fmt``.

    Not atomic: the caller writes to a temporary path and renames.  Encoding
    happens in memory first so a failed encode never leaves a half file.
    """
    data = encode_bytes(samples, sample_rate, fmt, bitrate_kbps=bitrate_kbps, bit_depth=bit_depth)
    Path(dest).write_bytes(data)


# --- decoding ---------------------------------------------------------------


def _skip_id3(data: bytes) -> int:
    """Offset just past a leading ID3v2 tag (0 if there is none)."""
    if len(data) >= 10 and data[:3] == b"ID3":
        size = 0
        for b in data[6:10]:
            size = (size << 7) | (b & 0x7F)
        footer = 10 if data[5] & 0x10 else 0
        return 10 + size + footer
    return 0


def sniff_format(data: bytes) -> str | None:
    """Guess "wav"/"flac"/"ogg"/"mp3"/"m4a" from magic bytes; None if not audio.

    Used to validate provider downloads and cache blobs without trusting file
    extensions or Content-Type headers.
    """
    head = bytes(data[:64])
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp" and head[8:12] in _MP4_AUDIO_BRANDS:
        return "m4a"
    start = _skip_id3(data)
    body = bytes(data[start : start + 4])
    if body[:4] == b"fLaC":
        return "flac"
    if len(body) >= 2 and body[0] == 0xFF and (body[1] & 0xE0) == 0xE0 and (body[1] & 0x06) != 0:
        return "mp3"  # MPEG audio frame sync with a valid layer
    if start and len(data) > start:
        return "mp3"  # ID3 tag followed by something: most likely MP3 with junk
    return None


def _decode_av(source: BinaryIO | str) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with FFmpeg, honouring container trims."""
    import av

    with av.open(source, "r") as container:
        if not container.streams.audio:
            raise ValueError("no audio stream found")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        chunks: list[np.ndarray] = []
        for frame in container.decode(stream):
            arr: np.ndarray = frame.to_ndarray()
            if frame.format.is_planar:
                arr = arr.T  # (channels, n) -> (n, channels)
            else:
                arr = arr.reshape(-1, len(frame.layout.channels))
            if arr.dtype.kind in "iu":
                arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
            chunks.append(arr.astype(np.float32, copy=False))
        channels = stream.codec_context.channels
        out = np.concatenate(chunks) if chunks else np.zeros((0, channels), np.float32)
        # Encoder padding at the end is not always trimmed by the demuxer;
        # the track duration in the container is authoritative.
        if stream.duration and stream.time_base:
            expected = int(round(stream.duration * stream.time_base * rate))
            if 0 < expected < out.shape[0]:
                out = out[:expected]
    return np.ascontiguousarray(out), rate


def decode(data: bytes | Path) -> tuple[np.ndarray, int]:
    """Decode audio to float32 (frames, channels) and its sample rate.

    libsndfile handles wav/flac/ogg/mp3 (gapless-aware via mpg123); anything
    else (m4a/AAC, or files libsndfile rejects) goes through FFmpeg.
    """
    raw = Path(data).read_bytes() if isinstance(data, Path) else bytes(data)
    kind = sniff_format(raw)
    if kind != "m4a":
        try:
            arr, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
            return np.ascontiguousarray(arr), int(rate)
        except (sf.LibsndfileError, RuntimeError, TypeError):
            pass  # fall back to FFmpeg
    import av

    try:
        return _decode_av(io.BytesIO(raw))
    except (av.FFmpegError, ValueError) as exc:
        raise ValueError(f"cannot decode audio ({kind or 'unknown format'}): {exc}") from exc
