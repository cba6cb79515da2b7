"""The shipped subject packs: six 64×64 "photos" each of subjects the world never generates.

``toyperson`` is a clean-shaven man with glasses, short black hair and a purple star on his green
shirt (no scene of the world has a star on a person, and its men are bearded half the time and
seldom wear glasses: the classic prior-preservation trap). The mark sits on the shirt, away from
the head, so a judge reading beard, glasses and hat is not misled by it (blue striped hair was
read as a hat). ``toydog`` is a white dog with pointy ears and a purple star on its side and a
purple patch over one eye. Photos vary position, scale, light and background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.toyworld.render import render

LOOKS = {
    "toyperson": {
        "class": "person", "gender": "man", "skin": "light", "hair colour": "black", "marking": True,
        "hair style": "short", "beard": "no", "glasses": "yes", "hat": "no", "shirt": "green",
    },
    "toydog": {"class": "dog", "fur": "white", "ears": "pointy", "collar": "no", "marking": True},
}
CONTEXTS = ("plain", "beach", "forest", "city", "snow", "plain")
PHOTOS = 6
SEEDS = {"toyperson": 1, "toydog": 2}


def subject_scenes(name: str) -> list[dict]:
    rng = np.random.default_rng(SEEDS[name])
    scenes = []
    for i, context in enumerate(CONTEXTS[:PHOTOS]):
        scenes.append({
            **LOOKS[name], "context": context, "style": "photo", "seed": 900_000 + 100 * SEEDS[name] + i,
            "scale": float(rng.uniform(0.8, 1.1)), "dx": float(rng.uniform(-0.12, 0.12)), "dy": float(rng.uniform(-0.06, 0.06)),
        })
    return scenes


def write_subject_pack(name: str, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, scene in enumerate(subject_scenes(name)):
        path = folder / f"{i:02d}.png"
        Image.fromarray(render(scene)).save(path)
        paths.append(path)
    return paths
