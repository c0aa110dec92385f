"""The planner against the real cache: actions and reasons, including journaled jobs."""
from __future__ import annotations

from pathlib import Path

from musicbuild.cache import Cache
from musicbuild.errors import CacheError
from musicbuild.manifest import load_manifest
from musicbuild.model import Action, Reason
from musicbuild.planner import plan_tracks

from .conftest import Project

MANIFEST = """\
version: 1
defaults: {duration: 1}
tracks:
  - {id: a, prompt: first}
  - {id: b, prompt: second}
"""


def test_a_journaled_job_is_resumed_never_resubmitted(project: Project) -> None:
    project.write(MANIFEST)
    manifest = load_manifest(project.manifest)
    with Cache(manifest.cache_dir) as cache:
        planned = plan_tracks(manifest.tracks, cache)
        assert [(p.action, p.reasons) for p in planned] == [(Action.GENERATE, (Reason.NEW,))] * 2
        rec = cache.journal.begin(planned[0].gen_key, provider="x", type="aigateway", base_url="", model="m",
                                  track="a", estimate_usd=0.1)
        rec = cache.journal.move(cache.journal.move(rec, "sent"), "submitted", job_id="job-123")
        again = plan_tracks(manifest.tracks, cache)
        assert again[0].job == {"state": "submitted", "job_id": "job-123", "attempt": 0}
        assert again[0].action is Action.RESUME and again[1].action is Action.GENERATE
        assert again[0].est_cost_usd == 0.0  # already paid
        forced = plan_tracks(manifest.tracks, cache, force=True)
        assert {p.action for p in forced} == {Action.GENERATE}
        assert forced[0].reasons == (Reason.FORCED,)


def test_journal_survives_reopening_the_cache(tmp_path: Path) -> None:
    with Cache(tmp_path / "c") as cache:
        rec = cache.journal.begin("k" * 64, provider="p", type="beatra", base_url="", model="m", track="t",
                                  estimate_usd=0.08)
        cache.journal.move(cache.journal.move(rec, "sent"), "submitted", job_id="j-1")
    with Cache(tmp_path / "c") as cache:
        live = cache.live_job("k" * 64)
        assert live is not None and live.job_id == "j-1" and live.state == "submitted"


def test_a_corrupt_blob_is_never_used(tmp_path: Path) -> None:
    with Cache(tmp_path / "c") as cache:
        sha = cache.put_blob(b"some audio bytes")
        cache.blob_path(sha).write_bytes(b"tampered")
        try:
            cache.read_blob(sha)
        except CacheError as exc:
            assert "corrupt" in exc.message
        else:
            raise AssertionError("corrupt blob was returned")
        assert not cache.has_blob(sha)
