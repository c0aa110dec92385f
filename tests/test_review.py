"""The review page (`musicbuild report --html`): built for real, then opened in real headless Chromium.

The ad-jingles example is copied, given one extra track with two takes (Sonauto v2 `num_songs: 2`,
`clips: all`, served by the Sonauto emulator), built with the real CLI and rendered; Chromium
dumps the DOM after every player's metadata loaded. `UPDATE_DOCS=1` also refreshes docs/review.png.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from musicbuild.cli import main
from musicbuild.manifest import load_manifest
from musicbuild.review import waveform_path, write_review

from .conftest import EXAMPLES, ROOT
from .emulators.sonauto import SonautoEmulator

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                    "(Debian: apt-get install chromium; .ci/run installs it)")

TAKES_TRACK = """\
  - id: jingle-two-takes
    provider: so
    prompt: "bright synth-pop jingle, two takes to choose from"
    tags: [pop, synth]
    options: {num_songs: 2}
    clips: all
    format: wav
    out: "takes/two-takes-{{ clip }}.{{ format }}"
    labels: [takes]
"""


def chromium(url: str, tmp: Path, *extra: str) -> str:
    """Run headless Chromium on ``url``; return stdout (the DOM with --dump-dom)."""
    assert CHROMIUM
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}",
            "--autoplay-policy=no-user-gesture-required", "--allow-file-access-from-files",
            "--virtual-time-budget=8000", *extra, url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def body_data(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


def cli(*args: str) -> int:
    return main(["-q", *args])


@pytest.fixture(scope="module")
def jingles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ad-jingles plus a two-take track, built; returns the review page."""
    root = tmp_path_factory.mktemp("review") / "ad-jingles"
    shutil.copytree(EXAMPLES / "ad-jingles", root, ignore=shutil.ignore_patterns("build", ".musicbuild", "musicbuild.lock"))
    manifest = root / "musicbuild.yaml"
    with pytest.MonkeyPatch.context() as mp, SonautoEmulator(time_scale=0.002, latency=(30, 60), audio_seconds=12) as emu:
        mp.delenv("MUSICBUILD_CACHE_DIR", raising=False)
        mp.setenv("MUSICBUILD_TIME_SCALE", "0.002")
        mp.setenv("SONAUTO_API_KEY", "test-key")
        text = manifest.read_text()
        text = text.replace("\ntracks:\n", f"\nproviders:\n  so: {{type: sonauto, base_url: '{emu.url}'}}\n"
                            f"tracks:\n{TAKES_TRACK}\n", 1)
        manifest.write_text(text)
        assert cli("-f", str(manifest), "build") == 0
        page = root / "build" / "review.html"
        assert cli("-f", str(manifest), "report", "--html", str(page)) == 0
    return page


@needs_chromium
def test_every_player_loads_in_chromium_and_takes_sit_side_by_side(jingles: Path, tmp_path: Path) -> None:
    text = jingles.read_text()
    audio = text.count("<audio ")
    assert audio == 10  # 8 jingles/beds + two takes
    dom = chromium(jingles.as_uri(), tmp_path, "--dump-dom")
    data = body_data(dom)
    assert data["audio"] == str(audio) and data["failed"] == "0" and data["loaded"] == str(audio), data
    assert data["ready"] == "1" and "ms" in data
    takes = re.search(r'<section class="t" data-track="jingle-two-takes".*?</section>', text, re.S)
    assert takes and '<div class="k two" style="--n:2">' in takes.group(0)
    assert takes.group(0).count("<audio ") == 2 and "take 2" in takes.group(0)
    assert takes.group(0).count('<path d="M0 ') == 2

    shot = tmp_path / "review.png"
    chromium(jingles.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("UPDATE_DOCS"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "review.png")


def test_page_is_self_contained_with_relative_audio(jingles: Path) -> None:
    text = jingles.read_text()
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "@import" not in text and "<script src" not in text and "<img" not in text
    urls = re.findall(r"url\(([^)]{0,30})", text)
    assert len(urls) == 3 and all(u.startswith('"data:image/png;base64,') for u in urls)  # one per distinct cover
    srcs = re.findall(r'<audio controls preload="(?:metadata|none)" src="([^"]+)"', text)
    assert len(srcs) == 10
    for src in srcs:
        assert not src.startswith("/") and ":" not in src
        assert (jingles.parent / html.unescape(src)).is_file(), src
    # per track: prompt, labels, tags, provider/model, duration, loudness and status
    section = re.search(r'<section class="t" data-track="radio-bed-wav".*?</section>', text, re.S)
    assert section
    s = section.group(0)
    assert json.loads(html.unescape(re.search(r'data-labels="([^"]*)"', s).group(1))) == ["beds"]
    for part in ("light upbeat acoustic guitar bed", '<i class="g">guitar</i>', "local/synth-v1",
                 "30.0 s", '<span class="s ok">ok</span>', "radio-bed-wav.wav", "-23.0\u00a0LUFS", "dBTP"):
        assert part in s, part  # the example's post: {loudness: ebu-r128} was measured into the report
    assert re.search(r"-?\d+\.\d\u00a0LUFS|<span>\u2013</span>", s)
    # cover art, embedded once per image; the bed shares acme's cover
    assert '<i class="cv cv0" title="cover: ../art/acme.png"></i>' in s
    assert text.count('title="cover: ../art/globex.png"') == 2  # both globex jingles
    # every peak is a true peak, from the report or measured here, labelled the same way
    assert text.count("<span>true peak ") == 10 and "dBFS" not in text

@pytest.fixture
def tricky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MUSICBUILD_CACHE_DIR", raising=False)
    (tmp_path / "musicbuild.yaml").write_text("""\
version: 1
defaults: {provider: local, format: wav, duration: 1}
tracks:
  - id: evil
    prompt: "<script>document.title='pwned'</script> & \\"quoted\\" piano"
    tags: ["<b>bold</b>"]
    labels: [menu, "we\\"ird <label>"]
  - id: boss
    prompt: boss battle drums
    labels: [combat]
  - id: calm
    prompt: calm harp
    labels: [menu]
""")
    assert cli("-f", str(tmp_path / "musicbuild.yaml"), "build") == 0
    assert cli("-f", str(tmp_path / "musicbuild.yaml"), "report", "--html", str(tmp_path / "review.html")) == 0
    return tmp_path / "review.html"


def test_manifest_text_is_escaped(tricky: Path) -> None:
    text = tricky.read_text()
    assert "<script>document" not in text and "<b>bold" not in text and "<label>" not in text
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt; &amp; &quot;quoted&quot; piano" in text
    labels = re.search(r'data-track="evil" data-labels="([^"]*)"', text)
    assert labels and json.loads(html.unescape(labels.group(1))) == ["menu", 'we"ird <label>']
    assert text.count("<script>") == 1  # only the page's own


@needs_chromium
def test_label_filter_and_search_in_chromium(tricky: Path, tmp_path: Path) -> None:
    def shown(fragment: str) -> set[str]:
        dom = chromium(tricky.as_uri() + fragment, tmp_path, "--dump-dom")
        assert body_data(dom)["failed"] == "0"
        sections = re.findall(r'<section class="t( hide)?" data-track="([^"]+)"', dom)
        assert len(sections) == 3
        return {track for hidden, track in sections if not hidden}

    assert shown("") == {"evil", "boss", "calm"}
    assert shown("#label=menu") == {"evil", "calm"}
    assert shown("#label=combat&label=menu") == {"evil", "boss", "calm"}
    assert shown("#label=" + 'we"ird <label>'.replace(" ", "%20").replace('"', "%22")) == {"evil"}
    assert shown("#label=menu&q=harp") == {"calm"}
    dom = chromium(tricky.as_uri(), tmp_path, "--dump-dom")
    assert "<title>Review: musicbuild.yaml</title>" in dom  # the prompt's script never ran


@needs_chromium
def test_status_filter_in_chromium_and_failures_first(tricky: Path, tmp_path: Path) -> None:
    manifest = load_manifest(tricky.parent / "musicbuild.yaml")
    report = json.loads((tricky.parent / ".musicbuild" / "last-report.json").read_text())
    for row in report["tracks"]:
        if row["id"] == "calm":
            row.update(status="failed", error="the service said no")
    page = tmp_path / "failed.html"
    write_review(page, report, manifest)
    text = page.read_text()
    assert re.findall(r'<section class="t" data-track="([^"]+)"', text) == ["calm", "evil", "boss"]
    assert '<button type="button" class="st failed" data-status="failed">failed 1</button>' in text

    def shown(fragment: str) -> list[str]:
        dom = chromium(page.as_uri() + fragment, tmp_path, "--dump-dom")
        return [track for hidden, track in re.findall(r'<section class="t( hide)?" data-track="([^"]+)"', dom)
                if not hidden]

    assert shown("#status=failed") == ["calm"]
    assert shown("#status=ok&label=menu") == ["evil"]
    assert shown("#status=ok&status=failed") == ["calm", "evil", "boss"]


def test_failed_and_missing_tracks_show_the_error(tmp_path: Path) -> None:
    (tmp_path / "musicbuild.yaml").write_text("""\
version: 1
defaults: {provider: local, format: wav, duration: 1}
tracks:
  - {id: broke, prompt: x}
  - {id: never, prompt: y}
""")
    manifest = load_manifest(tmp_path / "musicbuild.yaml")
    report = {"tracks": [{"id": "broke", "out": "broke.wav", "status": "failed", "action": "generate",
                          "reasons": ["new"], "provider": "local", "model": "synth-v1", "cost_usd": 0.0,
                          "seconds": 0.1, "error": "provider said <nope> & gave up",
                          "loudness_lufs": -14.0, "true_peak_db": -1.0}],
              "summary": {"failed": 1, "cost_usd": 0.0}}
    page = tmp_path / "out" / "review.html"
    write_review(page, report, manifest)
    text = page.read_text()
    broke = re.search(r'<section class="t" data-track="broke" data-labels="\[\]" data-status="failed">.*?</section>', text, re.S)
    assert broke and "provider said &lt;nope&gt; &amp; gave up" in broke.group(0) and "not built" in broke.group(0)
    assert 'data-track="never" data-labels="[]" data-status="not-in-report"' in text
    assert "<audio" not in text


def test_report_row_loudness_wins_over_computed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUSICBUILD_CACHE_DIR", raising=False)
    (tmp_path / "musicbuild.yaml").write_text("version: 1\ntracks:\n  - {id: a, prompt: x, provider: local, format: wav, duration: 1}\n")
    assert cli("-f", str(tmp_path / "musicbuild.yaml"), "build") == 0
    manifest = load_manifest(tmp_path / "musicbuild.yaml")
    row = {"id": "a", "status": "ok", "loudness_lufs": -23.04, "true_peak_db": -2.0}
    write_review(tmp_path / "r.html", {"tracks": [row]}, manifest)
    text = (tmp_path / "r.html").read_text()
    assert "-23.0\u00a0LUFS" in text and "peak -2.0\u00a0dBTP" in text and 'src="build/a.wav"' in text


def test_report_command_needs_a_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MUSICBUILD_CACHE_DIR", raising=False)
    (tmp_path / "musicbuild.yaml").write_text("version: 1\ntracks:\n  - {id: a, prompt: x, provider: local}\n")
    f = str(tmp_path / "musicbuild.yaml")
    for extra in ([], ["--html", str(tmp_path / "r.html")]):  # the spend table, the review page
        assert main(["-f", f, "report", *extra]) == 2
        assert "no build has been recorded" in capsys.readouterr().err


def test_waveform_path_is_compact_integer_min_max() -> None:
    rate = 8000
    t = np.arange(rate * 3) / rate
    tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None].repeat(2, axis=1)
    d = waveform_path(tone)
    assert d.startswith("M0 10l") and d.endswith("z") and "." not in d
    assert len(re.findall(r"-?\d+", d)) == 2 + 2 * 599 + 1 + 2 * 599
    assert len(d) < 6000
    silence = waveform_path(np.zeros((100, 1), np.float32))
    assert silence.startswith("M0 20l") and "v1" in silence  # a hairline, 100 columns stretched to 600
    assert waveform_path(np.zeros((0, 2), np.float32)) == ""
    full = waveform_path(np.array([[1.0], [-1.0]] * 600, np.float32))
    assert full.startswith("M0 0l") and "v40" in full
