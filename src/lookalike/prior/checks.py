"""Open a set of images listed in a manifest and flag the broken, blank and near-duplicate ones.

Blank priors are common in practice: a safety checker answers with an all-black image, and a
model run at the wrong precision renders flat grey. Near-duplicates point at a sampler that
ignores its seed. Both teach the model nothing about the class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from lookalike.data.images import UnusableImage, hamming, open_image, phash

# Images are kept at this shorter side: enough for CLIP (224 or 336 px) and the contact sheets,
# and a thousand priors stay in memory.
WORKING_SIDE = 336


@dataclass
class ImageFlag:
    file: str
    problem: str  # "broken" | "blank" | "near-duplicate"
    detail: str


@dataclass
class ImageSet:
    """The images of one folder, in manifest order, with what is wrong with them."""

    folder: Path
    files: list[str]
    images: dict[str, Image.Image] = field(default_factory=dict)  # the files that opened
    flags: list[ImageFlag] = field(default_factory=list)

    def flagged(self, problem: str) -> set[str]:
        return {f.file for f in self.flags if f.problem == problem}

    def usable(self) -> list[str]:
        """Files that opened and are not blank (duplicates still count: they are trained on)."""
        blank = self.flagged("blank")
        return [f for f in self.files if f in self.images and f not in blank]


def _working_copy(image: Image.Image) -> Image.Image:
    scale = WORKING_SIDE / min(image.size)
    if scale >= 1:
        return image
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)


def grey_std(image: Image.Image) -> float:
    return float(np.asarray(image.convert("L"), dtype=np.float32).std())


def near_duplicates(hashes: dict[str, int], max_distance: int) -> list[ImageFlag]:
    """One flag per image that nearly repeats an earlier one (perceptual-hash distance)."""
    flags = []
    seen: list[tuple[str, int]] = []
    for file, value in hashes.items():
        match = next(((other, hamming(value, h)) for other, h in seen if hamming(value, h) <= max_distance), None)
        if match:
            flags.append(ImageFlag(file, "near-duplicate", f"near-duplicate of {match[0]} (hash distance {match[1]} of 64)"))
        else:
            seen.append((file, value))
    return flags


def open_set(folder: Path, files: list[str], blank_std: float, duplicate_distance: int, desc: str) -> ImageSet:
    result = ImageSet(folder, files)
    hashes = {}
    for file in tqdm(files, desc=desc, unit="image", leave=False):
        try:
            image = _working_copy(open_image(folder / file, min_side=1))
        except UnusableImage as err:
            result.flags.append(ImageFlag(file, "broken", err.reason))
            continue
        result.images[file] = image
        std = grey_std(image)
        if std < blank_std:
            result.flags.append(ImageFlag(file, "blank", f"almost one flat colour (grey-level std {std:.1f})"))
        else:
            hashes[file] = phash(image)
    result.flags.extend(near_duplicates(hashes, duplicate_distance))
    return result
