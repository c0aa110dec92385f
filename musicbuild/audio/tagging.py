"""Read and write tags.  The ONLY module in musicbuild that imports mutagen.

Every write *replaces* the whole tag set (old tags are removed first), so
re-tagging after a manifest change never duplicates frames, and the resulting
bytes depend only on the audio and the :class:`Tags` given: padding is fixed
and free-form keys are written in sorted order.  The build tool hashes
outputs, so this determinism is part of the contract.

WAV files get an ID3 chunk (via mutagen) *and* a RIFF LIST/INFO chunk, which
many players read instead; mutagen cannot write LIST/INFO, so a small RIFF
chunk writer lives here.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mutagen
from mutagen import id3
from mutagen.flac import FLAC, Picture
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, AtomDataType, MP4Cover, MP4FreeForm
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from .riff import is_info, pack, parse_info, parse_smpl, riff_chunks, smpl_chunk, wav_rate

PROVENANCE_PREFIX = "MUSICBUILD_"


@dataclass(frozen=True)
class Tags:
    """Metadata for one output file; ``None`` fields are not written."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    album_artist: str | None = None
    genre: str | None = None
    year: str | None = None
    track_number: str | None = None  # "3" or "3/12"
    bpm: str | None = None
    lyrics: str | None = None
    comment: str | None = None
    copyright: str | None = None
    publisher: str | None = None
    cover: bytes | None = None  # PNG or JPEG bytes
    provenance: Mapping[str, str] = field(default_factory=dict)  # -> MUSICBUILD_<KEY>
    id3v23: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)  # free-form, no prefix
    # (start frame, length in frames) of a forward loop: WAV 'smpl' chunk, Vorbis
    # LOOPSTART/LOOPLENGTH (ogg, flac); not stored in mp3/m4a.
    loop: tuple[int, int] | None = None


TEXT_FIELDS: tuple[str, ...] = (
    "title", "artist", "album", "album_artist", "genre", "year", "track_number",
    "bpm", "lyrics", "comment", "copyright", "publisher",
)

# Simple ID3 text frames (lyrics/comment use USLT/COMM, handled separately).
_ID3_TEXT = {
    "title": "TIT2", "artist": "TPE1", "album": "TALB", "album_artist": "TPE2",
    "genre": "TCON", "year": "TDRC", "track_number": "TRCK", "bpm": "TBPM",
    "copyright": "TCOP", "publisher": "TPUB",
}
_VORBIS = {
    "title": "TITLE", "artist": "ARTIST", "album": "ALBUM", "album_artist": "ALBUMARTIST",
    "genre": "GENRE", "year": "DATE", "track_number": "TRACKNUMBER", "bpm": "BPM",
    "lyrics": "LYRICS", "comment": "COMMENT", "copyright": "COPYRIGHT",
    "publisher": "ORGANIZATION",
}
# Plain MP4 text atoms (trkn/tmpo/covr/publisher need special handling).
_MP4_TEXT = {
    "title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "album_artist": "aART",
    "genre": "\xa9gen", "year": "\xa9day", "lyrics": "\xa9lyr", "comment": "\xa9cmt",
    "copyright": "cprt",
}
_MP4_PUBLISHER = "----:com.apple.iTunes:publisher"
_MP4_PROV = "----:com.musicbuild:"
_MP4_EXTRA = "----:com.apple.iTunes:"
# RIFF LIST/INFO ids for WAV, in the order written.
_WAV_INFO = (("title", "INAM"), ("artist", "IART"), ("album", "IPRD"),
             ("genre", "IGNR"), ("comment", "ICMT"))

_KEY_RE = re.compile(r"^[A-Za-z0-9_]+$")


def _no_padding(_info: object) -> int:
    """Fixed (zero) padding: same tags must give the same bytes on any re-tag."""
    return 0


@dataclass
class _Found:
    """What a format reader found, before normalisation in :func:`read_tags`."""

    fields: dict[str, str] = field(default_factory=dict)
    cover: bytes | None = None
    keyed: dict[str, str] = field(default_factory=dict)  # TXXX-style KEY -> value
    loop: tuple[int, int] | None = None


# --- helpers ----------------------------------------------------------------


def _image_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    raise ValueError("cover image must be PNG or JPEG bytes")


def _image_dims(data: bytes) -> tuple[int, int, int]:
    """(width, height, bits per pixel) for the FLAC picture block, 0s if unknown."""
    if data.startswith(b"\x89PNG") and len(data) >= 26:
        w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
        return w, h, depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype, 1)
    pos = 2
    while pos + 9 < len(data) and data[pos] == 0xFF:
        marker, size = data[pos + 1], struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            prec, h, w, ncomp = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            return w, h, prec * ncomp
        pos += 2 + size
    return 0, 0, 0


def _keyed(tags: Tags) -> list[tuple[str, str]]:
    """Provenance (prefixed) and extra fields as sorted (KEY, value) pairs."""
    out: dict[str, str] = {}
    for source, prefix in ((tags.extra, ""), (tags.provenance, PROVENANCE_PREFIX)):
        for key, value in source.items():
            if not _KEY_RE.match(key):
                raise ValueError(f"invalid tag key {key!r}: use letters, digits and _")
            out[prefix + key.upper()] = str(value)
    return sorted(out.items())


def _check_loop(loop: object) -> tuple[int, int] | None:
    if loop is None:
        return None
    try:
        start, length = loop  # type: ignore[misc]
        ok = int(start) == start and int(length) == length and start >= 0 and length >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok or int(start) + int(length) > 0xFFFFFFFF:
        raise ValueError(f"invalid loop {loop!r}: expected (start frame >= 0, length >= 1)")
    return int(start), int(length)


def _split_track(value: str) -> tuple[int, int]:
    try:
        num, _, total = value.partition("/")
        return int(num), int(total) if total.strip() else 0
    except ValueError:
        raise ValueError(f"invalid track number {value!r}; expected '3' or '3/12'") from None


def _picture(cover: bytes) -> Picture:
    pic = Picture()
    pic.type = 3  # front cover
    pic.mime = _image_mime(cover)
    pic.desc = ""
    pic.width, pic.height, pic.depth = _image_dims(cover)
    pic.data = cover
    return pic


# --- ID3 (mp3, wav) ---------------------------------------------------------


def _fill_id3(tag: id3.ID3, tags: Tags) -> None:
    for name, frame_id in _ID3_TEXT.items():
        value = getattr(tags, name)
        if value is not None:
            tag.add(getattr(id3, frame_id)(encoding=3, text=[value]))
    if tags.lyrics is not None:
        tag.add(id3.USLT(encoding=3, lang="eng", desc="", text=tags.lyrics))
    if tags.comment is not None:
        tag.add(id3.COMM(encoding=3, lang="eng", desc="", text=[tags.comment]))
    if tags.cover is not None:
        tag.add(id3.APIC(encoding=3, mime=_image_mime(tags.cover), type=3, desc="",
                         data=tags.cover))
    for key, value in _keyed(tags):
        tag.add(id3.TXXX(encoding=3, desc=key, text=[value]))
    if tags.id3v23:
        # save(v2_version=3) only re-encodes text; frame conversion
        # (TDRC -> TYER etc.) is explicit in mutagen.
        tag.update_to_v23()


def _write_mp3(path: Path, tags: Tags) -> None:
    id3.delete(path)  # removes ID3v1 and ID3v2
    tag = id3.ID3()
    _fill_id3(tag, tags)
    if len(tag):
        tag.save(path, v1=0, v2_version=3 if tags.id3v23 else 4, padding=_no_padding)


def _read_id3(tag: Any, found: _Found) -> None:
    for name, frame_id in _ID3_TEXT.items():
        frames = tag.getall(frame_id)  # v2.3 TYER is translated to TDRC on load
        if frames:
            found.fields[name] = "; ".join(str(t) for t in frames[0].text)
    for name, frame_id in (("lyrics", "USLT"), ("comment", "COMM")):
        frames = sorted(tag.getall(frame_id), key=lambda f: f.desc != "")
        if frames:
            text = frames[0].text
            found.fields[name] = text if isinstance(text, str) else "; ".join(text)
    pics = sorted(tag.getall("APIC"), key=lambda f: f.type != 3)
    found.cover = bytes(pics[0].data) if pics else None
    for frame in tag.getall("TXXX"):
        found.keyed[frame.desc] = "; ".join(frame.text)


# --- WAV: ID3 chunk plus LIST/INFO and smpl (see riff.py) -------------------


def _write_wav(path: Path, tags: Tags) -> None:
    # Drop old tag chunks, put a fresh LIST/INFO before 'data' (streaming
    # readers may stop at 'data'); mutagen then appends the ID3 chunk.  A loop
    # becomes a fresh 'smpl' chunk after 'data' (any old one is dropped).
    chunks = [(c, p) for c, p in riff_chunks(path.read_bytes())
              if c not in (b"id3 ", b"ID3 ", b"smpl") and not is_info(c, p)]
    info = [(info_id.encode(), getattr(tags, name).encode("utf-8") + b"\0")
            for name, info_id in _WAV_INFO if getattr(tags, name) is not None]
    if info:
        at = next((i for i, (c, _) in enumerate(chunks) if c == b"data"), len(chunks))
        chunks.insert(at, (b"LIST", b"INFO" + pack(info)))
    loop = _check_loop(tags.loop)
    if loop is not None:
        at = next((i + 1 for i, (c, _) in enumerate(chunks) if c == b"data"), len(chunks))
        chunks.insert(at, (b"smpl", smpl_chunk(wav_rate(chunks), loop)))
    body = pack(chunks)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    wav = WAVE(path)
    wav.add_tags()
    tag: Any = wav.tags
    _fill_id3(tag, tags)
    if len(tag):
        wav.save(v2_version=3 if tags.id3v23 else 4, padding=_no_padding)


def _read_wav_loop(path: Path) -> tuple[int, int] | None:
    for cid, payload in riff_chunks(path.read_bytes()):
        if cid == b"smpl":
            return parse_smpl(payload)
    return None


def _read_wav_info(path: Path) -> dict[str, str]:
    info: dict[str, str] = {}
    for cid, payload in riff_chunks(path.read_bytes()):
        if is_info(cid, payload):
            info.update(parse_info(payload))
    return info


# --- Vorbis comments (flac, ogg) ---------------------------------------------


def _write_vorbis(path: Path, fmt: str, tags: Tags) -> None:
    audio: Any = FLAC(path) if fmt == "flac" else OggVorbis(path)
    if audio.tags is None:
        audio.add_tags()
    audio.tags.clear()
    for name, key in _VORBIS.items():
        value = getattr(tags, name)
        if value is not None:
            audio[key] = [value]
    for key, value in _keyed(tags):
        audio[key] = [value]
    loop = _check_loop(tags.loop)
    if loop is not None:
        audio["LOOPSTART"] = [str(loop[0])]
        audio["LOOPLENGTH"] = [str(loop[1])]
    if isinstance(audio, FLAC):
        audio.clear_pictures()
        if tags.cover is not None:
            audio.add_picture(_picture(tags.cover))
        audio.save(deleteid3=True, padding=_no_padding)
    else:
        if tags.cover is not None:
            blob = base64.b64encode(_picture(tags.cover).write()).decode("ascii")
            audio["METADATA_BLOCK_PICTURE"] = [blob]
        audio.save(padding=_no_padding)


def _read_vorbis(audio: Any, found: _Found) -> None:
    known = {v: k for k, v in _VORBIS.items()}
    pictures: list[Picture] = list(audio.pictures) if isinstance(audio, FLAC) else []
    for key, values in (audio.tags.items() if audio.tags is not None else []):
        upper = key.upper()
        if upper in known:
            found.fields[known[upper]] = "; ".join(values)
        elif upper == "METADATA_BLOCK_PICTURE":
            pictures.extend(Picture(base64.b64decode(v)) for v in values)
        else:
            found.keyed[upper] = "; ".join(values)
    pictures.sort(key=lambda p: p.type != 3)
    found.cover = bytes(pictures[0].data) if pictures else None
    start, length = found.keyed.get("LOOPSTART"), found.keyed.get("LOOPLENGTH")
    if start is not None and length is not None:
        try:
            found.loop = _check_loop((int(start), int(length)))
        except ValueError:
            found.loop = None  # malformed: leave them visible in "extra"
        else:
            del found.keyed["LOOPSTART"], found.keyed["LOOPLENGTH"]


# --- MP4 (m4a) ---------------------------------------------------------------


def _freeform(value: str) -> MP4FreeForm:
    return MP4FreeForm(value.encode("utf-8"), dataformat=AtomDataType.UTF8)


def _mp4_bpm(bpm: str) -> int:
    try:
        return int(round(float(bpm)))
    except ValueError:
        raise ValueError(f"invalid bpm {bpm!r}; expected a number") from None


def _write_mp4(path: Path, tags: Tags) -> None:
    audio = MP4(path)
    if audio.tags is None:
        audio.add_tags()
    atoms: Any = audio.tags
    atoms.clear()  # also drops FFmpeg's ©too encoder atom
    for name, atom in _MP4_TEXT.items():
        value = getattr(tags, name)
        if value is not None:
            atoms[atom] = [value]
    if tags.track_number is not None:
        atoms["trkn"] = [_split_track(tags.track_number)]
    if tags.bpm is not None:
        atoms["tmpo"] = [_mp4_bpm(tags.bpm)]
    if tags.publisher is not None:
        atoms[_MP4_PUBLISHER] = [_freeform(tags.publisher)]
    if tags.cover is not None:
        png = _image_mime(tags.cover) == "image/png"
        kind = MP4Cover.FORMAT_PNG if png else MP4Cover.FORMAT_JPEG
        atoms["covr"] = [MP4Cover(tags.cover, imageformat=kind)]
    for key, value in _keyed(tags):
        if key.startswith(PROVENANCE_PREFIX):
            atoms[_MP4_PROV + key[len(PROVENANCE_PREFIX):]] = [_freeform(value)]
        else:
            atoms[_MP4_EXTRA + key] = [_freeform(value)]
    audio.save(padding=_no_padding)


def _read_mp4(atoms: Any, found: _Found) -> None:
    for name, atom in _MP4_TEXT.items():
        if atoms.get(atom):
            found.fields[name] = "; ".join(str(v) for v in atoms[atom])
    if atoms.get("trkn"):
        num, total = atoms["trkn"][0]
        found.fields["track_number"] = f"{num}/{total}" if total else str(num)
    if atoms.get("tmpo"):
        found.fields["bpm"] = str(atoms["tmpo"][0])
    if atoms.get("covr"):
        found.cover = bytes(atoms["covr"][0])
    for key, values in atoms.items():
        if not key.startswith("----:") or not values:
            continue
        text = bytes(values[0]).decode("utf-8", "replace")
        if key == _MP4_PUBLISHER:
            found.fields["publisher"] = text
        elif key.startswith(_MP4_PROV):
            found.keyed[PROVENANCE_PREFIX + key[len(_MP4_PROV):]] = text
        else:
            found.keyed[key.rsplit(":", 1)[1]] = text


# --- public API ----------------------------------------------------------------


def write_tags(path: Path, fmt: str, tags: Tags) -> None:
    """Replace all tags of the file at ``path`` (encoded as ``fmt``) with ``tags``.

    Raises ValueError for an unknown format or invalid values (cover not
    PNG/JPEG, bad keys, unparsable m4a track/bpm) before the file is touched.
    """
    path = Path(path)
    fmt = fmt.lower().lstrip(".")
    if fmt not in ("mp3", "wav", "flac", "ogg", "m4a"):
        raise ValueError(f"cannot tag format {fmt!r}; expected mp3, wav, flac, ogg or m4a")
    if tags.cover is not None:
        _image_mime(tags.cover)
    _keyed(tags)
    _check_loop(tags.loop)
    if fmt == "m4a" and tags.track_number is not None:
        _split_track(tags.track_number)
    if fmt == "m4a" and tags.bpm is not None:
        _mp4_bpm(tags.bpm)

    if fmt == "mp3":
        _write_mp3(path, tags)
    elif fmt == "wav":
        _write_wav(path, tags)
    elif fmt == "m4a":
        _write_mp4(path, tags)
    else:
        _write_vorbis(path, fmt, tags)


def read_tags(path: Path) -> dict[str, object]:
    """Read tags into a format-independent dict.

    Keys: every :data:`TEXT_FIELDS` name (None if absent), ``cover`` (bytes or
    None), ``provenance`` (MUSICBUILD_ prefix stripped), ``extra`` (other
    free-form keys), ``format``; plus ``id3_version`` for mp3/wav (None when
    there is no ID3 tag) and ``wav_info`` (raw LIST/INFO ids) for wav; ``loop``
    ((start, length) in frames, or None; always None for mp3/m4a).
    """
    path = Path(path)
    audio: Any = mutagen.File(path)
    found = _Found()
    out: dict[str, object] = {}
    if isinstance(audio, (MP3, WAVE)):
        out["format"] = "mp3" if isinstance(audio, MP3) else "wav"
        out["id3_version"] = tuple(audio.tags.version) if audio.tags is not None else None
        if audio.tags is not None:
            _read_id3(audio.tags, found)
    elif isinstance(audio, (FLAC, OggVorbis)):
        out["format"] = "flac" if isinstance(audio, FLAC) else "ogg"
        _read_vorbis(audio, found)
    elif isinstance(audio, MP4):
        out["format"] = "m4a"
        _read_mp4(audio.tags or {}, found)
    else:
        raise ValueError(f"unsupported or unrecognised audio file: {path}")
    if out["format"] == "wav":
        found.loop = _read_wav_loop(path)
        out["wav_info"] = info = _read_wav_info(path)
        for name, info_id in _WAV_INFO:  # what players show when there is no ID3
            if name not in found.fields and info_id in info:
                found.fields[name] = info[info_id]
    out.update({name: found.fields.get(name) for name in TEXT_FIELDS})
    out["cover"] = found.cover
    out["loop"] = found.loop
    out["provenance"] = {k[len(PROVENANCE_PREFIX):].upper(): v for k, v in found.keyed.items()
                         if k.upper().startswith(PROVENANCE_PREFIX)}
    out["extra"] = {k: v for k, v in found.keyed.items()
                    if not k.upper().startswith(PROVENANCE_PREFIX)}
    return out
