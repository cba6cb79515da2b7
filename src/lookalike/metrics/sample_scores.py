"""Score one model's eval samples of one subject: the paper's metrics from the chosen extractors.

:func:`open_extractors` loads CLIP (required), DINO (optional: skipped with a note when it cannot
be loaded) and SFace (for person subjects, except in the toy world). :func:`subject_references` embeds a subject's prepared
photos once; :func:`score_subject` turns one model's samples into the metrics of
:mod:`lookalike.metrics.scores`, overall and per prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from lookalike import config as cfg
from lookalike.errors import LookalikeError
from lookalike.metrics import scores
from lookalike.metrics.features import DEFAULT_DINO, ClipEmbedder, DinoEmbedder, open_clip
from lookalike.metrics.prompt_set import EvalPrompt
from lookalike.toyworld import is_toy_clip

HUB_CLIP = "openai/clip-vit-large-patch14"  # the audit's default too: one download serves both
DINO_OFF = "none"


@dataclass
class Extractors:
    clip: ClipEmbedder
    clip_source: str
    dino: DinoEmbedder | None
    dino_source: str | None
    faces: Any  # FaceEmbedder, or None when no subject is a person
    notes: list[str] = field(default_factory=list)


@dataclass
class SubjectReferences:
    subject: cfg.SubjectConfig
    clip: torch.Tensor
    dino: torch.Tensor | None
    faces: torch.Tensor | None  # None: not a person, or no face in the photos (see notes)

    @property
    def likeness_metric(self) -> str:
        """What 'looks like the subject' means here: face identity for people, else DINO, else CLIP-I."""
        if self.faces is not None:
            return "face_similarity"
        return "dino" if self.dino is not None else "clip_i"


def clip_source(config: cfg.RunConfig) -> str:
    chosen = config.eval.clip_model
    if chosen == "auto":
        return "toy" if config.model.source == "toy" else HUB_CLIP
    return chosen


def dino_source(config: cfg.RunConfig) -> str:
    """The DINO to load, or 'none'. The toy world has no DINO ViT, and a hub id would only retry offline."""
    chosen = config.eval.dino_model.strip()
    if chosen == "auto":
        return DINO_OFF if config.model.source == "toy" else DEFAULT_DINO
    return DINO_OFF if chosen.lower() == DINO_OFF else chosen


def _open_dino(source: str, notes: list[str]) -> DinoEmbedder | None:
    fallback = "PRES and DIV-feat use CLIP image features, likeness uses CLIP-I"
    if source == DINO_OFF:
        notes.append(f"DINO is off (eval.dino_model=none, or the toy model's 'auto'); {fallback}")
        return None
    try:
        return DinoEmbedder(source)
    except LookalikeError as err:
        notes.append(f"DINO skipped: {err}; {fallback}")
        return None


def open_extractors(config: cfg.RunConfig) -> Extractors:
    notes: list[str] = []
    source = clip_source(config)
    clip = open_clip(source)
    dino = _open_dino(dino_source(config), notes)
    faces = None
    if any(s.kind == "person" for s in config.subjects):
        if is_toy_clip(source):
            # YuNet finds "faces" in a few toy images at random; identity on cartoons would be noise.
            notes.append("face identity is off for the toy world (its cartoon faces are not faces SFace knows); likeness is CLIP-I")
        else:
            from lookalike.metrics.faces import FaceEmbedder

            faces = FaceEmbedder()
    return Extractors(clip, source, dino, dino_source(config) if dino else None, faces, notes)


def subject_references(ex: Extractors, subject: cfg.SubjectConfig, photos: list[Image.Image]) -> SubjectReferences:
    faces = None
    if subject.kind == "person" and ex.faces is not None:
        faces = ex.faces.embed_images(photos)
        if not scores.face_found(faces).any():
            ex.notes.append(f"no face was found in the photos of {subject.name!r}: face identity skipped for it")
            faces = None
    dino = ex.dino.embed_images(photos) if ex.dino else None
    return SubjectReferences(subject, ex.clip.embed_images(photos), dino, faces)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _diversity(feats: torch.Tensor, per_prompt: int) -> list[float | None]:
    """DIV-feat of each prompt's consecutive block of samples; None when a prompt has one sample."""
    if per_prompt < 2:
        return [None] * (feats.shape[0] // per_prompt)
    return [scores.div_feat(block) for block in feats.split(per_prompt)]


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def score_subject(
    ex: Extractors, refs: SubjectReferences, prompts: list[EvalPrompt], images: list[Image.Image], class_images: list[Image.Image]
) -> dict[str, Any]:
    """Metrics of one subject's samples; ``images`` holds each prompt's samples in a block, prompt order."""
    per_prompt = len(images) // len(prompts)
    texts = [p.text for p in prompts for _ in range(per_prompt)]
    gen_clip = ex.clip.embed_images(images)
    text_feats = ex.clip.embed_texts(texts)
    gen_dino = ex.dino.embed_images(images) if ex.dino else None
    gen_faces = ex.faces.embed_images(images) if refs.faces is not None else None
    # Without DINO, PRES and DIV fall back to CLIP image features (named in the row): the same idea, other numbers.
    div_feats = gen_dino if gen_dino is not None else gen_clip
    class_feats = (ex.dino or ex.clip).embed_images(class_images)
    divs = _diversity(div_feats, per_prompt)
    rows = []
    for i, prompt in enumerate(prompts):
        block = slice(i * per_prompt, (i + 1) * per_prompt)
        rows.append({
            "group": prompt.group, "prompt": prompt.prompt, "text": prompt.text,
            "clip_i": _finite(scores.clip_i(gen_clip[block], refs.clip)),
            "clip_t": _finite(scores.clip_t(gen_clip[block], text_feats[block])),
            "dino": _finite(scores.dino(gen_dino[block], refs.dino)) if gen_dino is not None else None,
            "div_feat": _finite(divs[i]),
            "face_similarity": _finite(scores.face_similarity(gen_faces[block], refs.faces)) if gen_faces is not None else None,
        })
    metrics = {
        "dino": scores.dino(gen_dino, refs.dino) if gen_dino is not None else None,
        "clip_i": scores.clip_i(gen_clip, refs.clip),
        "clip_t": scores.clip_t(gen_clip, text_feats),
        "pres": scores.pres(class_feats, refs.dino if refs.dino is not None else refs.clip),
        "div_feat": _mean(divs),
        "face_similarity": scores.face_similarity(gen_faces, refs.faces) if gen_faces is not None else None,
        "face_found_share": float(scores.face_found(gen_faces).float().mean()) if gen_faces is not None else None,
    }
    return {
        "subject": refs.subject.name,
        "kind": refs.subject.kind,
        "likeness_metric": refs.likeness_metric,
        "pres_div_features": "dino" if gen_dino is not None else "clip",
        "metrics": {name: _finite(value) for name, value in metrics.items()},
        "counts": {"prompts": len(prompts), "images": len(images), "class_images": len(class_images), "photos": refs.clip.shape[0]},
        "prompts": rows,
    }
