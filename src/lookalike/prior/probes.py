"""Attribute probes: what share of the priors and of the subject's photos shows each option.

An attribute ("beard") has options ("with a beard", "clean-shaven"). Every image is given the
option whose probe text ("a photo of a man, clean-shaven") its CLIP features are closest to;
comparing the option shares of priors and photos says where the priors would teach the subject
something it does not have. The scorer is anything with ``embed_texts`` in the images' feature
space (:class:`lookalike.metrics.features.ClipEmbedder`), so the statistics are testable alone.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lookalike.errors import LookalikeError
from lookalike.metrics.features import TextEmbedder
from lookalike.metrics.scores import cosine_matrix

BUNDLED_ATTRIBUTES = Path(__file__).with_name("attributes.toml")


@dataclass(frozen=True)
class Attribute:
    name: str
    options: tuple[str, ...]


def _read_attribute_tables(path: Path) -> dict[str, dict[str, list[str]]]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LookalikeError(f"attribute file {path} not found: fix audit.attributes_file") from None
    except tomllib.TOMLDecodeError as err:
        raise LookalikeError(f"attribute file {path} is not valid TOML: {err}") from None
    for kind, table in data.items():
        if not isinstance(table, dict):
            raise LookalikeError(f"{path}: [{kind}] must be a table of attribute = [options], e.g. beard = ['with a beard', 'clean-shaven']")
        for name, options in table.items():
            valid = isinstance(options, list) and all(isinstance(o, str) and o.strip() for o in options)
            if not valid or len(set(options)) < 2:
                raise LookalikeError(f"{path}: {kind}.{name} needs a list of at least two different option texts")
    return data


def toy_attribute_tables() -> dict[str, dict[str, list[str]]]:
    """The toy world's own probes (its caption vocabulary is all its CLIP knows), keyed by kind."""
    from lookalike.toyworld import world

    kinds = {"person": "person", "dog": "pet", "cup": "object"}
    return {kinds[cls]: {name: list(options) for name, options in table.items()} for cls, table in world.ATTRIBUTES.items()}


def load_attributes(kind: str, extra_file: str | Path | None = None, toy: bool = False) -> list[Attribute]:
    """The probes for a subject kind: bundled (or the toy world's), with ``extra_file``'s merged over them."""
    tables = toy_attribute_tables() if toy else _read_attribute_tables(BUNDLED_ATTRIBUTES)
    if extra_file is not None:
        for extra_kind, table in _read_attribute_tables(Path(extra_file)).items():
            tables.setdefault(extra_kind, {}).update(table)
    return [Attribute(name, tuple(options)) for name, options in tables.get(kind, {}).items()]


def probe_text(class_noun: str, option: str) -> str:
    article = "an" if class_noun[:1].lower() in "aeiou" else "a"
    return f"a photo of {article} {class_noun}, {option}"


def option_features(scorer: TextEmbedder, attributes: Sequence[Attribute], class_noun: str) -> dict[str, torch.Tensor]:
    """attribute name -> [K, D] features of its option probe texts (all texts in one pass)."""
    texts = [probe_text(class_noun, option) for a in attributes for option in a.options]
    feats = scorer.embed_texts(texts)
    out, start = {}, 0
    for a in attributes:
        out[a.name] = feats[start : start + len(a.options)]
        start += len(a.options)
    return out


def probe_choices(image_feats: torch.Tensor, option_feats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """attribute name -> [N] index of the option each image matches best (zero-shot)."""
    return {name: cosine_matrix(image_feats, feats).argmax(dim=1).numpy() for name, feats in option_feats.items()}


@dataclass
class Finding:
    """How often each option of one attribute appears among the priors and among the photos."""

    attribute: str
    options: tuple[str, ...]
    prior_counts: list[int]
    subject_counts: list[int]
    threshold: float

    def _shares(self, counts: list[int]) -> np.ndarray:
        return np.asarray(counts, dtype=float) / max(sum(counts), 1)

    @property
    def gap_option(self) -> int:
        """The option whose share differs most between priors and photos."""
        return int(np.argmax(np.abs(self._shares(self.prior_counts) - self._shares(self.subject_counts))))

    @property
    def gap(self) -> float:
        i = self.gap_option
        return float(abs(self._shares(self.prior_counts)[i] - self._shares(self.subject_counts)[i]))

    @property
    def differs(self) -> bool:
        return self.gap > self.threshold

    @property
    def subject_option(self) -> str | None:
        """The option more than half of the photos show; None when the photos disagree."""
        top = int(np.argmax(self.subject_counts))
        return self.options[top] if self.subject_counts[top] * 2 > sum(self.subject_counts) else None

    def line(self) -> str:
        i = self.gap_option
        prior_pct = round(100 * self._shares(self.prior_counts)[i])
        text = (
            f"{self.attribute}: {prior_pct}% of {sum(self.prior_counts)} priors show \"{self.options[i]}\"; "
            f"{self.subject_counts[i]} of {sum(self.subject_counts)} photos do"
        )
        if self.subject_option is None:
            text += " (the photos disagree among themselves, so the prompt does not name one)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "options": list(self.options),
            "prior_counts": self.prior_counts,
            "subject_counts": self.subject_counts,
            "gap": round(self.gap, 4),
            "differs": self.differs,
            "subject_option": self.subject_option,
            "line": self.line(),
        }


def compare(attribute: Attribute, prior_choices: np.ndarray, subject_choices: np.ndarray, threshold: float) -> Finding:
    k = len(attribute.options)
    return Finding(
        attribute=attribute.name,
        options=attribute.options,
        prior_counts=np.bincount(prior_choices, minlength=k).tolist(),
        subject_counts=np.bincount(subject_choices, minlength=k).tolist(),
        threshold=threshold,
    )


def refine_prompt(class_prompt: str, findings: Sequence[Finding]) -> str:
    """The class prompt naming the subject's own option for every attribute where priors differ.

    The prompt is read as comma-separated parts. A part naming another option of the same
    attribute is replaced; an option already named is not repeated, so auditing again after
    regenerating the priors leaves a refined prompt as it is.
    """
    original = [part.strip() for part in class_prompt.split(",") if part.strip()]
    parts = list(original)
    for f in findings:
        if not (f.differs and f.subject_option):
            continue
        others = {o.lower() for o in f.options if o != f.subject_option}
        parts = [part for part in parts if part.lower() not in others]
        if f.subject_option.lower() not in {part.lower() for part in parts}:
            parts.append(f.subject_option)
    return class_prompt if parts == original else ", ".join(parts)
