"""The gallery page and contact sheets, checked in the file system and in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.sample.gallery import contact_sheet, groups, write_gallery

CHROMIUM = Path("/usr/bin/chromium")


def write_rows(folder: Path) -> list[dict]:
    """Two groups of kept PNGs (and one dropped candidate) as a generate run writes them."""
    rng = np.random.default_rng(0)
    rows = []
    for group, prompt in [("film-noir", "a film noir still of ohwx man"), ("prompt-1", "ohwx man <b>&\"quoted\"</b>")]:
        for rank, seed in [(1, 2), (2, 0), (None, 1)]:
            file = f"{group}-{rank}-s{seed}.png" if rank else None
            if file:
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / file)
            rows.append({"file": file, "group": group, "prompt": prompt, "negative_prompt": "blurry",
                         "seed": seed, "score": 0.5, "rank": rank, "kept": rank is not None})
    return rows


def test_gallery_page_lists_kept_images_by_group_with_relative_paths(tmp_path):
    folder = tmp_path / "samples" / "20250101-000000"
    folder.mkdir(parents=True)
    rows = write_rows(folder)
    page = write_gallery(folder, rows, title="ohwx man: me")
    html = page.read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', html)
    kept = [r["file"] for r in rows if r["kept"]]
    assert sorted(set(srcs)) == sorted(kept)  # each kept image in its grid and its lightbox
    assert len(srcs) == 2 * len(kept)
    assert all(not s.startswith(("/", "file:")) for s in srcs)
    assert html.index("film-noir-1-s2.png") < html.index("film-noir-2-s0.png")  # best first
    assert "<b>&" not in html and "&lt;b&gt;&amp;" in html  # prompts are escaped, not markup
    assert "seed 2" in html and 'id="img-1"' in html and 'href="#img-1"' in html
    assert list(groups(rows)) == ["film-noir", "prompt-1"]
    sheet = Image.open(folder / "contact-sheet.png")
    assert sheet.size == (4 + 4 * (192 + 4), 4 + 192 + 16 + 4)  # four kept images in one row
    for group in ("film-noir", "prompt-1"):
        assert Image.open(folder / "sheets" / f"{group}.png").size == (4 + 2 * 196, 216)


def test_contact_sheet_wraps_rows():
    images = [Image.new("RGB", (16, 16), (i * 30, 0, 0)) for i in range(7)]
    sheet = contact_sheet(images, [str(i) for i in range(7)], columns=3, thumb=20)
    assert sheet.size == (4 + 3 * 24, 4 + 3 * (20 + 16 + 4))
    assert sheet.getpixel((4 + 10, 4 + 10)) == (0, 0, 0)
    assert sheet.getpixel((4 + 24 + 10, 4 + 10)) == (30, 0, 0)


def loaded_images(page: Path, profile: Path) -> str:
    """The page's data-images attribute ("loaded/total") after Chromium rendered it from file://."""
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<body[^>]*data-images="(\d+/\d+)"', dom)
    assert found, f"the page's script did not run: {dom[:300]}"
    return found.group(1)


# The README's test command installs Chromium; only outside CI may a machine without it skip this.
@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"), reason="needs headless Chromium: apt-get install chromium"
)
def test_gallery_loads_every_image_in_chromium(tmp_path):
    folder = tmp_path / "run" / "samples" / "one"
    folder.mkdir(parents=True)
    rows = write_rows(folder)
    page = write_gallery(folder, rows, title="ohwx man")
    assert loaded_images(page, tmp_path / "profile") == "8/8"
    # Copied elsewhere with its folder, the page still works (paths are relative) ...
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    assert loaded_images(moved / "index.html", tmp_path / "profile") == "8/8"
    # ... and the check can fail: a missing PNG is counted as not loaded (grid + lightbox).
    (moved / "prompt-1-1-s2.png").unlink()
    assert loaded_images(moved / "index.html", tmp_path / "profile") == "6/8"
