"""Inputs come from the manifest's folder tree (or folders it allows), are ordinary files, and a
reference audio is audio; the track limit is documented and can be raised."""
from __future__ import annotations

import os
import wave
from pathlib import Path

import pytest

from musicbuild.audio.tagging import read_tags

from .conftest import Project


def manifest(field: str, value: str, extra: str = "", provider: str = "local") -> str:
    return f"""\
        version: 1
        {extra}
        tracks:
          - id: song
            provider: {provider}
            prompt: a gentle song
            duration: 0.5
            format: wav
            {field}: {value}
        """


def test_a_fifo_is_refused_without_blocking(project: Project) -> None:
    os.mkfifo(project.root / "lyrics.txt")
    project.write(manifest("lyrics_file", "lyrics.txt"))
    result = project.run("validate")
    assert result.code == 2
    assert "tracks[0].lyrics_file: lyrics.txt is a FIFO, not an ordinary file" in result.err


def test_a_symlink_out_of_the_manifest_folder_is_refused(project: Project, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "secret.txt"
    elsewhere.write_text("not for this manifest")
    (project.root / "lyrics.txt").symlink_to(elsewhere)
    project.write(manifest("lyrics_file", "lyrics.txt"))
    result = project.run("build")
    assert result.code == 2 and not (project.root / "build").exists()
    assert f"lyrics.txt is outside the manifest's folder (it resolves to {elsewhere})" in result.err
    assert f"inputs: {{allow: [{elsewhere.parent}]}}" in result.err


def test_a_folder_the_manifest_allows_can_hold_inputs(project: Project, tmp_path_factory: pytest.TempPathFactory) -> None:
    shared = tmp_path_factory.mktemp("shared-lyrics")
    (shared / "song.txt").write_text("la la la, the river sings")
    project.write(manifest("lyrics_file", f"{shared}/song.txt", extra=f"inputs: {{allow: [{shared}]}}"))
    project.build()
    assert read_tags(project.out("song.wav"))["lyrics"] == "la la la, the river sings"


@pytest.mark.parametrize("path,message", [
    ("/proc/self/environ", "is a system file (under /proc)"),
    ("/dev/zero", "is a system file (under /dev)"),
    ("/sys/kernel/mm/transparent_hugepage/enabled", "is a system file (under /sys)"),
])
def test_system_files_are_refused_even_when_everything_is_allowed(project: Project, path: str, message: str) -> None:
    project.write(manifest("lyrics_file", path, extra="inputs: {allow: [/]}"))
    result = project.run("validate")
    assert result.code == 2 and message in result.err, result.err


def test_allowing_a_system_folder_is_an_error(project: Project) -> None:
    project.write(manifest("prompt", "x", extra="inputs: {allow: [/proc, prompts/none]}"))
    result = project.run("validate")
    assert result.code == 2
    assert "inputs.allow[0]: '/proc' covers /proc, /sys, /dev, whose files are never inputs" in result.err
    assert "inputs.allow[1]: 'prompts/none' is not a folder" in result.err


def test_a_folder_as_prompt_file_and_an_oversized_one(project: Project) -> None:
    (project.root / "prompts").mkdir()
    (project.root / "big.txt").write_text("x" * 1_000_001)
    project.write("""\
        version: 1
        tracks:
          - {id: a, prompt_file: prompts}
          - {id: b, prompt_file: big.txt}
    """)
    result = project.run("validate")
    assert result.code == 2
    assert "tracks[0].prompt_file: prompts is a folder, not a file" in result.err
    assert "tracks[1].prompt_file: big.txt is larger than 1,000,000 bytes; refusing to read it" in result.err


def _wav(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)


def test_a_reference_audio_must_be_audio(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATRA_API_KEY", "test-key-for-validate")
    _wav(project.root / "hum.wav")
    (project.root / "hum.mp3").write_text("not audio, just a name")
    project.write(manifest("reference_audio", "hum.wav", provider="beatra").replace("duration: 0.5", ""))
    assert project.run("validate").code == 0
    project.write(manifest("reference_audio", "hum.mp3", provider="beatra").replace("duration: 0.5", ""))
    result = project.run("validate")
    assert result.code == 2 and "hum.mp3 is not audio (judged by its content" in result.err


def test_the_track_limit_can_be_raised(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("""\
        version: 1
        tracks:
          - id: "cue-{{ a }}-{{ b }}"
            prompt: "cue {{ a }} {{ b }}"
            matrix: {a: [1, 2, 3, 4, 5, 6], b: [1, 2, 3, 4, 5, 6]}
          - {id: extra, prompt: one more}
    """)
    monkeypatch.setenv("MUSICBUILD_MAX_TRACKS", "30")
    result = project.run("validate")
    assert result.code == 2
    assert "tracks[0].matrix: this matrix makes 36 tracks: a manifest may make at most 30 tracks" in result.err
    monkeypatch.setenv("MUSICBUILD_MAX_TRACKS", "36")
    result = project.run("validate")
    assert result.code == 2 and "tracks[1]: the tracks up to this entry are more than allowed" in result.err
    monkeypatch.setenv("MUSICBUILD_MAX_TRACKS", "37")
    assert project.run("validate").code == 0
    monkeypatch.setenv("MUSICBUILD_MAX_TRACKS", "lots")
    result = project.run("validate")
    assert result.code == 2 and "MUSICBUILD_MAX_TRACKS must be a whole number of tracks >= 1, not 'lots'" in result.err
