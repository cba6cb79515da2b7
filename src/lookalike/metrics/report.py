"""The eval report on disk: report.json, and index.html with a table, one SVG plot per metric
(against training step, drawn by hand: no plotting library) and sample thumbnails per model.

The page uses relative links only, so it works opened from disk (file://) or copied elsewhere with
its samples folder.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from lookalike.run import atomic_write_text

# metric key -> (column title, what it says)
METRICS = {
    "dino": ("DINO", "subject likeness, DINO ViT features (higher: more alike)"),
    "clip_i": ("CLIP-I", "subject likeness, CLIP image features (higher: more alike)"),
    "clip_t": ("CLIP-T", "prompt following: image vs prompt text (higher: follows prompts)"),
    "pres": ("PRES", "class prompt samples vs subject (lower: class prior kept)"),
    "div_feat": ("DIV-feat", "diversity among one prompt's samples, 1 − cosine (higher: more varied)"),
    "face_similarity": ("Face ID", "SFace identity cosine, no face counts 0 (higher: same person)"),
    "face_found_share": ("Faces found", "share of samples with a detectable face"),
}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 360, 210, 52, 14, 28, 34


def shown_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The metrics that have a value somewhere in the report (DINO or faces may be skipped)."""
    return [m for m in METRICS if any(row["metrics"].get(m) is not None for row in rows)]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _scale(lo: float, hi: float, out_lo: float, out_hi: float):
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return lambda v: out_lo + (v - lo) * (out_hi - out_lo) / (hi - lo)


def svg_plot(metric: str, rows: list[dict[str, Any]], recommended_step: int | None) -> str:
    """One metric against training step, a line per subject; the recommended step dashed."""
    points: dict[str, list[tuple[int, float, str]]] = {}
    for row in rows:
        value = row["metrics"].get(metric)
        if value is not None:
            points.setdefault(row["subject"], []).append((row["step"], value, row["target"]))
    steps = [p[0] for ps in points.values() for p in ps]
    values = [p[1] for ps in points.values() for p in ps]
    pad = max((max(values) - min(values)) * 0.1, 1e-3)
    lo, hi = min(values) - pad, max(values) + pad
    x = _scale(min(steps), max(steps), LEFT, WIDTH - RIGHT)
    y = _scale(lo, hi, HEIGHT - BOTTOM, TOP)
    title, meaning = METRICS[metric]
    parts = [
        f'<svg class="plot" data-metric="{metric}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">',
        f'<title>{html.escape(title)}: {html.escape(meaning)}</title>',
        f'<text x="{LEFT}" y="16" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="#444"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#444"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end" font-size="10">{hi:.4f}</text>',
        f'<text x="{LEFT - 4}" y="{HEIGHT - BOTTOM}" text-anchor="end" font-size="10">{lo:.4f}</text>',
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle" font-size="10">training step</text>',
    ]
    for step in sorted(set(steps)):
        parts.append(f'<text x="{x(step):.1f}" y="{HEIGHT - BOTTOM + 13}" text-anchor="middle" font-size="10">{step}</text>')
    if recommended_step is not None:
        rx = x(recommended_step)
        parts.append(f'<line x1="{rx:.1f}" y1="{TOP}" x2="{rx:.1f}" y2="{HEIGHT - BOTTOM}" stroke="#888" stroke-dasharray="4 3"/>')
    for i, (subject, ps) in enumerate(sorted(points.items())):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v, _ in ps)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        for s, v, target in ps:
            tip = html.escape(f"{subject} · {target} · {title} {v:.4f}")
            parts.append(f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}"><title>{tip}</title></circle>')
    return "\n".join(parts + ["</svg>"])


def _table(rows: list[dict[str, Any]], metrics: list[str], recommended: str | None) -> str:
    head = "".join(f'<th title="{html.escape(METRICS[m][1])}">{METRICS[m][0]}</th>' for m in metrics)
    body = []
    for row in rows:
        mark = ' class="pick"' if row["target"] == recommended else ""
        cells = "".join(f"<td>{_fmt(row['metrics'].get(m))}</td>" for m in metrics)
        counts = row["counts"]
        body.append(
            f"<tr{mark}><td>{html.escape(row['target'])}</td><td>{row['step']}</td><td>{html.escape(row['subject'])}</td>"
            f"{cells}<td>{counts['images']} + {counts['class_images']}</td></tr>"
        )
    return (f"<table><tr><th>model</th><th>step</th><th>subject</th>{head}<th>images + class</th></tr>"
            + "\n".join(body) + "</table>")


def _thumbnails(rows: list[dict[str, Any]]) -> str:
    """Per model and subject: the first sample of every prompt, then the class prompt's."""
    blocks = []
    for row in rows:
        shots = [(p["files"][0], p["prompt"]) for p in row["prompts"] if p["files"]]
        shots += [(row["class_files"][0], "class prompt (PRES)")] if row["class_files"] else []
        images = "".join(
            f'<img src="{html.escape(file)}" title="{html.escape(prompt)}" alt="{html.escape(prompt)}" loading="lazy">' for file, prompt in shots
        )
        blocks.append(f"<h3>{html.escape(row['target'])} (step {row['step']}) · {html.escape(row['subject'])}</h3><div class=\"thumbs\">{images}</div>")
    return "\n".join(blocks)


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1200px} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} tr.pick{background:#fff3c4}
.plots{display:flex;flex-wrap:wrap;gap:12px} .thumbs img{width:96px;height:96px;margin:2px;object-fit:cover}
.note{color:#8a4b00}"""


def recommended_name(rec: dict[str, Any]) -> str:
    """``step-000200`` as it is; ``model`` says its step; ``none`` when nothing was recommended."""
    name = rec["checkpoint"]
    if name is None:
        return "none"
    return name if name.startswith("step-") else f"{name} (step {rec['step']})"


def render_html(report: dict[str, Any]) -> str:
    rows, rec = report["rows"], report["recommendation"]
    metrics = shown_metrics(rows)
    plots = "\n".join(svg_plot(m, rows, rec["step"]) for m in metrics)
    notes = "".join(f'<li class="note">{html.escape(n)}</li>' for n in report["notes"])
    legend = "".join(f"<li><b>{METRICS[m][0]}</b>: {html.escape(METRICS[m][1])}</li>" for m in metrics)
    stopped = "<p class=\"note\">Stopped before every model was evaluated: run <code>lookalike eval</code> again to finish.</p>" if report["stopped"] else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>lookalike eval</title><style>{STYLE}</style></head><body>
<h1>Eval: {html.escape(report['run'])}</h1>{stopped}
<p><b>Recommended: {html.escape(recommended_name(rec))}</b> — {html.escape(rec['reason'])}<br>Rule: {html.escape(rec['rule'])}.</p>
<ul>{notes}</ul>
{_table(rows, metrics, rec['checkpoint'])}
<ul>{legend}</ul>
<h2>Metrics against training step</h2><div class="plots">{plots}</div>
<h2>Samples</h2>{_thumbnails(rows)}
</body></html>
"""


def write_report(folder: Path, report: dict[str, Any]) -> None:
    atomic_write_text(folder / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(folder / "index.html", render_html(report))


def summary_text(report: dict[str, Any], folder: Path, reused: int, total: int) -> str:
    rows, rec = report["rows"], report["recommendation"]
    metrics = shown_metrics(rows)
    lines = ["  ".join([f"{'model':<12}", f"{'step':>6}", f"{'subject':<10}"] + [f"{METRICS[m][0]:>11}" for m in metrics])]
    for row in rows:
        cells = [f"{_fmt(row['metrics'].get(m)):>11}" for m in metrics]
        lines.append("  ".join([f"{row['target']:<12}", f"{row['step']:>6}", f"{row['subject']:<10}"] + cells))
    lines += [f"note: {n}" for n in report["notes"]]
    lines += [f"rule: {rec['rule']}", f"recommended: {recommended_name(rec)} — {rec['reason']}"]
    lines.append(f"{reused} of {total} models reused from eval/cache; report: {folder / 'index.html'}")
    return "\n".join(lines)
