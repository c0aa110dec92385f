"""RIFF chunk plumbing for WAV tags: LIST/INFO (what common players read) and the `smpl` loop chunk.

Pure byte handling, no mutagen: ``tagging`` (the only mutagen user) writes the ID3 chunk and uses
these to add, replace and read the chunks mutagen does not know.
"""
from __future__ import annotations

import struct


def walk(data: bytes, pos: int) -> list[tuple[bytes, bytes]]:
    """(id, payload) RIFF chunks from ``pos``; clamps sizes that overshoot."""
    chunks = []
    while pos + 8 <= len(data):
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunks.append((data[pos : pos + 4], data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def pack(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """Serialise chunks with little-endian sizes and even padding."""
    return b"".join(cid + struct.pack("<I", len(p)) + p + b"\0" * (len(p) & 1)
                    for cid, p in chunks)


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    return walk(data, 12)


def is_info(cid: bytes, payload: bytes) -> bool:
    return cid == b"LIST" and payload[:4] == b"INFO"


def parse_info(payload: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for cid, raw in walk(payload, 4):
        raw = raw.split(b"\0", 1)[0]
        try:
            out[cid.decode("latin-1")] = raw.decode("utf-8")
        except UnicodeDecodeError:  # old writers used Latin-1/ANSI
            out[cid.decode("latin-1")] = raw.decode("latin-1")
    return out


# smpl chunk: manufacturer, product, sample period (ns), MIDI unity note, pitch
# fraction, SMPTE format, SMPTE offset, loop count, sampler data size; then one
# 24-byte loop: id, type (0 = forward), start, end (inclusive), fraction, play count (0 = forever).
SMPL_HEAD = struct.Struct("<9I")
SMPL_LOOP = struct.Struct("<6I")


def smpl_chunk(sample_rate: int, loop: tuple[int, int]) -> bytes:
    start, length = loop
    period = int(round(1e9 / sample_rate)) if sample_rate > 0 else 0
    return (SMPL_HEAD.pack(0, 0, period, 60, 0, 0, 0, 1, 0)
            + SMPL_LOOP.pack(0, 0, start, start + length - 1, 0, 0))


def parse_smpl(payload: bytes) -> tuple[int, int] | None:
    if len(payload) < SMPL_HEAD.size + SMPL_LOOP.size:
        return None
    if SMPL_HEAD.unpack_from(payload)[7] < 1:
        return None
    _ident, _kind, start, end, _frac, _count = SMPL_LOOP.unpack_from(payload, SMPL_HEAD.size)
    return (start, end - start + 1) if end >= start else None


def wav_rate(chunks: list[tuple[bytes, bytes]]) -> int:
    fmt = next((p for c, p in chunks if c == b"fmt "), b"")
    return struct.unpack("<I", fmt[4:8])[0] if len(fmt) >= 8 else 0
