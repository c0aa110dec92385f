"""Verbatik: ``POST /api/v1/text-to-music`` (Sonauto v2 behind it).

Follows the seed page and CONTRACTS.md section 2: the input combination rules are checked before
any request (prompt / prompt+tags / prompt+lyrics / tags+lyrics; never lyrics or tags alone, never
all three); ``num_songs`` 1-2; ``output_format`` (we ask for lossless FLAC unless told otherwise);
``output_bit_rate`` only for mp3/m4a; ``bpm`` a number or "auto". No polling endpoint is documented:
the create answers with ``tracks[]`` whose status is ``ready``, ``failed`` or ``pending``. Pending
tracks are waited for on their ``audio_url`` (404 until ready). There is no duration field (Sonauto
v2 picks the length), so cost is $0.20 per minute of what comes back, per song.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import ProviderError
from ..model import TrackSpec
from ..yamlsrc import Path_
from .catalog import estimate_cost, price_for
from .hosted import HostedProvider, JobStatus, Submitted
from .rules import BOOL, Rule, between, check_options, one_of

RULES: dict[str, Rule] = {
    "prompt_strength": between(1.4, 3.1),
    "balance_strength": between(0, 1),
    "num_songs": (lambda v: v in (1, 2) and not isinstance(v, bool), "1 or 2"),
    "output_format": one_of("flac", "mp3", "wav", "ogg", "m4a"),
    "output_bit_rate": one_of(128, 192, 256, 320),
    "store_audio": BOOL,
    "name": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
}
ALLOWED = {frozenset({"prompt"}), frozenset({"prompt", "tags"}), frozenset({"prompt", "lyrics"}),
           frozenset({"tags", "lyrics"})}


class VerbatikProvider(HostedProvider):
    type = "verbatik"

    def check_track(self, spec: TrackSpec) -> list[tuple[Path_, str]]:
        problems: list[tuple[Path_, str]] = []
        given = {k for k, v in (("prompt", spec.prompt), ("tags", spec.tags), ("lyrics", spec.lyrics)) if v}
        if frozenset(given) not in ALLOWED:
            what = " + ".join(sorted(given)) or "nothing"
            problems.append((("prompt",), f"Verbatik does not accept {what}: give prompt alone, prompt + tags, "
                                           "prompt + lyrics, or tags + lyrics (never all three)"))
        if spec.instrumental and spec.lyrics:
            problems.append((("instrumental",), "Verbatik makes a song with vocals when lyrics are given: "
                                                "drop the lyrics or set instrumental: false"))
        problems += check_options("Verbatik", spec.options, RULES)
        return problems

    async def submit(self, spec: TrackSpec, gen_key: str) -> Submitted:
        opts = dict(spec.options)
        body: dict[str, Any] = {"seed": spec.seed, "output_format": opts.pop("output_format", "flac"),
                                "bpm": spec.bpm if spec.bpm else "auto", "name": opts.pop("name", spec.id)}
        if spec.prompt:
            body["prompt"] = spec.prompt
        if spec.tags:
            body["tags"] = list(spec.tags)
        if spec.lyrics:  # without lyrics the song is instrumental
            body["lyrics"] = spec.lyrics
        if "output_bit_rate" in opts:
            opts["output_bit_rate"] = str(opts["output_bit_rate"])
        body.update(opts)
        response = await self.http.request("POST", "/api/v1/text-to-music", create=True, json=body)
        data = response.json()
        tracks = data.get("tracks") if isinstance(data, dict) else None
        if not tracks:
            raise ProviderError(f"{self.name}: the answer has no tracks: {str(data)[:200]}")
        job = {"duration": spec.duration,
               "tracks": [{"id": t.get("id"), "audio_url": t.get("audio_url"), "status": t.get("status"),
                           "duration": t.get("duration"), "error": t.get("error")} for t in tracks]}
        job_id = ",".join(str(t.get("id")) for t in tracks)
        pending = any(t.get("status") == "pending" for t in tracks)
        return Submitted(job_id, job, status=None if pending else self._status(job, spec.model))

    def _status(self, job: Mapping[str, Any], model: str) -> JobStatus:
        tracks = job["tracks"]
        failed = [t for t in tracks if t.get("status") == "failed"]
        if failed:
            return JobStatus("failed", error=str(failed[0].get("error") or "generation failed"), cost_usd=0.0)
        urls = [t["audio_url"] for t in tracks if t.get("audio_url")]
        seconds = sum(float(t.get("duration") or job["duration"]) for t in tracks)
        price = self.config.price or price_for(self.type, model)
        return JobStatus("done", urls, cost_usd=estimate_cost(price, seconds, 1))

    async def poll(self, job: Mapping[str, Any]) -> JobStatus:
        """No status endpoint exists: a pending track is ready once its audio URL serves the file."""
        for track in job["tracks"]:
            if track.get("status") == "pending":
                response = await self.http.request("GET", track["audio_url"], auth=False, ok=(404,))
                if response.status_code == 404:
                    return JobStatus("pending")
        ready = {**job, "tracks": [{**t, "status": "ready" if t.get("status") == "pending" else t.get("status")}
                                   for t in job["tracks"]]}
        return self._status(ready, str(job.get("model", "")))
