"""Likeness scorers for best-of-N in `lookalike generate` (the Scorer interface of
:mod:`lookalike.sample.scoring`), built on the eval extractors.

- ``face``: SFace identity of the face in each candidate vs the subject's faces (people).
- ``dino``: DINO features vs the photos (``eval.dino_model``).
- ``clip``: CLIP image features vs the photos (``eval.clip_model``).
- ``identity``: ``face`` for a person subject, ``dino`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from PIL import Image

from lookalike.errors import LookalikeError
from lookalike.metrics import scores

if TYPE_CHECKING:
    from lookalike.run import Run

Embed = Callable[[list[Image.Image]], torch.Tensor]
NO_PHOTOS = "best-of-N needs the subject's photos to compare with: run `lookalike prepare` first"


class FeatureScorer:
    """Mean cosine of each candidate's features to the photos' features (photos embedded once)."""

    def __init__(self, name: str, embed: Embed, per_image: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.name = name
        self.embed = embed
        self.per_image = per_image
        self._references: list[Image.Image] | None = None
        self._reference_feats: torch.Tensor | None = None

    def score(self, images: list[Image.Image], reference_images: list[Image.Image]) -> list[float]:
        if not reference_images:
            raise LookalikeError(NO_PHOTOS)
        # generate passes the same photo list for every prompt: embed it once.
        if reference_images is not self._references:
            self._references, self._reference_feats = reference_images, self.embed(reference_images)
        return [float(v) for v in self.per_image(self.embed(images), self._reference_feats)]


def face_scorer(run: Run) -> FeatureScorer:
    from lookalike.metrics.faces import FaceEmbedder

    return FeatureScorer("face identity (SFace)", FaceEmbedder().embed_images, scores.face_similarity_per_image)


def dino_scorer(run: Run) -> FeatureScorer:
    from lookalike.metrics.features import DinoEmbedder
    from lookalike.metrics.sample_scores import DINO_OFF, dino_source

    source = dino_source(run.config)
    if source == DINO_OFF:
        raise LookalikeError("generate.scorer=dino needs a DINO model: set eval.dino_model to a ViT folder or hub id, or use generate.scorer=clip")
    return FeatureScorer(f"DINO likeness ({source})", DinoEmbedder(source).embed_images, scores.likeness_per_image)


def clip_scorer(run: Run) -> FeatureScorer:
    from lookalike.metrics.features import open_clip
    from lookalike.metrics.sample_scores import clip_source

    source = clip_source(run.config)
    return FeatureScorer(f"CLIP-I likeness ({source})", open_clip(source).embed_images, scores.likeness_per_image)


def identity_scorer(run: Run) -> FeatureScorer:
    subject = run.subject(run.config.generate.subject)
    return face_scorer(run) if subject.kind == "person" else dino_scorer(run)
