"""beatra: text-to-music and reference-audio-to-music as async tasks (``GET /v1/tasks/{id}``).

Follows the seed page and CONTRACTS.md sections 3-4. Rules checked before any request: model
``suno-5.5`` or ``minimax-music-2.6``; prompt 1-1000 characters, lyrics <= 5000, title <= 80; no
lyrics with ``instrumental``; suno lyrics need ``model_options.suno.custom_mode: true`` and a title;
``model_options`` only in the model's own namespace, with suno's option values and ranges. There is
no duration field: describe the length in the prompt. ``reference_audio`` is uploaded first
(``POST /v1/uploads``) and passed as an artifact. Each attempt's create carries its own
``Idempotency-Key``, journaled before it is sent: a create whose answer was lost is sent again with
the same key (beatra deduplicates it for 24 h and replays the task), and a deliberate new attempt
(--force, or a retry after a failure) gets a new key, so a replay is never taken for new spend and
no spec is locked out. The API is in preview: statuses other than the documented terminal ones are
"still running". The charge is read from ``billing`` (credits as decimal strings; 1000 credits =
$1 unless ``price.usd_per_credit`` says otherwise): debited at create, refunded on failure.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

from ..errors import ProviderError
from ..model import TrackSpec
from ..yamlsrc import Path_
from .hosted import HostedProvider, JobStatus, Submitted
from .http import json_body

NAMESPACE = {"suno-5.5": "suno", "minimax-music-2.6": "minimax"}
SUNO_WEIGHTS = ("style_weight", "weirdness_constraint", "audio_weight")
SUNO_OPTIONS = ("custom_mode", "vocal_gender", "negative_tags", *SUNO_WEIGHTS)
MINIMAX_OPTIONS = ("lyrics_optimizer",)
OPTIONS = ("title", "model_options", "metadata")
USD_PER_CREDIT = 0.001
FAILED = {"failed", "canceled", "cancelled"}


def _weight(value: Any) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
    return ok and abs(round(value * 100) - value * 100) < 1e-6


class BeatraProvider(HostedProvider):
    type = "beatra"
    idempotent_create = True

    def _prompt(self, spec: TrackSpec) -> str:
        return spec.prompt if not spec.tags else f"{spec.prompt}\nStyle: {', '.join(spec.tags)}".strip()

    def check_track(self, spec: TrackSpec) -> list[tuple[Path_, str]]:
        problems: list[tuple[Path_, str]] = []
        opts = spec.options
        for key in opts:
            if key not in OPTIONS:
                problems.append((("options", key), f"beatra has no option '{key}' (it takes: {', '.join(OPTIONS)})"))
        prompt = self._prompt(spec)
        if not 1 <= len(prompt) <= 1000:
            problems.append((("prompt",), f"beatra needs a prompt of 1 to 1000 characters (style tags included), "
                                          f"this one has {len(prompt)}"))
        if spec.lyrics and len(spec.lyrics) > 5000:
            problems.append((("lyrics",), f"beatra takes at most 5000 characters of lyrics, not {len(spec.lyrics)}"))
        if spec.lyrics and spec.instrumental:
            problems.append((("instrumental",), "beatra takes no lyrics with instrumental: true"))
        title = opts.get("title")
        if title is not None and (not isinstance(title, str) or len(title) > 80):
            problems.append((("options", "title"), "must be text of at most 80 characters"))
        if "metadata" in opts and not (isinstance(opts["metadata"], dict)
                                       and all(isinstance(v, str) for v in opts["metadata"].values())):
            problems.append((("options", "metadata"), "must map names to strings"))
        problems += self._check_model_options(spec)
        return problems

    def _check_model_options(self, spec: TrackSpec) -> list[tuple[Path_, str]]:
        problems: list[tuple[Path_, str]] = []
        mo = spec.options.get("model_options", {})
        own = NAMESPACE.get(spec.model)
        if not isinstance(mo, dict):
            return [(("options", "model_options"), "must be a mapping like {suno: {...}}")]
        for ns, value in mo.items():
            if not isinstance(value, dict):
                return [(("options", "model_options", ns), f"must be a mapping of {ns} options, not {type(value).__name__}")]
        for ns in mo:
            if ns != own:
                problems.append((("options", "model_options", ns),
                                 f"model_options.{ns} does not apply to {spec.model} (use model_options.{own})"))
        suno = mo.get("suno", {}) if own == "suno" else {}
        custom = suno.get("custom_mode") is True
        if own == "suno" and spec.lyrics:
            if not custom:
                problems.append((("options", "model_options", "suno", "custom_mode"),
                                 "suno-5.5 lyrics need model_options.suno.custom_mode: true"))
            if not spec.options.get("title"):
                problems.append((("options", "title"), "a suno-5.5 song with lyrics needs a title (options.title)"))
        if own == "suno" and custom and not spec.instrumental and not spec.lyrics:
            problems.append((("instrumental",), "a custom-mode vocal song needs lyrics (and options.title), "
                                                "or set instrumental: true"))
        for key, value in suno.items():
            where: Path_ = ("options", "model_options", "suno", key)
            if key not in SUNO_OPTIONS:
                problems.append((where, f"suno-5.5 has no option '{key}' (it takes: {', '.join(SUNO_OPTIONS)})"))
            elif key == "custom_mode" and not isinstance(value, bool):
                problems.append((where, "must be true or false"))
            elif key == "vocal_gender" and value not in ("m", "f"):
                problems.append((where, f"must be m or f, not {value!r}"))
            elif key == "negative_tags" and not isinstance(value, str):
                problems.append((where, "must be a string"))
            elif key in SUNO_WEIGHTS and not _weight(value):
                problems.append((where, f"must be a number from 0 to 1 in steps of 0.01, not {value!r}"))
            if key != "custom_mode" and key in SUNO_OPTIONS and not custom:
                problems.append((where, f"'{key}' needs model_options.suno.custom_mode: true"))
            if key == "audio_weight" and spec.reference_audio is None:
                problems.append((where, "audio_weight only applies with reference_audio"))
        for key, value in (mo.get("minimax", {}) if own == "minimax" else {}).items():
            where = ("options", "model_options", "minimax", key)
            if key not in MINIMAX_OPTIONS:
                problems.append((where, f"minimax-music-2.6 has no option '{key}' (it takes: lyrics_optimizer)"))
            elif not isinstance(value, bool):
                problems.append((where, "must be true or false"))
        return problems

    async def _upload(self, spec: TrackSpec) -> str:
        assert spec.reference_audio is not None
        data = spec.reference_audio.read_bytes()
        key = hashlib.sha256(data).hexdigest()
        # an upload starts no paid job: sent again safely with its Idempotency-Key
        response = await self.http.request(
            "POST", "/v1/uploads", idempotent=True, headers={"Idempotency-Key": f"upload-{key[:40]}"},
            files={"file": (spec.reference_audio.name, data)}, data={"purpose": "reference_audio"})
        body = json_body(response, self.name)
        artifact = body.get("artifact_id") or (body.get("artifact") or {}).get("artifact_id") \
            if isinstance(body, dict) else None
        if not artifact:
            raise ProviderError(f"{self.name}: the upload answer has no artifact_id: {str(body)[:200]}",
                                status=422)  # nothing paid was started: a plain failure
        return str(artifact)

    async def submit(self, spec: TrackSpec, key: str | None) -> Submitted:
        body: dict[str, Any] = {"model": spec.model, "prompt": self._prompt(spec), "instrumental": spec.instrumental}
        if spec.lyrics:
            body["lyrics"] = spec.lyrics
        for name in OPTIONS:
            if name in spec.options:
                body[name] = spec.options[name]
        path = "/v1/music/text-to-music"
        if spec.reference_audio is not None:
            body["reference_audio"] = {"type": "artifact", "artifact_id": await self._upload(spec)}
            path = "/v1/music/reference-audio-to-music"
        response = await self.http.request("POST", path, create=True, idempotent=True, json=body,
                                           headers={"Idempotency-Key": key or ""})
        task = json_body(response, self.name)
        task_id = task.get("task_id") if isinstance(task, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise ProviderError(f"{self.name}: the answer has no task_id: {str(task)[:200]}")
        status = self._task_status(task)  # a replayed task may already be finished
        return Submitted(task_id, charged_usd=self._credits(task, "charged"),
                         status=status if status.state == "failed" else None)

    def _credits(self, task: Mapping[str, Any], what: str) -> float | None:
        """``billing.<what>_credits`` in USD (None when the answer has no billing)."""
        billing = task.get("billing")
        if not isinstance(billing, dict) or billing.get(f"{what}_credits") is None:
            return None
        rate = (self.config.price or {}).get("usd_per_credit", USD_PER_CREDIT)
        try:
            return round(float(billing[f"{what}_credits"]) * rate, 6)
        except (TypeError, ValueError):
            return None

    def _task_status(self, task: Mapping[str, Any]) -> JobStatus:
        status = str(task.get("status", "")).lower()
        charged, refunded = self._credits(task, "charged"), self._credits(task, "refunded")
        if status in FAILED:
            err = task.get("error") or {}
            message = err.get("message") or err.get("code") if isinstance(err, dict) else err
            return JobStatus("failed", error=f"{status}: {message or 'no reason given'}",
                             charged_usd=charged, refunded_usd=refunded)
        if status != "succeeded":  # queued, running, or a preview-API state we do not know yet
            return JobStatus("pending", stage=status)
        output = task.get("output") if isinstance(task.get("output"), dict) else {}
        clips = [c for c in output.get("clips") or [] if isinstance(c, dict) and isinstance(c.get("audio"), dict)]
        urls = [c["audio"]["url"] for c in clips if c["audio"].get("url")]
        if not urls:
            raise ProviderError(f"{self.name}: task {task.get('task_id')} succeeded without clip URLs", retryable=True)
        net = None if charged is None else round(charged - (refunded or 0.0), 6)
        return JobStatus("done", urls, charged_usd=net)

    async def poll(self, job: Mapping[str, Any]) -> JobStatus:
        task = await self.http.get_json(f"/v1/tasks/{job['job_id']}")
        return self._task_status(task if isinstance(task, dict) else {})
