"""Sonauto native API: ``POST /v1/generations/{v2,v3}``, then status, then the result record.

Follows CONTRACTS.md section 2b: the model picks the path (``v2`` or ``v3``); v3 has no seed,
``balance_strength``, ``bpm`` or ``num_songs``, so those are refused before any request; at least
one of prompt/tags/lyrics, never lyrics or tags without a prompt, no lyrics when instrumental. The
status endpoint answers either ``{"status": ...}`` or a bare JSON string; ``SUCCESS`` and
``FAILURE`` are terminal; ``song_paths`` holds one URL per song. We ask for lossless FLAC unless
``output_format`` says otherwise. A create answer without ``task_id`` is an ambiguous create; a
status we do not know is "still running"; a task the service answers 404 for is gone. Price:
credits per song (100, 150 for two), at the Starter plan's $11 per 20k credits unless ``price``
overrides it; a failed task is taken as not charged (undocumented).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import ProviderError
from ..model import TrackSpec
from ..yamlsrc import Path_
from .hosted import HostedProvider, JobStatus, Submitted
from .http import json_body
from .rules import BOOL, Rule, between, check_options, number, one_of

V2_ONLY = ("balance_strength", "num_songs")
RULES: dict[str, Rule] = {
    "prompt_strength": (number, "a number"),
    "balance_strength": between(0, 1),
    "num_songs": (lambda v: v in (1, 2) and not isinstance(v, bool), "1 or 2"),
    "output_format": one_of("ogg", "mp3", "flac", "wav", "m4a"),
    "output_bit_rate": one_of(128, 192, 256, 320),
    "align_lyrics": BOOL,
}


class SonautoProvider(HostedProvider):
    type = "sonauto"

    def _version(self, spec: TrackSpec) -> str:
        return "v3" if spec.model == "v3" else "v2"

    def check_track(self, spec: TrackSpec) -> list[tuple[Path_, str]]:
        problems: list[tuple[Path_, str]] = []
        v3 = self._version(spec) == "v3"
        if not (spec.prompt or spec.tags or spec.lyrics):
            problems.append((("prompt",), "Sonauto needs at least one of prompt, tags or lyrics"))
        elif not spec.prompt and not (spec.tags and spec.lyrics):
            only = "lyrics" if spec.lyrics else "tags"
            problems.append((("prompt",), f"Sonauto does not take {only} without a prompt (use prompt: \"\" to let it decide)"))
        if spec.instrumental and spec.lyrics:
            problems.append((("instrumental",), "Sonauto takes no lyrics for an instrumental"))
        if v3 and spec.bpm:
            problems.append((("bpm",), "Sonauto v3 has no bpm (it is v2-only): remove it or use model v2"))
        for key in V2_ONLY:
            if v3 and key in spec.options:
                problems.append((("options", key), f"'{key}' is v2-only; Sonauto v3 refuses it"))
        problems += check_options("Sonauto", spec.options, RULES)
        return problems

    async def submit(self, spec: TrackSpec, key: str | None) -> Submitted:
        version = self._version(spec)
        body: dict[str, Any] = {"prompt": spec.prompt, "instrumental": spec.instrumental,
                                "output_format": spec.options.get("output_format", "flac")}
        if spec.tags:
            body["tags"] = list(spec.tags)
        if spec.lyrics:
            body["lyrics"] = spec.lyrics
        if version == "v2":
            body["seed"] = spec.seed
            if spec.bpm:
                body["bpm"] = spec.bpm
        body.update({k: v for k, v in spec.options.items() if k != "output_format"})
        response = await self.http.request("POST", f"/v1/generations/{version}", create=True, json=body)
        data = json_body(response, self.name)
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise ProviderError(f"{self.name}: the answer has no task_id: {str(data)[:200]}")
        return Submitted(task_id, {"songs": spec.options.get("num_songs", 1) if version == "v2" else 1})

    async def poll(self, job: Mapping[str, Any]) -> JobStatus:
        data = await self.http.get_json(f"/v1/generations/status/{job['job_id']}")
        status = data.get("status") if isinstance(data, dict) else data
        status = str(status or "").strip().strip('"').upper()
        if status not in ("SUCCESS", "FAILURE"):
            return JobStatus("pending", stage=status)
        record = await self.http.get_json(f"/v1/generations/{job['job_id']}")
        record = record if isinstance(record, dict) else {}
        if status == "FAILURE":
            return JobStatus("failed", error=str(record.get("error_message") or "generation failed"), charged_usd=0.0)
        paths = record.get("song_paths") or []
        if not isinstance(paths, list) or not paths:
            raise ProviderError(f"{self.name}: task {job['job_id']} succeeded without song_paths", retryable=True)
        return JobStatus("done", [str(p) for p in paths])
