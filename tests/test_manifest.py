"""The manifest's good paths (SPEC 1) and the two keys (SPEC 2), through ``load_manifest``."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from musicbuild.cli import main
from musicbuild.errors import ManifestError
from musicbuild.keys import generation_key, output_key
from musicbuild.manifest import Manifest, load_manifest
from musicbuild.model import TrackSpec
from musicbuild.trackbuild import default_seed

ROOT = Path(__file__).resolve().parent.parent
PNG_A = b"\x89PNG\r\n\x1a\n" + b"cover A"
PNG_B = b"\x89PNG\r\n\x1a\n" + b"cover B, other bytes"


def write(root: Path, text: str, name: str = "musicbuild.yaml") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def load(root: Path, text: str, env: dict[str, str] | None = None) -> Manifest:
    return load_manifest(write(root, text), env={} if env is None else env)


def track(m: Manifest, track_id: str) -> TrackSpec:
    return next(t for t in m.tracks if t.id == track_id)


def errors(root: Path, text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load(root, text)
    return [f"{d.path}: {d.message}" for d in info.value.diagnostics]


# -- templates and precedence -----------------------------------------------------------------
def test_vars_precedence_top_track_matrix_scalars(tmp_path: Path) -> None:
    m = load(tmp_path, """\
        version: 1
        vars: {a: top, b: top, c: top, d: top, id: from-vars, format: wav, duration: 99, bpm: 1, seed: 2}
        tracks:
          - id: "t-{{ c }}"
            vars: {b: track, c: track, d: "{{ a }}+track"}
            matrix: {c: [matrix]}
            format: ogg
            duration: 12
            bpm: 90
            seed: 7
            prompt: "{{ a }} {{ b }} {{ c }} {{ d }} {{ id }} {{ format }} {{ duration }} {{ bpm }} {{ seed }}"
        """)
    (spec,) = m.tracks
    assert spec.id == "t-matrix"
    assert spec.prompt == "top track matrix top+track t-matrix ogg 12 90 7"


def test_track_vars_see_top_vars_and_matrix_values(tmp_path: Path) -> None:
    m = load(tmp_path, """\
        version: 1
        vars: {game: Skyforge, place: "the {{ game }} woods"}
        tracks:
          - id: "x-{{ n }}"
            matrix: {n: [1]}
            vars: {label: "{{ place }} #{{ n }}"}
            prompt: "{{ label }}"
        """)
    assert m.tracks[0].prompt == "the Skyforge woods #1"


def test_scalar_fields_render_in_order_so_out_can_use_them(tmp_path: Path) -> None:
    m = load(tmp_path, """\
        version: 1
        tracks:
          - id: "cue-{{ n }}"
            matrix: {n: [3]}
            format: flac
            duration: "{{ n * 10 }}"
            out: "{{ format }}/{{ id }}-{{ duration | int }}s.{{ format }}"
            prompt: calm
        """)
    assert m.tracks[0].outputs[0].rel == "flac/cue-3-30s.flac"


def test_numeric_fields_from_templates_become_numbers(tmp_path: Path) -> None:
    m = load(tmp_path, """\
        version: 1
        tracks:
          - id: "j-{{ length }}-{{ mood }}"
            matrix: {length: [15], mood: [combat, calm]}
            duration: "{{ length }}"
            bpm: "{{ 140 if mood == 'combat' else 92 }}"
            seed: "{{ length * 2 }}"
            prompt: jingle
        """)
    combat, calm = m.tracks
    assert combat.duration == 15.0 and isinstance(combat.duration, float)
    assert combat.bpm == 140.0 and calm.bpm == 92.0
    assert combat.seed == 30 and isinstance(combat.seed, int)


def test_a_templated_number_is_checked_again(tmp_path: Path) -> None:
    msgs = errors(tmp_path, """\
        version: 1
        tracks:
          - id: "a-{{ length }}"
            matrix: {length: [5000, 900, 0]}
            prompt: x
            duration: "{{ length }}"
        """)
    assert msgs == [
        "tracks[0].duration: must be a number of seconds > 0 and <= 3600, not 0 [matrix length=0]",
        "tracks[0].duration: must be a number of seconds > 0 and <= 3600, not 5000 [matrix length=5000]",
        "tracks[0].duration: must be at most 600 seconds with provider 'local' (type local), not 900 [matrix length=900]",
    ]


def test_defaults_merge_keywise_for_vars_metadata_options_and_replace_the_rest(tmp_path: Path) -> None:
    m = load(tmp_path, """\
        version: 1
        defaults:
          vars: {mood: calm, game: Skyforge}
          metadata: {artist: Skyforge Audio, album: "{{ game }} OST"}
          options: {sample_rate: 48000, style: x}
          tags: [orchestral, ambient]
          labels: [all]
          duration: 20
          format: wav
        tracks:
          - id: a
            vars: {mood: tense}
            metadata: {title: Alpha}
            options: {style: y}
            tags: [drums]
            labels: [combat]
            prompt: "{{ mood }} for {{ game }}"
          - id: b
            prompt: "{{ mood }}"
            format: ogg
        """)
    a, b = m.tracks
    assert a.prompt == "tense for Skyforge" and b.prompt == "calm"
    assert (a.metadata.title, a.metadata.artist, a.metadata.album) == ("Alpha", "Skyforge Audio", "Skyforge OST")
    assert dict(a.options) == {"sample_rate": 48000, "style": "y"}
    assert a.tags == ("drums",) and b.tags == ("orchestral", "ambient")
    assert a.labels == ("combat",) and b.labels == ("all",)
    assert a.duration == b.duration == 20.0
    assert (a.format, b.format) == ("wav", "ogg")
    assert b.metadata.title == "b" and b.metadata.genre == "orchestral, ambient"  # defaults: id, tags


def test_a_tracks_own_prompt_file_wins_over_a_default_prompt(tmp_path: Path) -> None:
    write(tmp_path, "from the file", "p.txt")
    m = load(tmp_path, """\
        version: 1
        defaults: {prompt: from defaults}
        tracks:
          - {id: a, prompt_file: p.txt}
          - {id: b}
        """)
    assert [t.prompt for t in m.tracks] == ["from the file", "from defaults"]


def test_matrix_is_a_cartesian_product_minus_excludes(tmp_path: Path) -> None:
    m = load(tmp_path, """\
        version: 1
        tracks:
          - id: "jingle-{{ brand }}-{{ length }}s"
            matrix:
              brand: [acme, globex, initech]
              length: [15, 30]
              exclude:
                - {brand: globex, length: 15}
                - {brand: initech}
            duration: "{{ length }}"
            prompt: "jingle for {{ brand }}"
        """)
    assert [t.id for t in m.tracks] == ["jingle-acme-15s", "jingle-acme-30s", "jingle-globex-30s"]
    assert [t.duration for t in m.tracks] == [15.0, 30.0, 30.0]
    assert {t.index for t in m.tracks} == {0}
    assert all(m.origins[t.id] == ("tracks", 0) for t in m.tracks)


def test_prompt_and_lyrics_files_are_templates_with_matrix_vars(tmp_path: Path) -> None:
    write(tmp_path, "{{ length }}s jingle for {{ brand | title }} in {{ game }}, seed {{ seed }}\n",
          "prompts/jingle.j2")
    write(tmp_path, "We are {{ brand }}!\n", "lyrics/acme.txt")
    write(tmp_path, "Globex {% if length > 20 %}long{% else %}short{% endif %}\n", "lyrics/globex.txt")
    m = load(tmp_path, """\
        version: 1
        vars: {game: Skyforge}
        tracks:
          - id: "jingle-{{ brand }}-{{ length }}"
            matrix: {brand: [acme, globex], length: [15, 30]}
            seed: 5
            prompt_file: prompts/jingle.j2
            lyrics_file: "lyrics/{{ brand }}.txt"
        """)
    acme15 = track(m, "jingle-acme-15")
    assert acme15.prompt == "15s jingle for Acme in Skyforge, seed 5"  # surrounding whitespace is trimmed
    assert acme15.lyrics == "We are acme!\n" and acme15.instrumental is False
    assert track(m, "jingle-globex-15").lyrics == "Globex short\n"
    assert track(m, "jingle-globex-30").lyrics == "Globex long\n"
    assert tmp_path / "lyrics" / "globex.txt" in track(m, "jingle-globex-30").files


def test_labels_are_rendered(tmp_path: Path) -> None:
    m = load(tmp_path, """\
        version: 1
        tracks:
          - id: "lvl-{{ n }}"
            matrix: {n: [1, 2]}
            labels: [levels, "level-{{ n }}"]
            prompt: x
        """)
    assert [t.labels for t in m.tracks] == [("levels", "level-1"), ("levels", "level-2")]


def test_default_seed_is_stable_and_derived_from_the_id(tmp_path: Path) -> None:
    text = """\
        version: 1
        tracks:
          - {id: forest-day, prompt: x}
          - {id: forest-night, prompt: x}
        """
    first = load(tmp_path, text)
    again = load(tmp_path, text)
    day, night = first.tracks
    assert day.seed == default_seed("forest-day") == again.tracks[0].seed
    assert day.seed != night.seed
    assert 0 <= day.seed < 2**31


def test_default_out_is_id_dot_format_inside_output_dir(tmp_path: Path) -> None:
    m = load(tmp_path, """\
        version: 1
        output_dir: dist/music
        tracks:
          - {id: menu, prompt: x, format: ogg}
          - {id: battle, prompt: x}
        """)
    menu, battle = m.tracks
    assert m.output_dir == (tmp_path / "dist" / "music").resolve()
    assert (menu.outputs[0].rel, menu.outputs[0].path) == ("menu.ogg", m.output_dir / "menu.ogg")
    assert battle.outputs[0].rel == "battle.mp3" and battle.format == "mp3" and battle.duration == 30.0
    assert not (tmp_path / "dist").exists()  # loading writes nothing


def test_clips_all_makes_one_output_per_clip(tmp_path: Path) -> None:
    m = load(tmp_path, """\
        version: 1
        tracks:
          - {id: theme, prompt: x, provider: beatra, clips: all, out: "{{ id }}-{{ clip }}.mp3"}
        """)
    assert [(o.clip, o.rel) for o in m.tracks[0].outputs] == [(1, "theme-1.mp3"), (2, "theme-2.mp3")]


def test_outputs_may_not_escape_output_dir_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "levels").mkdir()
    (tmp_path / "build" / "shared").symlink_to(outside, target_is_directory=True)
    (tmp_path / "build" / "alias").symlink_to(tmp_path / "build" / "levels", target_is_directory=True)
    msgs = errors(tmp_path, """\
        version: 1
        tracks:
          - {id: a, prompt: x, out: shared/a.mp3}
          - {id: b, prompt: x, out: alias/b.mp3}
        """)
    assert len(msgs) == 1
    assert msgs[0].startswith("tracks[0].out: output path 'shared/a.mp3' leaves output_dir (build) through a symlink")
    assert list(outside.iterdir()) == []


def test_a_symlink_inside_output_dir_is_fine(tmp_path: Path) -> None:
    (tmp_path / "build" / "levels").mkdir(parents=True)
    (tmp_path / "build" / "alias").symlink_to(tmp_path / "build" / "levels", target_is_directory=True)
    m = load(tmp_path, "version: 1\ntracks:\n  - {id: b, prompt: x, out: alias/b.mp3}\n")
    assert m.tracks[0].outputs[0].path == (tmp_path / "build" / "levels" / "b.mp3").resolve()


# -- providers --------------------------------------------------------------------------------
COMMON = """\
    base_url: {url}
    api_key_env: {env}
    model: {model}
    requests_per_minute: 30
    max_concurrent: 3
    poll_interval: 2.5
    timeout: 600
    price: {{usd_per_job: 0.5}}
    options: {{quality: high}}
"""


@pytest.mark.parametrize("ptype, model", [
    ("aigateway", "sony-ai/mmaudio-v2-text-to-audio"),
    ("verbatik", "sonauto-v2"),
    ("sonauto", "v3"),
    ("beatra", "minimax-music-2.6"),
])
def test_every_hosted_provider_type_takes_the_common_fields(tmp_path: Path, ptype: str, model: str) -> None:
    fields = COMMON.format(url="https://proxy.example.com/v1", env="TEAM_MUSIC_KEY", model=model)
    m = load(tmp_path, f"version: 1\nproviders:\n  mine:\n    type: {ptype}\n{fields}"
                       "tracks:\n  - {id: a, prompt: x, provider: mine, options: {extra: 1}}\n")
    cfg = m.providers["mine"]
    assert (cfg.type, cfg.base_url, cfg.api_key_env, cfg.model) == (ptype, "https://proxy.example.com/v1",
                                                                   "TEAM_MUSIC_KEY", model)
    assert (cfg.requests_per_minute, cfg.max_concurrent, cfg.poll_interval, cfg.timeout) == (30, 3, 2.5, 600)
    assert dict(cfg.price or {}) == {"usd_per_job": 0.5}
    spec = m.tracks[0]
    assert spec.provider == cfg and spec.model == model
    assert dict(spec.options) == {"quality": "high", "extra": 1}  # provider options are track defaults


def test_local_provider_config_and_built_in_type_names(tmp_path: Path) -> None:
    m = load(tmp_path, """\
        version: 1
        providers:
          fast: {type: local, model: synth-v1, max_concurrent: 1, requests_per_minute: 10, poll_interval: 1,
                 timeout: 60, price: {usd_per_job: 0}, options: {sample_rate: 22050}}
        tracks:
          - {id: a, prompt: x, provider: fast}
          - {id: b, prompt: x, provider: sonauto}
          - {id: c, prompt: x}
        """)
    a, b, c = m.tracks
    assert a.provider.type == "local" and a.provider.max_concurrent == 1 and dict(a.options) == {"sample_rate": 22050}
    assert (b.provider.type, b.provider.base_url, b.provider.api_key_env) == ("sonauto", "https://api.sonauto.ai",
                                                                             "SONAUTO_API_KEY")
    assert c.provider.name == "local"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:9000/v1", "http://[::1]:8000",
                                 "https://api.example.com"])
def test_plain_http_is_accepted_for_loopback_hosts(tmp_path: Path, url: str) -> None:
    m = load(tmp_path, f"version: 1\nproviders:\n  mock: {{type: beatra, base_url: '{url}'}}\n"
                       "tracks:\n  - {id: a, prompt: x, provider: mock}\n")
    assert m.providers["mock"].base_url == url


@pytest.mark.parametrize("url", ["http://api.beatra.ai", "http://10.0.0.5:8080", "ftp://api.beatra.ai"])
def test_other_base_urls_are_refused(tmp_path: Path, url: str) -> None:
    msgs = errors(tmp_path, f"version: 1\nproviders:\n  b: {{type: beatra, base_url: '{url}'}}\n"
                            "tracks:\n  - {id: a, prompt: x, provider: b}\n")
    assert len(msgs) == 1 and msgs[0].startswith("providers.b.base_url: ")


def test_a_pasted_key_is_refused_and_never_echoed(tmp_path: Path) -> None:
    secret = "sk_live_51HxQz8Lm3Nb7Vc2Ke9"
    msgs = errors(tmp_path, f"version: 1\nproviders:\n  b: {{type: beatra, api_key_env: {secret}}}\n"
                            "tracks:\n  - {id: a, prompt: x, provider: b}\n")
    assert len(msgs) == 1 and "BEATRA_API_KEY" in msgs[0]
    assert secret not in msgs[0] and "51HxQz" not in msgs[0]


# -- sandbox, cache dir, schema ---------------------------------------------------------------
@pytest.mark.parametrize("template", ["{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
                                      "{{ x.__class__ }}", "{% set y = [].append(1) %}{{ y }}"])
def test_templates_are_sandboxed(tmp_path: Path, template: str) -> None:
    msgs = errors(tmp_path, f"""\
        version: 1
        vars: {{x: 1}}
        tracks:
          - id: a
            prompt: "{template}"
        """)
    assert len(msgs) == 1 and msgs[0].startswith("tracks[0].prompt: ")
    assert "not allowed" in msgs[0] or "undefined" in msgs[0], msgs[0]


def test_sandbox_message_is_clear(tmp_path: Path) -> None:
    (msg,) = errors(tmp_path, "version: 1\ntracks:\n  - id: a\n    prompt: \"{{ ''.__class__.__mro__ }}\"\n")
    assert msg == ("tracks[0].prompt: template not allowed: access to attribute '__class__' of 'str' object is "
                   "unsafe (templates are sandboxed: use variables and filters, not Python internals)")


def test_cache_dir_default_manifest_value_and_env_override(tmp_path: Path) -> None:
    text = "version: 1\ntracks:\n  - {id: a, prompt: x}\n"
    assert load(tmp_path, text).cache_dir == (tmp_path / ".musicbuild").resolve()
    assert load(tmp_path, "cache_dir: caches/mb\n" + text).cache_dir == (tmp_path / "caches" / "mb").resolve()
    env = {"MUSICBUILD_CACHE_DIR": str(tmp_path / "shared-cache")}
    assert load(tmp_path, "cache_dir: caches/mb\n" + text, env).cache_dir == (tmp_path / "shared-cache").resolve()
    assert not (tmp_path / "shared-cache").exists() and not (tmp_path / ".musicbuild").exists()


def test_the_process_environment_is_the_default_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICBUILD_CACHE_DIR", str(tmp_path / "from-env"))
    path = write(tmp_path, "version: 1\ntracks:\n  - {id: a, prompt: x}\n")
    assert load_manifest(path).cache_dir == (tmp_path / "from-env").resolve()


def test_schema_files_are_identical_and_valid_draft_2020_12() -> None:
    import jsonschema

    shipped = (ROOT / "schemas" / "manifest.schema.json").read_bytes()
    packaged = (ROOT / "musicbuild" / "schemas" / "manifest.schema.json").read_bytes()
    assert shipped == packaged
    schema = json.loads(shipped)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_examples_validate_against_the_schema() -> None:
    import jsonschema
    import yaml

    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text("utf-8"))
    for manifest in sorted((ROOT / "examples").glob("*/musicbuild.yaml")):
        jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(manifest.read_text("utf-8")))


def test_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    assert out == (ROOT / "schemas" / "manifest.schema.json").read_text("utf-8")


# -- keys -------------------------------------------------------------------------------------
BASE = """\
version: 1
providers:
  gw:
    type: aigateway
    base_url: https://api.aigateway.sh
    requests_per_minute: 60
    api_key_env: AIGATEWAY_API_KEY
    model: sonauto/v2/text-to-music
  beat: {type: beatra}
tracks:
  - id: a
    provider: gw
    prompt: calm harp
    tags: [ambient]
    lyrics: la la
    instrumental: false
    seed: 1
    duration: 20
    bpm: 80
    format: mp3
    out: a.mp3
    options: {steps: 10}
    metadata: {title: Alpha, artist: Me, cover: cover.png}
  - id: r
    provider: beat
    prompt: reference take
    reference_audio: ref.wav
"""


@pytest.fixture
def keyed(tmp_path: Path):
    (tmp_path / "cover.png").write_bytes(PNG_A)
    (tmp_path / "ref.wav").write_bytes(b"RIFF....WAVE one")

    def keys(old: str = "", new: str = "", track_id: str = "a") -> tuple[str, str]:
        text = BASE
        if old:
            assert old in text, old
            text = text.replace(old, new, 1)
        spec = track(load_manifest(write(tmp_path, text), env={}), track_id)
        gen = generation_key(spec)
        return gen, output_key(gen, spec, spec.outputs[0])

    keys.root = tmp_path  # type: ignore[attr-defined]
    return keys


@pytest.mark.parametrize("old, new", [
    ("title: Alpha", "title: Beta"),
    ("artist: Me", "artist: Someone Else"),
    ("out: a.mp3", "out: music/a-final.mp3"),
    ("format: mp3\n    out: a.mp3", "format: flac\n    out: a.flac"),
    ("base_url: https://api.aigateway.sh", "base_url: https://eu.proxy.example.com"),
    ("requests_per_minute: 60", "requests_per_minute: 5"),
    ("api_key_env: AIGATEWAY_API_KEY", "api_key_env: OTHER_KEY"),
    ("  - id: a\n", "  - id: a\n    labels: [x]\n"),
])
def test_generation_key_ignores_what_does_not_change_the_audio(keyed, old: str, new: str) -> None:
    assert keyed(old, new)[0] == keyed()[0]


def test_generation_key_ignores_the_cover_bytes(keyed) -> None:
    gen, out = keyed()
    (keyed.root / "cover.png").write_bytes(PNG_B)
    gen2, out2 = keyed()
    assert gen2 == gen and out2 != out


@pytest.mark.parametrize("old, new", [
    ("prompt: calm harp", "prompt: calm harp, flute"),
    ("tags: [ambient]", "tags: [ambient, lofi]"),
    ("lyrics: la la", "lyrics: la la la"),
    ("seed: 1", "seed: 2"),
    ("duration: 20", "duration: 21"),
    ("bpm: 80", "bpm: 81"),
    ("instrumental: false", "instrumental: true"),
    ("model: sonauto/v2/text-to-music", "model: sony-ai/mmaudio-v2-text-to-audio"),
    ("options: {steps: 10}", "options: {steps: 11}"),
    ("provider: gw", "provider: local"),
])
def test_generation_key_covers_what_changes_the_audio(keyed, old: str, new: str) -> None:
    assert keyed(old, new)[0] != keyed()[0]


def test_generation_key_covers_the_reference_audio_content(keyed) -> None:
    before = keyed(track_id="r")[0]
    assert keyed(track_id="r")[0] == before
    (keyed.root / "ref.wav").write_bytes(b"RIFF....WAVE another take")
    assert keyed(track_id="r")[0] != before


def test_equal_numbers_give_equal_keys(keyed) -> None:
    assert keyed("bpm: 80", "bpm: 80.0") == keyed()
    assert keyed("duration: 20", 'duration: "{{ 10 * 2 }}"') == keyed()


@pytest.mark.parametrize("old, new", [
    ("title: Alpha", "title: Beta"),
    ("format: mp3\n    out: a.mp3", "format: ogg\n    out: a.ogg"),
    ("prompt: calm harp", "prompt: calm harp, flute"),
])
def test_output_key_changes_with_what_is_written(keyed, old: str, new: str) -> None:
    assert keyed(old, new)[1] != keyed()[1]


def test_output_key_ignores_the_out_path(keyed) -> None:
    assert keyed("out: a.mp3", "out: deep/er/a.mp3")[1] == keyed()[1]


def test_keys_are_hex_sha256(keyed) -> None:
    gen, out = keyed()
    assert len(gen) == len(out) == 64 and int(gen, 16) >= 0 and gen != out


def test_loading_never_writes(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("    reference_audio: ref.wav\n", ""))
    (tmp_path / "cover.png").write_bytes(PNG_A)
    before = sorted(os.listdir(tmp_path))
    load_manifest(path, env={})
    assert sorted(os.listdir(tmp_path)) == before
