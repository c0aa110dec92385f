"""Hosted adapters end to end: the real CLI against emulators of the services on 127.0.0.1."""
from __future__ import annotations


import pytest
import soundfile as sf

from musicbuild.audio.tagging import read_tags

from .conftest import Project, actions
from .emulators.aigateway import AIgatewayEmulator
from .emulators.beatra import BeatraEmulator
from .emulators.sonauto import SonautoEmulator
from .emulators.verbatik import VerbatikEmulator

SCALE = 0.002  # real seconds per virtual second: a 30-90 s job takes 60-180 ms


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICBUILD_TIME_SCALE", str(SCALE))
    for var in ("AIGATEWAY_API_KEY", "VERBATIK_API_KEY", "SONAUTO_API_KEY", "BEATRA_API_KEY"):
        monkeypatch.setenv(var, "test-key")


def manifest(providers: dict[str, str], tracks: str) -> str:
    lines = ["version: 1", "defaults: {format: wav, duration: 4}", "providers:"]
    lines += [f"  {name}: {spec}" for name, spec in providers.items()]
    return "\n".join(lines) + "\ntracks:\n" + tracks


def test_aigateway_builds_both_models_and_a_second_build_is_free(project: Project, fast: None) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=(30, 90)) as emu:
        project.write(manifest({"gw": f"{{type: aigateway, base_url: '{emu.url}'}}"}, """\
  - {id: a, provider: gw, prompt: calm piano, model: sonauto/v2/text-to-music}
  - {id: b, provider: gw, prompt: dark drone, model: sony-ai/mmaudio-v2-text-to-audio, tags: [ambient]}
  - {id: c, provider: gw, prompt: happy song, lyrics: "la la la", instrumental: false, format: mp3}
"""))
        report = project.build()
        assert report["summary"]["generated"] == 3 and emu.creates == 3
        for row in report["tracks"]:
            path = project.out(row["out"])
            assert sf.info(str(path)).duration > 1
            prov = read_tags(path)["provenance"]
            assert prov["PROVIDER"] == "gw" and prov["JOB_ID"] == row["job_id"] and prov["JOB_ID"] in emu.jobs
        assert report["summary"]["cost_usd"] > 0
        again = project.build()
        assert set(actions(again).values()) == {"up-to-date"} and emu.creates == 3
        job = emu.jobs[next(r["job_id"] for r in report["tracks"] if r["id"] == "b")]
        assert "Style: ambient" in job.prompt


@pytest.mark.parametrize("variant", ["result.file_url", "result_url"])
def test_aigateway_url_variants(project: Project, fast: None, variant: str) -> None:
    with AIgatewayEmulator(time_scale=SCALE, latency=5, url_variant=variant, create_shape="sdk",
                           status_variant="sdk") as emu:
        project.write(manifest({"gw": f"{{type: aigateway, base_url: '{emu.url}'}}"}, "  - {id: a, provider: gw, prompt: x}\n"))
        assert project.build()["summary"]["generated"] == 1


def test_sonauto_v2_two_songs_and_v3(project: Project, fast: None) -> None:
    with SonautoEmulator(time_scale=SCALE, latency=(30, 90), status_body="string", audio_seconds=4) as emu:
        project.write(manifest({"so": f"{{type: sonauto, base_url: '{emu.url}'}}"}, """\
  - {id: two, provider: so, prompt: synthwave, tags: [retro], options: {num_songs: 2}, clips: all, out: "two-{{ clip }}.wav"}
  - {id: v3, provider: so, model: v3, prompt: folk ballad}
"""))
        report = project.build()
        assert report["summary"]["generated"] == 2
        assert project.out("two-1.wav").exists() and project.out("two-2.wav").exists()
        assert project.out("two-1.wav").read_bytes() != project.out("two-2.wav").read_bytes()


def test_verbatik_sync_and_pending_variants(project: Project, fast: None) -> None:
    for pending in (False, True):
        with VerbatikEmulator(time_scale=SCALE, latency=(30, 90), respond_pending=pending, audio_seconds=4) as emu:
            project.write(manifest({"vb": f"{{type: verbatik, base_url: '{emu.url}'}}"}, f"""\
  - {{id: s{int(pending)}, provider: vb, prompt: jingle, tags: [pop], options: {{num_songs: 2}}, clips: all, out: "s{int(pending)}-{{{{ clip }}}}.wav"}}
"""))
            report = project.build()
            assert report["summary"]["generated"] == 1 and emu.creates == 1
            body = emu.bodies[0]
            assert body["num_songs"] == 2 and body["seed"] >= 0 and "lyrics" not in body
            assert project.out(f"s{int(pending)}-2.wav").exists()


def test_provider_input_rules_fail_before_any_request(project: Project, fast: None) -> None:
    with VerbatikEmulator(time_scale=SCALE) as vb, SonautoEmulator(time_scale=SCALE) as so:
        project.write(manifest({"vb": f"{{type: verbatik, base_url: '{vb.url}'}}",
                                "so": f"{{type: sonauto, base_url: '{so.url}'}}"}, """\
  - {id: a, provider: vb, prompt: x, tags: [pop], lyrics: "hi", instrumental: false}
  - {id: b, provider: so, model: v3, prompt: x, options: {num_songs: 2}}
  - {id: c, provider: vb, prompt: x, options: {num_songs: 3}}
"""))
        result = project.run("build")
        assert result.code == 2, result.err
        assert "never all three" in result.err and "v2-only" in result.err and "must be 1 or 2" in result.err
        assert not vb.log and not so.log


def test_beatra_suno_two_clips_minimax_and_reference_audio(project: Project, fast: None) -> None:
    from .emulators.base import make_audio

    (project.root / "ref.wav").write_bytes(make_audio("wav", 3.0, 7))
    with BeatraEmulator(time_scale=SCALE, latency=(30, 90), audio_seconds=4) as emu:
        project.write(manifest({"bt": f"{{type: beatra, base_url: '{emu.url}/v1'}}"}, """\
  - {id: duo, provider: bt, model: suno-5.5, prompt: indie pop, clips: all, out: "duo-{{ clip }}.wav",
     lyrics: "hello world", instrumental: false,
     options: {title: Hello, model_options: {suno: {custom_mode: true, vocal_gender: f, style_weight: 0.5}}}}
  - {id: mini, provider: bt, model: minimax-music-2.6, prompt: lofi beat, options: {model_options: {minimax: {lyrics_optimizer: false}}}}
  - {id: ref, provider: bt, model: suno-5.5, prompt: like this but faster, reference_audio: ref.wav}
"""))
        report = project.build()
        assert report["summary"]["generated"] == 3 and len(emu.tasks) == 3 and len(emu.artifacts) >= 1
        assert project.out("duo-1.wav").exists() and project.out("duo-2.wav").exists()
        costs = {r["id"]: r["cost_usd"] for r in report["tracks"]}
        assert costs == {"duo": 0.08, "mini": 0.05, "ref": 0.08}
        assert report["summary"]["cost_usd"] == pytest.approx(0.21)


def test_beatra_lost_create_answer_is_resent_with_the_same_idempotency_key(project: Project, fast: None) -> None:
    with BeatraEmulator(time_scale=SCALE, latency=10, audio_seconds=4) as emu:
        emu.faults.drop_after_create = 1
        project.write(manifest({"bt": f"{{type: beatra, base_url: '{emu.url}'}}"},
                               "  - {id: a, provider: bt, model: minimax-music-2.6, prompt: x}\n"))
        report = project.build()  # the create is re-sent within the build: the service deduplicates it
        assert report["summary"]["failed"] == 0 and report["summary"]["generated"] == 1
        assert len(emu.tasks) == 1 and emu.idempotent_replays == 1


def test_beatra_rules_are_checked_before_any_request(project: Project, fast: None) -> None:
    with BeatraEmulator(time_scale=SCALE) as emu:
        project.write(manifest({"bt": f"{{type: beatra, base_url: '{emu.url}'}}"}, """\
  - {id: a, provider: bt, model: suno-5.5, prompt: x, lyrics: "la", instrumental: false}
  - {id: b, provider: bt, model: minimax-music-2.6, prompt: x, options: {model_options: {suno: {custom_mode: true}}}}
  - {id: c, provider: bt, model: suno-5.5, prompt: x, options: {model_options: {suno: {style_weight: 0.555}}}}
"""))
        result = project.run("validate")
        assert result.code == 2
        for text in ("custom_mode: true", "needs a title", "does not apply to minimax-music-2.6", "steps of 0.01"):
            assert text in result.err
        assert not emu.log
