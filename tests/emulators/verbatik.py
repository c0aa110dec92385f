"""Verbatik ``POST /api/v1/text-to-music`` (Sonauto v2 behind it), emulated on 127.0.0.1.

Where each behaviour comes from (``/work/shared/providers/``; tags as in CONTRACTS.md):

- Route, Bearer auth, ``Content-Type: application/json`` required, the field table with its
  defaults, the input-combination table, the ``pending|ready|failed`` track statuses, "$0.20 per
  minute ... 2 songs doubles the cost", error list 400/401/402/429/500: seed ``002_*.txt`` and
  CONTRACTS 2 [seed][doc]. The status for a wrong Content-Type is not documented: 415 by default,
  ``bad_content_type_status=400`` for the other plausible answer [inf].
- ``{"success": true, "tracks": [{id, name, audio_url, seed, tags, ...}]}``, one track per song:
  CONTRACTS 2 "Response" [doc]. ``status``, ``duration`` and ``error`` on tracks are [inf] (the
  example is not published in full).
- No polling endpoint is documented (CONTRACTS 2), so by default the create call BLOCKS for the job
  latency and answers ``ready``/``failed`` tracks. ``respond_pending=True`` is the undocumented async
  variant: ``pending`` tracks whose ``audio_url`` answers 404 until the latency has passed [inf].
- ``store_audio``: persistent URL [seed]; otherwise the URL expires after ``url_ttl`` virtual seconds
  (403 afterwards; the expiry itself is an unknown in CONTRACTS 2) [inf]. Served under
  ``/storage/music/{id}.{fmt}`` (docs show ``https://storage.verbatik.com/music/....mp3``) [doc].
- Song length: Sonauto v2 songs are ~1:35 (CONTRACTS 2b pricing note) -> ``song_seconds=95`` unless
  the base's ``audio_seconds`` overrides it [inf]. Failed tracks are not billed (unknown) [inf].
- Error bodies differ between doc generations and are reproduced as documented (CONTRACTS 2
  "Errors"): 401 ``{"error":{"code":"authentication_failed",...}}``, 402
  ``{"error":"Insufficient balance","required":N,"available":N}`` (cents), 429
  ``{"error":"Too Many Requests","message":"Rate limit exceeded"}`` + ``Retry-After`` (agent skill),
  500 ``{"error":"Internal server error"}``. Other 400s use ``{"error", "message"}`` [inf].
- Unknowns made switches (CONTRACTS 2 "Unknowns"): ``partial_failure`` (with ``num_songs: 2`` the second
  song fails while the first is delivered; only the delivered song is billed [inf]: "whether a failed
  track is refunded" and "whether billing is per track" are unknown); ``null_urls`` "ready" (a ready
  song's ``audio_url`` is null unless ``store_audio`` was sent: "what audio_url holds when
  store_audio=false" is unknown) | "pending" (pending songs carry no URL yet); pending songs that
  later fail answer 404 "Track generation failed" on their URL forever.
- ``X-RateLimit-Limit/-Remaining/-Reset`` on every response [doc]. The limit is ``rpm`` per 60
  virtual seconds (600 when ``rpm`` is unset: "100 requests per 10-second window"); ``Reset`` is a
  Unix time on the emulator's VIRTUAL clock (``unix0 + now()``), equal to wall time at scale 1.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from http import HTTPStatus
from typing import Any

from .base import Emulator, Request, Response, public

FORMATS = ("flac", "mp3", "wav", "ogg", "m4a")
BIT_RATES = ("128", "192", "256", "320")
USD_PER_MINUTE = 0.20
# (prompt, tags, lyrics) present -> allowed, per the seed's "Input Combination Rules" table
COMBINATIONS = {
    (True, False, False): True, (True, True, False): True, (True, False, True): True,
    (False, True, True): True, (False, False, True): False, (False, True, False): False,
    (True, True, True): False, (False, False, False): False,
}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class VerbatikEmulator(Emulator):
    name = "verbatik"

    def __init__(self, *, respond_pending: bool = False, song_seconds: float = 95.0,
                 bad_content_type_status: int = 415, partial_failure: bool = False, null_urls: str | None = None,
                 **kwargs: Any) -> None:
        assert null_urls in (None, "ready", "pending"), null_urls
        self.respond_pending = respond_pending
        self.partial_failure, self.null_urls = partial_failure, null_urls
        self.song_seconds = song_seconds
        self.bad_content_type_status = bad_content_type_status
        self.cost_usd = 0.0
        self.tracks: dict[str, dict[str, Any]] = {}  # id -> stored track
        self.bodies: list[dict[str, Any]] = []  # accepted create bodies, in order
        self.unix0 = time.time()
        super().__init__(**kwargs)

    def routes(self) -> None:
        self.route("POST", "/api/v1/text-to-music", self.create)
        self.route("GET", r"/storage/music/(?P<id>[0-9a-f-]{36})\.(?P<fmt>[a-z0-9]+)", public(self.audio))

    # -- errors and headers --------------------------------------------------------------------
    def error_body(self, status: int, message: str, code: str | None = None) -> Any:
        if status == 401:
            return {"error": {"code": "authentication_failed", "message": "Invalid API key"}}
        if status == 402:
            return {"error": "Insufficient balance", "required": 0, "available": 0}
        if status == 429:
            return {"error": "Too Many Requests", "message": "Rate limit exceeded"}
        if status == 500:
            return {"error": "Internal server error"}
        return {"error": HTTPStatus(status).phrase, "message": message}

    def _respond(self, req: Request) -> Response:
        resp = super()._respond(req)
        resp.headers.update(self.rate_limit_headers())
        return resp

    def rate_limit_headers(self) -> dict[str, str]:
        with self.lock:
            now = self.now()
            if self.rpm:
                limit, times = int(self.rpm), [t for t in self._window if t > now - 60.0]
            else:  # not limiting: report the documented 100/10 s as a per-minute figure
                limit, times = 600, [e.t for e in self.log if e.t > now - 60.0] + [now]
            reset = (min(times) + 60.0) if times else now
        return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(0, limit - len(times))),
                "X-RateLimit-Reset": str(math.ceil(self.unix0 + reset))}

    @staticmethod
    def _bad(message: str, error: str = "Validation failed") -> Response:
        return Response(400, {"error": error, "message": message})

    # -- create ----------------------------------------------------------------------------------
    def validate(self, body: Any) -> Response | None:
        if not isinstance(body, dict):
            return self._bad("Request body must be a JSON object")
        checks = {
            "prompt": (lambda v: isinstance(v, str), "must be a string"),
            "tags": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "must be an array of strings"),
            "lyrics": (lambda v: isinstance(v, str), "must be a string"),
            "seed": (lambda v: _number(v) and v == int(v), "must be an integer"),
            "prompt_strength": (_number, "must be a number"),
            "balance_strength": (_number, "must be a number"),
            "num_songs": (lambda v: _number(v) and v in (1, 2), "must be 1 or 2"),
            "output_format": (lambda v: v in FORMATS, "must be one of " + ", ".join(FORMATS)),
            "output_bit_rate": (lambda v: isinstance(v, str) and v in BIT_RATES, "must be one of \"128\", \"192\", \"256\", \"320\""),
            "bpm": (lambda v: v == "auto" or (_number(v) and v > 0), "must be a positive number or \"auto\""),
            "store_audio": (lambda v: isinstance(v, bool), "must be a boolean"),
            "name": (lambda v: isinstance(v, str), "must be a string"),
        }
        for key, (ok, msg) in checks.items():
            if body.get(key) is not None and not ok(body[key]):
                return self._bad(f"{key} {msg}")
        if body.get("output_bit_rate") is not None and body.get("output_format", "wav") not in ("mp3", "m4a"):
            return self._bad("output_bit_rate is only allowed for mp3 and m4a output")
        present = tuple(body.get(k) is not None for k in ("prompt", "tags", "lyrics"))
        if not COMBINATIONS[present]:
            msg = {(False, False, True): "lyrics must be paired with prompt or tags",
                   (False, True, False): "tags must be paired with prompt or lyrics",
                   (True, True, True): "do not provide prompt, tags and lyrics together",
                   }.get(present, "provide at least one of prompt, tags or lyrics")
            return self._bad(msg, "Invalid input combination")
        return None

    def create(self, req: Request) -> Response:
        if req.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return Response(self.bad_content_type_status,
                            {"error": "Unsupported Media Type", "message": "Content-Type must be application/json"})
        try:
            body = json.loads(req.body)
        except ValueError:
            return self._bad("Request body is not valid JSON", "Invalid JSON")
        problem = self.validate(body)
        if problem is not None:
            return problem
        n, fmt = int(body.get("num_songs", 1)), body.get("output_format") or "wav"
        seconds = self.audio_seconds or self.song_seconds
        cost = USD_PER_MINUTE * seconds / 60.0 * n  # what the balance must cover
        if self.faults.payment_required:
            return Response(402, {"error": "Insufficient balance", "required": math.ceil(cost * 100), "available": 0})
        latency, failed = self.draw_latency(), self.draw_failure()
        with self.lock:
            ready_at = self.now() + latency
            tracks = []
            for i in range(n):
                tid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
                seed = int(body["seed"]) + i if body.get("seed") is not None else self.rng.randrange(2**31)
                path = f"/storage/music/{tid}.{fmt}"
                url = f"{self.url}{path}" if body.get("store_audio") else f"{self.url}{path}?exp={ready_at + self.url_ttl:.3f}"
                name = body.get("name") or "Untitled"
                song_failed = failed or (self.partial_failure and n > 1 and i == n - 1)
                track = {"id": tid, "name": name if n == 1 else f"{name} ({i + 1})", "fmt": fmt, "seconds": seconds,
                         "seed": seed, "tags": list(body.get("tags") or []), "ready_at": ready_at,
                         "failed": song_failed, "store": bool(body.get("store_audio")), "url": url}
                self.tracks[tid] = track
                tracks.append(track)
            self.bodies.append(body)
            self.cost_usd += USD_PER_MINUTE * seconds / 60.0 * sum(1 for t in tracks if not t["failed"])
        self.count_create()  # a dropped connection still leaves the work done and billed
        if not self.respond_pending:
            self.sleep(latency)
        return Response(200, {"success": True, "tracks": [self.track_json(t) for t in tracks]})

    def track_json(self, t: dict[str, Any]) -> dict[str, Any]:
        status = "pending" if self.respond_pending else ("failed" if t["failed"] else "ready")
        no_url = status == "failed" or (self.null_urls == status and not (status == "ready" and t["store"]))
        out = {"id": t["id"], "name": t["name"], "status": status,
               "audio_url": None if no_url else t["url"], "seed": t["seed"], "tags": t["tags"],
               "duration": t["seconds"], "output_format": t["fmt"]}
        if status == "failed":
            out["error"] = "Generation failed: the model could not render this track"
        return out

    # -- audio -------------------------------------------------------------------------------------
    def audio(self, req: Request) -> Response:
        t = self.tracks.get(req.params["id"])
        if t is None or t["fmt"] != req.params["fmt"]:
            return Response(404, {"error": "Not Found", "message": "No such file"})
        if not t["store"] and self.expired(req):
            return Response(403, {"error": "Forbidden", "message": "This link has expired"})
        if self.now() < t["ready_at"]:
            return Response(404, {"error": "Not Found", "message": "Track is still being generated"})
        if t["failed"]:
            return Response(404, {"error": "Not Found", "message": "Track generation failed"})
        return self.download_body(t["fmt"], t["seconds"], t["seed"])
