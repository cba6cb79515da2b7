"""The toy world: a bundled tiny text-to-image model and the procedural world it was trained on.

``pipeline_dir()`` is the shipped diffusers StableDiffusionPipeline folder (model source ``toy``),
``clip_dir()`` the matching CLIPModel + processor (features for metrics and attribute probes),
``subject_dir(name)`` a shipped subject pack of 64×64 "photos". The world's vocabulary
(``ATTRIBUTES``, ``CLASS_NOUNS``, ``CONTEXTS``, ``STYLES``, ``IDENTIFIERS``) lives in
:mod:`lookalike.toyworld.world`. See docs/TOYWORLD.md.
"""

from __future__ import annotations

from pathlib import Path

from lookalike.errors import LookalikeError
from lookalike.toyworld.world import ATTRIBUTES, CLASS_NOUNS, CONTEXTS, IDENTIFIERS, STYLES

ASSETS = Path(__file__).parent / "assets"
SUBJECTS = ("toyperson", "toydog")

__all__ = [
    "ATTRIBUTES", "CLASS_NOUNS", "CONTEXTS", "IDENTIFIERS", "STYLES", "SUBJECTS", "clip_dir", "is_toy_clip", "pipeline_dir", "subject_dir",
]


def _shipped(name: str, marker: str) -> Path:
    folder = ASSETS / name
    if not (folder / marker).is_file():
        raise LookalikeError(
            f"the bundled toy model's weights are missing from this install ({folder}): reinstall "
            "lookalike, rebuild them with `python -m lookalike.toyworld.build --ship`, or set "
            "model.source to another model"
        )
    return folder


def pipeline_dir() -> Path:
    """The shipped toy StableDiffusionPipeline folder (fp16 safetensors, 64×64 images)."""
    return _shipped("pipeline", "model_index.json")


def clip_dir() -> Path:
    """The shipped toy CLIPModel + CLIPProcessor folder."""
    return _shipped("clip", "config.json")


def is_toy_clip(source: str | Path) -> bool:
    """Whether a CLIP source is the toy world's (the shipped one, or a build's export, marked by the
    build's ``toyworld.json``): such a CLIP only knows the toy captions' words, so probes use them."""
    return str(source) == "toy" or (Path(source) / "toyworld.json").is_file()


def subject_dir(name: str) -> Path:
    """The folder of a shipped subject pack's PNG photos."""
    folder = ASSETS / "subjects" / name
    if name not in SUBJECTS or not folder.is_dir():
        raise LookalikeError(f"no toy subject {name!r}; choose one of {', '.join(SUBJECTS)}")
    return folder
