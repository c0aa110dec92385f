"""Secrets never leave the program in any form: raw, base64 (also of 'Bearer <key>' and '<user>:<key>'),
URL-encoded or hex; on stderr, in the JSON report, the JUnit report, the review page and exceptions;
and the shared-cache password is not stored in the null-build stamp."""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, quote_plus

import pytest

from musicbuild.errors import MusicbuildError
from musicbuild.redact import RedactingStream, redact, redact_data, remember, url_without_userinfo

from .conftest import Project
from .emulators.aigateway import AIgatewayEmulator
from .emulators.base import Response
from .test_resilience import SCALE, build, one_track, provider, write_manifest

KEY = "sk-live_Ab+C/d=e0123456789zz"  # base64 and URL-encoding both change it

FORMS: dict[str, Callable[[str], str]] = {
    "raw": lambda k: k,
    "base64": lambda k: base64.b64encode(k.encode()).decode(),
    "base64-unpadded": lambda k: base64.b64encode(k.encode()).decode().rstrip("="),
    "base64-urlsafe": lambda k: base64.urlsafe_b64encode(k.encode()).decode(),
    "base64-urlsafe-unpadded": lambda k: base64.urlsafe_b64encode(k.encode()).decode().rstrip("="),
    "base64-of-bearer": lambda k: base64.b64encode(f"Bearer {k}".encode()).decode(),
    "base64-of-user-colon-key": lambda k: base64.b64encode(f"api:{k}".encode()).decode(),
    "base64-of-long-user-colon-key": lambda k: base64.b64encode(f"deploy-bot:{k}".encode()).decode(),
    "url-encoded": lambda k: quote(k, safe=""),
    "url-encoded-lowercase-hex": lambda k: quote(k, safe="").replace("%2B", "%2b").replace("%2F", "%2f"),
    "form-encoded": lambda k: quote_plus(k),
    "hex": lambda k: k.encode().hex(),
    "HEX": lambda k: k.encode().hex().upper(),
}


def leaks(text: str, key: str = KEY) -> list[str]:
    """The forms of ``key`` still readable in ``text`` (the raw key and each encoding's core)."""
    found = [name for name, form in FORMS.items() if form(key) in text]
    core = base64.b64encode(key.encode()).decode()[4:-4]
    if core in text or core.replace("+", "-").replace("/", "_") in text:
        found.append("base64 core")
    return found


@pytest.mark.parametrize("form", list(FORMS))
def test_every_form_of_a_key_is_redacted(form: str) -> None:
    env = {"AIGATEWAY_API_KEY": KEY}
    text = f"the service said: invalid credentials {FORMS[form](KEY)}; request 42"
    out = redact(text, env)
    assert leaks(out) == [] and "$AIGATEWAY_API_KEY" in out, out
    assert out.startswith("the service said: invalid credentials ") and out.endswith("; request 42")


def test_which_variables_hold_secrets() -> None:
    env = {"MY_TOKEN": "tok-123456", "DB_PASSWORD": "pw-123456", "MUSICBUILD_REMOTE_CACHE_AUTH": "ci:hunter2-pw",
           "MUSICBUILD_REMOTE_CACHE": "https://ci:url-password@cache.example/x", "HOME": "/home/someone",
           "SSH_AUTH_SOCK": "/tmp/agent.sock", "AWS_PROFILE": "default-profile"}
    out = redact("tok-123456 pw-123456 hunter2-pw url-password /home/someone /tmp/agent.sock default-profile", env)
    assert out == "$MY_TOKEN $DB_PASSWORD $MUSICBUILD_REMOTE_CACHE_AUTH *** /home/someone /tmp/agent.sock default-profile"


def test_short_values_are_not_treated_as_secrets() -> None:
    assert redact("a key of abc", {"X_API_KEY": "abc"}) == "a key of abc"


def test_remembered_secrets_and_data() -> None:
    remember("custom-var-secret-value", "$MY_GATEWAY")
    doc = {"tracks": [{"error": "rejected custom-var-secret-value"}], "n": 3}
    assert redact_data(doc, {}) == {"tracks": [{"error": "rejected $MY_GATEWAY"}], "n": 3}


def test_exceptions_carry_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGATEWAY_API_KEY", KEY)
    err = MusicbuildError(f"boom {FORMS['base64-of-bearer'](KEY)}", hint=f"not {quote(KEY, safe='')}")
    assert leaks(err.message + (err.hint or "") + str(err)) == []


def test_the_stream_redacts_what_is_written(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setenv("AIGATEWAY_API_KEY", KEY)
    stream = RedactingStream(sys.stderr)
    stream.write(f"x {FORMS['hex'](KEY)}\n")
    stream.writelines([f"y {KEY}\n"])
    assert capsys.readouterr().err == "x $AIGATEWAY_API_KEY\ny $AIGATEWAY_API_KEY\n"


def test_url_without_userinfo() -> None:
    assert url_without_userinfo("https://ci:pw@cache.example:8443/a?b=1") == "https://cache.example:8443/a?b=1"
    assert url_without_userinfo("s3://bucket/prefix") == "s3://bucket/prefix"


class EncodingEchoGateway(AIgatewayEmulator):
    """A service whose 401 quotes the key it was sent in some encoding (as real ones do)."""

    def __init__(self, encode: Callable[[str], str], **kw: Any) -> None:
        super().__init__(**kw)
        self.encode = encode

    def _check_auth(self, req: Any) -> Response | None:
        denied = super()._check_auth(req)
        if denied is not None:
            sent = req.headers.get("authorization", "").removeprefix("Bearer ")
            return Response(401, self.error_body(401, f"Incorrect API key provided: {self.encode(sent)} (debug)"))
        return None


@pytest.mark.parametrize("form", ["base64-of-bearer", "base64-urlsafe-unpadded", "url-encoded", "hex"])
def test_an_encoded_echo_reaches_no_output(form: str, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICBUILD_TIME_SCALE", str(SCALE))
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("AIGATEWAY_API_KEY", KEY)
    with EncodingEchoGateway(FORMS[form], time_scale=SCALE, latency=10, audio_seconds=3, api_key="another-key") as gw:
        one_track(project, gw)
        result, report = build(project, "-v", "--junit", str(project.root / "junit.xml"))
    assert result.code == 1 and "rejected the API key" in result.err and "(debug)" in result.err
    page = project.root / "review.html"
    again = project.run("report", "--html", str(page), "--junit", str(project.root / "junit2.xml"))
    assert again.code == 0, again.err
    texts = {"stderr": result.err, "stdout": result.out, "report": json.dumps(report), "report-stderr": again.err}
    for name in ("report.json", "junit.xml", "junit2.xml", "review.html", ".musicbuild/last-report.json"):
        texts[name] = (project.root / name).read_text()
    assert "(debug)" in texts["junit.xml"] and "(debug)" in texts[".musicbuild/last-report.json"]
    for name, text in texts.items():
        assert leaks(text, "another-key") == [] and leaks(text) == [], (name, text)


def test_the_remote_cache_password_is_not_stored_in_the_stamp(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    password = "hunter2-remote-password"
    monkeypatch.setenv("MUSICBUILD_REMOTE_CACHE", f"memory://ci:{password}@team/cache-{id(project)}")
    project.write("""\
        version: 1
        tracks:
          - {id: rain, prompt: soft rain, provider: local, duration: 0.5, format: wav}
    """)
    first = project.run("build")
    assert first.code == 0, first.err
    stamps = list((project.root / ".musicbuild" / "stamps").iterdir())
    assert len(stamps) == 1
    for path in project.root.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    assert "up to date, nothing to do" in project.run("build").err  # the stamp still answers
    monkeypatch.setenv("MUSICBUILD_REMOTE_CACHE", f"memory://ci:{password}@team/another-cache-{id(project)}")
    assert "nothing to do" not in project.run("build").err  # another remote: the full path
    assert password not in first.err + first.out


def test_a_key_in_a_variable_of_any_name_is_redacted(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """``api_key_env: GWCRED`` does not look like a secret's name: the manifest says it is one."""
    monkeypatch.setenv("MUSICBUILD_TIME_SCALE", str(SCALE))
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("GWCRED", KEY)
    with EncodingEchoGateway(FORMS["base64-of-bearer"], time_scale=SCALE, latency=10, audio_seconds=3,
                             api_key="another-key") as gw:
        write_manifest(project, {"gw": provider("aigateway", gw, api_key_env="GWCRED")},
                       [{"id": "a", "provider": "gw", "prompt": "a"}])
        result, report = build(project)
    assert result.code == 1 and "$GWCRED" in result.err
    assert leaks(result.err + result.out + json.dumps(report)) == []
