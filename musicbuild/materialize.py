"""Materialize an output from the cache: decode the cached clip, convert, tag, write atomically.

Free and local. Temp files live next to the target (same filesystem, so the final rename is atomic)
and are removed on any failure, so a target is either the old file or the complete new one; the
rename goes through the output's folder as it is at that moment, never through a symlink
(``confine.py``). Stale temp files of dead builds are swept by the engine, once per folder.

Each take is read and decoded once per track however many outputs use it, and a generation that
was just stored is decoded from the bytes still in memory (no read-back). The decode itself stays:
outputs are made from the cached clip's samples, so a cold build writes the same bytes as any later
build from the cache, on any machine.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from .cache import Cache, file_sha256
from .confine import ConfinedOutput
from .model import PlannedOutput, TrackSpec


def build_tags(spec: TrackSpec, gen_key: str, generation: dict[str, Any], delivery: Any = None) -> Any:
    from .audio import tagging  # codecs load only when something is written

    md = spec.metadata
    provenance = {
        "GEN_KEY": gen_key,
        "PROVIDER": str(generation.get("provider", spec.provider.name)),
        "MODEL": str(generation.get("model", spec.model)),
        "SEED": str(spec.seed),
        "PROMPT": spec.prompt,
    }
    if generation.get("job_id"):
        provenance["JOB_ID"] = str(generation["job_id"])
    return tagging.Tags(
        title=md.title, artist=md.artist, album=md.album, album_artist=md.album_artist,
        genre=md.genre, year=md.year, track_number=md.track_number,
        bpm=f"{spec.bpm:g}" if spec.bpm else None, lyrics=spec.lyrics, comment=md.comment,
        copyright=md.copyright, publisher=md.publisher,
        cover=md.cover.read_bytes() if md.cover else None,
        provenance=provenance, id3v23=md.id3v23, **delivery_tags(delivery),
    )


def delivery_tags(delivery: Any) -> dict[str, Any]:
    """ReplayGain-style loudness fields and loop points from post-processing, as Tags arguments."""
    if delivery is None:
        return {}
    extra = {}
    if delivery.loudness_lufs is not None:
        extra["REPLAYGAIN_TRACK_GAIN"] = f"{-18.0 - delivery.loudness_lufs:+.2f} dB"  # ReplayGain 2.0 reference
        extra["MUSICBUILD_LOUDNESS"] = f"{delivery.loudness_lufs:.1f} LUFS"
    if delivery.true_peak_db is not None:
        extra["REPLAYGAIN_TRACK_PEAK"] = f"{10 ** (delivery.true_peak_db / 20):.6f}"
        extra["MUSICBUILD_TRUE_PEAK"] = f"{delivery.true_peak_db:.1f} dBTP"
    return {"extra": extra, "loop": delivery.loop}


def post_spec(post: dict[str, Any]) -> Any:
    """The manifest's ``post:`` block as the DSP's PostSpec."""
    from .audio.post import PRESETS, PostSpec

    loudness = post.get("loudness")
    if isinstance(loudness, str):
        loudness = PRESETS[loudness]
    elif isinstance(loudness, dict):
        loudness = (float(loudness["target_lufs"]), float(loudness.get("true_peak_db", -1.0)))
    length = post.get("length") or {}
    loop = post.get("loop")
    crossfade = (loop.get("crossfade", 1.0) if isinstance(loop, dict) else 1.0) if loop else None
    return PostSpec(loudness=loudness, fit=length.get("fit"), fade_out=float(length.get("fade_out", 0.0)),
                    trim_silence=bool(length.get("trim_silence", False)), loop_crossfade=crossfade,
                    sample_rate=post.get("sample_rate"), channels=post.get("channels"))


def choose_clip(spec: TrackSpec, planned: PlannedOutput, decoded: list[tuple[Any, int]]) -> int:
    """The take (0-based) this output holds: its own clip, or the one ``clips: {pick: ...}`` wants.

    Deterministic for the same cached takes, so a rebuild never flips takes."""
    if spec.clips in ("first", "all") or len(decoded) == 1:
        return min(planned.output.clip, len(decoded)) - 1
    durations = [len(samples) / rate for samples, rate in decoded]
    if spec.clips == "longest":
        return max(range(len(decoded)), key=lambda i: (durations[i], -i))
    if spec.clips == "closest-duration":
        return min(range(len(decoded)), key=lambda i: (abs(durations[i] - spec.duration), i))
    import numpy as np  # "loudest": highest integrated loudness (BS.1770), RMS where undefined

    def loudness(samples: Any, rate: int) -> float:
        try:
            import pyloudnorm

            value = pyloudnorm.Meter(rate).integrated_loudness(samples)
            return float(value) if np.isfinite(value) else -1e9
        except (ImportError, ValueError):
            return float(20 * np.log10(np.sqrt(np.mean(np.square(samples))) + 1e-12))

    levels = [loudness(samples, rate) for samples, rate in decoded]
    return max(range(len(decoded)), key=lambda i: (levels[i], -i))


class TakeAudio:
    """A generation's takes for one track's outputs: each read and decoded at most once.

    ``blobs`` (SHA-256 -> bytes) holds clips that are still in memory; the rest come from the cache."""

    def __init__(self, cache: Cache, generation: dict[str, Any], blobs: Mapping[str, bytes] | None = None) -> None:
        self.cache = cache
        self.clips = generation["clips"]
        self.blobs = dict(blobs or {})
        self.decoded: dict[int, tuple[Any, int]] = {}

    def decode(self, index: int) -> tuple[Any, int]:
        if index not in self.decoded:
            from .audio import convert

            sha = self.clips[index]["sha256"]
            data = self.blobs.pop(sha, None)
            self.decoded[index] = convert.decode(data if data is not None else self.cache.read_blob(sha))
        return self.decoded[index]

    def take(self, spec: TrackSpec, planned: PlannedOutput) -> tuple[int, Any, int]:
        """(0-based take, samples, rate) for this output."""
        if spec.clips in ("first", "all"):
            index = min(planned.output.clip, len(self.clips)) - 1
        else:  # a pick strategy looks at every take
            index = choose_clip(spec, planned, [self.decode(i) for i in range(len(self.clips))])
        return (index, *self.decode(index))


def materialize(cache: Cache, spec: TrackSpec, gen_key: str, generation: dict[str, Any],
                planned: PlannedOutput, takes: TakeAudio | None = None) -> dict[str, Any]:
    """Write one output; return the record the cache keeps for it. Pass the same ``takes`` for all
    of a track's outputs so that each take is decoded once."""
    from .audio import tagging

    index, samples, rate = (takes or TakeAudio(cache, generation)).take(spec, planned)
    target = planned.output.path
    # written through directory descriptors: a folder swapped for a symlink meanwhile is refused
    with ConfinedOutput(planned.output.root or target.parent, target, f".tmp.{spec.format}") as out:
        tmp = out.path
        delivery = encode_delivery(samples, rate, spec, tmp)
        tagging.write_tags(tmp, spec.format, build_tags(spec, gen_key, generation, delivery))
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        sha = file_sha256(tmp)
        st = out.commit()
    record = {"out_key": planned.out_key, "gen_key": gen_key, "sha256": sha,
              "size": st.st_size, "mtime_ns": st.st_mtime_ns, "track": spec.id, "clip": index + 1, "parts": dict(planned.parts)}
    if delivery is not None:
        record.update(loudness_lufs=delivery.loudness_lufs, true_peak_db=delivery.true_peak_db)
    cache.put_output(target, record)
    return record


LOSSY = ("mp3", "ogg", "m4a")


def encode_delivery(samples: Any, rate: int, spec: TrackSpec, dest: Path) -> Any:
    """Encode ``samples`` to ``dest``, after the ``post:`` processing if there is one.

    Lossy encoders overshoot the peaks they are given, so for mp3/ogg/m4a the encoded bytes are
    decoded and measured again; only while their true peak is over the ceiling is the processing
    redone with the ceiling lowered by the overshoot (the limiter keeps the loudness on target) and
    the audio encoded again. Returns the delivery facts as measured on what was written (None
    without ``post:``)."""
    from dataclasses import replace

    from .audio import convert

    if not spec.post:
        dest.write_bytes(convert.encode_bytes(samples, rate, spec.format, **encode_options(spec)))
        return None
    from .audio import post  # scipy and pyloudnorm load only for outputs that need them

    wanted = post_spec(dict(spec.post))
    current = wanted
    for _ in range(4):
        delivery = post.process(samples, rate, current)
        data = convert.encode_bytes(delivery.samples, delivery.sample_rate, spec.format, **encode_options(spec))
        dest.write_bytes(data)
        if wanted.loudness is None or spec.format not in LOSSY:
            return delivery
        decoded, decoded_rate = convert.decode(data)
        peak = post.true_peak_db(decoded, decoded_rate)
        measured = replace(delivery, true_peak_db=peak, loudness_lufs=post.integrated_loudness(decoded, decoded_rate))
        if peak is None or peak <= wanted.loudness[1]:
            return measured
        current = replace(current, loudness=(wanted.loudness[0], current.loudness[1] - (peak - wanted.loudness[1]) - 0.1))
    return measured


def encode_options(spec: TrackSpec) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if spec.post.get("bitrate") and spec.format in ("mp3", "m4a", "ogg"):
        options["bitrate_kbps"] = int(spec.post["bitrate"])
    if spec.post.get("bit_depth") and spec.format in ("wav", "flac"):
        options["bit_depth"] = int(spec.post["bit_depth"])
    return options
