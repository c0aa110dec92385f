"""Delivery processing through the real CLI: measured outputs, exact lengths, loops, free changes."""
from __future__ import annotations

import mutagen.oggvorbis
import pytest
import soundfile as sf

from musicbuild.audio.tagging import read_tags

from .conftest import Project, actions
from .test_post import ref_loudness, ref_true_peak

MANIFEST = """\
version: 1
defaults: {duration: 20, format: wav, post: {loudness: streaming}}
tracks:
  - {id: spot, prompt: upbeat acoustic jingle, post: {length: {fit: 15, fade_out: 1.5}, sample_rate: 48000}}
  - {id: loop, prompt: calm exploration loop, format: ogg, post: {loop: {crossfade: 1}}}
  - {id: master, prompt: epic orchestral battle drums, format: flac, post: {bit_depth: 24}}
"""


def test_post_block_end_to_end(project: Project) -> None:
    project.write(MANIFEST)
    report = project.build()
    rows = {r["id"]: r for r in report["tracks"]}
    spot = project.out("spot.wav")
    data, rate = sf.read(str(spot))
    assert rate == 48000 and data.shape[0] == 15 * 48000  # exactly 15.000 s at the output rate
    for name in ("spot.wav", "loop.ogg", "master.flac"):
        audio, sr = sf.read(str(project.out(name)))
        assert abs(ref_loudness(audio, sr) - (-14.0)) <= 0.5  # an independent BS.1770 meter
        assert ref_true_peak(audio) <= -1.0 + 0.1
    assert abs(rows["spot"]["loudness_lufs"] - (-14.0)) <= 0.5 and rows["spot"]["true_peak_db"] <= -1.0
    tags = read_tags(spot)
    assert tags["provenance"]["LOUDNESS"].endswith("LUFS") and "REPLAYGAIN_TRACK_GAIN" in tags["extra"]  # MUSICBUILD_LOUDNESS
    ogg = mutagen.oggvorbis.OggVorbis(str(project.out("loop.ogg")))
    frames = sf.info(str(project.out("loop.ogg"))).frames
    assert int(ogg["LOOPSTART"][0]) == 0 and int(ogg["LOOPLENGTH"][0]) == frames
    assert sf.info(str(project.out("master.flac"))).subtype == "PCM_24"


@pytest.mark.parametrize("old, new", [
    ("loudness: streaming", "loudness: ebu-r128"),
    ("fit: 15, fade_out: 1.5", "fit: 12, fade_out: 1.5"),
    ("loop: {crossfade: 1}", "loop: {crossfade: 2}"),
    ("bit_depth: 24", "bit_depth: 16"),
])
def test_changing_post_rematerializes_and_generates_nothing(project: Project, old: str, new: str) -> None:
    project.write(MANIFEST)
    project.build()
    blobs = sorted(p.name for p in (project.root / ".musicbuild" / "blobs").rglob("*") if p.is_file())
    project.edit(old, new)
    report = project.build()
    changed = [r for r in report["tracks"] if r["action"] != "up-to-date"]
    assert changed and all(r["action"] == "materialize" for r in changed)
    assert report["summary"]["generated"] == 0 and changed[0]["reasons"] == ["post-changed"]
    assert sorted(p.name for p in (project.root / ".musicbuild" / "blobs").rglob("*") if p.is_file()) == blobs
    assert set(actions(project.build()).values()) == {"up-to-date"}


def test_bitrate_channels_and_sample_rate(project: Project) -> None:
    from mutagen.mp3 import MP3

    project.write("""\
version: 1
tracks:
  - {id: small, prompt: lofi beat, duration: 3, format: mp3, post: {bitrate: 128, channels: 1, sample_rate: 22050}}
""")
    project.build()
    info = MP3(str(project.out("small.mp3"))).info
    assert abs(info.bitrate - 128000) < 1000 and info.channels == 1 and info.sample_rate == 22050
