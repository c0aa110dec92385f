"""Materializing does each piece of CPU work once, in bounded CPU slots, with bounded audio in memory."""
from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from musicbuild import executor
from musicbuild.audio import convert
from musicbuild.audio.convert import encode_bytes
from musicbuild.audio.synth import synthesize
from musicbuild.cache import Cache
from musicbuild.materialize import TakeAudio
from musicbuild.providers import local

from .conftest import Project


def _take(clips: Any, clip: int = 1) -> tuple[Any, Any]:
    return SimpleNamespace(clips=clips, duration=1.0), SimpleNamespace(output=SimpleNamespace(clip=clip))


@pytest.fixture
def two_takes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Cache, dict, list[bytes], Counter]:
    cache = Cache(tmp_path / "cache")
    blobs = [encode_bytes(synthesize(prompt=p, duration=1.0, seed=1, sample_rate=22050), 22050, "flac")
             for p in ("calm pad", "loud drums")]
    record = cache.put_generation("k" * 64, [(b, "flac") for b in blobs], {})
    calls: Counter = Counter()
    real_decode, real_read = convert.decode, cache.read_blob

    def decode(data: Any) -> Any:
        calls["decode"] += 1
        return real_decode(data)

    def read_blob(sha: str) -> bytes:
        calls["read"] += 1
        return real_read(sha)

    monkeypatch.setattr(convert, "decode", decode)
    monkeypatch.setattr(cache, "read_blob", read_blob)
    yield cache, record, blobs, calls
    cache.close()


def test_each_take_is_read_and_decoded_once_per_track(two_takes: tuple) -> None:
    cache, record, _, calls = two_takes
    takes = TakeAudio(cache, record)
    got = [takes.take(*_take("all", clip))[0] for clip in (1, 2, 1, 2)]
    assert got == [0, 1, 0, 1] and calls == {"decode": 2, "read": 2}
    calls.clear()
    picked = TakeAudio(cache, record)
    first = picked.take(*_take("loudest"))
    second = picked.take(*_take("loudest"))
    assert first[0] == second[0] == 1 and first[1] is second[1]
    assert calls == {"decode": 2, "read": 2}  # a pick looks at every take, still once each


def test_bytes_in_hand_are_not_read_back(two_takes: tuple) -> None:
    cache, record, blobs, calls = two_takes
    takes = TakeAudio(cache, record, {record["clips"][0]["sha256"]: blobs[0]})
    index, samples, rate = takes.take(*_take("first"))
    assert (index, rate) == (0, 22050) and samples.shape == (22050, 2)
    assert calls == {"decode": 1}  # decoded from memory, no read of the blob just written


MANY = """\
version: 1
defaults: {provider: local, duration: 0.5, format: wav}
tracks:
""" + "".join(f"  - {{id: t{i}, prompt: 'cue {i}', seed: {i}}}\n" for i in range(8))


@pytest.mark.parametrize("jobs", [1, 8])
def test_cpu_work_runs_in_bounded_slots_and_rendered_audio_never_queues(
        project: Project, monkeypatch: pytest.MonkeyPatch, jobs: int) -> None:
    """Renders and materializations together never exceed min(-j, cores) at once, and a track's
    rendered audio is written out before another render starts in its slot (memory stays bounded)."""
    lock = threading.Lock()
    state = {"busy": 0, "max_busy": 0, "waiting": 0, "max_waiting": 0}

    def enter(key: str, peak: str) -> None:
        with lock:
            state[key] += 1
            state[peak] = max(state[peak], state[key])

    def leave(key: str) -> None:
        with lock:
            state[key] -= 1

    real_render, real_materialize = local.render_flac, executor.materialize

    def render(spec: Any) -> bytes:
        enter("busy", "max_busy")
        try:
            return real_render(spec)
        finally:
            leave("busy")
            enter("waiting", "max_waiting")  # rendered, not yet written out

    def materialize(*args: Any) -> Any:
        enter("busy", "max_busy")
        try:
            return real_materialize(*args)
        finally:
            leave("busy")
            leave("waiting")

    monkeypatch.setattr(local, "render_flac", render)
    monkeypatch.setattr(executor, "materialize", materialize)
    project.write(MANY)
    report = project.build("-j", str(jobs))
    assert report["summary"]["generated"] == 8
    slots = min(jobs, executor.ExecOptions().cpu_workers)
    assert 1 <= state["max_busy"] <= slots
    assert state["max_waiting"] <= slots
