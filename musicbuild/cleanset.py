"""Tracks proven unchanged since the last whole build, carried as plain rows instead of specs.

The edit loop (issue 11): after one edited prompt, 9,999 of 10,000 tracks are as the last build
left them, and every object made for them (a spec, a plan, an outcome, a lock entry, report rows)
is work that does not follow the change. A ``tracks:`` entry is *clean* when

- its spec memo entry is valid (``specmemo``: its text, the vars its templates use, the head it
  inherits, its input files, its output folders and the code are unchanged), so its specs and keys
  are what the full loader would render now;
- the null-build stamp of the last build (written only when that build covered the whole manifest
  and every track ended ok) recorded each of its outputs with the same output key, and each
  output's size and mtime are still the ones recorded: exactly the planner's "up to date" test,
  with the stamp standing in for the cache's record, as the no-op build already trusts it;
- none of its tracks hashes an input file into its keys (a cover or reference audio: the planner
  hashes those again every time).

A clean track is then up to date, and ``incremental.py`` reports, locks and stamps it from these
rows. The checks that span tracks (duplicate ids and outputs, protected paths, the limits) still
run over every track, clean ones included.
"""
from __future__ import annotations

import os
from json.encoder import encode_basestring_ascii as _quoted  # the C encoder json.dumps itself uses
from typing import Any, Mapping, NamedTuple

# positions in a spec memo row (``specmemo.encode_spec``)
_ID, _PROVIDER, _MODEL, _OUTPUTS, _REFERENCE, _METADATA, _LABELS, _FILES = 0, 1, 2, 11, 14, 15, 16, 17
_COVER = 10  # in the metadata list


class CleanTrack(NamedTuple):
    index: int  # the tracks: entry it comes from
    id: str
    rels: tuple[str, ...]  # outputs, relative to output_dir
    paths: tuple[str, ...]  # outputs, absolute
    gen_key: str
    provider: str
    model: str
    labels: tuple[str, ...]
    files: tuple[str, ...]  # input files it reads


class CleanSet:
    """The clean tracks of one load, in manifest order, and what the last stamp recorded of them."""

    def __init__(self, stamp_outputs: Mapping[str, bytes]) -> None:
        self._stamp = stamp_outputs  # path -> its stamp line: b"size mtime_ns output-key path"
        self.tracks: list[CleanTrack] = []
        self.lines: list[bytes] = []  # the stamp lines of the clean outputs (for the next stamp)
        self._names: dict[str, str] = {}  # one string object per provider and model name (memory)

    def done(self) -> None:
        """The load is over: let go of the stamp's other lines."""
        self._stamp = {}

    def __len__(self) -> int:
        return len(self.tracks)

    def take(self, index: int, rows: list[list[Any]], keys: list[list[Any]]) -> list[CleanTrack] | None:
        """The entry's tracks if every one of them is clean (then they are kept here), else None."""
        if not rows:
            return None
        try:
            made = self._take(index, rows, keys)
        except (TypeError, ValueError, IndexError, AttributeError):  # a damaged stamp or memo: the entry is planned
            return None
        if made is not None:
            self.tracks.extend(made)
            self.lines.extend(self._stamp[p] for t in made for p in t.paths)
        return made

    def _take(self, index: int, rows: list[list[Any]], keys: list[list[Any]]) -> list[CleanTrack] | None:
        made = []
        for row, (gen_key, out_keys) in zip(rows, keys):
            if row[_REFERENCE] is not None or row[_METADATA][_COVER] is not None:
                return None  # its keys hash a file's content: the planner hashes it again
            outputs = row[_OUTPUTS]
            if not outputs or len(outputs) != len(out_keys):
                return None
            for (_, _, path, _), key in zip(outputs, out_keys):
                seen = self._stamp.get(path)
                if seen is None:
                    return None
                try:
                    st = os.stat(path)
                except OSError:
                    return None
                if not seen.startswith(b"%d %d %s " % (st.st_size, st.st_mtime_ns, key.encode())):
                    return None  # (the line is "size mtime_ns key path")
            if len(outputs) == 1:  # the common case, without generators
                rels, paths = (outputs[0][1],), (outputs[0][2],)
            else:
                rels, paths = tuple(o[1] for o in outputs), tuple(o[2] for o in outputs)
            labels, files = row[_LABELS], row[_FILES]
            names = self._names
            provider, model = row[_PROVIDER], row[_MODEL]
            made.append(CleanTrack(index, row[_ID], rels, paths, gen_key, names.setdefault(provider, provider),
                                   names.setdefault(model, model), tuple(labels) if labels else (),
                                   tuple(files) if files else ()))
        return made

    def stamp_lines(self) -> list[bytes]:
        """The last stamp's lines of every clean output (as found unchanged), for the next stamp."""
        return self.lines


def plan_row(t: CleanTrack) -> dict[str, Any]:
    """``report.plan_row`` of the track planned up to date (a test holds the two equal)."""
    return {"id": t.id, "out": t.rels[0] if len(t.rels) == 1 else list(t.rels), "action": "up-to-date",
            "reasons": [], "status": "planned", "gen_key": t.gen_key, "provider": t.provider, "model": t.model,
            "clips": len(t.rels), "cost_usd": 0.0, "estimated_usd": 0.0, "seconds": 0.0, "attempts": 0,
            "error": None, "labels": list(t.labels)}


def report_row(t: CleanTrack) -> dict[str, Any]:
    """``report.outcome_row`` of the track built up to date (a test holds the two equal)."""
    return {"id": t.id, "out": t.rels[0] if len(t.rels) == 1 else list(t.rels), "action": "up-to-date",
            "reasons": [], "status": "ok", "gen_key": t.gen_key, "provider": t.provider, "model": t.model,
            "clips": len(t.rels), "cost_usd": 0.0, "estimated_usd": 0.0, "charged_usd": 0.0, "refunded_usd": 0.0,
            "outstanding_usd": 0.0, "cost_basis": None, "seconds": 0.0, "attempts": 0, "error": None,
            "job_id": None}


_ROW_TEXT = ('{"id":%s,"out":%s,"action":"up-to-date","reasons":[],"status":"ok","gen_key":%s,"provider":%s,'
             '"model":%s,"clips":%d,"cost_usd":0.0,"estimated_usd":0.0,"charged_usd":0.0,"refunded_usd":0.0,'
             '"outstanding_usd":0.0,"cost_basis":null,"seconds":0.0,"attempts":0,"error":null,"job_id":null}')


def report_row_json(t: CleanTrack) -> str:
    """``json.dumps(report_row(t), separators=(",", ":"))`` without making the dict (a test holds them
    equal): the stamp keeps 100,000 of these."""
    out = _quoted(t.rels[0]) if len(t.rels) == 1 else "[" + ",".join(map(_quoted, t.rels)) + "]"
    return _ROW_TEXT % (_quoted(t.id), out, _quoted(t.gen_key), _quoted(t.provider), _quoted(t.model), len(t.rels))
