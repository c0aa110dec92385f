"""beatra music gateway (docs.stratizon.cn), emulated on 127.0.0.1.

Where each behaviour comes from (``/work/shared/providers/``; tags as in CONTRACTS.md):

- Both create routes answer **202** with the task envelope; models ``auto``, ``suno-5.5`` (2 clips, 80
  credits) and ``minimax-music-2.6`` (1 clip, 50 credits); credits debited at create, refunded on
  failure/cancel; ``model_options.suno`` / ``.minimax`` namespaces, unknown namespaces rejected; poll
  ``GET /v1/tasks/{id}``; ``output.clips[]`` with URL + ``artifact_id``: seed ``003_*.txt``.
- Envelope fields, credit amounts as decimal strings, ``queued -> running -> succeeded|failed|
  canceled``, list/cancel/uploads endpoints, ``Idempotency-Key`` (24 h, 409 on a different body),
  ``X-Request-Id`` echo, the error envelope and code table: CONTRACTS 3 [doc].
- Input constraints (prompt 1-1000, lyrics <= 5000, title <= 80, lyrics need ``custom_mode``, custom
  vocal songs need title + lyrics, ``instrumental`` needs lyrics omitted, no ``duration``), the suno
  option set and ``reference_audio: {"type":"artifact",...}``: beatra's skills, CONTRACTS 3/4 [sdk].
- Conflicts, each a constructor switch: ``validation_status`` 422 (code table) | 400 (status list);
  ``cancel_conflict`` None (op page: terminal returned unchanged) | "terminal" (status list: 409 when
  terminal) | "running" (skill: 409 and the task keeps running); ``retry_after_header`` ("if present");
  ``minimal_create`` (202 body = full envelope per API reference, or just ``{task_id,...}``);
  ``skill_fields`` (``billing.net_charged_credits`` + ``deadline_at`` from newer skills);
  ``unknown_artifact_status`` 404 | 422; ``replay_status`` 200 | 202; ``extra_statuses`` (the API is
  "Preview: fields may still change": states beyond the documented five, e.g. ``("preparing",
  "post_processing")``, shown in turn while the task runs, before its terminal state); ``retention``
  (base: how long a task stays known, unknown in the docs; 404 ``not_found`` after).
- [inf], undocumented: ``model`` omitted = ``auto``, which resolves by the options namespace sent, else
  to ``auto_model``; bad JSON is ``invalid_request``; uploads answer 200;
  code names ``idempotency_conflict``, ``not_found``, ``task_not_cancelable``, ``generation_failed``,
  ``payload_too_large`` (413) and 5xx codes; unknown-namespace code ``unsupported_option``;
  ``{"type":"url","url":"https://..."}``; upload response fields; clips are mp3 under
  ``/files/{artifact_id}.mp3`` with ``?exp=`` (403 ``forbidden`` once expired); the job spends its
  first 20% ``queued``; ``song_seconds`` per clip (unless the base's ``audio_seconds``).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import datetime, timezone
from email import policy
from email.parser import BytesParser
from typing import Any, Callable

from .base import Emulator, Request, Response, public

MODELS = {"suno-5.5": ("suno", 80.0, 2), "minimax-music-2.6": ("minimax", 50.0, 1)}
CAPABILITY = {"text-to-music": "music.text_to_music", "reference-audio-to-music": "music.reference_audio_to_music"}
TOP_FIELDS = {"model", "prompt", "lyrics", "instrumental", "title", "metadata", "model_options",
              "callback_url", "callback_signing_key_id"}
OPTIONS = {"suno": {"custom_mode", "vocal_gender", "negative_tags", "style_weight", "weirdness_constraint",
                    "audio_weight"}, "minimax": {"lyrics_optimizer"}}
WEIGHTS = ("style_weight", "weirdness_constraint", "audio_weight")
STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL = ("succeeded", "failed", "canceled")
DAY = 86400.0


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None, details: Any = None) -> None:
        super().__init__(status, code, message, param, details)


def cr(x: float) -> str:
    return f"{x:.4f}"


class BeatraEmulator(Emulator):
    name = "beatra"

    def __init__(self, *, validation_status: int = 422, cancel_conflict: str | None = None,
                 retry_after_header: bool = True, minimal_create: bool = False, skill_fields: bool = False,
                 unknown_artifact_status: int = 404, replay_status: int = 200, auto_model: str = "suno-5.5",
                 extra_statuses: tuple[str, ...] = (),
                 song_seconds: float = 150.0, max_upload_bytes: int = 100 * 1024 * 1024, **kwargs: Any) -> None:
        self.validation_status, self.cancel_conflict = validation_status, cancel_conflict
        self.retry_after_header, self.minimal_create, self.skill_fields = retry_after_header, minimal_create, skill_fields
        self.unknown_artifact_status, self.replay_status, self.auto_model = unknown_artifact_status, replay_status, auto_model
        self.song_seconds, self.max_upload_bytes = song_seconds, max_upload_bytes
        self.extra_statuses = tuple(extra_statuses)
        self.tasks: dict[str, dict[str, Any]] = {}  # insertion order = creation order
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.idempotency: dict[str, tuple[str, str, float]] = {}  # key -> (fingerprint, task_id, at)
        self.idempotent_replays = 0
        self.unix0 = time.time()
        self._local = threading.local()
        super().__init__(**kwargs)

    def routes(self) -> None:
        for kind in CAPABILITY:
            self.route("POST", f"/v1/music/{kind}", self._api(lambda r, k=kind: self.create(r, k)))
        self.route("GET", "/v1/tasks", self._api(self.list_tasks))
        self.route("GET", r"/v1/tasks/(?P<id>[\w-]+)", self._api(self.get_task))
        self.route("POST", r"/v1/tasks/(?P<id>[\w-]+)/cancel", self._api(self.cancel))
        self.route("POST", "/v1/uploads", self._api(self.upload))
        self.route("GET", r"/files/(?P<id>art_[0-9a-f]+)(\.\w+)?", public(self._api(self.file)))

    # -- totals --------------------------------------------------------------------------------
    credits_charged = property(lambda self: sum(t["price"] for t in list(self.tasks.values())))
    credits_refunded = property(lambda self: sum(t["price"] for t in list(self.tasks.values())
                                                 if self.status(t) in ("failed", "canceled")))

    # -- envelope, request ids, errors ------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{self.rng.getrandbits(96):024x}"

    def _respond(self, req: Request) -> Response:
        self._local.rid = req.headers.get("x-request-id") or self._new_id("req")
        resp = super()._respond(req)
        resp.headers["X-Request-Id"] = self._local.rid
        return resp

    def error_body(self, status: int, message: str, code: str | None = None, param: str | None = None,
                   details: dict[str, Any] | None = None) -> Any:
        if code is None:
            code = {500: "internal_error", 502: "upstream_error", 503: "service_unavailable",
                    504: "upstream_timeout"}.get(status, "server_error" if status >= 500 else "invalid_request")
        return {"error": {"code": code, "message": message, "retryable": status == 429 or status >= 500,
                          "request_id": getattr(self._local, "rid", None), **({"param": param} if param else {}),
                          **({"details": details} if details else {})}}

    def _check_auth(self, req: Request) -> Response | None:
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return Response(401, self.error_body(401, "Missing bearer token", "unauthorized"))
        if self.faults.auth_error or auth != f"Bearer {self.api_key}":
            return Response(401, self.error_body(401, "Invalid API key", "invalid_api_key"))
        return None

    def _api(self, fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def handler(req: Request) -> Response:
            try:
                return fn(req)
            except ApiError as e:
                status, code, message, param, details = e.args
                return Response(status, self.error_body(status, message, code, param, details))
        return handler

    def invalid(self, errors: list[dict[str, str]]) -> ApiError:
        return ApiError(self.validation_status, "invalid_request", errors[0]["message"], errors[0]["field"],
                        {"errors": errors})

    def iso(self, t: float | None) -> str | None:
        stamp = None if t is None else datetime.fromtimestamp(self.unix0 + t, timezone.utc)
        return None if stamp is None else stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    # -- create ----------------------------------------------------------------------------------
    def validate(self, body: Any, kind: str) -> str:
        """Return the resolved model or raise ApiError."""
        errs: list[dict[str, str]] = []
        err = lambda field, message: errs.append({"field": field, "message": message})  # noqa: E731
        if not isinstance(body, dict):
            raise self.invalid([{"field": "", "message": "body must be a JSON object"}])
        model, opts = body.get("model", "auto"), body.get("model_options")
        spaces = list(opts) if isinstance(opts, dict) else []
        if model == "auto":
            model = "suno-5.5" if "suno" in spaces else "minimax-music-2.6" if "minimax" in spaces else self.auto_model
        if not isinstance(model, str) or model not in MODELS:
            raise ApiError(400, "unsupported_model", f"model {body.get('model')!r} is not supported", "/model")
        family, ref = MODELS[model][0], kind == "reference-audio-to-music"
        for k in body:
            if k not in TOP_FIELDS and not (ref and k == "reference_audio"):
                err(f"/{k}", f"unknown field {k!r}")
        prompt, lyrics, title, meta = body.get("prompt"), body.get("lyrics"), body.get("title"), body.get("metadata")
        if not isinstance(prompt, str) or not 1 <= len(prompt) <= 1000:
            err("/prompt", "prompt must be a string of 1-1000 characters")
        if lyrics is not None and (not isinstance(lyrics, str) or len(lyrics) > 5000):
            err("/lyrics", "lyrics must be a string of at most 5000 characters")
        if title is not None and (not isinstance(title, str) or len(title) > 80):
            err("/title", "title must be a string of at most 80 characters")
        if not isinstance(body.get("instrumental", False), bool):
            err("/instrumental", "instrumental must be a boolean")
        if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
            err("/metadata", "metadata must be an object of strings")
        if opts is not None and not (isinstance(opts, dict) and all(isinstance(v, dict) for v in opts.values())):
            err("/model_options", "model_options must be an object of objects")
        if errs:
            raise self.invalid(errs)
        mine = (opts or {}).get(family, {})
        bad = [f"model_options.{ns}" for ns in opts or {} if ns != family]
        bad += [f"model_options.{family}.{k}" for k in mine if k not in OPTIONS[family] or (k == "audio_weight" and not ref)]
        if bad:
            raise ApiError(422, "unsupported_option", f"{model} does not support {', '.join(bad)}",
                           "/" + bad[0].replace(".", "/"), {"unsupported_fields": bad})
        custom = mine.get("custom_mode", False) if family == "suno" else False
        ok = {"custom_mode": isinstance(custom, bool), "vocal_gender": mine.get("vocal_gender") in ("m", "f"),
              "negative_tags": isinstance(mine.get("negative_tags"), str),
              "lyrics_optimizer": isinstance(mine.get("lyrics_optimizer"), bool)}
        for w in WEIGHTS:
            v = mine.get(w)
            ok[w] = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 and abs(round(v, 2) - v) < 1e-9
        for k in mine:
            if not ok[k]:
                err(f"/model_options/{family}/{k}", f"invalid value for {k}")
            elif family == "suno" and k != "custom_mode" and custom is not True:
                err(f"/model_options/suno/{k}", f"{k} requires custom_mode: true")
        if body.get("instrumental") is True and lyrics is not None:
            err("/lyrics", "omit lyrics when instrumental is true")
        if family == "suno" and lyrics and custom is not True:
            err("/lyrics", "lyrics require model_options.suno.custom_mode: true")
        if custom is True and body.get("instrumental") is not True and (not lyrics or not title):
            err("/title" if lyrics else "/lyrics", "a custom-mode vocal song needs a non-empty title and lyrics")
        ra = body.get("reference_audio") if ref else None
        if ref and isinstance(ra, dict) and ra.get("type") == "artifact" and isinstance(ra.get("artifact_id"), str):
            if ra["artifact_id"] not in self.artifacts:
                if self.unknown_artifact_status == 404:
                    raise ApiError(404, "not_found", f"artifact {ra['artifact_id']} not found", "/reference_audio/artifact_id")
                err("/reference_audio/artifact_id", f"unknown artifact {ra['artifact_id']}")
        elif ref and not (isinstance(ra, dict) and ra.get("type") == "url" and str(ra.get("url")).startswith("https://")
                          and len(ra) == 2):
            err("/reference_audio", 'must be {"type":"artifact","artifact_id":...} or {"type":"url","url":"https://..."}')
        if errs:
            raise self.invalid(errs)
        return model

    def create(self, req: Request, kind: str) -> Response:
        try:
            body = json.loads(req.body)
        except ValueError:
            raise self.invalid([{"field": "", "message": "body is not valid JSON"}]) from None
        key = req.headers.get("idempotency-key")
        fingerprint = hashlib.sha256(f"{kind} {json.dumps(body, sort_keys=True)}".encode()).hexdigest()
        with self.lock:
            now = self.now()
            seen = self.idempotency.get(key) if key else None
            if seen and now - seen[2] < DAY:
                if seen[0] != fingerprint:
                    raise ApiError(409, "idempotency_conflict", "Idempotency-Key was used with a different request body")
                self.idempotent_replays += 1
                return Response(self.replay_status, self.envelope(self.tasks[seen[1]]))
            model = self.validate(body, kind)
            if self.faults.payment_required:
                raise ApiError(402, "insufficient_balance", "wallet balance is too low for this task")
            family, price, nclips = MODELS[model]
            latency = self.draw_latency()
            tid = self._new_id("task")
            clips = [self._new_id("art") for _ in range(nclips)]
            task = {"task_id": tid, "capability": CAPABILITY[kind], "model": body.get("model", "auto"),
                    "resolved_model": model, "input": body, "price": price, "created": now,
                    "start": now + 0.2 * latency, "end": now + latency, "fail": self.draw_failure(),
                    "canceled": None, "clips": clips}
            for i, art in enumerate(clips):
                self.artifacts[art] = {"task": tid, "seconds": self.audio_seconds or self.song_seconds,
                                       "seed": self.rng.randrange(2**31), "index": i}
            self.tasks[tid] = task
            if key:
                self.idempotency[key] = (fingerprint, tid, now)
            self.count_create()  # may drop the connection: the task exists and is charged
            env = self.envelope(task)
        if self.minimal_create:
            env = {k: env[k] for k in ("object", "task_id", "status", "model", "created_at")}
        return Response(202, env)

    # -- tasks -----------------------------------------------------------------------------------
    def status(self, t: dict[str, Any], now: float | None = None) -> str:
        now = self.now() if now is None else now
        if t["canceled"] is not None:
            return "canceled"
        if now >= t["end"]:
            return "failed" if t["fail"] else "succeeded"
        if now < t["start"]:
            return "queued"
        steps = ("running", *self.extra_statuses)
        return steps[min(len(steps) - 1, int((now - t["start"]) / max(1e-9, t["end"] - t["start"]) * len(steps)))]

    def envelope(self, t: dict[str, Any]) -> dict[str, Any]:
        now, inp, tid = self.now(), t["input"], t["task_id"]
        st = self.status(t, now)
        done = t["canceled"] if st == "canceled" else (t["end"] if st in TERMINAL else None)
        refunded = t["price"] if st in ("failed", "canceled") else 0.0
        net = t["price"] - refunded
        pct = 100 if st == "succeeded" else 0 if st != "running" else \
            min(99, int(100 * (now - t["start"]) / max(1e-9, t["end"] - t["start"])))
        clips = [{"index": self.artifacts[a]["index"], "title": inp.get("title") or inp["prompt"][:80],
                  "lyrics": inp.get("lyrics"), "audio": {"url": self.signed(f"/files/{a}.mp3"), "artifact_id": a,
                  "mime_type": "audio/mpeg", "duration_seconds": self.artifacts[a]["seconds"]}} for a in t["clips"]]
        usage = dict.fromkeys(("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
                               "reasoning_tokens", "image_count", "image_pixels", "video_seconds", "characters"), 0)
        usage.update(audio_seconds=sum(c["audio"]["duration_seconds"] for c in clips) if st == "succeeded" else 0,
                     credits=cr(net), credits_usd_reference=cr(net / 1000),
                     lines=[{"meter": "music_task", "quantity": 1, "unit": "task", "billed_amount_credits": cr(net),
                             "billed_amount_credits_usd_reference": cr(net / 1000)}])
        billing = {"charged_credits": cr(t["price"]), "refunded_credits": cr(refunded),
                   "charged_credits_usd_reference": cr(t["price"] / 1000),
                   "refunded_credits_usd_reference": cr(refunded / 1000), "currency": "USD"}
        env = {"object": "task", "task_id": tid, "status": st, "capability": t["capability"], "model": t["model"],
               "resolved_model": t["resolved_model"], "metadata": inp.get("metadata") or {}, "input": inp,
               "progress": {"percent": pct, "stage": "generating" if st == "running" else st,
                            "message": "Generating audio" if st == "running" else None},
               "output": {"clips": clips} if st == "succeeded" else None, "warnings": [], "usage": usage,
               "billing": billing, "error": {"code": "generation_failed", "message": "The model failed to generate "
                                             "audio; the charge was refunded", "retryable": True} if st == "failed" else None,
               "callback": {"url": inp.get("callback_url"), "status": "pending" if inp.get("callback_url") else None,
                            "attempt_count": 0, "delivered_at": None, "last_error": None},
               "created_at": self.iso(t["created"]), "completed_at": self.iso(done),
               "started_at": self.iso(t["start"]) if (now if done is None else done) >= t["start"] else None,
               "cancel_requested_at": self.iso(t["canceled"]),
               "links": {"self": f"{self.url}/v1/tasks/{tid}", "cancel": f"{self.url}/v1/tasks/{tid}/cancel"}}
        if self.skill_fields:
            billing["net_charged_credits"] = cr(net)
            env["deadline_at"] = self.iso(t["created"] + 3600.0)
        return env

    def _task(self, req: Request) -> dict[str, Any]:
        if req.params["id"] not in self.tasks or self.past_retention(self.tasks[req.params["id"]]["created"]):
            raise ApiError(404, "not_found", f"task {req.params['id']} not found")
        return self.tasks[req.params["id"]]

    def get_task(self, req: Request) -> Response:
        return Response(200, self.envelope(self._task(req)))

    def cancel(self, req: Request) -> Response:
        with self.lock:
            t = self._task(req)
            st = self.status(t)
            if st in TERMINAL and self.cancel_conflict == "terminal":
                raise ApiError(409, "task_not_cancelable", f"task is already {st}")
            if st == "running" and self.cancel_conflict == "running":
                raise ApiError(409, "task_not_cancelable", "the task is already running and cannot be canceled")
            if st not in TERMINAL:
                t["canceled"] = self.now()
            return Response(200, self.envelope(t))

    def list_tasks(self, req: Request) -> Response:
        q = {k: v[-1] for k, v in req.query.items()}
        limit = int(q.get("limit", "20")) if q.get("limit", "20").isdigit() else 0
        if not 1 <= limit <= 100:
            raise self.invalid([{"field": "limit", "message": "limit must be an integer from 1 to 100"}])
        if q.get("status", "queued") not in STATUSES or q.get("order", "desc") not in ("asc", "desc"):
            raise self.invalid([{"field": "status", "message": "unknown status or order"}])
        rows = list(self.tasks.values())
        rows = rows if q.get("order") == "asc" else rows[::-1]
        if "status" in q:
            rows = [t for t in rows if self.status(t) == q["status"]]
        if "capability" in q:
            rows = [t for t in rows if t["capability"] == q["capability"]]
        for bound, keep in (("created_after", lambda a, b: a > b), ("created_before", lambda a, b: a < b)):
            if bound in q:
                try:
                    at = datetime.fromisoformat(q[bound].replace("Z", "+00:00")).timestamp() - self.unix0
                except ValueError:
                    raise self.invalid([{"field": bound, "message": "must be an ISO 8601 time"}]) from None
                rows = [t for t in rows if keep(t["created"], at)]
        if "cursor" in q:
            ids = [t["task_id"] for t in rows]
            if q["cursor"][4:] not in ids:
                raise self.invalid([{"field": "cursor", "message": "unknown cursor"}])
            rows = rows[ids.index(q["cursor"][4:]) + 1:]
        page, more = rows[:limit], len(rows) > limit
        expand = set(q.get("expand", "").split(","))
        keep = {"object", "task_id", "status", "capability", "model", "resolved_model", "created_at",
                "completed_at", "progress", "error"} | expand
        data = [{k: v for k, v in self.envelope(t).items() if k in keep or "all" in expand} for t in page]
        return Response(200, {"object": "list", "data": data, "has_more": more,
                              "next_cursor": f"cur_{page[-1]['task_id']}" if more else None})

    # -- uploads and files -----------------------------------------------------------------------
    def upload(self, req: Request) -> Response:
        ctype = req.headers.get("content-type", "")
        if len(req.body) > self.max_upload_bytes + 65536:
            raise ApiError(413, "payload_too_large", f"file is larger than {self.max_upload_bytes} bytes")
        msg = BytesParser(policy=policy.HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + req.body)
        parts = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()} \
            if msg.is_multipart() else {}
        f = parts.get("file")
        if f is None or not f.get_filename():
            raise self.invalid([{"field": "file", "message": "multipart field 'file' is required"}])
        data = f.get_payload(decode=True) or b""
        if len(data) > self.max_upload_bytes:
            raise ApiError(413, "payload_too_large", f"file is larger than {self.max_upload_bytes} bytes")
        text = {k: (parts[k].get_payload(decode=True) or b"").decode(errors="replace") for k in ("purpose", "media_type", "metadata")
                if k in parts}
        try:
            meta = json.loads(text.get("metadata", "{}"))
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise self.invalid([{"field": "metadata", "message": "metadata must be a JSON object string"}])
        mime = f.get_content_type()
        art = self._new_id("art")
        with self.lock:
            self.artifacts[art] = {"data": data, "mime": mime, "created": self.now()}
        return Response(200, {"object": "artifact", "artifact_id": art, "url": self.signed(f"/files/{art}"),
                              "purpose": text.get("purpose") or "media_input",
                              "media_type": text.get("media_type") or mime.split("/")[0], "mime_type": mime,
                              "filename": f.get_filename(), "size_bytes": len(data), "metadata": meta,
                              "created_at": self.iso(self.now())})

    def file(self, req: Request) -> Response:
        a = self.artifacts.get(req.params["id"])
        if a is None or ("task" in a and self.status(self.tasks[a["task"]]) != "succeeded"):
            raise ApiError(404, "not_found", "no such file")
        if self.expired(req):
            raise ApiError(403, "forbidden", "this signed URL has expired")
        if "data" in a:
            return Response(200, a["data"], content_type=a["mime"])
        return self.download_body("mp3", a["seconds"], a["seed"])
