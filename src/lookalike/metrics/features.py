"""Swappable feature extractors: every one turns a list of PIL images into rows of a tensor.

- :class:`ClipEmbedder` — a ``transformers.CLIPModel`` folder or hub id (also the toy world's
  CLIP); images *and* texts, for CLIP-I, CLIP-T and zero-shot attribute probes.
- :class:`DinoEmbedder` — a ``transformers.ViTModel`` (DINO), the CLS token, with DINO's own
  preprocessing done in PIL/numpy.
- :class:`lookalike.metrics.faces.FaceEmbedder` — SFace face identity (separate module).

Metrics in :mod:`lookalike.metrics.scores` only see the tensors, so extractors can be swapped.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from lookalike.errors import LookalikeError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DINO_RESIZE = 256
DINO_CROP = 224
DEFAULT_DINO = "facebook/dino-vits16"


class ImageEmbedder(Protocol):
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """[N, D] features, one row per image."""


class TextEmbedder(Protocol):
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, D] features, one row per text, in the same space as the images."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _batches(items: Sequence[Any], size: int, desc: str) -> Iterator[Sequence[Any]]:
    starts = range(0, len(items), size)
    for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=len(starts) < 2):
        yield items[start : start + size]


def _load(cls: Any, source: str, what: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LookalikeError(
            f"could not load the {what} from {source!r} ({reason}); give a local model folder, "
            "or a hub id on a machine that can reach the hub"
        ) from None


def _as_tensor(output: Any) -> torch.Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output holds the projected features;
    # transformers 4 returned the tensor itself.
    return output if torch.is_tensor(output) else output.pooler_output


class ClipEmbedder:
    """Image and text features from a CLIP model folder or hub id (projected, not normalised)."""

    def __init__(self, source: str, batch_size: int = 16, device: str | None = None):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        self.source = source
        self.batch_size = batch_size
        self.device = device or default_device()
        self.model = _load(CLIPModel, source, "CLIP model").to(self.device).eval()
        self.tokenizer = _load(CLIPTokenizer, source, "CLIP tokenizer")
        try:
            self.processor = CLIPImageProcessor.from_pretrained(source)
        except OSError:
            # A CLIP folder saved without its preprocessor config: CLIP's standard one at the model's size.
            size = self.model.config.vision_config.image_size
            self.processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        rows = []
        for batch in _batches(list(images), self.batch_size, "CLIP images"):
            pixels = self.processor(images=[im.convert("RGB") for im in batch], return_tensors="pt")["pixel_values"]
            rows.append(_as_tensor(self.model.get_image_features(pixel_values=pixels.to(self.device))).float().cpu())
        return torch.cat(rows) if rows else torch.empty(0, self.model.config.projection_dim)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        rows = []
        max_length = self.model.config.text_config.max_position_embeddings
        for batch in _batches(list(texts), self.batch_size, "CLIP texts"):
            tokens = self.tokenizer(list(batch), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            rows.append(_as_tensor(self.model.get_text_features(**tokens)).float().cpu())
        return torch.cat(rows) if rows else torch.empty(0, self.model.config.projection_dim)


def dino_preprocess(image: Image.Image) -> np.ndarray:
    """DINO's eval transform, [3, 224, 224] float32: shorter side to 256 (bicubic), centre crop 224,
    ImageNet mean/std. Same arithmetic as torchvision's Resize(256, BICUBIC) + CenterCrop(224) on PIL."""
    image = image.convert("RGB")
    w, h = image.size
    if w <= h:
        size = (DINO_RESIZE, int(DINO_RESIZE * h / w))
    else:
        size = (int(DINO_RESIZE * w / h), DINO_RESIZE)
    image = image.resize(size, Image.Resampling.BICUBIC)
    left = int(round((size[0] - DINO_CROP) / 2.0))
    top = int(round((size[1] - DINO_CROP) / 2.0))
    image = image.crop((left, top, left + DINO_CROP, top + DINO_CROP))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy()


class DinoEmbedder:
    """CLS-token features of a DINO ViT (``transformers.ViTModel``), folder or hub id."""

    def __init__(self, source: str = DEFAULT_DINO, batch_size: int = 16, device: str | None = None):
        from transformers import ViTModel

        self.source = source
        self.batch_size = batch_size
        self.device = device or default_device()
        self.model = _load(ViTModel, source, "DINO ViT", add_pooling_layer=False).to(self.device).eval()
        # A ViT trained at another size still reads 224 px crops, with its position embeddings interpolated.
        self.interpolate = self.model.config.image_size != DINO_CROP

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        rows = []
        for batch in _batches(list(images), self.batch_size, "DINO images"):
            pixels = torch.from_numpy(np.stack([dino_preprocess(im) for im in batch])).to(self.device)
            out = self.model(pixel_values=pixels, interpolate_pos_encoding=self.interpolate)
            rows.append(out.last_hidden_state[:, 0].float().cpu())
        return torch.cat(rows) if rows else torch.empty(0, self.model.config.hidden_size)


def toy_clip_dir() -> str:
    """The toy world's CLIP folder (a CLIPModel folder), or a clear error if this install lacks it."""
    from lookalike import toyworld

    return str(toyworld.clip_dir())


def open_clip(source: str, batch_size: int = 16) -> ClipEmbedder:
    """A CLIP extractor from 'toy', a local folder or a hub id."""
    return ClipEmbedder(toy_clip_dir() if source == "toy" else source, batch_size=batch_size)
