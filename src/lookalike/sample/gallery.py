"""The gallery of a generate run: ``index.html`` (a grid per style or prompt, click to enlarge) and
contact-sheet PNGs. The page is static HTML with relative image paths, so it works opened straight
from the file system, copied elsewhere with its folder, or served by anything.
"""

from __future__ import annotations

import io
from html import escape
from pathlib import Path
from urllib.parse import quote

from PIL import Image, ImageDraw

from lookalike.run import atomic_write_bytes, atomic_write_text

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; background: #111; color: #ddd; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin: 1.6em 0 .2em; }
p.prompt { color: #999; margin: 0 0 .6em; max-width: 70em; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 220px; }
figure img { width: 100%; image-rendering: auto; border-radius: 4px; display: block; }
figcaption { font-size: 12px; color: #aaa; padding-top: 3px; }
figcaption .p { display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; color: #777; }
.lightbox { display: none; position: fixed; inset: 0; background: rgba(0,0,0,.92); z-index: 10;
  flex-direction: column; align-items: center; justify-content: center; text-align: center; }
.lightbox:target { display: flex; }
.lightbox img { max-width: 92vw; max-height: 80vh; min-width: min(512px, 92vw); object-fit: contain; }
.lightbox p { max-width: 60em; color: #ccc; }
a { color: #8bf; } img.missing { outline: 3px solid #e44; }
#missing { color: #e44; }
"""

# Marks images that did not load (a moved or half-copied folder) and records the count on <body>
# (data-images="loaded/total"), which the gallery test reads from headless Chromium.
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } else { imgs[i].className += " missing"; }
  }
  if (ok < imgs.length) {
    document.getElementById("missing").textContent = (imgs.length - ok) + " images did not load: keep index.html beside its PNGs.";
  }
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
});
"""


def _caption(row: dict) -> str:
    score = f" · score {row['score']:.3f}" if row.get("score") is not None else ""
    return f"seed {row['seed']}{score}"


def _figure(row: dict, n: int) -> str:
    src = quote(row["file"])
    alt = escape(row["prompt"], quote=True)
    return (
        f'<figure><a href="#img-{n}"><img src="{src}" alt="{alt}" title="{alt}"></a>'
        f'<figcaption>{escape(_caption(row))}<span class="p">{alt}</span></figcaption></figure>'
    )


def _lightbox(row: dict, n: int) -> str:
    negative = f"<br>Negative prompt: {escape(row['negative_prompt'])}" if row.get("negative_prompt") else ""
    return (
        f'<div class="lightbox" id="img-{n}"><a href="#_"><img src="{quote(row["file"])}" alt=""></a>'
        f"<p>{escape(row['prompt'])}{negative}<br>{escape(_caption(row))} · "
        f'<a href="{quote(row["file"])}">{escape(row["file"])}</a> · <a href="#_">close</a></p></div>'
    )


def groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Kept images by style or prompt, in render order, best first within each."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        if row["kept"]:
            out.setdefault(row["group"], []).append(row)
    return {g: sorted(rs, key=lambda r: r["rank"]) for g, rs in out.items()}


def render_html(rows: list[dict], title: str, sheets: list[str]) -> str:
    sections, boxes, n = [], [], 0
    for group, kept in groups(rows).items():
        figures = []
        for row in kept:
            n += 1
            figures.append(_figure(row, n))
            boxes.append(_lightbox(row, n))
        sections.append(
            f"<section><h2>{escape(group)}</h2><p class=\"prompt\">{escape(kept[0]['prompt'])}</p>"
            f"<div class=\"grid\">{''.join(figures)}</div></section>"
        )
    links = " · ".join(f'<a href="{quote(s)}">{escape(s)}</a>' for s in sheets)
    return (
        f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
        f"<p>{n} images. Click one to enlarge. Contact sheets: {links}</p><p id=\"missing\"></p>"
        f"{''.join(sections)}{''.join(boxes)}<script>{SCRIPT}</script></body></html>\n"
    )


def contact_sheet(images: list[Image.Image], labels: list[str], columns: int = 6, thumb: int = 192) -> Image.Image:
    """A grid of thumbnails with a label under each."""
    label_h = 16
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (thumb + 4) + 4, rows * (thumb + label_h + 4) + 4), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, (image, label) in enumerate(zip(images, labels)):
        x = 4 + (i % columns) * (thumb + 4)
        y = 4 + (i // columns) * (thumb + label_h + 4)
        sheet.paste(image.convert("RGB").resize((thumb, thumb), Image.LANCZOS), (x, y))
        draw.text((x + 2, y + thumb + 2), label[:32], fill=(220, 220, 220))
    return sheet


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_contact_sheets(folder: Path, rows: list[dict]) -> list[str]:
    """contact-sheet.png (every kept image) and sheets/<group>.png; returns their relative paths."""
    by_group = groups(rows)
    if not by_group:
        return []
    written = []
    every = [r for kept in by_group.values() for r in kept]
    targets = [("contact-sheet.png", every, lambda r: f"{r['group']} {r['seed']}")]
    targets += [(f"sheets/{g}.png", kept, lambda r: f"seed {r['seed']}") for g, kept in by_group.items()]
    for name, chosen, label in targets:
        images = []
        for r in chosen:
            with Image.open(folder / r["file"]) as im:
                images.append(im.convert("RGB"))
        atomic_write_bytes(folder / name, _png(contact_sheet(images, [label(r) for r in chosen])))
        written.append(name)
    return written


def write_gallery(folder: Path, rows: list[dict], title: str) -> Path:
    """index.html and the contact sheets for the kept images in ``rows`` (manifest rows)."""
    sheets = write_contact_sheets(folder, rows)
    page = folder / "index.html"
    atomic_write_text(page, render_html(rows, title, sheets))
    return page
