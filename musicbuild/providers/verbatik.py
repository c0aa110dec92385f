"""Verbatik: ``POST /api/v1/text-to-music`` (Sonauto v2 behind it).

Follows the seed page and CONTRACTS.md section 2: the input combination rules are checked before
any request (prompt / prompt+tags / prompt+lyrics / tags+lyrics; never lyrics or tags alone, never
all three); ``num_songs`` 1-2; ``output_format`` (we ask for lossless FLAC unless told otherwise);
``output_bit_rate`` only for mp3/m4a; ``bpm`` a number or "auto". No polling endpoint is documented:
the create answers with ``tracks[]`` whose status is ``ready``, ``failed`` or ``pending``. We send
``store_audio: true`` so the audio URLs outlive a crash (the journal keeps them); a pending track
is waited for on its ``audio_url`` (404 until ready, fetched without the API key: a 403/404 there
is the file host's, never an authentication failure). A track without a URL, or whose URL expired,
cannot be collected. What was delivered is kept when another song of the job failed. There is no
duration field (Sonauto v2 picks the length, ~95 s): cost is $0.20 per minute of the audio that
came back (the track's ``duration`` when given, else measured), per delivered song.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import ProviderError
from ..model import TrackSpec
from ..yamlsrc import Path_
from .hosted import MAX_DOWNLOAD_BYTES, HostedProvider, JobStatus, Submitted
from .http import json_body
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fetched: dict[str, bytes] = {}  # audio a poll already downloaded, until it is collected

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

    async def submit(self, spec: TrackSpec, key: str | None) -> Submitted:
        opts = dict(spec.options)
        body: dict[str, Any] = {"seed": spec.seed, "output_format": opts.pop("output_format", "flac"),
                                "bpm": spec.bpm if spec.bpm else "auto", "name": opts.pop("name", spec.id),
                                "store_audio": opts.pop("store_audio", True)}
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
        data = json_body(response, self.name)
        tracks = data.get("tracks") if isinstance(data, dict) else None
        if not isinstance(tracks, list) or not tracks or not all(isinstance(t, dict) and t.get("id") for t in tracks):
            raise ProviderError(f"{self.name}: the answer has no tracks: {str(data)[:200]}")
        job = {"songs": int(spec.options.get("num_songs", 1)), "tracks": [_track(t) for t in tracks]}
        job_id = ",".join(str(t["id"]) for t in tracks)
        status = self._status(job)
        return Submitted(job_id, job, status=None if status.state == "pending" else status)

    def _status(self, job: Mapping[str, Any]) -> JobStatus:
        tracks = job["tracks"]
        if any(t["status"] == "pending" for t in tracks):
            return JobStatus("pending", poll=dict(job))
        ready = [t for t in tracks if t["status"] == "ready"]
        errors = [f"song {i + 1}: {t.get('error') or t['status']}" for i, t in enumerate(tracks) if t["status"] != "ready"]
        expected = max(int(job.get("songs") or 1), len(tracks))
        if not ready:
            return JobStatus("failed", error="; ".join(errors) or "generation failed", charged_usd=0.0)
        seconds = [t.get("duration") for t in ready]
        known = all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in seconds)
        partial = {"expected": expected, "delivered": len(ready), "errors": errors} if len(ready) < expected else None
        return JobStatus("done", [t["audio_url"] for t in ready], poll=dict(job), partial=partial,
                         clip_seconds=[float(s) for s in seconds] if known else None,  # type: ignore[arg-type]
                         prefetched={t["audio_url"]: self._fetched.pop(t["audio_url"])
                                     for t in ready if t["audio_url"] in self._fetched})

    async def poll(self, job: Mapping[str, Any]) -> JobStatus:
        """No status endpoint exists: a pending track is ready once its audio URL serves the file."""
        tracks = [dict(t) for t in job["tracks"]]
        for track in tracks:
            if track["status"] != "pending":
                continue
            try:
                self._fetched[track["audio_url"]] = await self.http.download(track["audio_url"], MAX_DOWNLOAD_BYTES)
                track["status"] = "ready"
            except ProviderError as exc:
                if exc.status == 404 and "fail" in exc.detail.lower():  # "Track generation failed" [inf]
                    track.update(status="failed", error=exc.message)
                elif exc.status in (403, 410):
                    track.update(status="lost", error="its audio URL expired before the song was ready")
                elif exc.status != 404:  # 404: still being generated
                    raise
        return self._status({**job, "tracks": tracks})


def _track(t: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a returned song the journal keeps; a song without a URL cannot be collected."""
    status = str(t.get("status") or ("ready" if t.get("audio_url") else "pending")).lower()
    if status not in ("ready", "failed", "pending"):
        status = "pending"  # a state newer than the docs: still being made
    url = t.get("audio_url")
    out = {"id": str(t.get("id")), "status": status, "audio_url": url if isinstance(url, str) and url else None,
           "duration": t.get("duration"), "error": t.get("error")}
    if status in ("ready", "pending") and out["audio_url"] is None:
        out.update(status="lost", error=f"the service gave no audio URL for a {status} song")
    return out
