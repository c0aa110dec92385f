"""The beatra emulator against seed 003 and CONTRACTS.md sections 3-4, driven with plain httpx."""
from __future__ import annotations

import io
import time

import httpx
import pytest
import soundfile as sf

from tests.emulators.base import Started
from tests.emulators.beatra import BeatraEmulator

KEY = "bt_test"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT, REF = "/v1/music/text-to-music", "/v1/music/reference-audio-to-music"
SUNO_VOCAL = {"model": "suno-5.5", "prompt": "synthwave", "title": "Night Drive", "lyrics": "[Verse]\ndrive",
              "model_options": {"suno": {"custom_mode": True, "vocal_gender": "f", "style_weight": 0.65}}}
make = Started(BeatraEmulator, api_key=KEY, time_scale=0.001, latency=(2.0, 5.0), audio_seconds=0.5, url_ttl=1e6)


@pytest.fixture(scope="module", autouse=True)
def _stop_all():
    yield
    make.stop_all()


@pytest.fixture(scope="module")
def web():
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def emu():
    return make()


@pytest.fixture
def client(emu):
    with httpx.Client(base_url=emu.url, headers=AUTH, timeout=10) as c:
        yield c


def wait(client: httpx.Client, task_id: str, seen: list[str] | None = None) -> dict:
    for _ in range(2000):
        env = client.get(f"/v1/tasks/{task_id}").json()
        if seen is not None:
            seen.append(env["status"])
        if env["status"] in ("succeeded", "failed", "canceled"):
            return env
        time.sleep(0.002)
    raise AssertionError("task never finished")


def test_suno_task_lifecycle_two_clips(emu, client, web):
    emu.latency = 100.0
    r = client.post(TEXT, json=SUNO_VOCAL, headers={"X-Request-Id": "req_mine"})
    assert r.status_code == 202 and r.headers["X-Request-Id"] == "req_mine"
    env = r.json()
    assert env["object"] == "task" and env["status"] == "queued" and env["task_id"].startswith("task_")
    assert env["model"] == env["resolved_model"] == "suno-5.5" and env["capability"] == "music.text_to_music"
    assert env["billing"]["charged_credits"] == "80.0000" and env["billing"]["refunded_credits"] == "0.0000"
    assert env["billing"]["charged_credits_usd_reference"] == "0.0800" and env["billing"]["currency"] == "USD"
    assert env["output"] is None and env["error"] is None and env["created_at"].endswith("Z")
    seen: list[str] = []
    done = wait(client, env["task_id"], seen)
    assert "running" in seen and seen[-1] == "succeeded"
    assert done["started_at"] and done["completed_at"] and done["progress"]["percent"] == 100
    clips = done["output"]["clips"]
    assert len(clips) == 2 and clips[0]["title"] == "Night Drive"
    for clip in clips:
        audio = clip["audio"]
        assert audio["artifact_id"].startswith("art_") and audio["mime_type"] == "audio/mpeg"
        assert audio["duration_seconds"] == 0.5 and "exp=" in audio["url"]
        got = web.get(audio["url"])
        assert got.status_code == 200 and got.headers["content-type"] == "audio/mpeg"
        assert sf.info(io.BytesIO(got.content)).duration == pytest.approx(0.5, abs=0.1)
    assert done["usage"]["audio_seconds"] == 1.0 and done["usage"]["credits"] == "80.0000"
    assert emu.creates == 1 and emu.credits_charged == 80 and emu.credits_refunded == 0
    assert client.get("/v1/tasks/task_nope").json()["error"]["code"] == "not_found"


def test_running_progress(emu, client):
    emu.latency = 200.0
    task_id = client.post(TEXT, json={"model": "minimax-music-2.6", "prompt": "p"}).json()["task_id"]
    time.sleep(0.1)
    env = client.get(f"/v1/tasks/{task_id}").json()
    assert env["status"] == "running" and 0 <= env["progress"]["percent"] < 100 and env["progress"]["stage"]
    assert env["started_at"] and env["completed_at"] is None


@pytest.mark.parametrize("body, model, clips, credits", [
    ({"model": "minimax-music-2.6", "prompt": "p", "lyrics": "la", "model_options": {"minimax": {"lyrics_optimizer": True}}},
     "minimax-music-2.6", 1, 50),
    ({"prompt": "p"}, "suno-5.5", 2, 80),  # model omitted = auto -> auto_model
    ({"model": "auto", "prompt": "p", "model_options": {"minimax": {}}}, "minimax-music-2.6", 1, 50),
    ({"model": "suno-5.5", "prompt": "p", "instrumental": True}, "suno-5.5", 2, 80),
    ({"model": "suno-5.5", "prompt": "p", "instrumental": True, "title": "T",
      "model_options": {"suno": {"custom_mode": True, "negative_tags": "metal", "weirdness_constraint": 1}}}, "suno-5.5", 2, 80),
])
def test_models_clips_and_prices(emu, client, body, model, clips, credits):
    env = client.post(TEXT, json=body).json()
    assert env["resolved_model"] == model and env["billing"]["charged_credits"] == f"{credits:.4f}"
    assert len(wait(client, env["task_id"])["output"]["clips"]) == clips
    assert emu.credits_charged == credits


def opt(**suno):
    return {"model": "suno-5.5", "prompt": "p", "title": "T", "lyrics": "words",
            "model_options": {"suno": {"custom_mode": True, **suno}}}


@pytest.mark.parametrize("body, status, code, check", [
    ({"model": "suno-4", "prompt": "p"}, 400, "unsupported_model", None),
    ({"model": "suno-5.5"}, 422, "invalid_request", "/prompt"),
    ({"model": "suno-5.5", "prompt": ""}, 422, "invalid_request", "/prompt"),
    ({"model": "suno-5.5", "prompt": "x" * 1001}, 422, "invalid_request", "/prompt"),
    ({"model": "minimax-music-2.6", "prompt": "p", "lyrics": "x" * 5001}, 422, "invalid_request", "/lyrics"),
    ({**opt(), "title": "x" * 81}, 422, "invalid_request", "/title"),
    ({"model": "suno-5.5", "prompt": "p", "lyrics": "words"}, 422, "invalid_request", "/lyrics"),  # needs custom_mode
    ({**opt(), "title": ""}, 422, "invalid_request", "/title"),  # custom vocal song needs a title
    ({**opt(), "lyrics": ""}, 422, "invalid_request", "/lyrics"),  # ... and lyrics
    ({"model": "minimax-music-2.6", "prompt": "p", "instrumental": True, "lyrics": "w"}, 422, "invalid_request", "/lyrics"),
    ({"model": "suno-5.5", "prompt": "p", "duration": 120}, 422, "invalid_request", "/duration"),
    ({"model": "suno-5.5", "prompt": "p", "model_options": {"minimax": {}}}, 422, "unsupported_option",
     ["model_options.minimax"]),
    ({"model": "minimax-music-2.6", "prompt": "p", "model_options": {"suno": {"custom_mode": True}}}, 422,
     "unsupported_option", ["model_options.suno"]),
    ({"model": "suno-5.5", "prompt": "p", "model_options": {"udio": {}}}, 422, "unsupported_option", ["model_options.udio"]),
    (opt(audio_weight=0.5), 422, "unsupported_option", ["model_options.suno.audio_weight"]),  # reference audio only
    (opt(persona_id="x"), 422, "unsupported_option", ["model_options.suno.persona_id"]),
    ({"model": "minimax-music-2.6", "prompt": "p", "model_options": {"minimax": {"format": "wav"}}}, 422,
     "unsupported_option", ["model_options.minimax.format"]),
    (opt(vocal_gender="x"), 422, "invalid_request", "/model_options/suno/vocal_gender"),
    (opt(style_weight=1.5), 422, "invalid_request", "/model_options/suno/style_weight"),
    (opt(style_weight=0.555), 422, "invalid_request", "/model_options/suno/style_weight"),
    (opt(custom_mode="yes"), 422, "invalid_request", "/model_options/suno/custom_mode"),
    ({"model": "suno-5.5", "prompt": "p", "model_options": {"suno": {"vocal_gender": "m"}}}, 422, "invalid_request",
     "/model_options/suno/vocal_gender"),  # needs custom_mode: true
    ({"model": "minimax-music-2.6", "prompt": "p", "model_options": {"minimax": {"lyrics_optimizer": 1}}}, 422,
     "invalid_request", "/model_options/minimax/lyrics_optimizer"),
    ({"model": "suno-5.5", "prompt": "p", "metadata": {"n": 1}}, 422, "invalid_request", "/metadata"),
    ({"model": "suno-5.5", "prompt": "p", "reference_audio": {"type": "url", "url": "https://x/a.mp3"}}, 422,
     "invalid_request", "/reference_audio"),  # text endpoint
])
def test_validation(emu, client, body, status, code, check):
    r = client.post(TEXT, json=body, headers={"X-Request-Id": "req_v"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["retryable"] is False and err["request_id"] == "req_v" and err["message"]
    if code == "invalid_request":
        assert err["param"] == check and any(e["field"] == check for e in err["details"]["errors"])
    elif code == "unsupported_option":
        assert err["details"]["unsupported_fields"] == check
    assert emu.creates == 0 and emu.credits_charged == 0


def test_validation_status_switch():
    emu = make(validation_status=400)
    r = httpx.post(f"{emu.url}{TEXT}", json={"model": "suno-5.5", "prompt": ""}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def test_idempotency_replay_and_conflict(emu, client):
    key = {"Idempotency-Key": "gen-123"}
    first = client.post(TEXT, json=SUNO_VOCAL, headers=key)
    again = client.post(TEXT, json=SUNO_VOCAL, headers=key)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["task_id"] == first.json()["task_id"]
    assert emu.creates == 1 and emu.idempotent_replays == 1 and emu.credits_charged == 80
    clash = client.post(TEXT, json={**SUNO_VOCAL, "prompt": "other"}, headers=key)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_conflict"
    other = client.post(REF, json=SUNO_VOCAL, headers=key)  # same key on another endpoint is another request
    assert other.status_code == 409
    assert client.post(TEXT, json=SUNO_VOCAL).json()["task_id"] != first.json()["task_id"]  # no key: new task
    assert emu.creates == 2 and len(emu.tasks) == 2


def test_idempotency_window_is_24_hours():
    emu = make(time_scale=1e-6, replay_status=202)
    with httpx.Client(base_url=emu.url, headers={**AUTH, "Idempotency-Key": "k"}) as c:
        first = c.post(TEXT, json={"prompt": "p"})
        again = c.post(TEXT, json={"prompt": "p"})
        assert again.status_code == 202 and again.json()["task_id"] == first.json()["task_id"]
        time.sleep(0.1)  # 100 000 virtual seconds
        later = c.post(TEXT, json={"prompt": "p"})
        assert later.status_code == 202 and later.json()["task_id"] != first.json()["task_id"]
    assert emu.creates == 2 and emu.credits_charged == 160


def test_drop_after_create_then_idempotent_retry(emu, client):
    emu.faults.drop_after_create = 1
    key = {"Idempotency-Key": "gen-9"}
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(TEXT, json={"prompt": "p"}, headers=key)
    assert emu.creates == 1 and len(emu.tasks) == 1 and emu.credits_charged == 80
    retry = client.post(TEXT, json={"prompt": "p"}, headers=key)
    assert retry.status_code == 200 and retry.json()["task_id"] in emu.tasks
    assert emu.creates == 1 and emu.credits_charged == 80


def test_upload_then_reference_audio(emu, client, web):
    wav = io.BytesIO()
    sf.write(wav, [[0.0, 0.0]] * 4410, 44100, format="WAV")
    up = client.post("/v1/uploads", files={"file": ("ref.wav", wav.getvalue(), "audio/wav")},
                     data={"purpose": "reference_audio", "metadata": '{"song": "a"}'})
    assert up.status_code == 200, up.text
    art = up.json()
    assert art["artifact_id"].startswith("art_") and art["purpose"] == "reference_audio"
    assert art["media_type"] == "audio" and art["size_bytes"] == len(wav.getvalue()) and art["metadata"] == {"song": "a"}
    assert web.get(art["url"]).content == wav.getvalue()
    body = {"model": "suno-5.5", "prompt": "same vibe", "title": "T", "lyrics": "w",
            "reference_audio": {"type": "artifact", "artifact_id": art["artifact_id"]},
            "model_options": {"suno": {"custom_mode": True, "audio_weight": 0.4}}}
    env = client.post(REF, json=body).json()
    assert env["capability"] == "music.reference_audio_to_music"
    assert len(wait(client, env["task_id"])["output"]["clips"]) == 2
    url = {"model": "minimax-music-2.6", "prompt": "p", "reference_audio": {"type": "url", "url": "https://x.test/a.mp3"}}
    assert client.post(REF, json=url).status_code == 202
    bad = client.post(REF, json={**url, "reference_audio": {"type": "url", "url": "http://x.test/a.mp3"}})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "/reference_audio"
    assert client.post(REF, json={"prompt": "p"}).status_code == 422
    unknown = {**url, "reference_audio": {"type": "artifact", "artifact_id": "art_0"}}
    assert client.post(REF, json=unknown).json()["error"]["code"] == "not_found"
    emu.unknown_artifact_status = 422
    assert client.post(REF, json=unknown).status_code == 422
    assert client.post("/v1/uploads", data={"purpose": "reference_audio"}).status_code == 422
    emu.max_upload_bytes = 100
    assert client.post("/v1/uploads", files={"file": ("ref.wav", wav.getvalue(), "audio/wav")}).status_code == 413
    assert emu.creates == 2


def test_failure_refunds(emu, client):
    emu.faults.fail_jobs = 1.0
    env = wait(client, client.post(TEXT, json={"model": "minimax-music-2.6", "prompt": "p"}).json()["task_id"])
    assert env["status"] == "failed" and env["output"] is None
    assert set(env["error"]) == {"code", "message", "retryable"}
    assert env["billing"]["charged_credits"] == env["billing"]["refunded_credits"] == "50.0000"
    assert emu.credits_charged == 50 and emu.credits_refunded == 50


def test_cancel(emu, client):
    emu.latency = 1e5
    task = client.post(TEXT, json={"prompt": "p"}).json()
    r = client.post(f"/v1/tasks/{task['task_id']}/cancel", json={"reason": "changed my mind"})
    assert r.status_code == 200 and r.json()["status"] == "canceled" and r.json()["cancel_requested_at"]
    assert r.json()["billing"]["refunded_credits"] == "80.0000" and emu.credits_refunded == 80
    assert client.post(f"/v1/tasks/{task['task_id']}/cancel").json()["status"] == "canceled"  # unchanged
    emu.cancel_conflict = "terminal"
    assert client.post(f"/v1/tasks/{task['task_id']}/cancel").status_code == 409
    emu.cancel_conflict = "running"
    running = client.post(TEXT, json={"prompt": "p"}).json()["task_id"]
    time.sleep(0.01)  # 20% of 1e5 virtual s is 20 s of queue: still queued -> cancelable
    assert client.post(f"/v1/tasks/{running}/cancel").json()["status"] == "canceled"
    emu.latency = 100.0
    running = client.post(TEXT, json={"prompt": "p"}).json()["task_id"]
    time.sleep(0.05)  # queued for the first 20 virtual s, running until 100
    r = client.post(f"/v1/tasks/{running}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "task_not_cancelable"
    assert wait(client, running)["status"] == "succeeded"  # it kept running


def test_list_tasks(emu, client):
    emu.latency = 1e5
    ids = [client.post(TEXT, json={"prompt": f"p{i}"}).json()["task_id"] for i in range(5)]
    client.post(f"/v1/tasks/{ids[1]}/cancel")
    page = client.get("/v1/tasks", params={"limit": 2}).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [t["task_id"] for t in page["data"]] == ids[:2:-1][:2] == [ids[4], ids[3]]
    assert "input" not in page["data"][0] and "billing" not in page["data"][0]
    rest = client.get("/v1/tasks", params={"limit": 10, "cursor": page["next_cursor"]}).json()
    assert [t["task_id"] for t in rest["data"]] == [ids[2], ids[1], ids[0]] and rest["next_cursor"] is None
    canceled = client.get("/v1/tasks", params={"status": "canceled", "expand": "billing"}).json()["data"]
    assert [t["task_id"] for t in canceled] == [ids[1]] and canceled[0]["billing"]["refunded_credits"] == "80.0000"
    asc = client.get("/v1/tasks", params={"order": "asc", "limit": 1, "expand": "all"}).json()["data"]
    assert asc[0]["task_id"] == ids[0] and "links" in asc[0]
    for bad in ({"limit": 0}, {"limit": 101}, {"status": "done"}, {"cursor": "cur_x"}):
        r = client.get("/v1/tasks", params=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_auth_payment_and_server_errors(emu, client, web):
    r = web.post(f"{emu.url}{TEXT}", json={"prompt": "p"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized" and r.headers["X-Request-Id"]
    r = web.post(f"{emu.url}{TEXT}", json={"prompt": "p"}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.json()["error"]["request_id"] == r.headers["X-Request-Id"]
    emu.faults.payment_required = True
    r = client.post(TEXT, json={"prompt": "p"})
    assert r.status_code == 402 and r.json()["error"] == {**r.json()["error"], "code": "insufficient_balance",
                                                          "retryable": False}
    emu.faults.payment_required = False
    emu.faults.server_errors = 1
    r = client.post(TEXT, json={"prompt": "p"})
    assert r.status_code == 503 and r.json()["error"]["retryable"] is True
    assert emu.creates == 0


def test_rate_limited_with_and_without_retry_after():
    emu = make(rpm=2, time_scale=0.003)
    with httpx.Client(base_url=emu.url, headers=AUTH) as c:
        codes = [c.get("/v1/tasks").status_code for _ in range(3)]
        r = c.get("/v1/tasks")
        assert codes == [200, 200, 429] and r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited" and r.json()["error"]["retryable"] is True
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        emu.retry_after_header = False
        r = c.get("/v1/tasks")
        assert r.status_code == 429 and "Retry-After" not in r.headers


def test_expired_clip_url(web):
    emu = make(url_ttl=100.0)
    with httpx.Client(base_url=emu.url, headers=AUTH) as c:
        env = wait(c, c.post(TEXT, json={"model": "minimax-music-2.6", "prompt": "p"}).json()["task_id"])
        url = env["output"]["clips"][0]["audio"]["url"]
        assert web.get(url).status_code == 200
        time.sleep(0.15)
        r = web.get(url)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        fresh = c.get(f"/v1/tasks/{env['task_id']}").json()["output"]["clips"][0]["audio"]["url"]
        assert web.get(fresh).status_code == 200  # polling again signs a fresh URL


def test_variant_switches():
    emu = make(minimal_create=True, skill_fields=True)
    with httpx.Client(base_url=emu.url, headers=AUTH) as c:
        r = c.post(TEXT, json={"prompt": "p"})
        assert r.status_code == 202 and set(r.json()) == {"object", "task_id", "status", "model", "created_at"}
        env = c.get(f"/v1/tasks/{r.json()['task_id']}").json()
        assert env["billing"]["net_charged_credits"] == "80.0000" and env["deadline_at"]
