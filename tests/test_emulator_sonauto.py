"""The Sonauto native emulator, driven with plain httpx (no musicbuild code)."""
from __future__ import annotations

import io
import time
from typing import Any, Iterator

import av
import httpx
import pytest
import soundfile as sf

from tests.emulators.base import serving
from tests.emulators.sonauto import SonautoEmulator

KEY = {"Authorization": "Bearer test-key"}


def serve(**kw: Any) -> Iterator[tuple[SonautoEmulator, httpx.Client]]:
    return serving(SonautoEmulator, **kw)


@pytest.fixture(scope="module")
def anon() -> Iterator[httpx.Client]:
    """A client without the API key (CDN URLs are public)."""
    with httpx.Client(timeout=5) as client:
        yield client


def status_of(r: httpx.Response) -> str:
    body = r.json()
    return body if isinstance(body, str) else body["status"]


def wait(emu: SonautoEmulator, client: httpx.Client, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = client.get(f"/v1/generations/status/{task_id}")
        assert r.status_code == 200
        if status_of(r) in ("SUCCESS", "FAILURE"):
            rec = client.get(f"/v1/generations/{task_id}")
            assert rec.status_code == 200
            return rec.json()
        emu.sleep(1)
    raise AssertionError("task never finished")


def create(client: httpx.Client, version: str = "v2", **body: Any) -> httpx.Response:
    return client.post(f"/v1/generations/{version}", json={"prompt": "upbeat synthwave about night drives", **body})


def duration(data: bytes, fmt: str) -> float:
    if fmt == "m4a":
        with av.open(io.BytesIO(data)) as container:
            return float(container.duration or 0) / av.time_base
    return sf.info(io.BytesIO(data)).duration


def test_v2_two_songs(anon: httpx.Client) -> None:
    with serve() as (emu, client):
        r = create(client, num_songs=2, output_format="mp3", output_bit_rate=192, seed=7, bpm="auto",
                   balance_strength=0.7, prompt_strength=2.3, tags=["synthwave"], align_lyrics=True,
                   webhook_url="https://example.com/hook")
        assert r.status_code == 200 and set(r.json()) == {"task_id"}
        task_id = r.json()["task_id"]
        rec = wait(emu, client, task_id)
        assert rec["id"] == task_id and len(rec["song_paths"]) == 2 and "error_message" not in rec
        assert rec["tags"] == ["synthwave"] and rec["prompt_strength"] == 2.3 and rec["lyrics"] and rec["title"]
        for url in rec["song_paths"]:
            audio = anon.get(url)
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
            assert duration(audio.content, "mp3") == pytest.approx(1.0, abs=0.1)
        assert rec["song_paths"][0] != rec["song_paths"][1]
        assert emu.creates == 1 and emu.credits_used == 150
        assert client.get("/v1/credits/balance").json() == {"num_credits": 1_000_000 - 150}


@pytest.mark.parametrize("fmt", ["ogg", "flac", "wav", "m4a"])
def test_v3_formats(fmt: str, anon: httpx.Client) -> None:
    with serve() as (emu, client):
        body = {} if fmt == "ogg" else {"output_format": fmt}  # ogg is the default
        if fmt == "m4a":
            body["output_bit_rate"] = "256"
        task_id = create(client, "v3", instrumental=True, **body).json()["task_id"]
        rec = wait(emu, client, task_id)
        assert len(rec["song_paths"]) == 1 and rec["song_paths"][0].split("?")[0].endswith(f".{fmt}")
        assert rec["lyrics"] == ""
        assert duration(anon.get(rec["song_paths"][0]).content, fmt) == pytest.approx(1.0, abs=0.1)
        assert emu.credits_used == 100 and emu.tasks[task_id].version == "v3"


def test_status_bodies_and_intermediate_statuses() -> None:
    with serve(status_body="string", latency=400.0, intermediate_statuses=("QUEUED", "PROCESSING")) as (emu, client):
        task_id = create(client).json()["task_id"]
        r = client.get(f"/v1/generations/status/{task_id}")
        assert r.json() == "QUEUED" and r.text == '"QUEUED"'
        assert client.get(f"/v1/generations/{task_id}").json()["song_paths"] is None
        emu.sleep(250)
        assert client.get(f"/v1/generations/status/{task_id}").json() == "PROCESSING"
        assert wait(emu, client, task_id)["song_paths"]
        assert client.get(f"/v1/generations/status/{task_id}").json() == "SUCCESS"
    with serve(latency=400.0) as (emu, client):
        task_id = create(client).json()["task_id"]
        assert client.get(f"/v1/generations/status/{task_id}").json() == {"status": "RECEIVED"}
        emu.sleep(250)
        assert client.get(f"/v1/generations/status/{task_id}").json() == {"status": "GENERATING"}
        assert client.get("/v1/generations/status/nope").status_code == 404


INVALID = [
    ("v3", {"prompt": "x", "seed": 1}), ("v3", {"prompt": "x", "num_songs": 1}), ("v3", {"prompt": "x", "bpm": 90}),
    ("v3", {"prompt": "x", "balance_strength": 0.5}), ("v2", {"lyrics": "la la"}), ("v2", {"tags": ["rock"]}),
    ("v2", {}), ("v2", {"prompt": ""}), ("v2", {"prompt": "x", "instrumental": True, "lyrics": "la"}),
    ("v2", {"prompt": "x", "output_format": "aac"}), ("v2", {"prompt": "x", "output_bit_rate": 192}),
    ("v2", {"prompt": "x", "output_format": "mp3", "output_bit_rate": 100}), ("v2", {"prompt": "x", "num_songs": 3}),
    ("v2", {"prompt": "x", "tags": "rock"}), ("v2", {"prompt": 5}), ("v2", {"prompt": "x", "balance_strength": 2}),
]


@pytest.mark.parametrize("version,body", INVALID)
def test_validation(version: str, body: dict[str, Any]) -> None:
    with serve() as (emu, client):
        r = client.post(f"/v1/generations/{version}", json=body)
        assert r.status_code == 400 and set(r.json()) == {"detail"} and isinstance(r.json()["detail"], str)
        assert emu.tasks == {} and emu.creates == 0


def test_combination_rules_and_error_switches() -> None:
    everything = {"prompt": "x", "tags": ["rock"], "lyrics": "la la"}
    with serve() as (emu, client):
        for body in ({"tags": ["rock"], "lyrics": "la"}, {"prompt": "", "lyrics": "la"}, {"prompt": "x", "tags": ["a"]},
                     {"prompt": "x", "instrumental": True, "tags": ["a"]}, everything):
            assert client.post("/v1/generations/v2", json=body).status_code == 200, body
        assert client.post("/v1/generations/v2", content=b"{oops").status_code == 400
    with serve(strict_fal_rules=True, error_style="error", validation_status=422) as (emu, client):
        r = client.post("/v1/generations/v2", json=everything)
        assert r.status_code == 422 and set(r.json()) == {"error"}
        assert client.get("/v1/generations/nope").json() == {"error": "Generation not found"}


def test_auth_rate_limit_and_payment() -> None:
    with serve(rpm=3, time_scale=0.01) as (emu, client):
        r = httpx.post(f"{emu.url}/v1/generations/v2", json={"prompt": "x"})
        assert r.status_code == 401 and set(r.json()) == {"detail"}
        client.get("/v1/credits/balance")
        client.get("/v1/credits/balance")
        r = client.get("/v1/credits/balance")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and set(r.json()) == {"detail"}
    with serve(rpm=1, retry_after=False, time_scale=0.01) as (emu, client):
        client.get("/v1/credits/balance")
        r = client.get("/v1/credits/balance")
        assert r.status_code == 429 and "Retry-After" not in r.headers
    with serve() as (emu, client):
        emu.faults.server_errors = 1
        r = create(client, output_format=None, num_songs=None)
        assert r.status_code == 503 and set(r.json()) == {"detail"}
        task = emu.tasks[create(client, output_format=None, num_songs=None).json()["task_id"]]
        assert (task.format, task.num_songs) == ("ogg", 1)
    with serve(credits=120) as (emu, client):
        assert create(client, num_songs=2).status_code == 402
        assert create(client).status_code == 200
        emu.faults.payment_required = True
        assert create(client).status_code == 402 and len(emu.tasks) == 1


@pytest.mark.parametrize("charge_on,charged", [("success", 0), ("create", 150)])
def test_failed_tasks(charge_on: str, charged: int, anon: httpx.Client) -> None:
    with serve(charge_on=charge_on) as (emu, client):
        emu.faults.fail_jobs = 1.0
        task_id = create(client, num_songs=2).json()["task_id"]
        rec = wait(emu, client, task_id)
        assert client.get(f"/v1/generations/status/{task_id}").json() == {"status": "FAILURE"}
        assert rec["song_paths"] is None and rec["error_message"]
        assert anon.get(f"{emu.url}/cdn/{task_id}_0.ogg?exp=1e12").status_code == 404
        assert emu.credits_used == charged


def test_cdn_urls_expire_and_stay_fixed(anon: httpx.Client) -> None:
    with serve(url_ttl=60.0) as (emu, client):
        task_id = create(client).json()["task_id"]
        first = wait(emu, client, task_id)["song_paths"][0]
        assert anon.get(first).status_code == 200
        emu.sleep(70)
        assert anon.get(first).status_code == 403
        assert client.get(f"/v1/generations/{task_id}").json()["song_paths"][0] == first  # no fresh URL
    assert SonautoEmulator().url_ttl == 168 * 3600


def test_drop_after_create_still_runs() -> None:
    with serve() as (emu, client):
        emu.faults.drop_after_create = 1
        with pytest.raises(httpx.TransportError):
            create(client)
        assert emu.creates == 1 and len(emu.tasks) == 1
        (task_id,) = emu.tasks
        assert wait(emu, client, task_id)["song_paths"]
        assert create(client).status_code == 200
