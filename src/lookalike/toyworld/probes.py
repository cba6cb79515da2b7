"""Zero-shot probes with the toy CLIP: which class, context, style or attribute value an image shows.

A probe for one key (``class``, ``context``, ``style`` or an attribute) writes one caption per
candidate value, identical except for that key, and picks the caption CLIP scores highest.
"""

from __future__ import annotations

import numpy as np
import torch

from lookalike.toyworld.world import ATTRIBUTE_VALUES, CLASS_NOUNS, CLASSES, CONTEXTS, STYLES


def _subject(cls: str, scene: dict, attr: str | None = None, value: str | None = None) -> str:
    """'a man', 'a man with glasses', 'a red cup' (a person is named by gender when known)."""
    name = scene.get("gender", "person") if cls == "person" else cls
    if attr is None:
        return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    phrase = ATTRIBUTE_VALUES[cls][attr][value][0]
    if cls == "cup" and attr == "colour":
        return f"a {phrase} cup"
    return f"a {name} {phrase}"


def probe_texts(scene: dict, key: str) -> tuple[list[str], list[str]]:
    """(candidate values, one caption per value) for probing ``key`` of the scene."""
    style, context = STYLES[scene["style"]][0], CONTEXTS[scene["context"]][0]
    cls = scene["class"]
    if key == "class":  # every noun of every class; the best one names the class
        values = [c for c in CLASSES for _ in CLASS_NOUNS[c]]
        nouns = [n for c in CLASSES for n in CLASS_NOUNS[c]]
        return values, [style.format(f"{'an' if n[0] in 'aeiou' else 'a'} {n} {context}") for n in nouns]
    if key == "context":
        values = list(CONTEXTS)
        return values, [style.format(f"{_subject(cls, scene)} {CONTEXTS[v][0]}") for v in values]
    if key == "style":
        values = list(STYLES)
        return values, [STYLES[v][0].format(f"{_subject(cls, scene)} {context}") for v in values]
    values = list(ATTRIBUTE_VALUES[cls][key])
    return values, [style.format(f"{_subject(cls, scene, key, v)} {context}") for v in values]


class Judge:
    """The toy CLIP as a zero-shot classifier over probe captions."""

    def __init__(self, clip, processor):
        self.clip, self.processor = clip.float().eval(), processor
        self._texts: dict[tuple[str, ...], torch.Tensor] = {}  # probes repeat: encode each caption set once

    @classmethod
    def from_folder(cls, folder) -> Judge:
        """The CLIPModel + CLIPProcessor saved in ``folder`` (a toy build's ``clip/``), in float32."""
        from transformers import CLIPModel, CLIPProcessor

        return cls(CLIPModel.from_pretrained(folder, torch_dtype=torch.float32), CLIPProcessor.from_pretrained(folder))

    @torch.no_grad()
    def image_features(self, images: list[np.ndarray]) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt").pixel_values
        feats = self.clip.get_image_features(pixel_values=pixels)
        feats = getattr(feats, "pooler_output", feats)
        return torch.nn.functional.normalize(feats, dim=-1)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.processor.tokenizer(texts, padding=True, return_tensors="pt")
        feats = self.clip.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        feats = getattr(feats, "pooler_output", feats)
        return torch.nn.functional.normalize(feats, dim=-1)

    def predict(self, image_feature: torch.Tensor, scene: dict, key: str) -> str:
        values, texts = probe_texts(scene, key)
        if tuple(texts) not in self._texts:
            self._texts[tuple(texts)] = self.text_features(texts)
        return values[int((self._texts[tuple(texts)] @ image_feature).argmax())]
