"""The review page: one static, self-contained HTML file to listen to and compare a build's tracks.

``write_review`` renders the last build's report rows (SPEC 6) next to the manifest's track specs:
per track an ``<audio>`` player per output (paths relative to the page, so the folder can be zipped
or served as is), a min/max waveform as a compact inline SVG path, duration, loudness, prompt, tags,
labels, provider, model, cost, status and cover art. Two takes of one track sit side by side; failed
tracks come first. Peaks are always true peaks (dBTP, 4x oversampled as BS.1770 measures them): the
report's measurement when ``post:`` made one, else measured here. Rows of status and label buttons
and a text box filter the list with a few lines of plain JS (the page's fragment can preset them:
``review.html#status=failed&label=boss&label=menu&q=piano``; ``#all`` loads every player's
metadata at once instead of as they scroll into view); nothing is fetched from the network, there
are no external assets: each distinct cover is embedded once, as a data URI in the page's CSS.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from .cache import atomic_write_bytes
from .redact import redact, redact_data

COLUMNS = 600  # waveform columns (SVG user units)
HEIGHT = 40  # waveform height (SVG user units)
EAGER_PLAYERS = 20  # players after these load their metadata only when scrolled near
DASH = "\u2013"
MAX_COVER_BYTES = 2 * 2**20  # larger covers are named, not embedded (the page must stay light)
STATUS_ORDER = {"failed": 0}  # failures first; the rest keep the manifest's order


@dataclass(frozen=True)
class Take:
    clip: int
    rel: str  # relative to output_dir, as in the manifest
    src: str | None  # URL relative to the page, None if the file is missing
    duration: float | None = None
    true_peak_db: float | None = None
    lufs: float | None = None
    wave: str = ""  # SVG path data
    error: str | None = None


def waveform_path(samples: np.ndarray, columns: int = COLUMNS, height: int = HEIGHT) -> str:
    """Min/max peaks of the mono mix over ``columns`` as one filled SVG path (integer coordinates).

    The upper envelope runs left to right and the lower one back, with relative ``l`` steps so a
    600-column waveform costs a few kilobytes. Amplitude is absolute (full scale fills the height).
    """
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    n = int(mono.shape[0])
    if n == 0:
        return ""
    cols = max(1, min(columns, n))
    starts = (np.arange(cols, dtype=np.int64) * n) // cols  # strictly increasing since n >= cols
    hi = np.maximum.reduceat(mono, starts)
    lo = np.minimum.reduceat(mono, starts)
    half = height / 2
    top = np.clip(np.rint(half - np.clip(hi, -1, 1) * half), 0, height).astype(np.int64)
    bot = np.clip(np.rint(half - np.clip(lo, -1, 1) * half), 0, height).astype(np.int64)
    bot = np.maximum(bot, top + 1)  # silence still draws a hairline
    step = columns / cols
    if step == 1:
        xs = "1"
        back = "-1"
    else:
        xs = _num(step)
        back = _num(-step)
    parts = [f"M0 {top[0]}l"]
    parts.append(" ".join(f"{xs} {d}" for d in np.diff(top).tolist()))
    parts.append(f"v{int(bot[-1] - top[-1])}l")
    parts.append(" ".join(f"{back} {d}" for d in np.diff(bot[::-1]).tolist()))
    parts.append("z")
    return "".join(parts).replace(" -", "-")


def _num(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


def _loudness(samples: np.ndarray, rate: int) -> float | None:
    try:
        import pyloudnorm  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        value = float(pyloudnorm.Meter(rate).integrated_loudness(samples))
    except (ValueError, TypeError):  # too short for a gating block, odd shapes
        return None
    return value if math.isfinite(value) else None


def analyse(path: Path) -> tuple[float, float | None, float | None, str]:
    """Decode once: duration (s), true peak (dBTP), integrated loudness (LUFS) and the waveform path."""
    from .audio.convert import decode
    from .audio.post import true_peak_db

    samples, rate = decode(path)
    duration = samples.shape[0] / rate if rate else 0.0
    peak = true_peak_db(samples, rate) if samples.size else None
    return duration, peak, _loudness(samples, rate), waveform_path(samples)


def _takes(spec: Any, page_dir: Path) -> list[Take]:
    takes = []
    for out in spec.outputs:
        path = Path(out.path)
        if not path.is_file():
            takes.append(Take(out.clip, out.rel, None, error="not built"))
            continue
        src = quote(Path(os.path.relpath(path, page_dir)).as_posix())
        try:
            duration, peak_db, lufs, wave = analyse(path)
        except (ValueError, OSError, RuntimeError) as exc:
            takes.append(Take(out.clip, out.rel, src, error=f"cannot decode: {exc}"))
            continue
        takes.append(Take(out.clip, out.rel, src, duration, peak_db, lufs, wave))
    return takes


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(seconds, 60)
    return f"{int(m)}:{s:04.1f}"


def _fmt_db(value: Any, unit: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.1f}\u00a0{unit}"
    return DASH


def _fmt_cost(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"${value:.4f}".rstrip("0").rstrip(".") if value else "$0"
    return DASH


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _row_value(row: dict[str, Any], key: str, i: int) -> Any:
    """A per-output report value: a scalar for one output, a list (one per output) for several."""
    value = row.get(key)
    if isinstance(value, list):
        return value[i] if i < len(value) else None
    return value


def _take_html(take: Take, i: int, row: dict[str, Any] | None, eager: bool, several: bool) -> str:
    head = f"take {take.clip} \u00b7 " if several else ""
    head += f'<span class="rel">{_e(take.rel)}</span>'
    if take.src is None:
        return f'<div class="take missing"><div class="th">{head}</div><div class="nf">{_e(take.error)}</div></div>'
    row = row or {}
    lufs = _row_value(row, "loudness_lufs", i)
    lufs = take.lufs if lufs is None else lufs
    peak = _row_value(row, "true_peak_db", i)
    peak = take.true_peak_db if peak is None else peak
    preload = "metadata" if eager else "none"
    body = (f'<audio controls preload="{preload}" src="{_e(take.src)}"></audio>'
            f'<svg class="w" viewBox="0 0 {COLUMNS} {HEIGHT}" preserveAspectRatio="none">'
            f'<path d="{take.wave}"/></svg>')
    facts = (f"<span>{_fmt_duration(take.duration)}</span><span>{_fmt_db(lufs, 'LUFS')}</span>"
             f"<span>true peak {_fmt_db(peak, 'dBTP')}</span>")
    if take.error:
        facts += f'<span class="err">{_e(take.error)}</span>'
    return f'<div class="take"><div class="th">{head}</div>{body}<div class="f">{facts}</div></div>'


def _track_html(spec: Any, row: dict[str, Any] | None, takes: list[Take], eager: bool, cover: str) -> str:
    status = _status(row)
    labels = list(spec.labels)
    lab = "".join(f'<b class="l">{_e(x)}</b>' for x in labels)
    tags = "".join(f'<i class="g">{_e(x)}</i>' for x in spec.tags)
    meta = [f'<span class="s {_e(status)}">{_e(status)}</span>']
    if row:
        action = row.get("action") or ""
        reasons = ", ".join(row.get("reasons") or [])
        meta.append(f"<span>{_e(action)}{' (' + _e(reasons) + ')' if reasons else ''}</span>")
        meta.append(f"<span>{_e(row.get('provider') or spec.provider.name)}/{_e(row.get('model') or spec.model)}</span>")
        meta.append(f"<span>{_fmt_cost(row.get('cost_usd'))}</span>")
        if row.get("seconds"):
            meta.append(f"<span>{row['seconds']:.1f}\u00a0s build</span>")
    else:
        meta.append(f"<span>{_e(spec.provider.name)}/{_e(spec.model)}</span>")
    error = (row or {}).get("error")
    err = f'<pre class="err">{_e(error)}</pre>' if error else ""
    several = len(takes) > 1
    cells = "".join(_take_html(t, i, row, eager, several) for i, t in enumerate(takes))
    return (f'<section class="t" data-track="{_e(spec.id)}" data-labels="{_e(json.dumps(labels))}" '
            f'data-status="{_e(status)}">'
            f'{cover}<h2>{_e(spec.id)}</h2><div class="m">{"".join(meta)}{lab}{tags}</div>'
            f'<p class="p">{_e(spec.prompt)}</p>{err}'
            f'<div class="k{" two" if several else ""}" style="--n:{len(takes)}">{cells}</div></section>')


CSS = """
*{box-sizing:border-box}body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{position:sticky;top:0;z-index:1;background:#1d2330;color:#fff;padding:10px 16px}
header h1{font-size:18px;margin:0 0 4px}header .sum span{margin-right:12px;opacity:.9}
#bar{margin-top:6px;display:flex;flex-wrap:wrap;gap:6px;align-items:center}
#bar button{border:1px solid #6b7590;background:#2c3448;color:#fff;border-radius:12px;padding:2px 10px;cursor:pointer}
#bar button.on{background:#4f8cff;border-color:#4f8cff}#q{padding:3px 8px;border-radius:12px;border:0;min-width:220px}
main{padding:8px 16px}.t{background:#fff;border-radius:8px;margin:8px 0;padding:8px 12px;box-shadow:0 1px 2px #0002}
.t h2{font-size:15px;margin:0;display:inline-block}.m{display:inline;margin-left:8px}
.m span{margin-right:10px;color:#566}.s{font-weight:600;padding:0 6px;border-radius:4px;background:#dde}
.s.ok{background:#d5f5dc;color:#185c2a}.s.failed{background:#ffd9d6;color:#8a1c12}.s.skipped{background:#eee}
.l{font-weight:500;background:#e3ecff;color:#24467f;border-radius:10px;padding:0 7px;margin-right:4px;font-size:12px}
.g{font-style:normal;background:#f0ece3;color:#6a5520;border-radius:10px;padding:0 7px;margin-right:4px;font-size:12px}
.p{margin:4px 0 6px;color:#333}.err{color:#8a1c12;white-space:pre-wrap;margin:4px 0}
.k{display:grid;grid-template-columns:repeat(var(--n),minmax(0,1fr));gap:10px}
.take{border:1px solid #e4e6ea;border-radius:6px;padding:6px}.th{font-size:12px;color:#566}
.rel{font-family:ui-monospace,monospace}audio{width:100%;height:32px;display:block;margin:4px 0}
.w{width:100%;height:44px;display:block;background:#f7f8fb}.w path{fill:#4f8cff}
.f span{margin-right:12px;font-size:12px;color:#445}.nf{color:#8a1c12;padding:10px 0}
.hide{display:none}#none{display:none;padding:20px;color:#566}
.cv{float:left;width:44px;height:44px;margin:0 10px 4px 0;border-radius:4px;background:#dde center/cover no-repeat}
#bar button.st.failed{border-color:#e5736a}#bar button.st.failed.on{background:#c0392b;border-color:#c0392b}
"""

JS = """
(function(){
var b=document.body,a=document.querySelectorAll('audio'),ok=0,bad=0,t0=performance.now();
b.dataset.audio=a.length;b.dataset.loaded=0;b.dataset.failed=0;
function done(){if(ok+bad===a.length)b.dataset.ms=Math.round(performance.now()-t0);}
a.forEach(function(x){
 x.addEventListener('loadedmetadata',function(){b.dataset.loaded=++ok;done();},{once:true});
 x.addEventListener('error',function(){b.dataset.failed=++bad;done();},{once:true});
 x.addEventListener('play',function(){a.forEach(function(y){if(y!==x)y.pause();});});
});
done();
var lazy=[].filter.call(a,function(x){return x.preload==='none';});
function wake(x){x.preload='metadata';x.load();}
var h=new URLSearchParams(location.hash.slice(1));
if(h.has('all')){lazy.forEach(wake);}
else if('IntersectionObserver' in window){
 var io=new IntersectionObserver(function(es){es.forEach(function(e){if(e.isIntersecting){io.unobserve(e.target);wake(e.target);}});},{rootMargin:'600px'});
 lazy.forEach(function(x){io.observe(x);});
}
var on=new Set(),st=new Set(),q=document.getElementById('q'),ts=document.querySelectorAll('.t'),cnt=document.getElementById('shown');
function apply(){
 var s=q.value.trim().toLowerCase(),n=0;
 ts.forEach(function(t){
  var ls=JSON.parse(t.dataset.labels),hit=!on.size||ls.some(function(l){return on.has(l);});
  if(hit&&st.size)hit=st.has(t.dataset.status);
  if(hit&&s)hit=t.textContent.toLowerCase().indexOf(s)>=0;
  t.classList.toggle('hide',!hit);if(hit)n++;
 });
 cnt.textContent=n;document.getElementById('none').style.display=n?'none':'block';
}
document.querySelectorAll('#bar button[data-label]').forEach(function(btn){
 btn.addEventListener('click',function(){var l=btn.dataset.label;
  if(on.has(l))on.delete(l);else on.add(l);btn.classList.toggle('on');apply();});
});
document.querySelectorAll('#bar button[data-status]').forEach(function(btn){
 btn.addEventListener('click',function(){var v=btn.dataset.status;
  if(st.has(v))st.delete(v);else st.add(v);btn.classList.toggle('on');apply();});
});
document.getElementById('clear').addEventListener('click',function(){on.clear();st.clear();q.value='';
 document.querySelectorAll('#bar button.on').forEach(function(x){x.classList.remove('on');});apply();});
q.addEventListener('input',apply);
h.getAll('label').forEach(function(l){document.querySelectorAll('#bar button[data-label]').forEach(function(btn){
 if(btn.dataset.label===l&&!on.has(l)){on.add(l);btn.classList.add('on');}});});
h.getAll('status').forEach(function(v){document.querySelectorAll('#bar button[data-status]').forEach(function(btn){
 if(btn.dataset.status===v&&!st.has(v)){st.add(v);btn.classList.add('on');}});});
if(h.has('q'))q.value=h.get('q');
apply();
b.dataset.ready=1;
})();
"""


def _status(row: dict[str, Any] | None) -> str:
    return (row or {}).get("status") or "not-in-report"


def _covers(specs: Any) -> tuple[dict[Path, str], str]:
    """A CSS class per distinct cover image (embedded once as a data URI), and the CSS."""
    classes: dict[Path, str] = {}
    css = []
    for spec in specs:
        cover = spec.metadata.cover
        if cover is None or cover in classes:
            continue
        classes[cover] = f"cv{len(classes)}"
        try:
            data = Path(cover).read_bytes()
        except OSError:
            continue
        if len(data) > MAX_COVER_BYTES:
            continue  # the class stays empty: a grey square titled with the file name
        mime = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
        css.append(f'.{classes[cover]}{{background-image:url("data:{mime};base64,{base64.b64encode(data).decode()}")}}')
    return classes, "".join(css)


def _cover_html(spec: Any, classes: dict[Path, str], page_dir: Path) -> str:
    cover = spec.metadata.cover
    if cover is None:
        return ""
    shown = os.path.relpath(cover, page_dir)
    return f'<i class="cv {classes[cover]}" title="cover: {_e(shown)}"></i>'


def render_review(page_dir: Path, report: dict[str, Any], manifest: Any) -> str:
    rows = {r.get("id"): r for r in report.get("tracks") or [] if isinstance(r, dict)}
    sections = []
    labels: list[str] = []
    audio = 0
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
        analysed = list(pool.map(lambda spec: _takes(spec, page_dir), manifest.tracks))
    covers, cover_css = _covers(manifest.tracks)
    tracks = sorted(zip(manifest.tracks, analysed), key=lambda st: STATUS_ORDER.get(_status(rows.get(st[0].id)), 1))
    statuses: dict[str, int] = {}
    for spec, takes in tracks:
        for label in spec.labels:
            if label not in labels:
                labels.append(label)
        row = rows.get(spec.id)
        statuses[_status(row)] = statuses.get(_status(row), 0) + 1
        sections.append(_track_html(spec, row, takes, audio < EAGER_PLAYERS, _cover_html(spec, covers, page_dir)))
        audio += sum(1 for t in takes if t.src)
    summary = report.get("summary") or {}
    facts = [f"<span>{len(manifest.tracks)} tracks</span>"]
    for key in ("generated", "materialized", "up_to_date", "failed", "skipped"):
        if summary.get(key):
            facts.append(f"<span>{summary[key]} {_e(key.replace('_', ' '))}</span>")
    if "cost_usd" in summary:
        facts.append(f"<span>cost {_fmt_cost(summary['cost_usd'])}</span>")
    if report.get("finished_at"):
        facts.append(f"<span>built {_e(report['finished_at'])}</span>")
    if report.get("interrupted"):
        facts.append("<span>interrupted</span>")
    buttons = "".join(f'<button type="button" class="st {_e(x)}" data-status="{_e(x)}">{_e(x)} {n}</button>'
                      for x, n in statuses.items())
    buttons += "".join(f'<button type="button" data-label="{_e(x)}">{_e(x)}</button>' for x in labels)
    title = f"Review: {manifest.path.name}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{CSS}{cover_css}</style></head>\n<body>"
        f"<header><h1>{_e(title)}</h1><div class=\"sum\">{''.join(facts)}"
        "<span><b id=\"shown\">" + str(len(manifest.tracks)) + "</b> shown</span></div>"
        f"<div id=\"bar\"><input id=\"q\" type=\"search\" placeholder=\"search id, prompt, tags\" aria-label=\"search\">"
        f"{buttons}<button type=\"button\" id=\"clear\">all</button></div></header>\n<main>\n"
        + "\n".join(sections)
        + "\n<div id=\"none\">No track matches.</div></main>\n"
        f"<script>{JS}</script></body></html>\n"
    )


def write_review(path: Path, report: dict[str, Any], manifest: Any) -> None:
    """Write the review page for ``report`` (a SPEC 6 document) and ``manifest`` to ``path``."""
    path = Path(path)
    page_dir = path.resolve().parent
    atomic_write_bytes(path, redact(render_review(page_dir, redact_data(report), manifest)).encode("utf-8"))
