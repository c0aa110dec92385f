"""Tests for musicbuild.audio.tagging: the per-format field contract, covers, WAV INFO, re-tagging."""

from __future__ import annotations

import base64
import dataclasses
import shutil
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from musicbuild.audio.convert import FORMATS, decode, encode, sniff_format
from musicbuild.audio.tagging import TEXT_FIELDS, Tags, read_tags, write_tags

SR = 44100


def make_png(width: int = 2, height: int = 2) -> bytes:
    """A tiny valid RGB PNG built by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes([255, 0, 0] * width) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def make_jpeg(width: int = 16, height: int = 8) -> bytes:
    """A real baseline JPEG encoded by FFmpeg's mjpeg encoder."""
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 2] = 200
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
    packets = ctx.encode(frame) + ctx.encode(None)
    return bytes(packets[0])


PNG = make_png()
JPEG = make_jpeg()

FULL = Tags(
    title="Neon Dreams (Ünïcödé)", artist="The Prompt Engineers", album="Latent Space",
    album_artist="Various Models", genre="Synthwave", year="2024", track_number="3/12",
    bpm="120", lyrics="Line one\nLine two", comment="made by musicbuild",
    copyright="(c) 2024 Someone", publisher="Pay Once Records", cover=PNG,
    provenance={"GEN_KEY": "sha256:abc123", "PROVIDER": "fake", "MODEL": "fake-v1",
                "SEED": "42", "PROMPT": "dreamy synthwave,\nwarm pads", "JOB_ID": "job-7"},
)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untagged 2 s stereo files, one per format (copied before each use)."""
    out = tmp_path_factory.mktemp("untagged")
    t = np.arange(2 * SR) / SR
    rng = np.random.default_rng(7)
    sig = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t),
                    0.3 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 990 * t)], 1)
    sig = (sig + 0.01 * rng.standard_normal(sig.shape)).astype(np.float32)
    paths = {}
    for fmt in FORMATS:
        paths[fmt] = out / f"base.{fmt}"
        encode(sig, SR, fmt, paths[fmt])
    return paths


@pytest.fixture
def fresh(audio_files: dict[str, Path], tmp_path: Path):
    def _copy(fmt: str, name: str = "song") -> Path:
        dest = tmp_path / f"{name}.{fmt}"
        shutil.copyfile(audio_files[fmt], dest)
        return dest
    return _copy


CASES = [("mp3", False), ("mp3", True), ("wav", False), ("wav", True),
         ("flac", False), ("ogg", False), ("m4a", False)]


@pytest.mark.parametrize(("fmt", "v23"), CASES)
@pytest.mark.parametrize("cover", [PNG, JPEG], ids=["png", "jpeg"])
def test_every_field_roundtrips(fmt: str, v23: bool, cover: bytes, fresh) -> None:
    path = fresh(fmt)
    tags = dataclasses.replace(FULL, id3v23=v23, cover=cover)
    write_tags(path, fmt, tags)
    got = read_tags(path)
    assert got["format"] == fmt
    for name in TEXT_FIELDS:
        assert got[name] == getattr(tags, name), name
    assert got["cover"] == cover
    assert got["provenance"] == dict(tags.provenance)
    if fmt in ("mp3", "wav"):
        assert got["id3_version"] == ((2, 3, 0) if v23 else (2, 4, 0))


ID3_FRAMES = {"TIT2", "TPE1", "TALB", "TPE2", "TCON", "TRCK", "TBPM", "TCOP", "TPUB"}
PROV_KEYS = {f"MUSICBUILD_{k}" for k in FULL.provenance}


def _check_id3(tag: ID3, v23: bool) -> None:
    ids = {frame.FrameID for frame in tag.values()}
    assert ID3_FRAMES <= ids
    assert {"USLT", "COMM", "APIC", "TXXX"} <= ids
    if v23:
        assert tag.version == (2, 3, 0)
        assert "TYER" in ids and "TDRC" not in ids
        assert str(tag["TYER"]) == "2024"
        # ID3v2.3 has no UTF-8: text must be Latin-1 or UTF-16.
        assert all(getattr(f, "encoding", 0) in (0, 1) for f in tag.values())
    else:
        assert tag.version == (2, 4, 0)
        assert "TDRC" in ids and "TYER" not in ids
    assert {f.desc for f in tag.getall("TXXX")} == PROV_KEYS
    assert tag.getall("TXXX:MUSICBUILD_PROMPT")[0].text == [FULL.provenance["PROMPT"]]
    apic = tag.getall("APIC")
    assert len(apic) == 1 and apic[0].type == 3 and apic[0].mime == "image/png"
    assert str(tag.getall("TIT2")[0]) == FULL.title
    assert tag.getall("USLT")[0].text == FULL.lyrics
    assert tag.getall("COMM")[0].text == [FULL.comment]


@pytest.mark.parametrize("v23", [False, True])
def test_raw_id3_mp3(v23: bool, fresh) -> None:
    path = fresh("mp3")
    write_tags(path, "mp3", dataclasses.replace(FULL, id3v23=v23))
    _check_id3(ID3(path, translate=False), v23)


@pytest.mark.parametrize("v23", [False, True])
def test_raw_id3_wav(v23: bool, fresh) -> None:
    path = fresh("wav")
    write_tags(path, "wav", dataclasses.replace(FULL, id3v23=v23))
    wave = WAVE(path, translate=False)
    assert wave.tags is not None
    _check_id3(wave.tags, v23)


VORBIS_KEYS = {"TITLE", "ARTIST", "ALBUM", "ALBUMARTIST", "GENRE", "DATE", "TRACKNUMBER",
               "BPM", "LYRICS", "COMMENT", "COPYRIGHT", "ORGANIZATION"} | PROV_KEYS


def test_raw_vorbis_flac(fresh) -> None:
    path = fresh("flac")
    write_tags(path, "flac", FULL)
    audio = FLAC(path)
    keys = {k.upper() for k, _ in audio.tags}
    assert keys == VORBIS_KEYS
    assert audio["ORGANIZATION"] == [FULL.publisher]
    assert audio["DATE"] == ["2024"] and audio["TRACKNUMBER"] == ["3/12"]
    assert len(audio.pictures) == 1
    pic = audio.pictures[0]
    assert pic.type == 3 and pic.mime == "image/png" and pic.data == PNG
    assert (pic.width, pic.height) == (2, 2)


def test_raw_vorbis_ogg(fresh) -> None:
    path = fresh("ogg")
    write_tags(path, "ogg", dataclasses.replace(FULL, cover=JPEG))
    audio = OggVorbis(path)
    keys = {k.upper() for k, _ in audio.tags}
    assert keys == VORBIS_KEYS | {"METADATA_BLOCK_PICTURE"}
    pic = Picture(base64.b64decode(audio["METADATA_BLOCK_PICTURE"][0]))
    assert pic.type == 3 and pic.mime == "image/jpeg" and pic.data == JPEG
    assert (pic.width, pic.height) == (16, 8)


def test_raw_mp4_atoms(fresh) -> None:
    path = fresh("m4a")
    write_tags(path, "m4a", FULL)
    tags = MP4(path).tags
    assert tags is not None
    expected = {"\xa9nam", "\xa9ART", "\xa9alb", "aART", "\xa9gen", "\xa9day", "trkn",
                "tmpo", "\xa9lyr", "\xa9cmt", "cprt", "covr",
                "----:com.apple.iTunes:publisher"}
    expected |= {f"----:com.musicbuild:{k}" for k in FULL.provenance}
    assert set(tags.keys()) == expected
    assert tags["trkn"] == [(3, 12)]
    assert tags["tmpo"] == [120]
    assert tags["\xa9nam"] == [FULL.title]
    assert tags["covr"][0].imageformat == MP4Cover.FORMAT_PNG
    assert bytes(tags["----:com.musicbuild:SEED"][0]) == b"42"


# --- WAV LIST/INFO --------------------------------------------------------------


def _riff_walk(path: Path) -> dict[str, list[bytes]]:
    """Independent RIFF walker: checks sizes/padding and returns payloads by id."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    chunks: dict[str, list[bytes]] = {}
    pos = 12
    while pos < len(data):
        cid = data[pos:pos + 4].decode("latin-1")
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        assert pos + 8 + size <= len(data), cid
        chunks.setdefault(cid, []).append(data[pos + 8:pos + 8 + size])
        pos += 8 + size + (size & 1)
    assert pos == len(data)
    return chunks


def _info(payload: bytes) -> dict[str, str]:
    assert payload[:4] == b"INFO"
    out = {}
    pos = 4
    while pos < len(payload):
        cid, size = payload[pos:pos + 4].decode(), struct.unpack("<I", payload[pos + 4:pos + 8])[0]
        out[cid] = payload[pos + 8:pos + 8 + size].rstrip(b"\0").decode("utf-8")
        pos += 8 + size + (size & 1)
    return out


def test_wav_list_info(fresh) -> None:
    path = fresh("wav")
    write_tags(path, "wav", FULL)
    chunks = _riff_walk(path)
    assert len(chunks["LIST"]) == 1 and len(chunks["id3 "]) == 1
    order = list(chunks)
    assert order.index("LIST") < order.index("data")  # readable by streaming players
    info = _info(chunks["LIST"][0])
    assert info == {"INAM": FULL.title, "IART": FULL.artist, "IPRD": FULL.album,
                    "IGNR": FULL.genre, "ICMT": FULL.comment}
    assert read_tags(path)["wav_info"] == info
    data, rate = sf.read(path, always_2d=True)
    assert rate == SR and data.shape == (2 * SR, 2)


def test_wav_info_replaced_and_odd_lengths(fresh) -> None:
    path = fresh("wav")
    write_tags(path, "wav", FULL)
    write_tags(path, "wav", Tags(title="Odd", artist="ab"))  # odd/even lengths
    chunks = _riff_walk(path)
    assert len(chunks["LIST"]) == 1 and len(chunks["id3 "]) == 1
    assert _info(chunks["LIST"][0]) == {"INAM": "Odd", "IART": "ab"}
    got = read_tags(path)
    assert got["title"] == "Odd" and got["album"] is None and got["cover"] is None
    assert sf.info(path).frames == 2 * SR


def test_wav_info_only_file_is_read(fresh, tmp_path: Path) -> None:
    """A third-party WAV with only LIST/INFO (no ID3) still yields title/artist."""
    path = fresh("wav")
    write_tags(path, "wav", Tags(title="Info Only", artist="Someone"))
    chunks = _riff_walk(path)
    body = b"".join(cid.encode() + struct.pack("<I", len(p)) + p + b"\0" * (len(p) & 1)
                    for cid, plist in chunks.items() if cid != "id3 " for p in plist)
    stripped = tmp_path / "info_only.wav"
    stripped.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    got = read_tags(stripped)
    assert got["title"] == "Info Only" and got["artist"] == "Someone"
    assert got["id3_version"] is None


# --- re-tagging, determinism, audio integrity -------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_retag_replaces_and_is_history_independent(fmt: str, fresh) -> None:
    path = fresh(fmt, "retagged")
    write_tags(path, fmt, FULL)
    changed = dataclasses.replace(FULL, title="Renamed", comment=None, cover=JPEG,
                                  provenance={"GEN_KEY": "sha256:def456"})
    write_tags(path, fmt, changed)
    got = read_tags(path)
    assert got["title"] == "Renamed"
    assert got["comment"] is None
    assert got["cover"] == JPEG
    assert got["provenance"] == {"GEN_KEY": "sha256:def456"}
    # Same bytes as tagging an untouched file directly: no leftovers, no padding drift.
    direct = fresh(fmt, "direct")
    write_tags(direct, fmt, changed)
    assert path.read_bytes() == direct.read_bytes()
    if fmt == "mp3":
        tag = ID3(path)
        assert len(tag.getall("TIT2")) == 1 and len(tag.getall("APIC")) == 1
        assert len(tag.getall("TXXX")) == 1 and not tag.getall("COMM")


@pytest.mark.parametrize("fmt", FORMATS)
def test_tagging_is_deterministic(fmt: str, fresh) -> None:
    a, b = fresh(fmt, "a"), fresh(fmt, "b")
    write_tags(a, fmt, FULL)
    reordered = dataclasses.replace(FULL, provenance=dict(reversed(list(FULL.provenance.items()))))
    write_tags(b, fmt, reordered)
    assert a.read_bytes() == b.read_bytes()
    write_tags(a, fmt, FULL)  # idempotent
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_audio_intact_after_tagging(fmt: str, fresh, audio_files: dict[str, Path]) -> None:
    path = fresh(fmt)
    write_tags(path, fmt, FULL)
    before, rate_before = decode(audio_files[fmt])
    after, rate_after = decode(path)
    assert rate_after == rate_before == SR
    assert np.array_equal(before, after)
    assert sniff_format(path.read_bytes()) == fmt
    if fmt != "m4a":
        assert sf.info(path).frames > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_none_fields_are_skipped(fmt: str, fresh) -> None:
    path = fresh(fmt)
    write_tags(path, fmt, Tags(title="Only Title"))
    got = read_tags(path)
    assert got["title"] == "Only Title"
    assert all(got[name] is None for name in TEXT_FIELDS if name != "title")
    assert got["cover"] is None and got["provenance"] == {} and got["extra"] == {}


@pytest.mark.parametrize("fmt", FORMATS)
def test_extra_fields_and_plain_track_number(fmt: str, fresh) -> None:
    path = fresh(fmt)
    write_tags(path, fmt, Tags(track_number="7", extra={"REPLAYGAIN_TRACK_GAIN": "-6.10 dB"}))
    got = read_tags(path)
    assert got["track_number"] == "7"
    assert got["extra"] == {"REPLAYGAIN_TRACK_GAIN": "-6.10 dB"}
    assert got["provenance"] == {}


def test_empty_tags_leave_no_tag(fresh) -> None:
    path = fresh("mp3")
    write_tags(path, "mp3", FULL)
    write_tags(path, "mp3", Tags())
    got = read_tags(path)
    assert got["title"] is None and got["id3_version"] is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_invalid_input_raises(fmt: str, fresh) -> None:
    path = fresh(fmt)
    write_tags(path, fmt, FULL)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="PNG or JPEG"):
        write_tags(path, fmt, Tags(title="x", cover=b"GIF89a not supported"))
    with pytest.raises(ValueError, match="invalid tag key"):
        write_tags(path, fmt, Tags(title="x", provenance={"BAD=KEY": "x"}))
    assert path.read_bytes() == before  # validation happens before the file is touched


def test_bad_format_and_track_number(fresh) -> None:
    with pytest.raises(ValueError, match="cannot tag format"):
        write_tags(fresh("wav"), "aiff", FULL)
    with pytest.raises(ValueError, match="track number"):
        write_tags(fresh("m4a"), "m4a", Tags(track_number="three"))
