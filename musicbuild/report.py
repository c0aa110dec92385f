"""The JSON build report and ``plan --json`` rows (SPEC 6)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .cache import atomic_write_bytes
from .model import Action, BuildSummary, Outcome, PlannedTrack

REPORT_VERSION = 1


def outcome_row(o: Outcome) -> dict[str, Any]:
    return {
        "id": o.id, "out": o.out[0] if len(o.out) == 1 else o.out, "action": o.action.value,
        "reasons": [r.value for r in o.reasons], "status": o.status, "gen_key": o.gen_key,
        "provider": o.provider, "model": o.model, "clips": o.clips, "cost_usd": o.cost_usd,
        "seconds": o.seconds, "attempts": o.attempts, "error": o.error, "job_id": o.job_id, **o.extra,
    }


def plan_row(pt: PlannedTrack) -> dict[str, Any]:
    outs = [o.output.rel for o in pt.outputs]
    return {
        "id": pt.spec.id, "out": outs[0] if len(outs) == 1 else outs, "action": pt.action.value,
        "reasons": [r.value for r in pt.reasons], "status": "planned", "gen_key": pt.gen_key,
        "provider": pt.spec.provider.name, "model": pt.spec.model, "clips": len(outs),
        "cost_usd": pt.est_cost_usd, "seconds": 0.0, "attempts": 0, "error": None,
        "labels": list(pt.spec.labels),
    }


def summary_counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def count(action: Action) -> int:
        return sum(1 for r in rows if r["action"] == action.value and r["status"] == "ok")

    return {
        "total": len(rows), "up_to_date": count(Action.UP_TO_DATE), "materialized": count(Action.MATERIALIZE),
        "resumed": count(Action.RESUME), "generated": count(Action.GENERATE),
        "failed": sum(1 for r in rows if r["status"] == "failed"),
        "skipped": sum(1 for r in rows if r["status"] == "skipped"),
        "cost_usd": round(sum(r.get("cost_usd") or 0.0 for r in rows if r["status"] != "planned"), 6),
    }


def report_document(summary: BuildSummary, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rows = rows if rows is not None else [outcome_row(o) for o in summary.outcomes]
    return {
        "version": REPORT_VERSION, "manifest": summary.manifest, "started_at": summary.started_at,
        "finished_at": summary.finished_at, "interrupted": summary.interrupted,
        "warnings": list(summary.warnings), "remote": summary.remote,
        "summary": summary_counts(rows), "tracks": rows,
    }


def noop_report(manifest: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary = BuildSummary(manifest=str(manifest.resolve()), started_at=stamp, finished_at=stamp)
    return report_document(summary, rows)


def write_report(path: Path, document: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode())
