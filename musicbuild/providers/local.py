"""The built-in offline provider: renders in-process with ``audio.synth``, free and deterministic."""
from __future__ import annotations

from ..model import Clip, Generation, TrackSpec
from ..yamlsrc import Path_
from .base import JobHandle, Provider
from .catalog import LOCAL_MODEL

SAMPLE_RATES = (22050, 32000, 44100, 48000)


class LocalProvider(Provider):
    type = "local"
    paid = False  # nothing to journal, budget or report
    uses_http = False  # renders in-process: a local-only build never loads httpx

    def check_track(self, spec: TrackSpec) -> list[tuple[Path_, str]]:
        problems: list[tuple[Path_, str]] = []
        for key, value in spec.options.items():
            if key != "sample_rate":
                problems.append((("options", key), f"the local provider has no option '{key}' (it takes: sample_rate)"))
            elif value not in SAMPLE_RATES and str(value) not in map(str, SAMPLE_RATES):
                problems.append((("options", key), f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}"))
        return problems

    async def generate(self, spec: TrackSpec, job: JobHandle) -> Generation:
        import asyncio  # here: `plan` checks tracks with this class and never runs the loop (~30 ms)

        # CPU-bound numpy work: a thread keeps the event loop (and hosted jobs' polling) responsive.
        data = await asyncio.to_thread(render_flac, spec)
        return Generation(clips=(Clip(data, "flac"),), provider=self.name, model=LOCAL_MODEL,
                          job_id=f"local-{job.record.gen_key[:16]}", cost_usd=0.0)


def render_flac(spec: TrackSpec) -> bytes:
    from ..audio.convert import encode_bytes
    from ..audio.synth import synthesize

    rate = int(spec.options.get("sample_rate", 44100))
    samples = synthesize(prompt=spec.prompt, tags=spec.tags, bpm=spec.bpm, duration=spec.duration,
                         seed=spec.seed, instrumental=spec.instrumental, lyrics=spec.lyrics,
                         sample_rate=rate)
    return encode_bytes(samples, rate, "flac")
