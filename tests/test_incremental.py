"""Plans and builds that carry unchanged tracks as rows (``incremental.py``, ``cleanset.py``) give
exactly what the full path gives, edit by edit.

Two copies of one project are built the same way, then edited the same way; one is then planned
and built the incremental way, the other with the spec memo off (``MUSICBUILD_NO_MEMO``: the full
loader, every track planned, the whole lock read and rendered). Plan rows, report rows, the lock's
bytes, the stamp and the next no-op must be the same, and the incremental side must really have
left the unchanged tracks out (else the comparison proves nothing).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from musicbuild import api, lock
from musicbuild.manifest import NO_MEMO_ENV
from tests.test_edit_loop import EDITS, ENTRIES, MANIFEST, PNG_A

ENV = {k: v for k, v in os.environ.items() if k != NO_MEMO_ENV}
FULL = {**ENV, NO_MEMO_ENV: "1"}
TRACKS = 12  # the entries of MANIFEST make 12 tracks (a 2 x 2 matrix)


def _project(root: Path) -> Path:
    for sub in ("prompts", "lyrics", "art"):
        (root / sub).mkdir(parents=True)
    (root / "prompts" / "cave.txt").write_text("echoes in a {{ mood }} cave")
    (root / "lyrics" / "ballad.txt").write_text("la la la")
    (root / "art" / "cover.png").write_bytes(PNG_A)
    (root / "musicbuild.yaml").write_text(MANIFEST)
    assert api.build(root / "musicbuild.yaml", env=ENV).ok
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("built") / "p")


@pytest.fixture
def pair(built: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two built copies (the cache and stamp name their folder: copied, then built once more)."""
    out = []
    for name in ("inc", "full"):
        root = tmp_path / name
        shutil.copytree(built, root, symlinks=True)
        shutil.rmtree(root / ".musicbuild" / "stamps")
        shutil.rmtree(root / ".musicbuild" / "memo", ignore_errors=True)
        assert api.build(root / "musicbuild.yaml", env=ENV).ok  # their own memo and stamp
        out.append(root)
    return out[0], out[1]


def _norm(value: Any, root: Path) -> Any:
    return json.loads(json.dumps(value).replace(str(root), "ROOT"))


def _report(root: Path) -> dict[str, Any]:
    doc = json.loads((root / ".musicbuild" / "last-report.json").read_text())
    for key in ("started_at", "finished_at", "manifest"):
        doc.pop(key)
    for row in doc["tracks"]:
        row["seconds"] = 0.0
    return _norm(doc, root)


def _stamp(root: Path) -> dict[str, Any]:
    [path] = glob.glob(str(root / ".musicbuild" / "stamps" / "*.json"))
    from musicbuild import stamp

    header, files, body = stamp._sections(Path(path).read_bytes())
    doc = json.loads(b"{" + body[body.index(b",") + 1:])
    # every file with its size and output key (mtimes differ between the two copies)
    doc["files"] = sorted([f[3].decode(), int(f[0]), f[2].decode()] for f in (line.split(b" ", 3) for line in files))
    doc["header"] = [header[0].decode(), header[2].decode(), header[4].decode(), header[5].decode()]
    for key in ("rows_crc", "manifest_sha256"):
        doc.pop(key)
    for row in doc["rows"]:
        row["seconds"] = 0.0
    return _norm(doc, root)


def _clean_count(root: Path) -> int:
    manifest = api.load(root / "musicbuild.yaml", env=ENV, _partial=True)
    return len(manifest.clean) if manifest.clean is not None else 0


@pytest.mark.parametrize("edit", list(EDITS))
def test_plan_and_build_equal_the_full_path_after_each_kind_of_edit(pair: tuple[Path, Path], edit: str) -> None:
    inc, full = pair
    change, rerendered = EDITS[edit]
    for root in pair:
        change(root)
    # the covered track hashes its cover each time (never clean); the re-rendered entries are not clean
    clean = _clean_count(inc)
    if rerendered < ENTRIES:
        assert 0 < clean < TRACKS
    rows_inc = api.plan(inc / "musicbuild.yaml", env=ENV)
    rows_full = api.plan(full / "musicbuild.yaml", env=FULL)
    assert _norm(rows_inc, inc) == _norm(rows_full, full)
    assert api.check(inc / "musicbuild.yaml", env=ENV) == api.check(full / "musicbuild.yaml", env=FULL)

    res_inc = api.build(inc / "musicbuild.yaml", env=ENV)
    res_full = api.build(full / "musicbuild.yaml", env=FULL)
    assert res_inc.ok and res_full.ok
    assert res_inc.summary == res_full.summary
    assert (inc / "musicbuild.lock").read_bytes() == (full / "musicbuild.lock").read_bytes()
    assert _report(inc) == _report(full)
    assert _stamp(inc) == _stamp(full)
    # and the next build is a no-op on both, with the same rows
    again_inc, again_full = api.build(inc / "musicbuild.yaml", env=ENV), api.build(full / "musicbuild.yaml", env=FULL)
    assert again_inc.noop and again_full.noop
    assert _norm(list(again_inc.rows), inc) == _norm(list(again_full.rows), full)


def test_a_chain_of_edits_stays_incremental_and_right(pair: tuple[Path, Path]) -> None:
    inc, full = pair
    for n in range(3):
        for root in pair:
            text = (root / "musicbuild.yaml").read_text()
            (root / "musicbuild.yaml").write_text(text.replace(f'"ballad{"!" * n}"', f'"ballad{"!" * (n + 1)}"'))
        assert _clean_count(inc) == TRACKS - 2  # the edited track and the covered one
        assert api.build(inc / "musicbuild.yaml", env=ENV).ok and api.build(full / "musicbuild.yaml", env=FULL).ok
        assert (inc / "musicbuild.lock").read_bytes() == (full / "musicbuild.lock").read_bytes()
        assert _report(inc) == _report(full)


def test_an_unchanged_output_deleted_or_touched_is_not_clean(pair: tuple[Path, Path]) -> None:
    inc, full = pair
    for root in pair:
        EDITS["prompt"][0](root)
        (root / "out" / "calm-a.wav").unlink()
        os.utime(root / "out" / "labelled.wav", ns=(1, 1))  # same bytes, another mtime: re-hashed, up to date
    assert _clean_count(inc) == TRACKS - 4
    assert _norm(api.plan(inc / "musicbuild.yaml", env=ENV), inc) == \
           _norm(api.plan(full / "musicbuild.yaml", env=FULL), full)
    assert api.build(inc / "musicbuild.yaml", env=ENV).ok and api.build(full / "musicbuild.yaml", env=FULL).ok
    assert _report(inc) == _report(full)
    assert (inc / "musicbuild.lock").read_bytes() == (full / "musicbuild.lock").read_bytes()


def test_no_stamp_no_clean_tracks(pair: tuple[Path, Path]) -> None:
    inc, _ = pair
    EDITS["prompt"][0](inc)
    shutil.rmtree(inc / ".musicbuild" / "stamps")
    assert _clean_count(inc) == 0


def test_a_lock_changed_since_the_stamp_means_no_clean_tracks(pair: tuple[Path, Path]) -> None:
    inc, _ = pair
    EDITS["prompt"][0](inc)
    assert _clean_count(inc) > 0
    text = (inc / "musicbuild.lock").read_text()
    (inc / "musicbuild.lock").write_text(text.replace('"seed": 8', '"seed": 9'))  # e.g. a git checkout
    assert _clean_count(inc) == 0


def test_a_lock_not_in_its_written_form_is_read_and_rewritten_whole(pair: tuple[Path, Path]) -> None:
    inc, full = pair
    for root in pair:
        EDITS["prompt"][0](root)
        compact = json.dumps(json.loads((root / "musicbuild.lock").read_text()))  # same entries, other layout
        (root / "musicbuild.lock").write_text(compact)
    assert lock.LockBlocks.read(inc / "musicbuild.lock") is None
    assert _clean_count(inc) == 0  # the stamp no longer vouches: the lock is not the file it recorded
    assert api.build(inc / "musicbuild.yaml", env=ENV).ok and api.build(full / "musicbuild.yaml", env=FULL).ok
    assert (inc / "musicbuild.lock").read_bytes() == (full / "musicbuild.lock").read_bytes()
    assert lock.LockBlocks.read(inc / "musicbuild.lock") is not None


def test_a_duplicate_of_a_clean_entry_is_the_full_loaders_error(pair: tuple[Path, Path]) -> None:
    inc, _ = pair
    text = (inc / "musicbuild.yaml").read_text()
    line = '  - {id: calm-a, prompt: "{{ mood }} forest", seed: 2}\n'
    (inc / "musicbuild.yaml").write_text(text.replace(line, line + line))
    assert "calm-a" in _same_error(inc / "musicbuild.yaml")


def _same_error(manifest: Path) -> str:
    """The error of planning ``manifest`` the incremental way, which must be the full loader's."""
    with pytest.raises(Exception) as partial:
        api.plan(manifest, env=ENV)
    with pytest.raises(Exception) as whole:
        api.plan(manifest, env=FULL)
    assert str(partial.value) == str(whole.value)
    return str(whole.value)


def test_a_changed_track_reading_a_clean_output_is_the_full_loaders_error(tmp_path: Path) -> None:
    (tmp_path / "musicbuild.yaml").write_text(
        "version: 1\noutput_dir: out\nproviders:\n  b: {type: beatra, api_key_env: MB_TEST_BEATRA_KEY}\n"
        "defaults: {provider: local, format: wav, duration: 0.2}\ntracks:\n"
        "  - {id: one, prompt: one}\n  - {id: two, prompt: two}\n  - {id: three, prompt: three}\n")
    assert api.build(tmp_path / "musicbuild.yaml", env=ENV).ok
    text = (tmp_path / "musicbuild.yaml").read_text()
    (tmp_path / "musicbuild.yaml").write_text(text.replace(
        "{id: three, prompt: three}", "{id: three, prompt: three, provider: b, reference_audio: out/one.wav}"))
    assert "input file" in _same_error(tmp_path / "musicbuild.yaml")


def test_lock_blocks_splice_to_what_render_writes(tmp_path: Path) -> None:
    def entry(i: int, key: str = "g") -> lock.LockEntry:
        return lock.LockEntry(f"t{i:03d}\u00e9\"", key * 3, "local", "m", i, ("j",) if i % 2 else (), "first",
                              tuple(lock.LockedOutput(f"a/{i}-{c}.wav", c, f"ok{i}", "sha") for c in (1, 2)))

    path = tmp_path / "musicbuild.lock"
    entries = {e.id: e for e in (entry(i) for i in range(0, 40, 2))}
    path.write_text(lock.render(entries.values()))
    blocks = lock.LockBlocks.read(path)
    assert blocks is not None and dict(blocks) == entries
    assert not blocks.write_spliced({}, set(entries))  # nothing changed: nothing written
    fresh = {entry(4, "h").id: entry(4, "h"), entry(5).id: entry(5), entry(99).id: entry(99)}
    keep = (set(entries) - {entry(10).id}) | set(fresh)
    assert blocks.write_spliced(fresh, keep)
    want = {**{k: v for k, v in entries.items() if k in keep}, **fresh}
    assert path.read_text() == lock.render(want.values())
    for text in ("", "{}", "not json", json.dumps(json.loads(lock.render(want.values())))):
        path.write_text(text)
        assert lock.LockBlocks.read(path) is None  # not render's head and tail: read_lock reads it
    for text in (lock.render(want.values()).replace("\n    }", "\n   }"),  # a block's end moved
                 lock.render(want.values()).replace('"t004', '"t999', 1)):  # out of order
        path.write_text(text)
        blocks = lock.LockBlocks.read(path)
        assert blocks is not None
        with pytest.raises(lock.LockBlocks.NotWritten):
            blocks.write_spliced({}, set())
        assert path.read_text() == text  # nothing written


@pytest.mark.parametrize("track_id", ["plain", "caf\u00e9 \"quoted\" \\ back\nslash", "\U0001f3b5"])
@pytest.mark.parametrize("outs", [1, 2])
def test_clean_rows_are_the_full_paths_rows(track_id: str, outs: int) -> None:
    from musicbuild.cleanset import CleanTrack, plan_row, report_row, report_row_json
    from musicbuild.model import Action, Outcome, OutputSpec, PlannedOutput, PlannedTrack
    from musicbuild.report import outcome_row, plan_row as full_plan_row

    rels = tuple(f"d/{track_id}-{n}.wav" for n in range(outs))
    track = CleanTrack(3, track_id, rels, tuple("/abs/" + r for r in rels), "g" * 64, "studio",
                       "m\u00f6del", ("x", "\u00fc"), ())
    outcome = Outcome(id=track_id, out=list(rels), action=Action.UP_TO_DATE, reasons=(), status="ok",
                      gen_key=track.gen_key, provider="studio", model=track.model, clips=outs)
    assert report_row(track) == outcome_row(outcome)
    assert report_row_json(track) == json.dumps(outcome_row(outcome), separators=(",", ":"))

    class Spec:  # what plan_row reads of a spec
        id, model, labels = track_id, track.model, track.labels
        provider = type("P", (), {"name": "studio"})

    planned = PlannedTrack(Spec, track.gen_key, tuple(PlannedOutput(OutputSpec(n + 1, r, Path("/abs/" + r)), "k", "ok",
                                                                    None, {}) for n, r in enumerate(rels)),
                           Action.UP_TO_DATE, (), 0.0)
    assert plan_row(track) == full_plan_row(planned)


def test_a_no_op_build_reads_only_the_stamps_check_section(built: Path, tmp_path: Path) -> None:
    """What the plain ``musicbuild build`` that finds nothing to do imports: no JSON, no regular
    expressions, no OpenSSL, no pathlib (each a measurable part of a 10,000-track no-op)."""
    import subprocess
    import sys

    root = tmp_path / "p"
    shutil.copytree(built, root, symlinks=True)
    shutil.rmtree(root / ".musicbuild" / "stamps")
    assert api.build(root / "musicbuild.yaml", env=ENV).ok  # its own stamp
    code = ("import sys; from musicbuild.noop import try_noop; "
            "print(try_noop(['build', '-q', '-f', sys.argv[1]]), sorted(m for m in ('json', 're', '_hashlib', "
            "'hashlib', 'pathlib', 'typing', 'collections', 'musicbuild.cli', 'musicbuild.api') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-S", "-c", code, str(root / "musicbuild.yaml")], capture_output=True,
                          text=True, env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)}, check=True)
    assert done.stdout.split() == ["0", "[]"], done.stdout + done.stderr
    os.utime(root / "out" / "calm-a.wav", ns=(5, 5))  # and it still sees a touched output
    done = subprocess.run([sys.executable, "-S", "-c", code, str(root / "musicbuild.yaml")], capture_output=True,
                          text=True, env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)}, check=True)
    assert done.stdout.split()[0] == "None"


def test_events_are_the_full_paths_events(pair: tuple[Path, Path]) -> None:
    """``on_event`` (and so the CLI's display) sees every track planned and finished, unchanged ones too."""
    seen: dict[Path, list[Any]] = {}
    for root, env in zip(pair, (ENV, FULL)):
        EDITS["prompt"][0](root)
        events: list[Any] = []
        assert api.build(root / "musicbuild.yaml", env=env, on_event=events.append).ok
        planned = [e for e in events if e.kind == "planned"]
        finished = sorted(({**e.track, "seconds": 0.0} for e in events if e.kind == "finished"), key=lambda r: r["id"])
        seen[root] = [_norm(list(planned[0].tracks), root), _norm(finished, root), len(planned)]
    assert seen[pair[0]] == seen[pair[1]]
    assert seen[pair[0]][2] == 1 and len(seen[pair[0]][1]) == TRACKS


def test_the_manifest_is_hashed_only_when_its_stat_moved_or_was_too_fresh_to_trust(built: Path, tmp_path: Path) -> None:
    from musicbuild import stamp

    root = tmp_path / "p"
    shutil.copytree(built, root, symlinks=True)
    shutil.rmtree(root / ".musicbuild" / "stamps")
    manifest = root / "musicbuild.yaml"
    manifest.write_text(manifest.read_text() + "# edited\n")  # just now: an edit in the same tick could hide
    assert api.build(manifest, env=ENV).ok
    [path] = glob.glob(str(root / ".musicbuild" / "stamps" / "*.json"))
    assert stamp._sections(Path(path).read_bytes())[0][6] == b"-"
    os.utime(manifest, ns=(10**18, 10**18))  # touched, same text: the hash says fresh
    assert stamp.fresh_count(str(manifest), ENV) == TRACKS
    manifest.write_text(manifest.read_text() + "# again\n")
    os.utime(manifest, ns=(10**9, 10**9))  # an edit long ago: its stat can be trusted
    assert api.build(manifest, env=ENV).ok
    assert stamp._sections(Path(path).read_bytes())[0][6] == b"%d %d" % (manifest.stat().st_size, 10**9)
    assert stamp.fresh_count(str(manifest), ENV) == TRACKS
    manifest.write_text(manifest.read_text().replace("credits", "credit"))  # another size: seen
    os.utime(manifest, ns=(10**9, 10**9))
    assert stamp.fresh_count(str(manifest), ENV) is None


def test_the_memo_takes_an_edit_at_its_end_and_is_rewritten_when_mostly_stale(built: Path, tmp_path: Path) -> None:
    from musicbuild import specmemo

    root = tmp_path / "p"
    shutil.copytree(built, root, symlinks=True)
    shutil.rmtree(root / ".musicbuild" / "memo")
    manifest = root / "musicbuild.yaml"
    assert api.build(manifest, env=ENV).ok
    [memo] = glob.glob(str(root / ".musicbuild" / "memo" / "*.json"))
    before = Path(memo).read_bytes()
    EDITS["prompt"][0](root)
    assert api.build(manifest, env=ENV).ok
    after = Path(memo).read_bytes()
    assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1  # appended, one line
    Path(memo).write_bytes(after + b"0123abcd [\"torn")  # a crash in the middle of the next append
    assert _clean_count(root) == TRACKS - 1  # the torn line is no entry; the rest is used as ever
    assert not api.load(manifest, env=ENV).memo.warning
    for n in range(ENTRIES):  # many edits: the stale lines pile up, then the file is written whole again
        text = manifest.read_text()
        manifest.write_text(text.replace('"ballad', f'"ballad {n}', 1) if n == 0 else
                            text.replace(f'"ballad {n - 1}', f'"ballad {n}', 1))
        assert api.build(manifest, env=ENV).ok
    lines = Path(memo).read_bytes().count(b"\n")
    assert lines <= ENTRIES * 3 // 2 + 1, lines
    assert specmemo.read(root / ".musicbuild", manifest.resolve(), ENV).lines  # and it reads back


def test_a_streamed_report_is_redacted(pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    inc, _ = pair
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("MB_TEST_API_KEY", secret)
    text = (inc / "musicbuild.yaml").read_text()
    (inc / "musicbuild.yaml").write_text(text.replace('"ballad"', f'"ballad {secret}"'))  # a secret in a prompt
    assert _clean_count(inc) > 0
    assert api.build(inc / "musicbuild.yaml", env={**ENV, "MB_TEST_API_KEY": secret}).ok
    report = (inc / ".musicbuild" / "last-report.json").read_text()
    assert secret not in report and json.loads(report)["summary"]["total"] == TRACKS


def test_a_lock_edited_behind_the_stamps_back_is_read_and_rewritten_whole(pair: tuple[Path, Path]) -> None:
    """Same size and mtime as the stamp recorded, not render's form: the splice declines, the lock
    is read by read_lock and rendered whole, as the full path does."""
    inc, full = pair
    for root in pair:
        EDITS["prompt"][0](root)
        path = root / "musicbuild.lock"
        st = path.stat()
        text = path.read_text()
        at = text.index("\n    },")
        path.write_text(text[:at] + "\n   } ," + text[at + len("\n    },"):])  # same length, JSON still
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _clean_count(inc) > 0  # the stamp still vouches for it
    assert api.build(inc / "musicbuild.yaml", env=ENV).ok and api.build(full / "musicbuild.yaml", env=FULL).ok
    assert (inc / "musicbuild.lock").read_bytes() == (full / "musicbuild.lock").read_bytes()
    assert "\n   } ," not in (inc / "musicbuild.lock").read_text()


def test_a_live_job_of_an_unchanged_track_is_left_as_the_full_path_leaves_it(pair: tuple[Path, Path]) -> None:
    """A submitted job journaled for an unchanged track's key (e.g. a `--force` killed mid-job) is not
    an orphan of the partial plan: neither path collects it while the track is up to date."""
    from musicbuild.journal import Journal

    states = []
    for root, env in zip(pair, (ENV, FULL)):
        gen_key = next(r["gen_key"] for r in api.plan(root / "musicbuild.yaml", env=env) if r["id"] == "calm-a")
        journal = Journal(root / ".musicbuild")
        rec = journal.begin(gen_key, provider="local", type="local", base_url="", model="synth-v1", track="calm-a",
                            estimate_usd=0.0)
        journal.move(journal.move(rec, "sent"), "submitted", job_id="killed-force")
        journal.close()
        EDITS["prompt"][0](root)
        result = api.build(root / "musicbuild.yaml", env=env)
        assert result.ok and not result.report["collected"]
        states.append(Journal(root / ".musicbuild").live(gen_key).state)
    assert states == ["submitted", "submitted"]


def test_a_build_reads_the_stamps_check_section_once(pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from musicbuild import stamp

    inc, _ = pair
    EDITS["prompt"][0](inc)
    opened: list[str] = []
    real_open = open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(".json") and "/.musicbuild/stamps/" in str(file):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    assert api.build(inc / "musicbuild.yaml", env=ENV).ok
    assert len(opened) == 1 and not stamp._HANDED  # read once (for the no-op question), handed over, taken
