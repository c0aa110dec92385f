"""The Verbatik emulator against seed 002 and CONTRACTS.md section 2, driven with plain httpx."""
from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from tests.emulators.base import Started
from tests.emulators.verbatik import VerbatikEmulator

KEY = "vbt_test"
AUTH = {"Authorization": f"Bearer {KEY}"}


make = Started(VerbatikEmulator, api_key=KEY, time_scale=0.001, latency=(2.0, 5.0), audio_seconds=0.5, url_ttl=1e6)


@pytest.fixture(scope="module", autouse=True)
def _stop_all():
    yield
    make.stop_all()


@pytest.fixture(scope="module")
def web():
    """A client without the API key, for the public audio URLs."""
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def emu():
    return make()


@pytest.fixture
def client(emu):
    with httpx.Client(base_url=emu.url, headers=AUTH, timeout=10) as c:
        yield c


def create(client: httpx.Client, **body) -> httpx.Response:
    return client.post("/api/v1/text-to-music", json=body)


def test_create_blocks_then_serves_real_audio(emu, client, web):
    emu.latency = 30.0
    t0 = emu.now()
    r = create(client, prompt="lofi beat", name="Demo", seed=7)
    assert r.status_code == 200
    assert emu.now() - t0 >= 30.0  # blocked for the (virtual) job latency
    body = r.json()
    assert body["success"] is True and len(body["tracks"]) == 1
    track = body["tracks"][0]
    assert track["status"] == "ready" and track["seed"] == 7 and track["name"] == "Demo" and track["duration"] == 0.5
    assert track["audio_url"].startswith(f"{emu.url}/storage/music/{track['id']}.wav")
    audio = web.get(track["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    data, rate = sf.read(io.BytesIO(audio.content))
    assert rate == 44100 and data.shape == (22050, 2)
    assert emu.creates == 1 and emu.cost_usd == pytest.approx(0.20 * 0.5 / 60)
    assert body["tracks"][0]["id"] in emu.tracks


def test_two_songs_mp3_cost_doubles(emu, client, web):
    r = create(client, tags=["pop"], lyrics="la la", num_songs=2, output_format="mp3", output_bit_rate="320")
    tracks = r.json()["tracks"]
    assert r.status_code == 200 and len(tracks) == 2 and len({t["id"] for t in tracks}) == 2
    for t in tracks:
        audio = web.get(t["audio_url"])
        assert audio.headers["content-type"] == "audio/mpeg"
        assert sf.info(io.BytesIO(audio.content)).duration == pytest.approx(0.5, abs=0.1)
    assert emu.cost_usd == pytest.approx(2 * 0.20 * 0.5 / 60)


@pytest.mark.parametrize("body, error", [
    ({"lyrics": "words"}, "Invalid input combination"),
    ({"tags": ["rock"]}, "Invalid input combination"),
    ({"prompt": "p", "tags": ["rock"], "lyrics": "w"}, "Invalid input combination"),
    ({}, "Invalid input combination"),
    ({"seed": 3}, "Invalid input combination"),
    ({"prompt": "p", "num_songs": 3}, "Validation failed"),
    ({"prompt": "p", "num_songs": 0}, "Validation failed"),
    ({"prompt": "p", "output_format": "aac"}, "Validation failed"),
    ({"prompt": "p", "output_bit_rate": "192"}, "Validation failed"),  # default wav
    ({"prompt": "p", "output_format": "flac", "output_bit_rate": "192"}, "Validation failed"),
    ({"prompt": "p", "output_format": "mp3", "output_bit_rate": 192}, "Validation failed"),  # must be a string
    ({"prompt": "p", "output_format": "mp3", "output_bit_rate": "100"}, "Validation failed"),
    ({"prompt": "p", "bpm": "fast"}, "Validation failed"),
    ({"prompt": "p", "tags": "rock"}, "Validation failed"),
    ({"prompt": "p", "store_audio": "yes"}, "Validation failed"),
    ({"prompt": 5}, "Validation failed"),
])
def test_validation_400(emu, client, body, error):
    r = create(client, **body)
    assert r.status_code == 400
    assert r.json()["error"] == error and r.json()["message"]
    assert emu.creates == 0 and emu.cost_usd == 0


@pytest.mark.parametrize("body", [
    {"prompt": "p"}, {"prompt": "p", "tags": ["a"]}, {"prompt": "p", "lyrics": "w"}, {"tags": ["a"], "lyrics": "w"},
    {"prompt": "p", "lyrics": ""}, {"prompt": "p", "bpm": "auto"}, {"prompt": "p", "bpm": 120},
    {"prompt": "p", "output_format": "m4a", "output_bit_rate": "128", "prompt_strength": 2.5, "balance_strength": 0.5},
])
def test_allowed_combinations(emu, client, body):
    assert create(client, **body).status_code == 200


def test_content_type_required(emu, client):
    r = client.post("/api/v1/text-to-music", content=b'{"prompt": "p"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "Unsupported Media Type"
    emu.bad_content_type_status = 400
    assert client.post("/api/v1/text-to-music", content=b'{"prompt": "p"}').status_code == 400
    assert emu.creates == 0


def test_failed_generation_not_billed(emu, client):
    emu.faults.fail_jobs = 1.0
    track = create(client, prompt="p").json()["tracks"][0]
    assert track["status"] == "failed" and track["error"] and track["audio_url"] is None
    assert emu.creates == 1 and emu.cost_usd == 0


def test_pending_variant_audio_404_until_ready(web):
    emu = make(respond_pending=True, latency=100.0)
    with httpx.Client(base_url=emu.url, headers=AUTH) as c:
        t0 = time.monotonic()
        track = create(c, prompt="p", output_format="flac").json()["tracks"][0]
        assert time.monotonic() - t0 < 0.08  # answered at once
        assert track["status"] == "pending"
        r = web.get(track["audio_url"])
        assert r.status_code == 404 and "being generated" in r.json()["message"]
        time.sleep(0.13)
        r = web.get(track["audio_url"])
        assert r.status_code == 200 and sf.info(io.BytesIO(r.content)).format == "FLAC"
        emu.faults.fail_jobs = 1.0
        failed = create(c, prompt="p").json()["tracks"][0]
        time.sleep(0.13)
        r = web.get(failed["audio_url"])
        assert failed["status"] == "pending" and r.status_code == 404 and "failed" in r.json()["message"]


def test_urls_expire_unless_stored(web):
    emu = make(url_ttl=100.0, latency=1.0)
    with httpx.Client(base_url=emu.url, headers=AUTH) as c:
        temp = create(c, prompt="p").json()["tracks"][0]["audio_url"]
        kept = create(c, prompt="p", store_audio=True).json()["tracks"][0]["audio_url"]
        assert "exp=" in temp and "exp=" not in kept
        assert web.get(temp).status_code == 200
        time.sleep(0.15)
        r = web.get(temp)
        assert r.status_code == 403 and r.json()["message"] == "This link has expired"
        assert web.get(temp.split("?")[0]).status_code == 403  # unsigned = expired
        assert web.get(kept).status_code == 200
        assert web.get(f"{emu.url}/storage/music/{'0' * 8}-0000-4000-8000-{'0' * 12}.wav").status_code == 404


def test_drop_after_create_still_bills(emu, client):
    emu.faults.drop_after_create = 1
    with pytest.raises(httpx.RemoteProtocolError):
        create(client, prompt="p")
    assert emu.creates == 1 and len(emu.tracks) == 1 and emu.cost_usd > 0
    assert emu.log[-1].status == 0
    assert create(client, prompt="p").status_code == 200 and emu.creates == 2


def test_error_bodies(emu, client, web):
    r = client.post("/api/v1/text-to-music", json={"prompt": "p"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "authentication_failed", "message": "Invalid API key"}}
    assert web.post(f"{emu.url}/api/v1/text-to-music", json={"prompt": "p"}).status_code == 401
    emu.faults.payment_required = True
    r = create(client, prompt="p", num_songs=2)
    assert r.status_code == 402
    assert r.json() == {"error": "Insufficient balance", "required": 1, "available": 0}  # 2 x 0.5 s at 20 c/min
    emu.faults.payment_required = False
    emu.faults.server_errors, emu.faults.server_error_status = 1, 500
    r = create(client, prompt="p")
    assert r.status_code == 500 and r.json() == {"error": "Internal server error"}
    emu.faults.rate_limit_storm = 1
    r = create(client, prompt="p")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert r.json() == {"error": "Too Many Requests", "message": "Rate limit exceeded"}
    assert emu.creates == 0


def test_rate_limit_429_and_headers():
    emu = make(rpm=3, time_scale=0.05)  # 2 virtual s of tolerance below = 100 ms of real jitter
    with httpx.Client(base_url=emu.url, headers=AUTH) as c:
        v0 = emu.now()
        seen = [c.post("/api/v1/text-to-music", json={"lyrics": "x"}) for _ in range(4)]
        assert [r.status_code for r in seen] == [400, 400, 400, 429]
        assert [r.headers["X-RateLimit-Remaining"] for r in seen] == ["2", "1", "0", "0"]
        assert all(r.headers["X-RateLimit-Limit"] == "3" for r in seen)
        reset = int(seen[0].headers["X-RateLimit-Reset"])
        assert abs(reset - (emu.unix0 + v0 + 60)) <= 2  # virtual unix time of the window's end
        wait = int(seen[3].headers["Retry-After"])
        assert 1 <= wait <= 60 and seen[3].json()["error"] == "Too Many Requests"
        time.sleep(wait * emu.time_scale + 0.05)
        assert c.post("/api/v1/text-to-music", json={"lyrics": "x"}).status_code == 400


def test_rate_limit_headers_without_rpm(emu, client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.headers["X-RateLimit-Limit"] == "600"
    assert r.headers["X-RateLimit-Remaining"] == "599"
    assert client.get("/nope").headers["X-RateLimit-Remaining"] == "598"


def test_cli_serves_until_interrupted(web):
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulators", "verbatik", "--port", "0", "--api-key", "k1",
                             "--time-scale", "0.001", "--latency", "5", "5"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[3]
        assert proc.stdout.readline().strip() == "export VERBATIK_API_KEY=k1"
        assert proc.stdout.readline().strip() == "export MUSICBUILD_TIME_SCALE=0.001"
        r = web.post(f"{url}/api/v1/text-to-music", json={"prompt": "p"}, headers={"Authorization": "Bearer k1"})
        assert r.status_code == 200 and r.json()["tracks"][0]["status"] == "ready"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
