"""The whole job as a few functions: select, plan, run, and keep the null-build stamp current.

Validation, rendering, hashing and planning all happen before the single ``asyncio.run``, so a bad
manifest or a missing key fails before any network traffic or any write.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from . import confine, incremental, lock, stamp
from .cache import Cache, Snapshot, exclusive_build
from .errors import BudgetError, ConfigError, ManifestError, UsageError
from .manifest import Manifest
from .model import Action, BuildSummary, Outcome, PlannedTrack, TrackSpec
from .planner import CacheState, plan_tracks
from .providers import create_provider, is_available
from .providers.base import Provider
from .providers.catalog import estimate_track
from .report import outcome_row

if TYPE_CHECKING:
    from .executor import Reporter
    from .sync import SharedCache


@dataclass(frozen=True)
class BuildOptions:
    targets: tuple[str, ...] = ()
    jobs: int = 8
    keep_going: bool = False
    force: bool = False
    max_cost: float | None = None
    locked: bool = False  # refuse (exit 3) a build that would change musicbuild.lock
    frozen: bool = False  # --locked, and never contact a provider: only the caches may supply audio
    shard: tuple[int, int] | None = None  # (i, n): generate only the i-th of n shares, by generation key
    remote: str | None = None  # shared cache URL (--remote); else MUSICBUILD_REMOTE_CACHE, else cache.remote
    coordinator: str | None = None  # fleet Redis URL (--coordinator); else MUSICBUILD_COORDINATOR, else cache.coordinator
    offline: bool = False  # like --frozen (no provider contact), but the lock may be updated
    upload_wait: float = 60.0  # seconds a finished build waits for its uploads


@dataclass
class BuildResult:
    summary: BuildSummary
    planned: list[PlannedTrack] = field(default_factory=list)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def select(manifest: Manifest, targets: Iterable[str]) -> list[TrackSpec]:
    """Tracks named by id, shell glob over ids, or ``label:NAME``; none means all."""
    targets = list(targets)
    if not targets:
        return list(manifest.tracks)
    chosen: set[str] = set()
    for t in targets:
        if t.startswith("label:"):
            hits = {s.id for s in manifest.tracks if t[6:] in s.labels}
        else:
            hits = {s.id for s in manifest.tracks if fnmatch.fnmatchcase(s.id, t)}
        if not hits:
            raise UsageError(f"no track matches '{t}'{_target_hint(manifest, t)}",
                             "targets are track ids, globs like 'jingle-*', or label:NAME")
        chosen |= hits
    return [s for s in manifest.tracks if s.id in chosen]


def _target_hint(manifest: Manifest, target: str) -> str:
    from .schema import did_you_mean

    if target.startswith("label:"):
        labels = sorted({label for s in manifest.tracks for label in s.labels})
        if not labels:
            return " (no track has labels)"
        shown = ", ".join(labels[:12]) + (", ..." if len(labels) > 12 else "")
        return did_you_mean(target[6:], labels).replace("'", "'label:", 1) or f" (the labels are {shown})"
    return did_you_mean(target, [s.id for s in manifest.tracks])


def estimate(spec: TrackSpec) -> float:
    return estimate_track(spec.provider.price, spec.provider.type, spec.model, spec.duration, spec.options)


def check_inputs(manifest: Manifest, specs: list[TrackSpec], env: Mapping[str, str]) -> dict[str, Provider]:
    """Provider input rules for every track, as manifest diagnostics; the adapters that can run."""
    providers: dict[str, Provider] = {}
    diags = []
    for spec in specs:
        cfg = spec.provider
        if not is_available(cfg.type):
            continue
        if cfg.name not in providers:
            providers[cfg.name] = create_provider(cfg, env)
        origin = manifest.origins[spec.id]
        for path, message in providers[cfg.name].check_track(spec):
            diags.append(manifest.diagnostic(origin + path, f"{message} [track {spec.id}]"))
    if diags:
        raise ManifestError(diags)
    return providers


def credential_problems(specs: list[TrackSpec], env: Mapping[str, str]) -> list[str]:
    problems = []
    for cfg in {s.provider.name: s.provider for s in specs}.values():
        var = cfg.api_key_env
        if cfg.type != "local" and var and not env.get(var):
            problems.append(f"provider '{cfg.name}' needs an API key in the environment variable {var}, which is not set")
    return problems


def make_plan(manifest: Manifest, specs: list[TrackSpec], cache: CacheState, force: bool = False,
              locked: Mapping[str, lock.LockEntry] | None = None) -> list[PlannedTrack]:
    if locked is None:
        locked = lock.LazyLock(lock.lock_path(manifest.path))
    planned = plan_tracks(specs, cache, force=force, estimate=estimate, lock=locked, known=manifest.known_keys)
    paid: set[str] = set()
    for i, pt in enumerate(planned):  # tracks sharing a generation key share one (paid) generation
        if pt.action in (Action.GENERATE, Action.RESUME):
            if pt.gen_key in paid:
                planned[i] = replace(pt, est_cost_usd=0.0)
            paid.add(pt.gen_key)
    return planned


def build(manifest: Manifest, options: BuildOptions, reporter: Reporter,
          env: Mapping[str, str] | None = None) -> BuildResult:
    import asyncio  # nor asyncio (~30 ms)

    from .executor import ExecOptions, Executor  # not imported by plan/status/check (httpx, the fleet: 0.1 s)

    env = os.environ if env is None else env
    specs = select(manifest, options.targets)
    providers = check_inputs(manifest, specs, env)
    summary = BuildSummary(manifest=str(manifest.path), started_at=now())
    if manifest.memo is not None and manifest.memo.warning:
        summary.warnings.append(manifest.memo.warning)
    lockfile = lock.lock_path(manifest.path)
    clean = manifest.clean.tracks if manifest.clean is not None else []  # up to date, as rows (incremental.py)
    blocks = lock.LockBlocks.read(lockfile) if clean else None  # only changed blocks are read or written
    old_lock = blocks if blocks is not None else lock.read_lock(lockfile)
    with exclusive_build(manifest.cache_dir), Cache(manifest.cache_dir) as cache:
        summary.warnings += cache.warnings
        cache.adopt_legacy_jobs()
        _adopt_legacy_generations(specs, cache)
        planned = make_plan(manifest, specs, cache, options.force, old_lock or {})
        if options.locked or (options.frozen and old_lock is not None):
            _check_lock(planned, old_lock, manifest, whole=not options.targets)
        shared = _open_shared(manifest, options, env, cache, summary)
        coordination = _coordination(manifest, options, env, shared, cache)
        needed = [pt.gen_key for pt in planned if pt.action in (Action.GENERATE, Action.RESUME)]
        if shared is not None and needed and not options.force and shared.fill(needed):
            planned = make_plan(manifest, specs, cache, options.force, old_lock or {})  # fetched audio is free
        fresh = [pt.gen_key for pt in planned if pt.action is Action.GENERATE]
        if fresh and cache.journal.adopt_shared(fresh):  # jobs a dead runner of the fleet submitted: resume
            planned = make_plan(manifest, specs, cache, options.force, old_lock or {})
        preset = _preset_outcomes(planned, options)  # tracks this build will not run, and why
        runnable = [pt for pt in planned if pt.spec.id not in preset]
        confine.sweep_folders(po.output.path.parent for pt in runnable for po in pt.outputs if po.state != "ok")
        paid = [pt for pt in runnable if pt.action in (Action.GENERATE, Action.RESUME)]
        total = round(sum(pt.est_cost_usd for pt in paid), 6)
        if options.max_cost is not None and total > options.max_cost:
            raise BudgetError(f"estimated cost ${total:.2f} exceeds --max-cost ${options.max_cost:.2f}; nothing was submitted",
                              "run 'musicbuild plan' to see the cost per track")
        _refuse_unrunnable(paid, env)
        reporter.plan_ready(planned, clean)
        for pt in planned:
            if pt.spec.id in preset:
                reporter.track_finished(pt, preset[pt.spec.id])
        executor = Executor(cache, providers, ExecOptions(jobs=options.jobs, keep_going=options.keep_going,
                                                          max_cost=options.max_cost, force=options.force,
                                                          collect_orphans=not (options.frozen or options.offline),
                                                          unplanned_keys=frozenset(t.gen_key for t in clean)),
                            reporter, coordination, shared)
        try:
            asyncio.run(executor.run(runnable))
        except KeyboardInterrupt:
            summary.interrupted = True
        outcomes = {**executor.outcomes, **preset}
        summary.outcomes = [outcomes.get(pt.spec.id) or _unfinished(pt, cache, old_lock or {}) for pt in planned]
        if clean:
            summary.rows = incremental.report_rows(clean, planned, summary.outcomes, outcome_row)
        summary.finished_at = now()
        summary.budget_stopped = getattr(executor, "budget_stopped", False)
        summary.collected = list(executor.collected)
        summary.warnings += coordination.warnings + cache.journal.warnings
        summary.shard_skipped = sum(1 for o in preset.values() if o.status == "skipped")
        summary.warnings.extend(cache.warnings)
        uploads_pending = False
        if shared is not None and not summary.interrupted:
            left = shared.upload([pt.gen_key for pt in planned], wait=options.upload_wait)
            uploads_pending = bool(left) or not shared.alive
            if not left:  # unfinished uploads keep using the store until the process exits
                getattr(shared.store, "close", lambda: None)()
            summary.remote = {"url": shared.store.display, "fetched": shared.fetched, "uploaded": shared.uploaded,
                              "bytes_down": shared.bytes_down, "bytes_up": shared.bytes_up}
        ok = {o.id for o in summary.outcomes if o.status == "ok"}
        records = _records(cache, planned)
        every_id = incremental.all_ids(clean, manifest.tracks)
        if blocks is not None:
            try:
                incremental.update_lock(blocks, planned, ok, records, every_id)
            except lock.LockBlocks.NotWritten:  # not the file render wrote: read whole, written whole
                _update_lock(lockfile, lock.read_lock(lockfile), every_id, records, options, planned, ok)
        else:
            _update_lock(lockfile, old_lock, every_id, records, options, planned, ok)
        # while uploads are owed, no-op builds must take the full path so they can finish them
        _update_stamp(manifest, records, specs, summary, planned, whole=not options.targets and not uploads_pending)
        if manifest.memo is not None:  # what this load rendered, for the next one (derived state)
            from .specmemo import save

            save(manifest.memo)
    return BuildResult(summary, planned)


def _records(cache: Cache, planned: list[PlannedTrack]) -> Cache | Snapshot:
    """The records the lock and the stamp are made from, as the build left them: read in one pass
    over the index when there are many (``cache.Snapshot``), else one query each."""
    from .planner import SNAPSHOT_FROM

    keys = [f"out:{po.output.path}" for pt in planned for po in pt.outputs]
    if len(keys) < SNAPSHOT_FROM:
        return cache
    return Snapshot(cache, keys + ["gen:" + pt.gen_key for pt in planned])


def remote_url(manifest: Manifest, options: BuildOptions, env: Mapping[str, str]) -> str | None:
    return options.remote or env.get("MUSICBUILD_REMOTE_CACHE") or manifest.remote


def _open_shared(manifest: Manifest, options: BuildOptions, env: Mapping[str, str], cache: Cache,
                 summary: BuildSummary) -> SharedCache | None:
    url = remote_url(manifest, options, env)
    if not url:
        return None
    from .remote import RemoteError, open_remote

    try:
        store = open_remote(url, env=env)
    except RemoteError as exc:
        if options.frozen or options.offline:
            raise
        summary.warnings.append(f"shared cache unavailable ({exc.message}); building locally")
        return None
    from .sync import SharedCache

    return SharedCache(store, cache, required=options.frozen or options.offline, warn=summary.warnings.append)


def _coordination(manifest: Manifest, options: BuildOptions, env: Mapping[str, str], shared: SharedCache | None,
                  cache: Cache) -> Any:
    """Who decides limits and who works on which key: this process (with --shard, its share of the
    limits) or the fleet's Redis. The journal is written through to the fleet's journal."""
    from .clock import Clock
    from .fleet import open_coordination
    from .fleet.mirror import StoreMirror

    url = options.coordinator or env.get("MUSICBUILD_COORDINATOR") or manifest.coordinator
    if url:
        from .redact import remember_url

        remember_url(url)  # a redis://:password@host URL: its password never reaches a message
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"the coordinator must be a redis:// URL, not {url.split('://')[0]}://...")
    if url and shared is None:
        raise ConfigError("a coordinator needs a shared cache: workers hand each other their audio through it",
                          "set cache.remote, MUSICBUILD_REMOTE_CACHE or --remote")
    mirror = StoreMirror(shared.store) if shared is not None else None
    coordination = open_coordination(url, shard=options.shard, mirror=mirror, clock=Clock.from_env(env))
    cache.journal.mirror = coordination.mirror
    return coordination


def _check_lock(planned: list[PlannedTrack], old: dict[str, lock.LockEntry] | None, manifest: Manifest,
                whole: bool) -> None:
    if old is None:
        raise lock.LockError(f"there is no {lock.LOCK_NAME} beside {manifest.path.name}",
                             "run `musicbuild build` once without --locked/--frozen and commit the lock")
    problems = lock.mismatches(planned, old, [t.id for t in manifest.tracks] if whole else None)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise lock.LockError(f"the build would change {lock.LOCK_NAME}: {shown}",
                             "run `musicbuild build` without --locked/--frozen to update it, and commit it")


def _preset_outcomes(planned: list[PlannedTrack], options: BuildOptions) -> dict[str, Outcome]:
    """Paid tracks this build leaves alone: another shard's share, or any generation when frozen."""
    preset = {}
    for pt in planned:
        if pt.action not in (Action.GENERATE, Action.RESUME):
            continue
        if options.frozen or options.offline:
            flag = "--frozen" if options.frozen else "--offline"
            preset[pt.spec.id] = _outcome(pt, "failed", f"needs a generation, and {flag} never contacts a provider: "
                                                        f"build it without {flag}, or fill the shared cache first")
        elif options.shard and int(pt.gen_key, 16) % options.shard[1] != options.shard[0] - 1:
            preset[pt.spec.id] = _outcome(pt, "skipped", f"generated by another shard (this is {options.shard[0]}/{options.shard[1]})")
    return preset


def _update_lock(path: Any, old: dict[str, lock.LockEntry] | None, every_id: set[str], cache: Cache | Snapshot,
                 options: BuildOptions, planned: list[PlannedTrack], ok: set[str]) -> None:
    new = lock.updated_entries(planned, ok, cache, old or {}, every_id)
    if options.locked or (options.frozen and old is not None):
        changed = lock.changed_tracks(old, new)
        if changed:
            raise lock.LockError(f"the build changed what {lock.LOCK_NAME} records for {', '.join(changed[:5])}"
                                 f"{' and more' if len(changed) > 5 else ''}; the lock was left as it was",
                                 "run `musicbuild build` without --locked/--frozen to update it, and commit it")
        return
    lock.write_lock(path, new.values(), old)


def _refuse_unrunnable(paid: list[PlannedTrack], env: Mapping[str, str]) -> None:
    for pt in paid:
        if not is_available(pt.spec.provider.type):
            create_provider(pt.spec.provider, env)  # raises the user-facing ConfigError
    problems = credential_problems([pt.spec for pt in paid], env)
    if problems:
        raise ConfigError(problems[0], "export the variable, e.g. in your CI's secret settings")


def _outcome(pt: PlannedTrack, status: str, error: str) -> Outcome:
    return Outcome(id=pt.spec.id, out=[o.output.rel for o in pt.outputs], action=pt.action, reasons=pt.reasons,
                   status=status, gen_key=pt.gen_key, provider=pt.spec.provider.name, model=pt.spec.model,
                   error=error)


def _adopt_legacy_generations(specs: Iterable[TrackSpec], cache: Cache) -> None:
    """Generations cached under musicbuild 0.1's keys (a derived seed in the key of a service that
    takes no seed) serve the same spec under today's key: adopted, never paid again."""
    from .keys import generation_key, legacy_generation_key

    for spec in specs:
        old = legacy_generation_key(spec)
        if old is None:
            continue
        new = generation_key(spec)
        record = cache.generation_record(old)
        if record is not None and cache.generation_record(new) is None and cache.get_generation(old) is not None:
            cache.index.set("gen:" + new, {**record, "adopted_from": old})


def _unfinished(pt: PlannedTrack, cache: Cache, locked: Mapping[str, lock.LockEntry]) -> Outcome:
    """A track the interrupted build has no outcome for: its outputs may still have been written
    (materializing runs in threads that finish their file), so look again before calling it skipped."""
    again = plan_tracks([pt.spec], cache, lock=locked)[0]
    if again.action is Action.UP_TO_DATE:
        return Outcome(id=pt.spec.id, out=[o.output.rel for o in pt.outputs], action=pt.action, reasons=pt.reasons,
                       status="ok", gen_key=pt.gen_key, provider=pt.spec.provider.name, model=pt.spec.model,
                       clips=len(pt.outputs), estimated_usd=pt.est_cost_usd)
    return _outcome(pt, "skipped", "interrupted")


def _update_stamp(manifest: Manifest, cache: Cache | Snapshot, specs: list[TrackSpec], summary: BuildSummary,
                  planned: list[PlannedTrack], whole: bool) -> None:
    if not whole or summary.interrupted or any(o.status != "ok" for o in summary.outcomes):
        stamp.remove(manifest.cache_dir, manifest.path)
        return
    clean = manifest.clean.tracks if manifest.clean is not None else []
    inputs = [f for s in specs for f in s.files] + [lock.lock_path(manifest.path)] + incremental.input_files(clean)
    records = {o.path: cache.get_output(o.path) for s in specs for o in s.outputs}
    if not all(stamp.as_recorded(p, r) for p, r in records.items()):  # deleted or edited meanwhile
        stamp.remove(manifest.cache_dir, manifest.path)
        return
    outputs: list[Any] = [(p, stamp.recorded_stat(r), r and r.get("out_key")) for p, r in records.items()]
    lines = []
    if clean:  # outputs the last stamp recorded and this load found unchanged (cleanset.py)
        lines = manifest.clean.stamp_lines()
        rows: Any = incremental.stamp_rows(clean, planned, summary.outcomes, outcome_row)
    else:
        rows = [outcome_row(incremental.stamp_row(o)) for o in summary.outcomes]
    stamp.write(manifest.cache_dir, manifest.path, manifest.sha256, inputs, outputs, rows,
                os.environ.get("MUSICBUILD_REMOTE_CACHE"), lines)
