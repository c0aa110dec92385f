"""`post:` is templated like every manifest string (SPEC 1): numbers from templates are converted and
checked again; a setting that cannot apply to the track's format is an error on the track, and is
left out where it comes from `defaults`."""
from __future__ import annotations

from musicbuild.manifest import load_manifest

from .conftest import Project


def _specs(project: Project) -> dict:
    return {s.id: s for s in load_manifest(project.manifest).tracks}


def test_templated_post_fields_render_convert_and_build(project: Project) -> None:
    project.write("""\
version: 1
vars: {preset: ebu-r128}
defaults: {provider: local, duration: 6, format: wav}
tracks:
  - id: "spot-{{ length }}"
    matrix: {length: [3, 4]}
    prompt: upbeat jingle
    post:
      loudness: "{{ preset }}"
      length: {fit: "{{ length }}", fade_out: "{{ length / 10 }}", trim_silence: "{{ length > 3 }}"}
      sample_rate: "{{ 48000 if length > 3 else 44100 }}"
  - id: loop
    prompt: calm loop
    post: {loop: {crossfade: "{{ 0.5 }}"}, channels: "{{ 1 }}"}
""")
    specs = _specs(project)
    assert dict(specs["spot-4"].post) == {"loudness": "ebu-r128", "sample_rate": 48000,
                                          "length": {"fit": 4, "fade_out": 0.4, "trim_silence": True}}
    assert dict(specs["loop"].post) == {"loop": {"crossfade": 0.5}, "channels": 1}
    assert specs["spot-3"].post["length"]["trim_silence"] is False and specs["spot-3"].post["sample_rate"] == 44100
    report = project.build()
    row = next(r for r in report["tracks"] if r["id"] == "spot-4")
    assert abs(row["loudness_lufs"] - (-23.0)) < 0.5
    import soundfile as sf

    info = sf.info(str(project.out("spot-4.wav")))
    assert info.samplerate == 48000 and info.frames == 4 * 48000


def test_templated_post_values_are_checked_again(project: Project) -> None:
    project.write("""\
version: 1
vars: {preset: loud, rate: 12345}
defaults: {provider: local, format: wav}
tracks:
  - {id: a, prompt: x, post: {loudness: "{{ preset }}"}}
  - {id: b, prompt: x, post: {length: {fit: "{{ 'soon' }}"}}}
  - {id: c, prompt: x, post: {sample_rate: "{{ rate }}", bitrate: "{{ 64 }}"}}
""")
    err = project.run("validate").err
    assert "tracks[0].post.loudness: must be one of streaming, apple, ebu-r128, atsc-a85, console, mobile or a mapping, not 'loud'" in err
    assert "tracks[1].post.length.fit: must be a number, but the template gave 'soon'" in err
    assert "tracks[2].post.sample_rate: must be one of 8000, 11025" in err and "not 12345" in err
    assert "tracks[2].post.bitrate" not in err  # reported after the rest is valid, see below


def test_settings_that_cannot_apply_to_the_format_are_errors(project: Project) -> None:
    project.write("""\
version: 1
defaults: {provider: local, duration: 1}
tracks:
  - {id: a, prompt: x, format: mp3, post: {bit_depth: 24}}
  - {id: b, prompt: x, format: flac, post: {bitrate: 192}}
  - {id: c, prompt: x, format: mp3, post: {sample_rate: 96000}}
  - {id: d, prompt: x, format: ogg, metadata: {id3v23: true}}
  - {id: e, prompt: x, format: ogg, post: {loop: true, length: {fade_out: 2}}}
""")
    result = project.run("validate")
    assert result.code == 2
    lines = [line.split("musicbuild.yaml:", 1)[1] for line in result.err.splitlines()]
    assert lines == [
        "4:44: tracks[0].post.bit_depth: bit_depth applies to wav and flac; mp3 is lossy (set its quality with bitrate)",
        "5:45: tracks[1].post.bitrate: bitrate applies to mp3, ogg and m4a; flac is lossless (set bit_depth instead)",
        "6:44: tracks[2].post.sample_rate: mp3 holds at most 48000 Hz, not 96000: use 44100 or 48000, or format "
        "wav/flac",
        "7:48: tracks[3].metadata.id3v23: id3v23 applies to the ID3 tags of mp3 and wav; ogg files have their own "
        "tag format",
        "8:65: tracks[4].post.length.fade_out: cannot be combined with loop: a faded tail cannot loop seamlessly",
    ]


def test_defaults_apply_where_they_can(project: Project) -> None:
    project.write("""\
version: 1
defaults: {provider: local, duration: 1, post: {bit_depth: 24, bitrate: 128}, metadata: {id3v23: true}}
tracks:
  - {id: song, prompt: x, format: mp3}
  - {id: master, prompt: x, format: wav, post: {channels: 1}}
  - {id: stem, prompt: x, format: flac}
""")
    specs = _specs(project)
    assert dict(specs["song"].post) == {"bitrate": 128}
    assert dict(specs["master"].post) == {"bit_depth": 24, "channels": 1}
    assert dict(specs["stem"].post) == {"bit_depth": 24}
    assert project.run("validate").code == 0


def test_provider_and_cache_strings_are_templates_too(project: Project) -> None:
    project.write("""\
version: 1
vars: {host: 127.0.0.1, port: 8080, team: skyforge, suno: "5.5"}
cache: {remote: "file://{{ team }}-cache"}
providers:
  gw: {type: aigateway, base_url: "http://{{ host }}:{{ port }}", model: "sonauto/v2/{{ 'text-to-music' }}"}
  bt: {type: beatra, model: "suno-{{ suno }}"}
tracks:
  - {id: a, prompt: x, provider: gw}
  - {id: b, prompt: x, provider: bt, model: "{{ 'minimax-music-2.6' }}"}
""")
    manifest = load_manifest(project.manifest)
    assert manifest.remote == "file://skyforge-cache"
    assert manifest.providers["gw"].base_url == "http://127.0.0.1:8080"
    assert manifest.providers["gw"].model == "sonauto/v2/text-to-music" and manifest.providers["bt"].model == "suno-5.5"
    assert {t.id: t.model for t in manifest.tracks} == {"a": "sonauto/v2/text-to-music", "b": "minimax-music-2.6"}
