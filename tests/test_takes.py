"""Take selection: clips: {pick: ...} chooses one of a provider's takes, deterministically."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from musicbuild.materialize import choose_clip

from .conftest import Project
from .emulators.beatra import BeatraEmulator


class _Spec:
    def __init__(self, clips: str, duration: float = 10.0) -> None:
        self.clips, self.duration = clips, duration


class _Planned:
    class output:  # noqa: N801 - mimics PlannedOutput.output
        clip = 1


def tone(seconds: float, level: float, rate: int = 8000) -> tuple[np.ndarray, int]:
    t = np.arange(int(seconds * rate)) / rate
    mono = level * np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    return np.stack([mono, mono], axis=1).astype(np.float32), rate


@pytest.mark.parametrize("strategy, expected", [("first", 0), ("longest", 1), ("closest-duration", 2), ("loudest", 2)])
def test_pick_strategies(strategy: str, expected: int) -> None:
    takes = [tone(8.0, 0.1), tone(14.0, 0.2), tone(10.5, 0.6)]
    assert choose_clip(_Spec(strategy), _Planned(), takes) == expected  # type: ignore[arg-type]


def test_a_picked_take_is_recorded_and_never_flips(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICBUILD_TIME_SCALE", "0.002")
    monkeypatch.setenv("BEATRA_API_KEY", "test-key")
    with BeatraEmulator(time_scale=0.002, latency=10, audio_seconds=2) as emu:
        project.write(f"""\
version: 1
providers: {{bt: {{type: beatra, base_url: "{emu.url}"}}}}
tracks:
  - {{id: hook, provider: bt, model: suno-5.5, prompt: synth pop hook, format: wav, clips: {{pick: loudest}}}}
""")
        report = project.build()
        row = report["tracks"][0]
        assert row["clips"] == 2 and len(row["takes"]) == 1 and row["takes"][0] in (1, 2)
        locked = yaml.safe_load((project.root / "musicbuild.lock").read_text())["tracks"]["hook"]
        assert locked["outputs"][0]["clip"] == row["takes"][0]
        first = project.out("hook.wav").read_bytes()
        project.run("clean")
        again = project.build()
        assert again["tracks"][0]["takes"] == row["takes"] and project.out("hook.wav").read_bytes() == first
        assert len(emu.tasks) == 1
        project.edit("pick: loudest", "pick: first")
        changed = project.build()
        assert changed["tracks"][0]["action"] == "materialize" and changed["tracks"][0]["takes"] == [1]
        assert len(emu.tasks) == 1  # a new pick never generates
