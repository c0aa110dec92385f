"""Sonauto native API emulator (api.sonauto.ai/v1): ``task_id`` creates, status polls, ``song_paths`` records.

Where each behaviour comes from: CONTRACTS.md section 2b in ``/work/shared/providers`` ([doc] = Sonauto's
developer docs, [3p] = third-party clients and summaries); [inf] = our choice where they are silent.

Routes
- ``POST /v1/generations/v2`` and ``POST /v1/generations/v3`` (Bearer) [doc] -> **200** ``{"task_id": "<uuid>"}``
  [doc][3p]. Fields [doc]: ``prompt`` (str), ``tags`` (str[]), ``lyrics`` (str), ``instrumental`` (bool),
  ``prompt_strength`` (number, default 2 [inf from fal]), ``seed`` / ``balance_strength`` (0..1) / ``num_songs``
  (1|2) / ``bpm`` (number or "auto") **v2 only** (sent to v3 -> 400), ``output_format`` (ogg default, mp3, flac,
  wav, m4a), ``output_bit_rate`` (128|192|256|320 as int or digit string, mp3/m4a only), ``webhook_url`` (str,
  ignored), ``align_lyrics`` (bool). Unknown fields (e.g. ``enable_streaming``) are ignored [inf].
  Combination rules [doc]: at least one of non-empty prompt / tags / lyrics; lyrics alone or tags alone without
  a ``prompt`` key -> 400 (``prompt: ""`` counts as a prompt: "lets the AI decide"); ``instrumental: true``
  with any ``lyrics`` key -> 400; ``strict_fal_rules`` also rejects prompt + tags + lyrics together [3p, fal].
- ``GET /v1/generations/status/{task_id}`` [doc]: ``intermediate_statuses`` (undocumented; default
  ``RECEIVED`` [3p placeholder], ``GENERATING`` [inf]) share the job's latency evenly, then ``SUCCESS`` or
  ``FAILURE`` [doc].
- ``GET /v1/generations/{task_id}`` [3p]: ``{id, song_paths, lyrics, tags, title, prompt_strength}`` plus
  ``error_message`` on failure; ``song_paths`` is null until SUCCESS [inf], then one URL per song (v2:
  ``num_songs``, v3: 1 [doc]). Lyrics/tags/title echo the request or are "generated" from the prompt [inf].
- ``GET /v1/credits/balance`` [3p] -> ``{"num_credits": <credits - credits_used>}``.
- ``GET /cdn/{task_id}_{n}.{fmt}?exp=`` (public CDN stand-in) [inf]: the URL is fixed per song and expires
  ``url_ttl`` after the song finished (168 h default [3p]); 403 once expired, else real audio. Songs last
  95 s on v2 (~1:35 per the pricing [doc]) and 120..240 s on v3 [3p] (``audio_seconds`` overrides).

Credits [doc]: 100 per song, 150 for ``num_songs: 2`` (``credits_used``). When Sonauto charges is unknown:
``charge_on`` "success" (default) | "create". ``faults.payment_required``, or a create the remaining
``credits`` cannot cover, -> 402 [inf].

Errors (format and codes undocumented [doc]): ``{"detail": "..."}`` by default (the common FastAPI / DRF
convention; nothing says Sonauto uses it [inf]) or ``{"error": "..."}`` (``error_style="error"``); validation
errors use ``validation_status`` (400 default; 422 is what a FastAPI service would answer).
401/404/429 via the base; whether a 429 carries Retry-After is unknown: ``retry_after`` switch.

Switches (constructor keywords, kept as attributes): ``status_body`` "object" ``{"status": ...}`` [doc] |
"string" bare JSON string [3p]; ``intermediate_statuses``; ``strict_fal_rules``; ``error_style``;
``validation_status``; ``charge_on``; ``credits`` (starting balance); ``retry_after``.
"""
from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

from .base import Emulator, Request, Response, public

FORMATS = ("ogg", "mp3", "flac", "wav", "m4a")
BIT_RATES = (128, 192, 256, 320)
V2_ONLY = ("seed", "balance_strength", "num_songs", "bpm")
V2_SECONDS = 95.0
V3_SECONDS = (120.0, 240.0)


class Invalid(Exception):
    """A validation error with its message."""


@dataclass
class Task:
    id: str
    version: str  # "v2" | "v3"
    body: dict[str, Any]
    prompt: str | None
    tags: list[str] | None
    lyrics: str | None
    instrumental: bool
    num_songs: int
    format: str
    song_seconds: float
    created: float  # virtual seconds
    latency: float
    failed: bool
    polls: int = 0

    @property
    def credits(self) -> int:
        return 150 if self.num_songs == 2 else 100


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class SonautoEmulator(Emulator):
    name = "sonauto"

    def __init__(self, *, status_body: str = "object",
                 intermediate_statuses: Sequence[str] = ("RECEIVED", "GENERATING"), strict_fal_rules: bool = False,
                 error_style: str = "detail", validation_status: int = 400, charge_on: str = "success",
                 credits: float = 1_000_000, retry_after: bool = True, url_ttl: float = 168 * 3600.0,
                 **kwargs: Any) -> None:
        assert status_body in ("object", "string") and error_style in ("detail", "error")
        assert charge_on in ("success", "create") and intermediate_statuses
        self.status_body, self.intermediate_statuses = status_body, tuple(intermediate_statuses)
        self.strict_fal_rules, self.error_style = strict_fal_rules, error_style
        self.validation_status = validation_status
        self.charge_on, self.credits, self.retry_after_header = charge_on, credits, retry_after
        self.tasks: dict[str, Task] = {}
        super().__init__(url_ttl=url_ttl, **kwargs)

    def routes(self) -> None:
        self.route("POST", r"/v1/generations/(?P<version>v2|v3)", self.create)
        self.route("GET", r"/v1/generations/status/(?P<id>[^/]+)", self.status)
        self.route("GET", r"/v1/generations/(?P<id>[^/]+)", self.record)
        self.route("GET", r"/v1/credits/balance", self.balance)
        self.route("GET", r"/cdn/(?P<id>[^/_]+)_(?P<n>\d+)\.(?P<fmt>\w+)", self.cdn)

    def error_body(self, status: int, message: str, code: str | None = None) -> Any:
        return {self.error_style: message}

    def _error(self, status: int, message: str) -> Response:
        return Response(status, self.error_body(status, message))

    # -- state -------------------------------------------------------------------------------
    def state(self, task: Task, now: float | None = None) -> str:
        t = (self.now() if now is None else now) - task.created
        if t >= task.latency:
            return "FAILURE" if task.failed else "SUCCESS"
        steps = self.intermediate_statuses
        return steps[min(len(steps) - 1, int(max(0.0, t) / task.latency * len(steps)))]

    @property
    def credits_used(self) -> int:
        with self.lock:
            tasks = list(self.tasks.values())
        return sum(t.credits for t in tasks if self.charge_on == "create" or self.state(t) == "SUCCESS")

    def song_paths(self, task: Task) -> list[str]:
        exp = task.created + task.latency + self.url_ttl
        return [f"{self.url}/cdn/{task.id}_{n}.{task.format}?exp={exp:.3f}" for n in range(task.num_songs)]

    # -- handlers ----------------------------------------------------------------------------
    def validate(self, version: str, body: Any) -> None:
        if not isinstance(body, dict):
            raise Invalid("Request body must be a JSON object")
        types: dict[str, Any] = {"prompt": str, "lyrics": str, "webhook_url": str, "instrumental": bool,
                                 "align_lyrics": bool}
        for key, kind in types.items():
            if body.get(key) is not None and not isinstance(body[key], kind):
                raise Invalid(f"{key} must be a {kind.__name__}")
        tags = body.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise Invalid("tags must be a list of strings")
        for key in ("prompt_strength", "balance_strength"):
            if body.get(key) is not None and not _is_num(body[key]):
                raise Invalid(f"{key} must be a number")
        if version == "v3":
            sent = [k for k in V2_ONLY if k in body]
            if sent:
                raise Invalid(f"{', '.join(sent)} not supported by the v3 model")
        else:
            if body.get("seed") is not None and (not isinstance(body["seed"], int) or isinstance(body["seed"], bool)):
                raise Invalid("seed must be an integer")
            if body.get("balance_strength") is not None and not 0 <= body["balance_strength"] <= 1:
                raise Invalid("balance_strength must be between 0 and 1")
            if body.get("num_songs") not in (None, 1, 2) or isinstance(body.get("num_songs"), bool):
                raise Invalid("num_songs must be 1 or 2")
            bpm = body.get("bpm")
            if bpm is not None and bpm != "auto" and not (_is_num(bpm) and bpm > 0):
                raise Invalid("bpm must be a positive number or 'auto'")
        fmt = body.get("output_format") or "ogg"
        if fmt not in FORMATS:
            raise Invalid(f"output_format must be one of {', '.join(FORMATS)}")
        rate = body.get("output_bit_rate")
        if rate is not None:
            if fmt not in ("mp3", "m4a"):
                raise Invalid("output_bit_rate is only supported for mp3 and m4a")
            if isinstance(rate, bool) or str(rate) not in {str(r) for r in BIT_RATES}:
                raise Invalid(f"output_bit_rate must be one of {', '.join(map(str, BIT_RATES))}")
        has_prompt, prompt = "prompt" in body and body["prompt"] is not None, body.get("prompt") or ""
        has_tags, has_lyrics = bool(tags), bool(body.get("lyrics"))
        if not (prompt.strip() or has_tags or has_lyrics):
            raise Invalid("At least one of tags, lyrics or prompt is required")
        if not has_prompt and has_tags != has_lyrics:
            raise Invalid("Lyrics alone or tags alone are not supported: also send a prompt (\"\" lets the AI decide)")
        if body.get("instrumental") and body.get("lyrics") is not None:
            raise Invalid("Do not send lyrics with instrumental: true")
        if self.strict_fal_rules and has_prompt and has_tags and has_lyrics:
            raise Invalid("Invalid input combination: prompt, tags and lyrics cannot all be set")

    def create(self, req: Request) -> Response:
        version = req.params["version"]
        try:
            body = req.json()
        except ValueError:
            body = None
        try:
            self.validate(version, body)
        except Invalid as exc:
            return self._error(self.validation_status, str(exc))
        num_songs = int(body.get("num_songs") or 1) if version == "v2" else 1
        if self.faults.payment_required or self.credits - self.credits_used < (150 if num_songs == 2 else 100):
            return self._error(402, "Insufficient credits")
        with self.lock:
            seconds = V2_SECONDS if version == "v2" else self.rng.uniform(*V3_SECONDS)
            task = Task(id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), version=version, body=body,
                        prompt=body.get("prompt"), tags=body.get("tags"), lyrics=body.get("lyrics"),
                        instrumental=bool(body.get("instrumental")), num_songs=num_songs,
                        format=body.get("output_format") or "ogg", song_seconds=seconds, created=self.now(),
                        latency=self.draw_latency(), failed=self.draw_failure())
            self.tasks[task.id] = task
        resp = Response(200, {"task_id": task.id})
        self.count_create()  # may drop the connection: the task stays and runs
        return resp

    def _task(self, req: Request) -> Task | None:
        task = self.tasks.get(req.params["id"])
        if task is not None and self.past_retention(task.created):
            return None  # forgotten after the (undocumented) retention: 404
        if task is not None:
            with self.lock:
                task.polls += 1
        return task

    def status(self, req: Request) -> Response:
        task = self._task(req)
        if task is None:
            return self._error(404, "Generation not found")
        st = self.state(task)
        return Response(200, {"status": st} if self.status_body == "object" else st)

    def record(self, req: Request) -> Response:
        task = self._task(req)
        if task is None:
            return self._error(404, "Generation not found")
        st = self.state(task)
        words = [w.strip(".,!?").lower() for w in (task.prompt or "").split() if len(w) > 3]
        tags = task.tags or words[:3] or ["pop"]
        lyrics = "" if task.instrumental else task.lyrics or f"[Verse]\n{' '.join(words) or 'la la la'}\n"
        rec: dict[str, Any] = {"id": task.id, "song_paths": self.song_paths(task) if st == "SUCCESS" else None,
                               "lyrics": lyrics, "tags": tags, "title": " ".join(words[:3]).title() or "Untitled",
                               "prompt_strength": task.body.get("prompt_strength", 2.0)}
        if st == "FAILURE":
            rec["error_message"] = "Generation failed"
        return Response(200, rec)

    def balance(self, req: Request) -> Response:
        return Response(200, {"num_credits": self.credits - self.credits_used})

    @public
    def cdn(self, req: Request) -> Response:
        if self.expired(req):
            return self._error(403, "Access denied: the file has expired")
        task, n = self.tasks.get(req.params["id"]), int(req.params["n"])
        if task is None or task.format != req.params["fmt"] or n >= task.num_songs or self.state(task) != "SUCCESS":
            return self._error(404, "Not found")
        return self.download_body(task.format, task.song_seconds, zlib.crc32(task.id.encode()) + n)
