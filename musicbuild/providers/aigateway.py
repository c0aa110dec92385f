"""AIgateway: ``POST /v1/audio/music`` creates an async job, ``GET /v1/jobs/{id}`` polls it.

Follows ``shared/providers`` (seed model pages, CONTRACTS.md section 1): any model slug; 202 with
one of three create shapes; statuses queued / running (SDK: processing) / completed / failed /
cancelled; the audio URL in ``result.url``, ``result.file_url`` or ``result_url``; polls closer than
3 s answered 304; error bodies ``{"error": {"message", "type", "code"}}`` (we branch on HTTP status,
as the docs advise). There is no idempotency key, so a create is never re-sent blindly; a create
answer is read defensively (the job under ``job``/``data`` too), and one we cannot read is an
ambiguous create. Statuses we do not know are "still running" until the timeout. Failed and
cancelled jobs are not charged [doc]; a completed one costs its length at the model's price
(``result.duration`` when given, else the delivered audio measured), never the requested
duration, which sonauto/v2 ignores and mmaudio clamps. Style tags have no field of their own:
they are appended to the prompt. Audio is requested as WAV (lossless). There is no seed field.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import ProviderError
from ..model import TrackSpec
from ..yamlsrc import Path_
from .hosted import HostedProvider, JobStatus, Submitted
from .http import json_body
from .rules import BOOL, Rule, check_options, one_of

RULES: dict[str, Rule] = {
    "format": one_of("wav", "mp3"),
    "lyrics_optimizer": BOOL,
    "routing": one_of("cost", "speed", "quality", "auto"),
    "tag": (lambda v: isinstance(v, str), "a string"),
}
FAILED = {"failed", "cancelled", "canceled"}


class AIgatewayProvider(HostedProvider):
    type = "aigateway"
    min_poll = 3.0  # faster polls are answered 304 Not Modified
    refreshes_urls = True  # "re-fetch the job to get a fresh URL" [doc]

    def check_track(self, spec: TrackSpec) -> list[tuple[Path_, str]]:
        problems: list[tuple[Path_, str]] = []
        if not spec.prompt.strip():
            problems.append((("prompt",), "AIgateway requires a prompt"))
        problems += check_options("AIgateway", spec.options, RULES)
        return problems

    def idempotency_key(self, gen_key: str, attempt: int) -> str | None:
        # not honoured for deduplication (no Idempotency-Key is documented): only echoed, so the
        # dashboard's request log can be matched to a journaled attempt
        return f"mb-{gen_key[:24]}-{attempt}"

    async def submit(self, spec: TrackSpec, key: str | None) -> Submitted:
        prompt = spec.prompt if not spec.tags else f"{spec.prompt}\nStyle: {', '.join(spec.tags)}".strip()
        body: dict[str, Any] = {"model": spec.model, "prompt": prompt, "duration": spec.duration,
                                "format": spec.options.get("format", "wav"),
                                "is_instrumental": spec.instrumental}
        if spec.lyrics and not spec.instrumental:
            body["lyrics"] = spec.lyrics
        if "lyrics_optimizer" in spec.options:
            body["lyrics_optimizer"] = spec.options["lyrics_optimizer"]
        headers = {"X-Request-Id": key} if key else {}
        if "routing" in spec.options:
            headers["x-routing"] = spec.options["routing"]
        if "tag" in spec.options:
            headers["x-aig-tag"] = spec.options["tag"]
        response = await self.http.request("POST", "/v1/audio/music", create=True, json=body, headers=headers)
        data = json_body(response, self.name)
        job_id = _job_id(data)
        if not job_id:
            raise ProviderError(f"{self.name}: the create answer has no job id: {str(data)[:200]}")
        return Submitted(job_id)

    async def poll(self, job: Mapping[str, Any]) -> JobStatus:
        response = await self.http.request("GET", f"/v1/jobs/{job['job_id']}", ok=(304,))
        if response.status_code == 304:
            return JobStatus("pending")
        data = json_body(response, self.name)
        data = _unwrap(data)
        status = str(data.get("status", "")).lower()
        if status in FAILED:
            err = data.get("error")
            message = err.get("message") or err.get("code") if isinstance(err, dict) else err
            return JobStatus("failed", error=f"{status}: {message}" if message else status, charged_usd=0.0)
        if status != "completed":  # queued / running / processing, or a state newer than our docs
            return JobStatus("pending", stage=status)
        result = data.get("result") if isinstance(data.get("result"), dict) else {}
        url = result.get("url") or result.get("file_url") or data.get("result_url")
        if not url:
            raise ProviderError(f"{self.name}: job {job['job_id']} completed without a result URL", retryable=True)
        seconds = result.get("duration")
        known = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0
        return JobStatus("done", [str(url)], clip_seconds=[float(seconds)] if known else None)


def _unwrap(data: Any) -> dict[str, Any]:
    """The job object, whether bare or under ``job``/``data`` (a wrapper some gateways add)."""
    if not isinstance(data, dict):
        return {}
    for wrapper in ("job", "data"):
        if isinstance(data.get(wrapper), dict) and "id" not in data:
            return data[wrapper]
    return data


def _job_id(data: Any) -> str | None:
    job = _unwrap(data)
    value = job.get("id") or job.get("job_id")
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) else None
