"""A musicbuild provider plugin: renders a tone in-process, priced like a hosted service.

It shows everything a plugin brings: its metadata (models, prices, limits, option schema) on the
class as ``info``, input rules in ``check_track`` on top of the schema, and ``generate`` returning
real audio. Registered in pyproject.toml under ``[project.entry-points."musicbuild.providers"]``.
"""
from __future__ import annotations

import asyncio

import numpy as np

from musicbuild.audio.convert import encode_bytes
from musicbuild.model import Clip, Generation, TrackSpec
from musicbuild.providers.base import JobHandle, Provider
from musicbuild.providers.catalog import ProviderInfo, estimate_track

RATE = 22050


class DemoProvider(Provider):
    info = ProviderInfo(
        name="demo", default_model="tone-1", models=("tone-1", "tone-2"),
        price={"tone-1": {"usd_per_second": 0.001}, "*": {"usd_per_job": 0.05}},
        max_duration=120, max_concurrent=2, description="demo plugin: tones from a formula",
        options_schema={
            "type": "object", "additionalProperties": False,
            "properties": {"wave": {"enum": ["sine", "square"]},
                           "pitch": {"type": "number", "minimum": 20, "maximum": 2000}},
        },
    )

    def check_track(self, spec: TrackSpec):  # the schema, plus a rule a schema cannot say
        problems = super().check_track(spec)
        if spec.lyrics and not spec.instrumental:
            problems.append((("lyrics",), "the demo provider cannot sing"))
        return problems

    async def generate(self, spec: TrackSpec, job: JobHandle) -> Generation:
        # in-process, so there is no remote job to report step by step: the executor journals the
        # whole job (and its charge) when the audio is stored
        data = await asyncio.to_thread(_render, spec)
        cost = estimate_track(self.config.price, self.type, spec.model, spec.duration, spec.options)
        return Generation(clips=(Clip(data, "flac"),), provider=self.name, model=spec.model,
                          job_id=f"demo-{job.record.gen_key[:12]}", cost_usd=cost)


def _render(spec: TrackSpec) -> bytes:
    t = np.arange(int(spec.duration * RATE)) / RATE
    tone = np.sin(2 * np.pi * float(spec.options.get("pitch", 440.0)) * t)
    if spec.options.get("wave") == "square":
        tone = np.sign(tone)
    stereo = np.stack([tone, tone], axis=1) * 0.25
    return encode_bytes(stereo.astype(np.float32), RATE, "flac")
