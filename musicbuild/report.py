"""The JSON build report and ``plan --json`` rows (SPEC 6)."""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Sequence

from .cache import atomic_write_bytes
from .model import Action, BuildSummary, Outcome, PlannedTrack
from .redact import redact, redactor

REPORT_VERSION = 1


MONEY = ("estimated_usd", "charged_usd", "refunded_usd", "outstanding_usd", "cost_usd")


def outcome_row(o: Outcome) -> dict[str, Any]:
    """One track of the JSON report. ``cost_usd`` is what this build spent on the track: what the
    service charged (``cost_basis`` says how that is known) minus refunds, plus ``outstanding_usd``,
    the estimate of jobs it submitted whose charge is not known yet (a timeout, an ambiguous create)."""
    return {
        "id": o.id, "out": o.out[0] if len(o.out) == 1 else o.out, "action": o.action.value,
        "reasons": [r.value for r in o.reasons], "status": o.status, "gen_key": o.gen_key,
        "provider": o.provider, "model": o.model, "clips": o.clips, "cost_usd": o.cost_usd,
        "estimated_usd": o.estimated_usd, "charged_usd": o.charged_usd, "refunded_usd": o.refunded_usd,
        "outstanding_usd": o.outstanding_usd, "cost_basis": o.cost_basis,
        "seconds": o.seconds, "attempts": o.attempts, "error": o.error, "job_id": o.job_id, **o.extra,
    }


def plan_row(pt: PlannedTrack) -> dict[str, Any]:
    outs = [o.output.rel for o in pt.outputs]
    row = {
        "id": pt.spec.id, "out": outs[0] if len(outs) == 1 else outs, "action": pt.action.value,
        "reasons": [r.value for r in pt.reasons], "status": "planned", "gen_key": pt.gen_key,
        "provider": pt.spec.provider.name, "model": pt.spec.model, "clips": len(outs),
        "cost_usd": pt.est_cost_usd, "estimated_usd": pt.est_cost_usd, "seconds": 0.0, "attempts": 0,
        "error": None, "labels": list(pt.spec.labels),
    }
    if pt.job is not None:
        row["job"] = dict(pt.job)
    if pt.length_note:
        row["length"] = pt.length_note
    return row


def spend_table(rows: list[dict[str, Any]], collected: list[dict[str, Any]] | None = None) -> dict[str, dict[str, float]]:
    """Per provider: estimated, charged, refunded, outstanding and net USD of these rows."""
    table: dict[str, dict[str, float]] = {}
    for row in [*rows, *(collected or [])]:
        if not any(row.get(k) for k in MONEY):
            continue
        entry = table.setdefault(str(row.get("provider")), dict.fromkeys(MONEY, 0.0))
        for k in MONEY:
            entry[k] = round(entry[k] + float(row.get(k) or 0.0), 6)
    return dict(sorted(table.items()))


def summary_counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = dict.fromkeys(("up-to-date", "materialize", "resume", "generate"), 0)
    failed = skipped = 0
    cost = estimated = 0.0
    for r in rows:  # one pass: a report may have 100,000 rows
        status = r["status"]
        if status == "ok":
            counts[r["action"]] = counts.get(r["action"], 0) + 1
        elif status == "failed":
            failed += 1
        elif status == "skipped":
            skipped += 1
        if status != "planned":
            cost += r.get("cost_usd") or 0.0
        estimated += r.get("estimated_usd") or 0.0
    return {
        "total": len(rows), "up_to_date": counts[Action.UP_TO_DATE.value], "materialized": counts[Action.MATERIALIZE.value],
        "resumed": counts[Action.RESUME.value], "generated": counts[Action.GENERATE.value],
        "failed": failed, "skipped": skipped, "cost_usd": round(cost, 6), "estimated_usd": round(estimated, 6),
    }


def report_document(summary: BuildSummary, rows: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``rows`` (or ``summary.rows``) may be an ``incremental.ReportRows``: its rows made on demand,
    all but ``changed`` up to date and free, and counted so without being made."""
    rows = rows if rows is not None else summary.rows if summary.rows is not None else [outcome_row(o) for o in summary.outcomes]
    changed = getattr(rows, "changed", rows)
    counts = summary_counts(changed)  # type: ignore[arg-type]
    counts["total"] = len(rows)
    counts["up_to_date"] += getattr(rows, "unchanged", 0)
    counts["cost_usd"] = round(counts["cost_usd"] + sum(c.get("cost_usd") or 0.0 for c in summary.collected), 6)
    return {
        "version": REPORT_VERSION, "manifest": summary.manifest, "started_at": summary.started_at,
        "finished_at": summary.finished_at, "interrupted": summary.interrupted,
        "warnings": list(summary.warnings), "remote": summary.remote,
        "summary": counts, "spend": spend_table(changed, summary.collected), "collected": list(summary.collected),  # type: ignore[arg-type]
        "tracks": rows,
    }


def noop_report(manifest: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary = BuildSummary(manifest=str(manifest.resolve()), started_at=stamp, finished_at=stamp)
    return report_document(summary, rows)


_TEXT, _NUMBER = {"type": ["string", "null"]}, {"type": ["number", "null"]}
_SHAPE = {  # what `musicbuild report` reads back from last-report.json
    "type": "object", "required": ["manifest", "tracks"],
    "properties": {
        "manifest": {"type": "string"}, "started_at": _TEXT, "finished_at": _TEXT,
        "summary": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        "tracks": {"type": "array", "items": {
            "type": "object", "required": ["id", "status", "action", "provider", "out"],
            "properties": {
                "id": {"type": "string"}, "status": {"type": "string"}, "action": {"type": "string"},
                "provider": {"type": "string"}, "model": _TEXT, "error": _TEXT, "seconds": _NUMBER,
                "cost_usd": _NUMBER, "attempts": {"type": ["integer", "null"]},
                "reasons": {"type": "array", "items": {"type": "string"}},
                "out": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}}}}}


def read_report(path: Path) -> dict[str, Any] | None:
    """A report written by ``write_report``; None if there is none. A damaged one (it is derived
    state) is removed, and reported as a ``ValueError`` saying why."""
    import jsonschema

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        document = json.loads(data.decode("utf-8"))
        jsonschema.validate(document, _SHAPE)
    except (ValueError, RecursionError, jsonschema.ValidationError) as exc:
        path.unlink(missing_ok=True)
        reason = exc.message if isinstance(exc, jsonschema.ValidationError) else type(exc).__name__
        raise ValueError(f"{path.name} was damaged ({reason}) and has been removed") from None
    return document


def write_report(path: Path, document: dict[str, Any], compact: bool = False) -> None:
    """``compact``: one line, by the C encoder (the indenting one is pure Python: 2 s for the
    last report of a 100,000-track build, which only ``musicbuild report`` reads back). Rows that
    are made on demand (``incremental.ReportRows``) are written compact one at a time."""
    rows = document["tracks"]
    if compact and not isinstance(rows, list) and hasattr(rows, "json_rows"):
        head = json.dumps({**document, "tracks": []}, separators=(",", ":"))
        assert head.endswith('"tracks":[]}')  # the rows are the document's last field
        # written row by row, each redacted (a secret is inside one JSON string, so inside one row)
        hide = redactor()
        pieces = (hide(("," if n else "") + row).encode() for n, row in enumerate(rows.json_rows()))
        atomic_write_bytes(path, itertools.chain([hide(head[:-2]).encode()], pieces, [b"]}\n"]))
        return
    if not isinstance(rows, list):
        text = json.dumps({**document, "tracks": list(rows)}, separators=(",", ":") if compact else None,
                          indent=None if compact else 2)
    else:
        text = json.dumps(document, separators=(",", ":")) if compact else json.dumps(document, indent=2)
    atomic_write_bytes(path, (redact(text) + "\n").encode())
