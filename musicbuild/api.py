"""musicbuild as a library: the functions the command line itself calls, nothing more.

    import musicbuild

    manifest = musicbuild.load("musicbuild.yaml")
    for row in musicbuild.plan(manifest):
        print(row["id"], row["action"], row["reasons"], row["cost_usd"])
    result = musicbuild.build(manifest, jobs=4, on_event=lambda e: print(e.kind, e.track and e.track["id"]))
    if not result.ok:
        raise SystemExit(result.exit_code)

Rows are the JSON report's (SPEC 6): ``plan`` gives one per track with status ``planned`` and the
estimated ``cost_usd``; ``build`` returns the whole report document in ``result.report`` and its
rows in ``result.rows``. Bad input raises a ``musicbuild.errors.MusicbuildError`` subclass whose
``message`` is the one line the CLI prints and whose ``exit_code`` it exits with. Nothing here
prints. Importing this module is cheap (results are NamedTuples, not dataclasses, for that): the
manifest loader, the engine and the audio stack load on first use.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal, Mapping, NamedTuple, Sequence, Union

from .errors import MusicbuildError, UsageError

if TYPE_CHECKING:
    from typing import TypedDict

    from .maintenance import DeadOutput, GcResult
    from .manifest import Manifest
    from .model import Outcome, PlannedTrack

PathLike = Union[str, os.PathLike]  # not "os.PathLike[str]": a forward reference costs ms of import time
LAST_REPORT = "last-report.json"  # in cache_dir: what `musicbuild report` renders again
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CLOSED_PIPE = 141  # what a shell reports for a process ended by SIGPIPE (`musicbuild status | head`)


if TYPE_CHECKING:
    class TrackRow(TypedDict, total=False):
        """One track of the JSON report or of ``plan`` (SPEC 6)."""

        id: str
        out: str | list[str]
        action: str  # up-to-date | materialize | resume | generate
        reasons: list[str]  # new, spec-changed, output-missing, output-modified, metadata-changed, ...
        status: str  # planned | ok | failed | skipped
        gen_key: str
        provider: str
        model: str
        clips: int
        cost_usd: float  # the estimate for `plan`, what was charged for `build`
        estimated_usd: float  # the plan's estimate
        seconds: float
        attempts: int
        error: str | None
        job_id: str | None
        labels: list[str]  # plan rows only
else:  # a plain dict at run time: building a TypedDict costs milliseconds of import time
    TrackRow = dict


class Event(NamedTuple):
    """What ``build`` reports as it goes, to the ``on_event`` callback.

    ``planned``: the plan is made, ``tracks`` holds every plan row. ``started``: ``track`` (its plan
    row) begins. ``state``: a started ``track`` (its plan row) is now in ``state``, with ``detail``:
    ``waiting`` (for a ``cpu`` slot, for another worker of the ``fleet``, for the ``shared``
    generation another track of this build makes), ``generating`` (a free provider renders it
    in-process), ``submitting``, ``queued`` (at the provider), ``polling`` (the provider runs it),
    ``downloading``, ``encoding`` (writing its outputs). ``finished``: ``track`` is its report row
    (ok, failed or skipped). A build answered by the null-build stamp sends no events
    (``BuildResult.noop``). Callbacks run on the build's event loop: keep them quick.
    """

    kind: Literal["planned", "started", "state", "finished"]
    track: TrackRow | None = None
    tracks: tuple[TrackRow, ...] = ()
    state: str | None = None
    detail: str | None = None


OnEvent = Callable[[Event], None]


class BuildResult(NamedTuple):
    document: dict[str, Any] | None  # the JSON report (None for a no-op: `report` makes it on demand)
    noop_rows: Sequence[TrackRow] | None = None  # answered by the null-build stamp: its rows (read on first use)
    manifest: str = ""
    interrupted: bool = False
    budget_stopped: bool = False  # --max-cost kept tracks from being submitted
    shard_skipped: int = 0  # tracks left to other shards (not failures)
    cache_dir: str = ""

    @property
    def noop(self) -> bool:
        """Answered by the null-build stamp: nothing was parsed, planned or written."""
        return self.noop_rows is not None

    @property
    def report(self) -> dict[str, Any]:
        """The JSON report document (SPEC 6), as --report writes it."""
        if self.document is not None:
            if not isinstance(self.document["tracks"], list):  # rows made on demand (incremental.py)
                self.document["tracks"] = list(self.document["tracks"])
            return self.document
        from .report import noop_report  # a no-op build does not pay for it unless asked

        return noop_report(Path(self.manifest), list(self.noop_rows or []))  # type: ignore[arg-type]

    @property
    def rows(self) -> Sequence[TrackRow]:
        return self.noop_rows if self.noop_rows is not None else self.report["tracks"]

    @property
    def summary(self) -> dict[str, Any]:
        return (self.document or self.report)["summary"]  # (not the rows: they may be made on demand)

    @property
    def warnings(self) -> list[str]:
        return (self.document or self.report).get("warnings") or []

    @property
    def exit_code(self) -> int:
        """0 ok, 1 a track failed or was skipped, 3 stopped by --max-cost, 130 interrupted."""
        if self.noop:
            return EXIT_OK
        counts = self.summary
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.budget_stopped and not counts["failed"]:
            return EXIT_REFUSED
        return EXIT_FAILED if counts["failed"] or counts["skipped"] > self.shard_skipped else EXIT_OK

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK


class Status(NamedTuple):
    tracks: list[dict[str, Any]]  # per track: id, state (up-to-date|stale|missing|modified), action, reasons, out
    dead: list["DeadOutput"]  # files we wrote that no track writes any more (only without targets)


def load(path: PathLike = "musicbuild.yaml", *, env: Mapping[str, str] | None = None,
         _partial: bool = False) -> "Manifest":
    """Parse, validate and render a manifest; raises ``ManifestError`` listing every problem.
    The keys its providers name (``api_key_env``) and its cache URL's password are registered for
    redaction: they never appear in any message, report or page, in any encoding.
    (``_partial``: unchanged tracks may stay rows in ``manifest.clean``; see ``incremental.py``.)"""
    from . import redact
    from .manifest import load_manifest

    manifest = load_manifest(Path(path), env, _partial)
    redact.remember_config([p.api_key_env for p in manifest.providers.values()], [manifest.remote], env)
    return manifest


def _manifest(manifest: "Manifest | PathLike", env: Mapping[str, str] | None, partial: bool = False) -> "Manifest":
    if hasattr(manifest, "tracks"):
        return manifest  # type: ignore[return-value]
    loaded = load(manifest, env=env, _partial=partial)  # type: ignore[arg-type]
    if loaded.clean is not None and (loaded.remote or loaded.coordinator):  # a fleet's build plans every track
        loaded = load(manifest, env=env)  # type: ignore[arg-type]
    return loaded


def validate(manifest: "Manifest | PathLike" = "musicbuild.yaml", *,
             env: Mapping[str, str] | None = None) -> "Manifest":
    """The manifest, its templates and files, every provider's input rules and that the API keys
    are set; no network. Raises on the first kind of problem found."""
    from .engine import check_inputs, credential_problems
    from .errors import ConfigError

    env = os.environ if env is None else env
    manifest = _manifest(manifest, env)
    check_inputs(manifest, list(manifest.tracks), env)
    problems = credential_problems(list(manifest.tracks), env)
    if problems:
        raise ConfigError("\n".join(problems))
    return manifest


class _Planned(NamedTuple):
    manifest: Any  # Manifest
    tracks: list  # of PlannedTrack


def _plan(manifest: "Manifest | PathLike", targets: Iterable[str], force: bool,
          env: Mapping[str, str] | None, partial: bool = False) -> _Planned:
    from .engine import check_inputs, make_plan, select
    from .planner import read_cache

    env = os.environ if env is None else env
    targets = list(targets)
    if partial:
        from .incremental import allowed

        partial = allowed(env, targets=targets, force=force)
    manifest = _manifest(manifest, env, partial)
    specs = select(manifest, targets)
    check_inputs(manifest, specs, env)
    with read_cache(manifest.cache_dir) as cache:  # never creates the cache folder
        return _Planned(manifest, make_plan(manifest, specs, cache, force))


def plan(manifest: "Manifest | PathLike" = "musicbuild.yaml", targets: Iterable[str] = (), *,
         force: bool = False, env: Mapping[str, str] | None = None) -> list[TrackRow]:
    """What ``build`` would do per track, why, and its estimated cost. Writes nothing."""
    return list(_plan_rows(manifest, targets, force, env))


def _plan_rows(manifest: "Manifest | PathLike", targets: Iterable[str], force: bool,
               env: Mapping[str, str] | None) -> Sequence[TrackRow]:
    """``plan``'s rows; those of tracks proven up to date without a plan (``incremental.py``) are
    made when read (``plan`` on the command line prints them one at a time)."""
    from .report import plan_row

    planned = _plan(manifest, targets, force, env, partial=True)
    rows = [plan_row(pt) for pt in planned.tracks]
    if planned.manifest.clean is None:
        return rows  # type: ignore[return-value]
    from .incremental import plan_rows

    return plan_rows(planned.manifest.clean.tracks, planned.tracks, rows)  # type: ignore[return-value]


def check(manifest: "Manifest | PathLike" = "musicbuild.yaml", targets: Iterable[str] = (), *,
          env: Mapping[str, str] | None = None, on_warning: Callable[[str], None] | None = None) -> list[TrackRow]:
    """The plan rows of the tracks a build would touch: empty means everything is up to date.
    Given a path and no targets, a fresh null-build stamp answers without loading the manifest
    (a damaged stamp is thrown away, said to ``on_warning``, and the full path taken)."""
    targets = list(targets)
    if not targets and not hasattr(manifest, "tracks"):
        from . import stamp

        if stamp.fresh_rows(Path(manifest), env, on_warning) is not None:  # type: ignore[arg-type]
            return []
    return [row for row in plan(manifest, targets, env=env) if row["action"] != "up-to-date"]


def status(manifest: "Manifest | PathLike" = "musicbuild.yaml", targets: Iterable[str] = (), *,
           env: Mapping[str, str] | None = None) -> Status:
    """Per track: up to date, stale (why), missing or modified; and, for the whole manifest, the
    dead outputs (see ``clean_dead``). Writes nothing."""
    from .maintenance import dead_outputs, status_row
    from .planner import read_cache

    targets = list(targets)
    planned = _plan(manifest, targets, False, env)
    dead = []
    if not targets:
        with read_cache(planned.manifest.cache_dir) as cache:
            dead = dead_outputs(planned.manifest, cache)
    return Status([status_row(pt) for pt in planned.tracks], dead)


def build(manifest: "Manifest | PathLike" = "musicbuild.yaml", targets: Iterable[str] = (), *,
          jobs: int = 8, keep_going: bool = False, force: bool = False, max_cost: float | None = None,
          locked: bool = False, frozen: bool = False, offline: bool = False,
          shard: tuple[int, int] | None = None, remote: str | None = None, coordinator: str | None = None,
          report: PathLike | None = None, junit: PathLike | None = None,
          on_event: OnEvent | None = None, env: Mapping[str, str] | None = None) -> BuildResult:
    """Build what is stale, exactly as ``musicbuild build`` does (same options, same report).

    ``report``/``junit``: also write the JSON report / JUnit XML there. ``remote``: the shared
    cache URL (overrides ``MUSICBUILD_REMOTE_CACHE`` and ``cache.remote``); one that cannot be opened
    at all is a ``UsageError``. ``coordinator``: a fleet's Redis URL (overrides
    ``MUSICBUILD_COORDINATOR`` and ``cache.coordinator``). ``offline``: never contact a provider, but
    update the lock. Given a path, no targets and none of force/shard/remote, a fresh null-build
    stamp answers without loading the manifest (``result.noop``).
    """
    env = os.environ if env is None else env
    targets = tuple(targets)
    if remote is not None:
        _check_remote(remote, env)
    if not targets and not force and not shard and not remote and not hasattr(manifest, "tracks"):
        from . import stamp

        repaired: list[str] = []
        fresh = stamp.read_fresh(Path(manifest), env, repaired.append)  # type: ignore[arg-type]
        if fresh is not None:
            result = BuildResult(None, fresh["rows"], str(manifest), cache_dir=str(fresh["cache_dir"]))
            if report or junit:
                write_reports(result, report, junit)
            return result
        repairs = tuple(repaired)  # a damaged stamp, thrown away: said in the build's warnings
    else:
        repairs = ()
    from .engine import BuildOptions, build as run_build
    from .report import report_document

    from .incremental import allowed

    partial = allowed(env, targets=targets, force=force, shard=shard, remote=remote, coordinator=coordinator,
                      locked=locked, frozen=frozen, offline=offline)
    manifest = _manifest(manifest, env, partial)
    options = BuildOptions(targets=targets, jobs=jobs, keep_going=keep_going, force=force, max_cost=max_cost,
                           locked=locked, frozen=frozen, offline=offline, shard=shard, remote=remote,
                           coordinator=coordinator)
    reporter = _EventReporter(on_event) if on_event is not None else _Silent()
    summary = run_build(manifest, options, reporter, env).summary
    summary.warnings[:0] = repairs
    doc = report_document(summary)
    _write_reports(doc, manifest.cache_dir, report, junit)
    return BuildResult(doc, None, str(manifest.path), interrupted=summary.interrupted,
                       budget_stopped=summary.budget_stopped, shard_skipped=summary.shard_skipped,
                       cache_dir=str(manifest.cache_dir))


def write_reports(result: BuildResult, report: PathLike | None = None, junit: PathLike | None = None,
                  on_warning: Callable[[str], None] | None = None) -> None:
    """Write a build's JSON report and/or JUnit XML (``build`` does it when given the paths; the CLI
    does it after printing the summary). A no-op build is recorded as the last build here too;
    failing to record it is said to ``on_warning``. Raises ``MusicbuildError`` if an asked-for file
    cannot be written."""
    _write_reports(dict(result.document if result.document is not None else result.report), Path(result.cache_dir),
                   report, junit, record=result.noop, on_warning=on_warning)


def _check_remote(url: str, env: Mapping[str, str]) -> None:
    """A shared cache named on the command line must at least open: an unknown scheme, a missing
    backend package or a malformed URL is a usage error, not a warning and a local build."""
    from .remote import RemoteError, open_remote

    try:
        store = open_remote(url, env=env)
    except RemoteError as exc:
        raise UsageError(f"--remote: {exc.message}", "shared caches are http(s)://, file://, s3://, gs:// "
                                                      "and other fsspec URLs (see the README)") from None
    getattr(store, "close", lambda: None)()


def _write_reports(doc: dict[str, Any], cache_dir: Path, report: PathLike | None, junit: PathLike | None,
                   record: bool = True, on_warning: Callable[[str], None] | None = None) -> None:
    """The report where asked, and (``record``) as the last build for `musicbuild report`. Failing
    to record is a warning (derived state: the build itself is done; in ``doc`` unless
    ``on_warning`` takes it); failing to write an asked-for report is an error."""
    from .report import write_report

    if record:
        try:
            write_report(cache_dir / LAST_REPORT, doc, compact=True)
        except OSError as exc:
            said = f"could not record this build for `musicbuild report` ({exc.strerror}: {cache_dir / LAST_REPORT})"
            on_warning(said) if on_warning is not None else doc.setdefault("warnings", []).append(said)
    try:
        if report:
            write_report(Path(report), doc)
        if junit:
            from .junit import write_junit

            write_junit(Path(junit), doc)
    except OSError as exc:
        raise MusicbuildError(f"cannot write the report {exc.filename or ''}: {exc.strerror}",
                              "the build itself finished; free space or fix the path and run it again") from None


class _Silent:
    def plan_ready(self, planned: list["PlannedTrack"], unchanged: Sequence[Any] = ()) -> None:
        pass

    def track_started(self, planned: "PlannedTrack") -> None:
        pass

    def track_finished(self, planned: "PlannedTrack", outcome: "Outcome") -> None:
        pass

    def track_state(self, planned: "PlannedTrack", state: str, detail: str | None = None) -> None:
        pass


class _EventReporter(_Silent):
    """The engine's reporter calls, as ``Event``s carrying report rows."""

    def __init__(self, callback: OnEvent) -> None:
        self.callback = callback
        self.rows: dict[str, TrackRow] = {}

    def plan_ready(self, planned: list["PlannedTrack"], unchanged: Sequence[Any] = ()) -> None:
        from .report import plan_row

        rows = [plan_row(pt) for pt in planned]
        self.rows = {row["id"]: row for row in rows}  # type: ignore[misc]
        if not unchanged:
            self.callback(Event("planned", tracks=tuple(rows)))  # type: ignore[arg-type]
            return
        # tracks up to date without a plan (incremental.py): the same events as if the executor had
        # found them up to date (every track is in "planned" and has its "finished")
        from .cleanset import report_row
        from .incremental import plan_rows

        self.callback(Event("planned", tracks=tuple(plan_rows(unchanged, planned, rows))))  # type: ignore[arg-type]
        for track in unchanged:
            self.callback(Event("finished", track=report_row(track)))  # type: ignore[arg-type]

    def track_started(self, planned: "PlannedTrack") -> None:
        self.callback(Event("started", track=self.rows.get(planned.spec.id)))

    def track_state(self, planned: "PlannedTrack", state: str, detail: str | None = None) -> None:
        self.callback(Event("state", track=self.rows.get(planned.spec.id), state=state, detail=detail))

    def track_finished(self, planned: "PlannedTrack", outcome: "Outcome") -> None:
        from .report import outcome_row

        self.callback(Event("finished", track=outcome_row(outcome)))  # type: ignore[arg-type]


def clean(manifest: "Manifest | PathLike" = "musicbuild.yaml", targets: Iterable[str] = (), *,
          dry_run: bool = False, env: Mapping[str, str] | None = None) -> list[str]:
    """Remove the built outputs of the selected tracks (never the cache) and stale musicbuild temp
    files (all of output_dir's without targets); returns them, relative to output_dir."""
    from .engine import select
    from .maintenance import clean as remove

    targets = list(targets)
    manifest = _manifest(manifest, env)
    return remove(manifest, select(manifest, targets), dry_run=dry_run, whole=not targets)


def clean_dead(manifest: "Manifest | PathLike" = "musicbuild.yaml", *, dry_run: bool = False,
               env: Mapping[str, str] | None = None) -> list["DeadOutput"]:
    """Remove outputs musicbuild wrote that no track writes any more (a track left the manifest,
    or its ``out`` or format changed), like ``ninja -t cleandead``. Only files still exactly as
    musicbuild wrote them go; modified ones are returned with ``modified=True`` and kept."""
    from .maintenance import clean_dead as remove

    return remove(_manifest(manifest, env), dry_run=dry_run)


def gc(manifest: "Manifest | PathLike" = "musicbuild.yaml", *, keep: Iterable[str] = ("manifest", "lock"),
       older_than_days: float | None = None, dry_run: bool = False, remote: str | None = None,
       env: Mapping[str, str] | None = None) -> "GcResult":
    """Remove cached generations outside the kept scopes (``manifest``, ``lock``). ``remote``:
    collect the shared cache instead (``""``: the configured one)."""
    from .maintenance import GC_SCOPES, gc as collect, gc_remote, kept_generations

    keep = set(keep)
    if keep - set(GC_SCOPES):
        raise UsageError(f"gc --keep takes manifest, lock, manifest,lock or none, not {','.join(sorted(keep))!r}")
    env = os.environ if env is None else env
    manifest = _manifest(manifest, env)
    if remote is None:
        return collect(manifest, keep=keep, older_than_days=older_than_days, dry_run=dry_run)
    from .remote import open_remote

    url = remote or env.get("MUSICBUILD_REMOTE_CACHE") or manifest.remote
    if not url:
        raise UsageError("gc --remote: no shared cache is configured", "pass --remote URL or set cache.remote")
    store = open_remote(url, env=env)
    try:
        return gc_remote(store, kept_generations(manifest, keep), older_than_days, dry_run)
    finally:
        getattr(store, "close", lambda: None)()


def verify(manifest: "Manifest | PathLike" = "musicbuild.yaml", *,
           env: Mapping[str, str] | None = None) -> tuple[list[str], int]:
    """Check the outputs recorded in musicbuild.lock: (one line per output that is missing or
    differs, number of locked outputs)."""
    from .lock import lock_path, read_lock
    from .maintenance import verify as check_outputs

    manifest = _manifest(manifest, env)
    entries = read_lock(lock_path(manifest.path))
    if entries is None:
        raise UsageError(f"no {lock_path(manifest.path).name} beside {manifest.path.name}",
                         "run `musicbuild build` first")
    problems = check_outputs(manifest.output_dir, entries)
    total = sum(len(e.outputs) for e in entries.values())
    for track in (t for t in manifest.tracks if t.id not in entries):  # the lock must cover the manifest
        problems.append(f"{track.id}: not in {lock_path(manifest.path).name} "
                        "(never built, or its build was interrupted or failed)")
        total += len(track.outputs)
    return problems, total


def last_report(manifest: "Manifest | PathLike" = "musicbuild.yaml", *,
                env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The report document of the last build of this manifest (a damaged record is removed)."""
    from .report import read_report

    manifest = _manifest(manifest, env)
    try:
        doc = read_report(manifest.cache_dir / LAST_REPORT)
    except ValueError as exc:
        raise UsageError(f"the record of the last build: {exc}", "run `musicbuild build` to record a new one") from None
    if doc is None:
        raise UsageError("no build has been recorded for this manifest yet", "run `musicbuild build` first")
    return doc


def spend(manifest: "Manifest | PathLike" = "musicbuild.yaml", *, journal: bool = False,
          env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What was spent, per provider: ``{"what", "spend": {provider: {estimated_usd, charged_usd,
    refunded_usd, outstanding_usd, cost_usd}}, "collected": [...]}``, of the last build, or with
    ``journal`` of every paid job in the cache's journal (to reconcile with an invoice)."""
    manifest = _manifest(manifest, env)
    if journal:
        from .journal import Journal, spend_by_provider

        return {"what": "every paid job in the journal", "collected": [],
                "spend": spend_by_provider(Journal(manifest.cache_dir).records())}
    doc = last_report(manifest, env=env)
    return {"what": f"the build of {doc.get('finished_at') or '?'}", "spend": doc.get("spend") or {},
            "collected": doc.get("collected") or []}


def write_review(page: PathLike, manifest: "Manifest | PathLike" = "musicbuild.yaml", *,
                 env: Mapping[str, str] | None = None) -> None:
    """Write the HTML review page of the last build to ``page``."""
    from .review import write_review as write

    manifest = _manifest(manifest, env)
    write(Path(page), last_report(manifest, env=env), manifest)


def write_junit(path: PathLike, manifest: "Manifest | PathLike" = "musicbuild.yaml", *,
                env: Mapping[str, str] | None = None) -> None:
    """Write the last build's results as JUnit XML to ``path``."""
    from .junit import write_junit as write

    write(Path(path), last_report(manifest, env=env))


def installed_providers() -> list[dict[str, Any]]:
    """The installed provider types (built-ins and plugins) with their models and prices."""
    from .providers.registry import installed, price_table

    rows = []
    for name, entry in installed().items():
        row: dict[str, Any] = {"name": entry.name, "builtin": entry.builtin, "package": entry.dist,
                               "version": entry.version, "entry_point": entry.value, "error": entry.error}
        if entry.cls is not None:
            info = entry.cls.info
            row.update(description=info.description, default_model=info.default_model, models=list(info.models),
                       price=price_table(info), api_key_env=info.api_key_env, base_url=info.base_url,
                       max_duration=info.max_duration, options=sorted((info.options_schema or {}).get("properties", {})))
        rows.append(row)
    return rows


def init(folder: PathLike = ".", *, ci: str | None = None) -> list[Path]:
    """Write a starter project into ``folder``: a commented musicbuild.yaml, a .gitignore and, with
    ``ci="github"`` or ``"gitlab"``, the CI workflow. Never overwrites a file (UsageError instead);
    an existing .gitignore only gets the missing lines. Returns the files written."""
    from .scaffold import write_project

    return write_project(Path(folder), ci)


def manifest_schema() -> str:
    """The manifest JSON Schema (Draft 2020-12) as text."""
    from .schema import schema_text

    return schema_text()


def targets(manifest: "Manifest | PathLike" = "musicbuild.yaml", *,
            env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Every track id, then every ``label:NAME``: what a TARGET may be (shell completion)."""
    manifest = _manifest(manifest, env)
    yield from (t.id for t in manifest.tracks)
    yield from dict.fromkeys(f"label:{label}" for t in manifest.tracks for label in t.labels)
