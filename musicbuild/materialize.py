"""Materialize an output from the cache: decode the cached clip, convert, tag, write atomically.

Free and local. Temp files live next to the target (same filesystem, so the final rename is atomic)
and are removed on any failure, so a target is either the old file or the complete new one.
"""
from __future__ import annotations

import glob
import os
from typing import Any

from .cache import Cache, file_sha256, temp_beside
from .model import PlannedOutput, TrackSpec


def build_tags(spec: TrackSpec, gen_key: str, generation: dict[str, Any]) -> Any:
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
        provenance=provenance, id3v23=md.id3v23,
    )


def materialize(cache: Cache, spec: TrackSpec, gen_key: str, generation: dict[str, Any],
                planned: PlannedOutput) -> dict[str, Any]:
    """Write one output; return the record the cache keeps for it."""
    from .audio import convert, tagging

    clips = generation["clips"]
    clip = clips[min(planned.output.clip, len(clips)) - 1]
    samples, rate = convert.decode(cache.read_blob(clip["sha256"]))
    target = planned.output.path
    if target.parent.is_dir():  # a build killed mid-write left its temp file; builds never overlap (flock)
        for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp*"):
            stale.unlink(missing_ok=True)
    tmp = temp_beside(target, suffix=f".tmp.{spec.format}")
    try:
        convert.encode(samples, rate, spec.format, tmp)
        tagging.write_tags(tmp, spec.format, build_tags(spec, gen_key, generation))
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        sha = file_sha256(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = target.stat()
    record = {"out_key": planned.out_key, "gen_key": gen_key, "sha256": sha,
              "size": st.st_size, "mtime_ns": st.st_mtime_ns, "track": spec.id}
    cache.put_output(target, record)
    return record
