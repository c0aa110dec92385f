"""AIgateway (aigateway.sh) emulator: async music jobs behind ``POST /v1/audio/music``.

Where each behaviour comes from (documents in ``/work/shared/providers``): [seed] = the model pages
``seeds/000_*.txt`` (sonauto v2) and ``seeds/001_*.txt`` (mmaudio v2); [doc]/[oas]/[sdk] = CONTRACTS.md
section 1 (AIgateway docs pages, OpenAPI, SDKs); [inf] = our choice where they are silent.

Routes
- ``POST /v1/audio/music`` (Bearer) -> **202** job [oas][doc]. Body: ``prompt`` required [oas] (400
  ``invalid_request_error``, ``param: "prompt"``); ``model`` [seed][oas] (default ``auto/music``, routed to
  sonauto v2 [inf]); ``lyrics``; ``duration`` clamped to the model's range [oas]; ``format`` mp3|wav [seed]
  (default mp3 [inf]); ``is_instrumental``, ``lyrics_optimizer`` [oas][sdk] and ``webhook_url`` [oas][doc]
  are type-checked and otherwise ignored. ``faults.payment_required`` -> 402.
- ``GET /v1/jobs/{id}`` -> 200 snapshot, 404 unknown [oas]; a poll less than ``poll_interval`` (3 s [doc])
  after the last answered poll of that job -> **304** without body [doc]. Status: ``queued`` for the first
  10 % of the job's latency [inf], then ``running`` [doc] / ``processing`` [sdk], then ``completed`` or
  ``failed`` [doc]; ``cancelled`` [doc]. Each answered snapshot of a completed job carries a freshly signed
  URL valid ``url_ttl`` virtual seconds (24 h default [doc]).
- ``DELETE /v1/jobs/{id}`` [oas][sdk] and ``POST /v1/jobs/{id}/cancel`` [doc]: cancel a queued job; any other
  job is returned unchanged with 200 ("200 means cancelled, or already terminal" [oas]).
- ``GET /media/music/{id}.{fmt}?exp=`` (public, stands in for media.aigateway.sh [seed][doc]): 403 once
  expired [inf], 404 unless the job completed in that format, else real audio.
- Every response echoes ``X-Request-Id`` [doc].

Model table (``MODELS``; ``models=`` merges over it): price [seed]/[doc]; ``duration`` is "honoured only where
the model supports it (stable-audio, ace-step, mmaudio, elevenlabs). Clamped to the model's range" [oas][doc]:
sonauto/v2/text-to-music $0.0013/s ignores it and makes ~95 s songs (a ~1:35 Sonauto song, CONTRACTS 2b; fal's
sonauto v2 has no duration field); sony-ai/mmaudio-v2-text-to-audio $0.0010/s, clamped to 1..30 s, default 8 s
(fal's MMAudio v2 limits); any other slug $0.0013/s, 1..190 s, default 30 s [inf]. A job is billed for the
length it delivered (``audio_seconds`` overrides the length of every delivered file, and so of the bill), and
for completed jobs only [doc] (``cost_usd``); ``result.duration`` reports that length.

Errors: ``{"error": {"message", "type", "code": <HTTP status>, "param"}}`` [oas]. The ``type`` strings differ
between pages [doc][seed]; ``error_types`` picks a column (or pass a mapping merged over "default"):
"default" (401 authentication_error, 402 insufficient_credits, 404 not_found / model_not_found for an unknown
model, 429 rate_limit_error, ...), "reference" (402 budget_exceeded, 404 model_not_found always), "pages"
(401 invalid_key, 402 budget_exceeded, 429 rate_limited), "model_page" (404 not_found always). 429 carries
Retry-After [doc] (base limiter; the documented 2x-RPM 10 s burst allowance is not emulated).

Switches (constructor keywords, kept as attributes tests may flip):
- ``create_shape``: "model_page" ``{id,status,model,created}`` [seed] | "async_jobs" ``{id,status,object}``
  [doc] | "sdk" ``{id,status,modality,model,created_at,updated_at,...}`` [sdk] | "wrapped" (the model-page
  snapshot under ``data``, as the webhook event nests its fields [doc]; not documented for create). Polls use
  the same frame.
- ``status_variant``: "docs" (``running``) | "sdk" (``processing``).
- ``url_variant``: "result.url" (+ ``result.duration``) [seed] | "result.file_url" [doc] | "result_url" [sdk]
  | "all".
- ``error_variant``: failed job's ``error`` as "object" ``{code, message}`` [doc] | "string" [sdk].
- ``error_types``: see Errors. ``known_models``: if set, other slugs get 404 (default: accept any slug).
- ``ignore_format``: the OAS has no ``format`` field: when True it is ignored and mp3 is always served.
- ``cancel_running``: also cancel running jobs (the OAS implies only queued ones can be) [inf].
- ``poll_interval``: minimum virtual seconds between answered polls of one job (0 disables 304s).
- ``retention`` (base): a job polled more than that many virtual seconds after it was created is unknown (404):
  the file is kept for 7 days [doc].
"""
from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from .base import Emulator, Request, Response, public

AUTO = "auto/music"
AUTO_ROUTE = "sonauto/v2/text-to-music"
# slug -> (USD per second, min duration, max duration, default duration[, honours duration])
MODELS: dict[str, tuple] = {
    "sonauto/v2/text-to-music": (0.0013, 95.0, 95.0, 95.0, False),
    "sony-ai/mmaudio-v2-text-to-audio": (0.0010, 1.0, 30.0, 8.0, True),
}
OTHER_MODEL = (0.0013, 1.0, 190.0, 30.0, True)
FORMATS = ("mp3", "wav")

_DEFAULT_TYPES: dict[int | str, str] = {
    400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_credits", 404: "not_found",
    "model": "model_not_found", 429: "rate_limit_error", 500: "server_error", 502: "provider_error",
    503: "service_unavailable", 504: "timeout_error"}
ERROR_TYPES: dict[str, dict[int | str, str]] = {
    "default": _DEFAULT_TYPES,
    "reference": {**_DEFAULT_TYPES, 402: "budget_exceeded", 404: "model_not_found"},
    "pages": {**_DEFAULT_TYPES, 401: "invalid_key", 402: "budget_exceeded", 429: "rate_limited"},
    "model_page": {**_DEFAULT_TYPES, "model": "not_found"},
}


@dataclass
class Job:
    id: str
    prompt: str
    model: str  # as requested
    resolved_model: str  # what auto/music routed to
    duration: float  # clamped, seconds
    format: str
    lyrics: str | None
    body: dict[str, Any]  # the whole create body
    created: float  # virtual seconds
    latency: float
    failed: bool
    cancelled: bool = False
    polls: int = 0  # every GET, 304s included
    last_answered: float | None = None


class AIgatewayEmulator(Emulator):
    name = "aigateway"

    def __init__(self, *, create_shape: str = "model_page", status_variant: str = "docs",
                 url_variant: str = "result.url", error_variant: str = "object",
                 error_types: str | Mapping[int | str, str] = "default", known_models: Iterable[str] | None = None,
                 models: Mapping[str, tuple] | None = None, ignore_format: bool = False,
                 cancel_running: bool = False, poll_interval: float = 3.0, url_ttl: float = 86400.0,
                 **kwargs: Any) -> None:
        assert create_shape in ("model_page", "async_jobs", "sdk", "wrapped"), create_shape
        assert status_variant in ("docs", "sdk"), status_variant
        assert url_variant in ("result.url", "result.file_url", "result_url", "all"), url_variant
        assert error_variant in ("object", "string"), error_variant
        self.create_shape, self.status_variant, self.url_variant = create_shape, status_variant, url_variant
        self.error_variant = error_variant
        self.types = dict(ERROR_TYPES[error_types]) if isinstance(error_types, str) \
            else {**_DEFAULT_TYPES, **error_types}
        self.known_models = set(known_models) if known_models is not None else None
        self.models = {**MODELS, **(models or {})}
        self.ignore_format, self.cancel_running, self.poll_interval = ignore_format, cancel_running, poll_interval
        self.jobs: dict[str, Job] = {}
        super().__init__(url_ttl=url_ttl, **kwargs)
        self._unix0 = datetime.now(timezone.utc).timestamp()

    def routes(self) -> None:
        self.route("POST", r"/v1/audio/music", self.create)
        self.route("GET", r"/v1/jobs/(?P<id>[^/]+)", self.get_job)
        self.route("DELETE", r"/v1/jobs/(?P<id>[^/]+)", self.cancel)
        self.route("POST", r"/v1/jobs/(?P<id>[^/]+)/cancel", self.cancel)
        self.route("GET", r"/media/music/(?P<id>[^/.]+)\.(?P<fmt>\w+)", self.media)

    def error_body(self, status: int, message: str, code: str | None = None, param: str | None = None) -> Any:
        etype = (code and self.types.get(code)) or self.types.get(status) or code or "api_error"
        return {"error": {"message": message, "type": etype, "code": status, "param": param}}

    def _respond(self, req: Request) -> Response:
        resp = super()._respond(req)
        if req.headers.get("x-request-id"):
            resp.headers.setdefault("X-Request-Id", req.headers["x-request-id"])
        return resp

    def _error(self, status: int, message: str, code: str | None = None, param: str | None = None) -> Response:
        return Response(status, self.error_body(status, message, code, param))

    # -- state -------------------------------------------------------------------------------
    def state(self, job: Job, now: float | None = None) -> str:
        """queued | running | completed | failed | cancelled (docs names)."""
        if job.cancelled:
            return "cancelled"
        t = (self.now() if now is None else now) - job.created
        if t < 0.1 * job.latency:
            return "queued"
        if t < job.latency:
            return "running"
        return "failed" if job.failed else "completed"

    @property
    def cost_usd(self) -> float:
        with self.lock:
            jobs = list(self.jobs.values())
        return sum(self.models.get(j.resolved_model, OTHER_MODEL)[0] * j.duration
                   for j in jobs if self.state(j) == "completed")

    def _iso(self, vt: float) -> str:
        return datetime.fromtimestamp(self._unix0 + vt, timezone.utc).isoformat().replace("+00:00", "Z")

    def snapshot(self, job: Job) -> dict[str, Any]:
        st = self.state(job)
        wire = "processing" if st == "running" and self.status_variant == "sdk" else st
        snap: dict[str, Any] = {"id": job.id, "status": wire}
        if self.create_shape in ("model_page", "wrapped"):
            snap.update(model=job.resolved_model, created=int(self._unix0 + job.created))
        elif self.create_shape == "async_jobs":
            snap["object"] = "job"
        else:
            changed = {"queued": job.created, "running": job.created + 0.1 * job.latency}.get(
                st, min(self.now(), job.created + job.latency))
            snap.update(modality="music", model=job.resolved_model, created_at=self._iso(job.created),
                        updated_at=self._iso(changed))
        if st == "completed":
            url = self.signed(f"/media/music/{job.id}.{job.format}")
            result: dict[str, Any] = {}
            if self.url_variant in ("result.url", "all"):
                result.update(url=url, duration=job.duration)
            if self.url_variant in ("result.file_url", "all"):
                result["file_url"] = url
            if result:
                snap["result"] = result
            if self.url_variant in ("result_url", "all"):
                snap["result_url"] = url
        elif st == "failed":
            message = "Upstream provider failed to generate the track"
            snap["error"] = {"code": "provider_error", "message": message} if self.error_variant == "object" \
                else message
        return {"data": snap} if self.create_shape == "wrapped" else snap

    # -- handlers ----------------------------------------------------------------------------
    def create(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self._error(400, "Request body must be a JSON object")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return self._error(400, "'prompt' is required and must be a non-empty string", param="prompt")
        checks = {"model": str, "lyrics": str, "webhook_url": str, "format": str,
                  "is_instrumental": bool, "lyrics_optimizer": bool}
        for key, kind in checks.items():
            if body.get(key) is not None and not isinstance(body[key], kind):
                return self._error(400, f"'{key}' must be a {kind.__name__}", param=key)
        duration = body.get("duration")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))):
            return self._error(400, "'duration' must be a number of seconds", param="duration")
        fmt = body.get("format") or "mp3"
        if self.ignore_format:
            fmt = "mp3"
        elif fmt not in FORMATS:
            return self._error(400, f"'format' must be one of {', '.join(FORMATS)}", param="format")
        model = body.get("model") or AUTO
        if model != AUTO and self.known_models is not None and model not in self.known_models:
            return self._error(404, f"Model '{model}' not found", "model", param="model")
        if self.faults.payment_required:
            return self._error(402, "Insufficient credits: top up your wallet")
        resolved = AUTO_ROUTE if model == AUTO else model
        _, lo, hi, default, *rest = self.models.get(resolved, OTHER_MODEL)
        honours = rest[0] if rest else True
        seconds = default if duration is None or not honours else min(hi, max(lo, float(duration)))
        seconds = self.audio_seconds or seconds  # what is delivered is what is billed
        with self.lock:
            job = Job(id="job_" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:24], prompt=prompt, model=model,
                      resolved_model=resolved, duration=seconds, format=fmt, lyrics=body.get("lyrics"),
                      body=body, created=self.now(), latency=self.draw_latency(), failed=self.draw_failure())
            self.jobs[job.id] = job
        resp = Response(202, self.snapshot(job))
        self.count_create()  # may drop the connection: the job stays and runs
        return resp

    def _job(self, req: Request) -> Job | None:
        return self.jobs.get(req.params["id"])

    def get_job(self, req: Request) -> Response:
        job = self._job(req)
        if job is None or self.past_retention(job.created):
            return self._error(404, f"Job '{req.params['id']}' not found")
        with self.lock:
            now = self.now()
            job.polls += 1
            if self.poll_interval and job.last_answered is not None and now - job.last_answered < self.poll_interval:
                return Response(304)
            job.last_answered = now
        return Response(200, self.snapshot(job))

    def cancel(self, req: Request) -> Response:
        job = self._job(req)
        if job is None:
            return self._error(404, f"Job '{req.params['id']}' not found")
        with self.lock:
            st = self.state(job)
            if st == "queued" or (st == "running" and self.cancel_running):
                job.cancelled = True
        return Response(200, self.snapshot(job))

    @public
    def media(self, req: Request) -> Response:
        if self.expired(req):
            return self._error(403, "Signed URL expired: re-fetch the job for a fresh one", "url_expired")
        job = self._job(req)
        if job is None or job.format != req.params["fmt"] or self.state(job) != "completed":
            return self._error(404, "File not found")
        return self.download_body(job.format, job.duration, zlib.crc32(job.id.encode()))
