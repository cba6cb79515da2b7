"""Best-of-N: rank candidates by likeness to the subject's photos and keep the top k.

A scorer is anything with a ``name`` and ``score(images, reference_images) -> list[float]`` (higher
is more alike). Scorers are chosen by name (``generate.scorer``) from :data:`SCORERS`, which maps
each name to a ``module:function`` that builds one from the run; the module is imported only when
chosen, so a scorer may bring heavy models (face identity, DINO, CLIP from ``lookalike.metrics``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from lookalike.errors import LookalikeError

if TYPE_CHECKING:
    from lookalike.run import Run


class Scorer(Protocol):
    name: str  # written into manifests and PNG metadata

    def score(self, images: list[Image.Image], reference_images: list[Image.Image]) -> list[float]: ...


# generate.scorer value -> "module:function(run) -> Scorer"
SCORERS: dict[str, str] = {
    "histogram": "lookalike.sample.scoring:histogram_scorer",
    "identity": "lookalike.metrics.scorers:identity_scorer",
    "face": "lookalike.metrics.scorers:face_scorer",
    "dino": "lookalike.metrics.scorers:dino_scorer",
    "clip": "lookalike.metrics.scorers:clip_scorer",
}


class HistogramScorer:
    """A stand-in until identity scorers land: colour-histogram overlap with the subject photos.

    It rewards matching colours (skin, hair, clothes, background), not identity: good enough to
    drop a candidate that went off in colour, blind to who is in the picture.
    """

    name = "pixel-histogram similarity (stand-in)"
    bins = 32

    def _histogram(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(image.convert("RGB").resize((128, 128), Image.BILINEAR)).reshape(-1, 3).astype(np.int64)
        hist = np.stack([np.bincount(pixels[:, c] * self.bins // 256, minlength=self.bins) for c in range(3)])
        return hist / pixels.shape[0]  # [3, bins], each row sums to 1

    def score(self, images: list[Image.Image], reference_images: list[Image.Image]) -> list[float]:
        if not reference_images:
            raise LookalikeError("best-of-N needs the subject's photos to compare with: run `lookalike prepare` first")
        refs = np.stack([self._histogram(r) for r in reference_images])  # [R, 3, bins]
        scores = []
        for image in images:
            overlap = np.minimum(self._histogram(image)[None], refs).sum(axis=2).mean(axis=1)  # [R], 0..1
            scores.append(float(overlap.mean()))
        return scores


def histogram_scorer(run: "Run") -> Scorer:
    return HistogramScorer()


def get_scorer(name: str, run: "Run") -> Scorer:
    if name not in SCORERS:
        raise LookalikeError(f"generate.scorer: no scorer named {name!r}; choose one of: {', '.join(SCORERS)}")
    module, function = SCORERS[name].split(":")
    return getattr(importlib.import_module(module), function)(run)


def top_k(scores: list[float], k: int | None) -> list[int]:
    """Indices of the k best scores, best first; ties keep candidate order (lower seed first)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order if k is None else order[:k]


@dataclass
class BestOfN:
    """One prompt's candidates -> the k kept, best first. Without a scorer every candidate is kept."""

    scorer: Scorer | None
    references: list[Image.Image] = field(default_factory=list)
    keep: int | None = None

    @property
    def scorer_name(self) -> str | None:
        return self.scorer.name if self.scorer else None

    def pick(self, images: list[Image.Image]) -> tuple[list[int], list[float | None]]:
        """(indices kept, best first; every candidate's score)."""
        if self.scorer is None:
            return list(range(len(images))), [None] * len(images)
        scores = self.scorer.score(images, self.references)
        return top_k(scores, self.keep), scores
