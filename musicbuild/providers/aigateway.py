"""AIgateway: ``POST /v1/audio/music`` creates an async job, ``GET /v1/jobs/{id}`` polls it.

Follows ``shared/providers`` (seed model pages, CONTRACTS.md section 1): any model slug; 202 with
one of three create shapes; statuses queued / running (SDK: processing) / completed / failed /
cancelled; the audio URL in ``result.url``, ``result.file_url`` or ``result_url``; polls closer than
3 s answered 304; error bodies ``{"error": {"message", "type", "code"}}`` (we branch on HTTP status,
as the docs advise). There is no idempotency key, so a create is never re-sent blindly. Style tags
have no field of their own: they are appended to the prompt. Audio is requested as WAV (lossless).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import ProviderError
from ..model import TrackSpec
from ..yamlsrc import Path_
from .catalog import estimate_cost, price_for
from .hosted import HostedProvider, JobStatus, Submitted
from .rules import BOOL, Rule, check_options, one_of

RULES: dict[str, Rule] = {
    "format": one_of("wav", "mp3"),
    "lyrics_optimizer": BOOL,
    "routing": one_of("cost", "speed", "quality", "auto"),
    "tag": (lambda v: isinstance(v, str), "a string"),
}
PENDING = {"queued", "running", "processing"}
FAILED = {"failed", "cancelled", "canceled"}


class AIgatewayProvider(HostedProvider):
    type = "aigateway"
    min_poll = 3.0  # faster polls are answered 304 Not Modified

    def check_track(self, spec: TrackSpec) -> list[tuple[Path_, str]]:
        problems: list[tuple[Path_, str]] = []
        if not spec.prompt.strip():
            problems.append((("prompt",), "AIgateway requires a prompt"))
        problems += check_options("AIgateway", spec.options, RULES)
        return problems

    async def submit(self, spec: TrackSpec, gen_key: str) -> Submitted:
        prompt = spec.prompt if not spec.tags else f"{spec.prompt}\nStyle: {', '.join(spec.tags)}".strip()
        body: dict[str, Any] = {"model": spec.model, "prompt": prompt, "duration": spec.duration,
                                "format": spec.options.get("format", "wav"),
                                "is_instrumental": spec.instrumental}
        if spec.lyrics and not spec.instrumental:
            body["lyrics"] = spec.lyrics
        if "lyrics_optimizer" in spec.options:
            body["lyrics_optimizer"] = spec.options["lyrics_optimizer"]
        headers = {"X-Request-Id": gen_key[:32]}
        if "routing" in spec.options:
            headers["x-routing"] = spec.options["routing"]
        if "tag" in spec.options:
            headers["x-aig-tag"] = spec.options["tag"]
        response = await self.http.request("POST", "/v1/audio/music", create=True, json=body,
                                           headers=headers)
        data = response.json()
        job = data.get("job", data) if isinstance(data, dict) else {}
        job_id = job.get("id") or job.get("job_id")
        if not job_id:
            raise ProviderError(f"{self.name}: the create answer has no job id: {str(data)[:200]}")
        return Submitted(str(job_id), {"duration": spec.duration})

    async def poll(self, job: Mapping[str, Any]) -> JobStatus:
        response = await self.http.request("GET", f"/v1/jobs/{job['job_id']}", ok=(304,))
        if response.status_code == 304:
            return JobStatus("pending")
        data = response.json()
        status = str(data.get("status", "")).lower()
        if status in PENDING:
            return JobStatus("pending")
        if status in FAILED:
            err = data.get("error")
            message = err.get("message") or err.get("code") if isinstance(err, dict) else err
            return JobStatus("failed", error=f"{status}: {message}" if message else status, cost_usd=0.0)
        if status != "completed":
            raise ProviderError(f"{self.name}: job {job['job_id']} has an unknown status {status!r}")
        result = data.get("result") if isinstance(data.get("result"), dict) else {}
        url = result.get("url") or result.get("file_url") or data.get("result_url")
        if not url:
            raise ProviderError(f"{self.name}: job {job['job_id']} completed without a result URL", retryable=True)
        seconds = float(result.get("duration") or job.get("duration") or 0)
        price = self.config.price or price_for(self.type, str(job.get("model")))
        return JobStatus("done", [url], cost_usd=estimate_cost(price, seconds, 1))
