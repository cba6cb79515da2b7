"""What `lookalike audit` leaves behind: contact sheets (PNG), report.json and report.html.

The HTML uses only relative paths (its own sheets, and ../priors/<subject>/<file> for flagged
images), so it works opened straight from disk and after the run folder is moved.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from lookalike.prior.checks import ImageSet

THUMB = 96
LABEL_HEIGHT = 14
COLUMNS = 16
FLAG_COLOURS = {"broken": (200, 0, 0), "blank": (230, 140, 0), "near-duplicate": (150, 0, 200)}


def contact_sheet(images: ImageSet) -> Image.Image:
    """All images of a set as labelled thumbnails; flagged ones framed in their problem's colour."""
    columns = max(1, min(COLUMNS, len(images.files)))
    rows = max(1, math.ceil(len(images.files) / columns))
    cell_h = THUMB + LABEL_HEIGHT
    sheet = Image.new("RGB", (columns * THUMB, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    problems = {flag.file: flag.problem for flag in images.flags}
    for index, file in enumerate(images.files):
        x, y = (index % columns) * THUMB, (index // columns) * cell_h
        if file in images.images:
            thumb = images.images[file].copy()
            thumb.thumbnail((THUMB, THUMB))
            sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        else:
            draw.rectangle((x, y, x + THUMB - 1, y + THUMB - 1), fill=(60, 60, 60))
        if file in problems:
            draw.rectangle((x, y, x + THUMB - 1, y + THUMB - 1), outline=FLAG_COLOURS[problems[file]], width=4)
        draw.text((x + 2, y + THUMB + 1), file[:15], fill=(0, 0, 0))
    return sheet


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def _shares_cell(counts: list[int], options: list[str]) -> str:
    total = max(sum(counts), 1)
    return "<br>".join(f"{html.escape(o)}: {round(100 * c / total)}% ({c})" for o, c in zip(options, counts))


def _attribute_table(attributes: list[dict[str, Any]]) -> str:
    rows = [
        f"<tr class='{'differs' if a['differs'] else ''}'><td>{html.escape(a['attribute'])}</td>"
        f"<td>{_shares_cell(a['prior_counts'], a['options'])}</td>"
        f"<td>{_shares_cell(a['subject_counts'], a['options'])}</td></tr>"
        for a in attributes
    ]
    return "<table><tr><th>attribute</th><th>priors</th><th>photos</th></tr>" + "".join(rows) + "</table>"


def _flags_list(subject: dict[str, Any]) -> str:
    if not subject["flags"]:
        return "<p>No broken, blank or near-duplicate priors.</p>"
    items = [
        f"<li><a href='{html.escape(subject['priors_path'])}/{html.escape(f['file'])}'>{html.escape(f['file'])}</a>: "
        f"<b>{html.escape(f['problem'])}</b>, {html.escape(f['detail'])}</li>"
        for f in subject["flags"]
    ]
    return "<ul>" + "".join(items) + "</ul>"


def not_followed_hint(attributes: list[str]) -> str:
    return (f"the base model did not follow the prompt on {', '.join(attributes)}: making the priors again will not "
            "fix that; bring class images that show the photos' side (subject.class_images=DIR)")


def _since_section(subject: dict[str, Any]) -> str:
    if "since" not in subject:
        return ""
    esc = html.escape
    before = " / ".join(f"<code>{esc(p)}</code>" for p in subject["since"]["prior_prompts"])
    items = "".join(f"<li>{esc(line)}</li>" for line in subject["since"]["lines"]) or "<li>No attribute differed in either audit.</li>"
    hint = subject["since"].get("not_followed")
    advice = f"<p><strong>{esc(not_followed_hint(hint))}</strong></p>" if hint else ""
    if subject["since"].get("narrowed"):
        advice += f"<p><strong>{esc(subject['since']['narrowed'])}</strong></p>"
    return f"<h3>Since the priors of {before}</h3><ul>{items}</ul>{advice}"


def variety_line(subject: dict[str, Any]) -> str:
    """How varied the priors are and how much they look like the subject; empty for a report without the figures."""
    if subject.get("prior_spread") is None:
        return ""
    return (f"priors' feature spread (DIV-feat, CLIP) {subject['prior_spread']:.2f}, "
            f"likeness to the photos (CLIP-I) {subject['prior_likeness']:.2f}")


def _variety(subject: dict[str, Any]) -> str:
    line = variety_line(subject)
    return f"<p>{html.escape(line[0].upper() + line[1:])}.</p>" if line else ""


def _subject_section(subject: dict[str, Any]) -> str:
    esc = html.escape
    lines = "".join(f"<li>{esc(line)}</li>" for line in subject["lines"]) or "<li>Priors and photos agree on every attribute.</li>"
    return (
        f"<h2>{esc(subject['name'])}</h2>"
        f"<p>{subject['priors']} priors, {subject['photos']} photos. Class prompt: <code>{esc(subject['class_prompt'])}</code></p>"
        f"{_variety(subject)}"
        f"<ul>{lines}</ul>"
        f"<p>Refined class prompt: <code>{esc(subject['refined_class_prompt'])}</code>"
        f"{' (written to the config)' if subject['applied'] else ''}</p>"
        f"{_since_section(subject)}"
        f"{_attribute_table(subject['attributes'])}"
        f"<h3>Flagged priors</h3>{_flags_list(subject)}"
        f"<h3>Priors</h3><img src='{esc(subject['sheets']['priors'])}' alt='priors contact sheet'>"
        f"<h3>Subject photos</h3><img src='{esc(subject['sheets']['photos'])}' alt='photos contact sheet'>"
    )


STYLE = (
    "body{font-family:sans-serif;max-width:1600px;margin:1em auto;padding:0 1em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
    "tr.differs{background:#fff0d0}img{max-width:100%}"
)


def render_html(report: dict[str, Any]) -> str:
    body = "".join(_subject_section(s) for s in report["subjects"])
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>lookalike prior audit</title>"
        f"<style>{STYLE}</style></head><body><h1>Prior audit</h1>"
        f"<p>Attributes scored zero-shot with <code>{html.escape(report['clip_model'])}</code>; "
        f"an attribute is reported when an option's share differs by more than {round(100 * report['threshold'])} points. "
        "Frames: red broken, orange blank, purple near-duplicate.</p>"
        f"{body}</body></html>\n"
    )


def write_report(folder: Path, report: dict[str, Any], sheets: dict[str, Image.Image]) -> None:
    """Write sheets, report.json and report.html into ``folder`` (a fresh temporary folder)."""
    for name, sheet in sheets.items():
        sheet.save(folder / name, format="PNG")
    (folder / "report.json").write_text(render_json(report), encoding="utf-8")
    (folder / "report.html").write_text(render_html(report), encoding="utf-8")
