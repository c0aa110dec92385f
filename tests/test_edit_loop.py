"""The edit loop (issue 11): a plan made through the spec memo is exactly the full path's plan.

For each kind of edit, the manifest is loaded twice, through the memo (``fastload``) and by the
full loader with the memo off, and planned against the same cache: the specs, origins, keys,
actions and reasons must be equal. Each case also says which entries the memo must re-render
(and so which it may reuse): a memo keyed on too little (a var, an input file, the head left
out) gives stale specs or keys and fails the equality; one keyed on too much fails the count.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest

from musicbuild import fastload, planner, specmemo
from musicbuild.cache import Cache
from musicbuild.engine import make_plan
from musicbuild.errors import ManifestError
from musicbuild.lock import LockEntry, LockedOutput, render, render_slow
from musicbuild.manifest import NO_MEMO_ENV, Manifest, load_manifest

PNG_A = b"\x89PNG\r\n\x1a\n" + b"cover A"
PNG_B = b"\x89PNG\r\n\x1a\n" + b"cover B"

MANIFEST = """\
version: 1
vars: {game: Moonfall, mood: calm, unused: x}
output_dir: out
providers:
  studio: {type: local, options: {sample_rate: 22050}}
defaults: {provider: local, format: wav, duration: 0.2, metadata: {album: "{{ game }} OST"}}
tracks:
  - {id: title, prompt: "title theme for {{ game }}", seed: 1}
  - {id: calm-a, prompt: "{{ mood }} forest", seed: 2}
  - id: calm-b
    prompt: "{% if mood == 'calm' %}quiet{% else %}loud{% endif %} river"
    seed: 3
  - {id: from-file, prompt_file: prompts/cave.txt, seed: 4}
  - {id: sung, prompt: "ballad", lyrics_file: lyrics/ballad.txt, seed: 5}
  - {id: covered, prompt: "menu loop", seed: 6, metadata: {cover: art/cover.png}}
  - {id: opts, prompt: "studio take", provider: studio, seed: 7}
  - id: "grid-{{ zone }}-{{ n }}"
    matrix: {zone: [ice, fire], n: [1, 2]}
    prompt: "{{ zone }} battle {{ n }}"
    out: "grid/{{ id }}.wav"
  - {id: labelled, prompt: "credits", labels: [end], seed: 8}
"""
ENTRIES = 9

Edit = Callable[[Path], None]


def _replace(old: str, new: str) -> Edit:
    def edit(root: Path) -> None:
        text = (root / "musicbuild.yaml").read_text()
        assert old in text, old
        (root / "musicbuild.yaml").write_text(text.replace(old, new, 1))
    return edit


def _write(rel: str, data: bytes) -> Edit:
    def edit(root: Path) -> None:
        path = root / rel
        before = path.stat().st_mtime_ns if path.exists() else 0
        path.write_bytes(data)
        os.utime(path, ns=(before + 10**9, before + 10**9))  # a coarse clock must still see a change
    return edit


# edit -> how many entries the memo must render again
EDITS: dict[str, tuple[Edit, int]] = {
    "nothing": (lambda root: None, 0),
    "prompt": (_replace('"title theme for', '"opening theme for'), 1),
    "var used by some tracks": (_replace("mood: calm", "mood: tense"), 3),  # one through its prompt file
    "var used by no track": (_replace("unused: x", "unused: y"), 0),
    "var used through the defaults": (_replace("game: Moonfall", "game: Sunrise"), ENTRIES),
    "default": (_replace("duration: 0.2", "duration: 0.3"), ENTRIES),
    "prompt_file": (_write("prompts/cave.txt", b"echoes in a {{ mood }} cave, longer"), 1),
    "lyrics_file": (_write("lyrics/ballad.txt", b"la la la, again"), 1),
    "cover image": (_write("art/cover.png", PNG_B + b" bigger"), 1),
    "provider option": (_replace("sample_rate: 22050", "sample_rate: 32000"), ENTRIES),
    "matrix": (_replace("n: [1, 2]", "n: [1, 2, 3]"), 1),
    "track added": (_replace("  - {id: labelled", '  - {id: added, prompt: "new one"}\n  - {id: labelled'), 1),
    "track removed": (_replace('  - {id: calm-a, prompt: "{{ mood }} forest", seed: 2}\n', ""), 0),
    "labels": (_replace("labels: [end]", "labels: [end, credits]"), 1),
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "lyrics").mkdir()
    (tmp_path / "art").mkdir()
    (tmp_path / "prompts" / "cave.txt").write_text("echoes in a {{ mood }} cave")
    (tmp_path / "lyrics" / "ballad.txt").write_text("la la la")
    (tmp_path / "art" / "cover.png").write_bytes(PNG_A)
    (tmp_path / "musicbuild.yaml").write_text(MANIFEST)
    return tmp_path


def _load_both(root: Path) -> tuple[Manifest, Manifest]:
    env = {k: v for k, v in os.environ.items() if k != NO_MEMO_ENV}
    fast = load_manifest(root / "musicbuild.yaml", env)
    full = load_manifest(root / "musicbuild.yaml", {**env, NO_MEMO_ENV: "1"})
    assert full.memo is None and fast.memo is not None, "the memo was not used"
    return fast, full


def _assert_same_plan(fast: Manifest, full: Manifest) -> None:
    assert fast.tracks == full.tracks
    assert dict(fast.origins) == dict(full.origins)
    assert (fast.output_dir, fast.cache_dir, fast.sha256) == (full.output_dir, full.cache_dir, full.sha256)
    with Cache(full.cache_dir) as cache:
        planned_fast = make_plan(fast, list(fast.tracks), cache)
        planned_full = make_plan(full, list(full.tracks), cache)
    assert planned_fast == planned_full
    # the keys the memo handed over are the keys the full path computes
    assert [(p.gen_key, [o.out_key for o in p.outputs]) for p in planned_fast] == \
           [(p.gen_key, [o.out_key for o in p.outputs]) for p in planned_full]


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("many", [fastload.MANY_MISSES, 0], ids=["entries-alone", "full-loader-recording"])
def test_the_memo_plans_exactly_what_the_full_path_plans(project: Path, edit: str, many: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastload, "MANY_MISSES", many)  # 0: every cold load goes through the full loader
    monkeypatch.setattr(planner, "SNAPSHOT_FROM", 1)  # the one-pass index read, even for a few outputs
    first, _ = _load_both(project)
    specmemo.save(first.memo)  # what a build does at its end
    assert len(first.memo.fresh) == ENTRIES
    change, rerendered = EDITS[edit]
    change(project)
    fast, full = _load_both(project)
    assert len(fast.memo.fresh) == rerendered, sorted(t.id for t in fast.tracks if id(t) in {
        id(s) for e in fast.memo.fresh.values() for s in e.made})
    _assert_same_plan(fast, full)
    specmemo.save(fast.memo)  # and once more from the updated memo: nothing left to render
    again, full_again = _load_both(project)
    assert len(again.memo.fresh) == 0
    _assert_same_plan(again, full_again)


def test_a_built_project_plans_the_same_after_a_build_and_an_edit(project: Path) -> None:
    """Through the real build: outputs written, records in the cache, the lock, the memo saved."""
    from musicbuild import api

    result = api.build(project / "musicbuild.yaml")
    assert result.ok
    _replace('"title theme for', '"opening theme for')(project)
    fast, full = _load_both(project)
    assert len(fast.memo.fresh) == 1
    _assert_same_plan(fast, full)
    rows = api.plan(project / "musicbuild.yaml")
    assert [r["id"] for r in rows if r["action"] != "up-to-date"] == ["title"]


@pytest.mark.parametrize("damage", ["header", "one entry"])
def test_a_damaged_memo_is_a_warning_and_the_full_render(project: Path, damage: str) -> None:
    first, _ = _load_both(project)
    specmemo.save(first.memo)
    if damage == "header":
        first.memo.path.write_bytes(b'{"v": 1, "entries": ')
    else:
        head, first_entry, rest = first.memo.path.read_bytes().split(b"\n", 2)
        first.memo.path.write_bytes(b"\n".join([head, first_entry[:33] + b"[1, 2", rest]))
    fast, full = _load_both(project)
    assert fast.memo.warning and "was damaged" in fast.memo.warning
    assert len(fast.memo.fresh) == (ENTRIES if damage == "header" else 1)
    _assert_same_plan(fast, full)


def test_an_entry_leaning_on_an_anchor_elsewhere_is_not_reused(project: Path) -> None:
    """An alias makes an entry's meaning depend on other text: it is never taken from the memo."""
    text = MANIFEST.replace("unused: x}", "unused: x, common: &common {seed: 42}}").replace(
        '  - {id: labelled, prompt: "credits", labels: [end], seed: 8}',
        '  - {<<: *common, id: labelled, prompt: "credits"}')
    (project / "musicbuild.yaml").write_text(text)
    first, _ = _load_both(project)
    specmemo.save(first.memo)
    _replace("seed: 42", "seed: 43")(project)
    fast, full = _load_both(project)
    assert [t.seed for t in fast.tracks if t.id == "labelled"] == [43]
    _assert_same_plan(fast, full)


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_an_output_folder_swapped_for_a_symlink_is_seen(project: Path, where: str) -> None:
    """Output paths are resolved through their folders: a folder that became a symlink changes
    them (inside output_dir) or makes them an error (outside), memo or not."""
    first, _ = _load_both(project)
    specmemo.save(first.memo)
    target = project.parent / f"{project.name}-elsewhere" if where == "outside" else project / "out" / "real-grid"
    target.mkdir(parents=True)
    (project / "out").mkdir(exist_ok=True)
    (project / "out" / "grid").symlink_to(target)
    env = {k: v for k, v in os.environ.items() if k != NO_MEMO_ENV}
    if where == "inside":
        fast, full = _load_both(project)
        assert len(fast.memo.fresh) == 1 and any("real-grid" in str(t.outputs[0].path) for t in fast.tracks)
        _assert_same_plan(fast, full)
        return
    with pytest.raises(ManifestError) as fast_error:
        load_manifest(project / "musicbuild.yaml", env)
    with pytest.raises(ManifestError) as full_error:
        load_manifest(project / "musicbuild.yaml", {**env, NO_MEMO_ENV: "1"})
    assert fast_error.value.lines() == full_error.value.lines()
    assert "through a symlink" in str(fast_error.value.lines())


def test_a_cover_edited_between_load_and_plan_is_hashed_as_it_is(project: Path) -> None:
    """Keys handed over by the loader are not used for a spec that hashes an input file: a
    long-lived process (the API) may plan a manifest loaded before the file changed."""
    first, _ = _load_both(project)
    specmemo.save(first.memo)
    fast, full = _load_both(project)
    _write("art/cover.png", PNG_B)(project)
    _assert_same_plan(fast, full)


def test_the_lock_renders_exactly_as_json_dumps_would() -> None:
    entries = [LockEntry("b\u00e9-\"q\"", "g" * 64, "local", "synth-1", 7, (), "first",
                         (LockedOutput("x/\u2028y.wav", 1, "o" * 64, "s" * 64),)),
               LockEntry("a", "h", "p", "m", 0, ("job-1", "job\n2"), "all",
                         (LockedOutput("a-1.mp3", 1, "k1", "s1"), LockedOutput("a-2.mp3", 2, "k2", "s2"))),
               LockEntry("c", "h", "p", "m", 2**32 - 1, ("j",), "first", ())]
    assert render(entries) == render_slow(entries)
    assert render([]) == render_slow([])
    assert json.loads(render(entries))["tracks"]["a"]["job_ids"] == ["job-1", "job\n2"]
