"""The AIgateway emulator, driven with plain httpx (no musicbuild code)."""
from __future__ import annotations

import io
import time
from typing import Any, Iterator

import httpx
import pytest
import soundfile as sf

from tests.emulators.base import serving
from tests.emulators.aigateway import AIgatewayEmulator

KEY = {"Authorization": "Bearer test-key"}
TERMINAL = ("completed", "failed", "cancelled")


def serve(**kw: Any) -> Iterator[tuple[AIgatewayEmulator, httpx.Client]]:
    return serving(AIgatewayEmulator, **kw)


@pytest.fixture(scope="module")
def anon() -> Iterator[httpx.Client]:
    """A client without the API key (media URLs are public)."""
    with httpx.Client(timeout=5) as client:
        yield client


def wait(emu: AIgatewayEmulator, client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = client.get(f"/v1/jobs/{job_id}")
        if r.status_code == 200 and r.json()["status"] in TERMINAL:
            return r.json()
        assert r.status_code in (200, 304)
        emu.sleep(3.2)
    raise AssertionError("job never finished")


def create(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/audio/music", json={"prompt": "lo-fi piano with light rain", **body})


def decode(data: bytes) -> float:
    return sf.info(io.BytesIO(data)).duration


@pytest.mark.parametrize("fmt", ["mp3", "wav"])
def test_create_poll_download(fmt: str, anon: httpx.Client) -> None:
    with serve(audio_seconds=None) as (emu, client):
        r = create(client, model="sony-ai/mmaudio-v2-text-to-audio", duration=15, format=fmt, lyrics="la la")
        assert r.status_code == 202
        created = r.json()
        assert set(created) == {"id", "status", "model", "created"} and created["status"] == "queued"
        job = wait(emu, client, created["id"])
        assert job["status"] == "completed" and job["result"]["duration"] == 15
        audio = anon.get(job["result"]["url"])  # public, no key
        assert audio.status_code == 200 and decode(audio.content) == pytest.approx(15.0, abs=0.1)
        rec = emu.jobs[created["id"]]
        assert (rec.prompt, rec.model, rec.duration, rec.format, rec.lyrics) == (
            "lo-fi piano with light rain", "sony-ai/mmaudio-v2-text-to-audio", 15, fmt, "la la")
        assert emu.creates == 1 and emu.cost_usd == pytest.approx(0.0010 * 15)


def test_the_bill_and_result_duration_follow_the_delivered_audio(anon: httpx.Client) -> None:
    # sonauto/v2 has no duration (fal's sonauto v2 takes none): ~95 s whatever is asked; a shortened
    # delivery (audio_seconds) is what is reported and billed
    with serve(audio_seconds=None) as (emu, client):
        job = wait(emu, client, create(client, model="sonauto/v2/text-to-music", duration=15).json()["id"])
        assert job["result"]["duration"] == 95 and emu.cost_usd == pytest.approx(0.0013 * 95)
    with serve(audio_seconds=2) as (emu, client):
        job = wait(emu, client, create(client, model="sonauto/v2/text-to-music", duration=15).json()["id"])
        assert job["result"]["duration"] == 2 and emu.cost_usd == pytest.approx(0.0013 * 2)
        assert decode(anon.get(job["result"]["url"]).content) == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("shape,keys", [
    ("model_page", {"id", "status", "model", "created"}),
    ("async_jobs", {"id", "status", "object"}),
    ("sdk", {"id", "status", "modality", "model", "created_at", "updated_at"}),
    ("wrapped", {"data"}),
])
def test_create_shapes(shape: str, keys: set[str]) -> None:
    with serve(create_shape=shape) as (emu, client):
        r = create(client)
        body = r.json()["data"] if shape == "wrapped" else r.json()
        assert r.status_code == 202 and set(r.json()) == keys and body["status"] == "queued"
        assert body["id"].startswith("job_")


@pytest.mark.parametrize("variant", ["result.url", "result.file_url", "result_url", "all"])
def test_url_variants(variant: str, anon: httpx.Client) -> None:
    with serve(url_variant=variant, create_shape="sdk") as (emu, client):
        job = wait(emu, client, create(client, duration=4).json()["id"])
        result = job.get("result", {})
        urls = {"result.url": result.get("url"), "result.file_url": result.get("file_url"),
                "result_url": job.get("result_url")}
        present = {k for k, v in urls.items() if v}
        assert present == ({variant} if variant != "all" else set(urls))
        assert len({urls[k] for k in present}) == 1
        assert anon.get(urls[present.pop()]).status_code == 200


@pytest.mark.parametrize("variant,middle", [("docs", "running"), ("sdk", "processing")])
def test_status_progression(variant: str, middle: str) -> None:
    with serve(status_variant=variant, latency=300.0, poll_interval=0) as (emu, client):
        job_id = create(client).json()["id"]
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
        emu.sleep(100)
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == middle
        assert wait(emu, client, job_id)["status"] == "completed"


@pytest.mark.parametrize("variant", ["object", "string"])
def test_failed_jobs_are_not_charged(variant: str) -> None:
    with serve(error_variant=variant) as (emu, client):
        emu.faults.fail_jobs = 1.0
        job = wait(emu, client, create(client).json()["id"])
        assert job["status"] == "failed" and "result" not in job
        if variant == "object":
            assert set(job["error"]) == {"code", "message"}
        else:
            assert isinstance(job["error"], str) and job["error"]
        assert emu.cost_usd == 0 and all(j.failed for j in emu.jobs.values())


def test_validation_and_clamping(anon: httpx.Client) -> None:
    with serve(audio_seconds=None) as (emu, client):
        for body, param in [({}, "prompt"), ({"prompt": ""}, "prompt"), ({"prompt": "x", "format": "ogg"}, "format"),
                            ({"prompt": "x", "duration": "30"}, "duration"), ({"prompt": "x", "lyrics": 3}, "lyrics")]:
            r = client.post("/v1/audio/music", json=body)
            assert r.status_code == 400
            assert r.json() == {"error": {"message": r.json()["error"]["message"], "type": "invalid_request_error",
                                          "code": 400, "param": param}}
        assert client.post("/v1/audio/music", content=b"not json").status_code == 400
        for model, asked, got in [("sonauto/v2/text-to-music", 500, 95), ("sony-ai/mmaudio-v2-text-to-audio", 100, 30),
                                  ("sony-ai/mmaudio-v2-text-to-audio", 0, 1), ("acme/new-model", 12.5, 12.5)]:
            r = create(client, model=model, duration=asked, is_instrumental=True, lyrics_optimizer=False,
                       webhook_url="https://example.com/hook")
            assert r.status_code == 202 and emu.jobs[r.json()["id"]].duration == got
        auto = create(client).json()
        assert emu.jobs[auto["id"]].model == "auto/music" and auto["model"] == "sonauto/v2/text-to-music"
        mm = wait(emu, client, create(client, model="sony-ai/mmaudio-v2-text-to-audio", duration=2).json()["id"])
        assert decode(anon.get(mm["result"]["url"]).content) == pytest.approx(2.0, abs=0.1)


def test_known_models_and_ignored_format() -> None:
    with serve(known_models={"sonauto/v2/text-to-music"}, ignore_format=True) as (emu, client):
        r = create(client, model="nobody/nothing")
        assert r.status_code == 404 and r.json()["error"]["type"] == "model_not_found"
        assert create(client).status_code == 202  # auto/music is always known
        job = wait(emu, client, create(client, model="sonauto/v2/text-to-music", format="flac").json()["id"])
        assert job["result"]["url"].split("?")[0].endswith(".mp3")
    with serve(error_types="model_page") as (emu, client):
        assert client.get("/v1/jobs/job_missing").json()["error"]["type"] == "not_found"


def test_auth_payment_and_error_types(anon: httpx.Client) -> None:
    with serve() as (emu, client):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = httpx.post(f"{emu.url}/v1/audio/music", json={"prompt": "x"}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        emu.faults.payment_required = True
        r = create(client)
        assert r.status_code == 402 and r.json()["error"] == {
            "message": r.json()["error"]["message"], "type": "insufficient_credits", "code": 402, "param": None}
        assert emu.jobs == {} and emu.creates == 0
        emu.faults.server_errors = 1
        r = client.get("/v1/jobs/job_missing")
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        r = client.get("/v1/jobs/job_missing", headers={"X-Request-Id": "req-1"})
        assert r.status_code == 404 and r.headers["X-Request-Id"] == "req-1"
    with serve(error_types="reference") as (emu, client):
        emu.faults.payment_required = True
        assert create(client).json()["error"]["type"] == "budget_exceeded"
    with serve(error_types="pages") as (emu, client):
        assert anon.get(f"{emu.url}/v1/jobs/x").json()["error"]["type"] == "invalid_key"
    with serve(error_types={402: "wallet_empty"}) as (emu, client):
        emu.faults.payment_required = True
        assert create(client).json()["error"]["type"] == "wallet_empty"


def test_rate_limit() -> None:
    with serve(rpm=3, time_scale=0.01) as (emu, client):
        assert [client.get("/v1/jobs/none").status_code for _ in range(3)] == [404, 404, 404]
        r = client.get("/v1/jobs/none")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error" and r.json()["error"]["code"] == 429
        assert emu.requests_in_any_window() == 4


def test_fast_polls_get_304() -> None:
    with serve(time_scale=0.01, latency=1000.0) as (emu, client):
        job_id = create(client).json()["id"]
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        fast = client.get(f"/v1/jobs/{job_id}")
        assert fast.status_code == 304 and fast.content == b""
        emu.sleep(3.5)
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        assert emu.jobs[job_id].polls == 3


def test_url_expiry_and_fresh_url(anon: httpx.Client) -> None:
    with serve(url_ttl=60.0) as (emu, client):
        job = wait(emu, client, create(client).json()["id"])
        emu.sleep(70)
        stale = anon.get(job["result"]["url"])
        assert stale.status_code == 403 and stale.json()["error"]["code"] == 403
        fresh = wait(emu, client, job["id"])["result"]["url"]
        assert fresh != job["result"]["url"] and decode(anon.get(fresh).content) > 0
        no_sig = anon.get(fresh.split("?")[0])
        assert no_sig.status_code == 403


def test_drop_after_create_still_runs() -> None:
    with serve() as (emu, client):
        emu.faults.drop_after_create = 1
        with pytest.raises(httpx.TransportError):
            create(client)
        assert emu.creates == 1 and len(emu.jobs) == 1
        (job_id,) = emu.jobs
        assert wait(emu, client, job_id)["status"] == "completed"
        assert create(client).status_code == 202


def test_cancel() -> None:
    with serve(latency=1000.0, poll_interval=0) as (emu, client):
        a, b, c = (create(client).json()["id"] for _ in range(3))
        assert client.delete(f"/v1/jobs/{a}").json()["status"] == "cancelled"
        assert client.post(f"/v1/jobs/{b}/cancel").json()["status"] == "cancelled"
        assert client.get(f"/v1/jobs/{a}").json()["status"] == "cancelled"
        assert emu.jobs[a].cancelled and client.delete("/v1/jobs/job_missing").status_code == 404
        emu.sleep(150)
        r = client.delete(f"/v1/jobs/{c}")  # running: only queued jobs can be cancelled
        assert r.status_code == 200 and r.json()["status"] == "running"
        emu.cancel_running = True
        assert client.delete(f"/v1/jobs/{c}").json()["status"] == "cancelled"
    with serve() as (emu, client):
        job = wait(emu, client, create(client).json()["id"])
        r = client.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 200 and r.json()["status"] == "completed"
        assert emu.cost_usd > 0
