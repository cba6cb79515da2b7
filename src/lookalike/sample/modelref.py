"""Open the model a generate run renders with, and say what it is (name, family, weight hashes).

``generate.checkpoint`` picks it: unset for the trained model in ``model/``, a checkpoint name
(``step-000400``), or ``base`` for the untrained base model (to compare before and after).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lookalike.config import ModelConfig
from lookalike.errors import LookalikeError
from lookalike.run import Run
from lookalike.sample.pngmeta import weights_hash

LORA_FILE = "pytorch_lora_weights.safetensors"
# The weights that decide the pixels; optimizer and RNG state in checkpoints are left out.
WEIGHT_GLOBS = ("unet/*.safetensors", "text_encoder*/*.safetensors", "vae/*.safetensors")


@dataclass
class ModelRef:
    pipeline: Any
    family: str
    method: str  # full | lora | base
    name: str  # A1111's "Model:" field
    base_model: str
    model_hash: str | None
    lora_hash: str | None


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return getattr(torch, name)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def weight_files(location: Path) -> list[Path]:
    """The safetensors files that make a model, in a fixed order (a single file is itself)."""
    if location.is_file():
        return [location]
    return sorted(f for pattern in WEIGHT_GLOBS for f in location.glob(pattern))


def base_location(model: ModelConfig) -> Path | None:
    """Where a base model's files are on disk, if they are (hub models only when cached)."""
    from lookalike.models.sources import resolve_source

    source = resolve_source(model)
    if source.kind != "hub":
        return Path(source.location)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source.location, revision=source.revision, local_files_only=True))
    except Exception:  # not cached: the image simply carries no model hash, as A1111 does then
        return None


def base_hash(model: ModelConfig) -> str | None:
    location = base_location(model)
    return weights_hash(weight_files(location)) if location else None


def _open_base(run: Run, dtype: torch.dtype) -> ModelRef:
    from lookalike.models.load import load_pipeline

    model = run.config.model
    pipeline, family = load_pipeline(model, dtype)
    return ModelRef(pipeline, family, "base", Path(model.source).stem, model.source, base_hash(model), None)


def _open_trained(run: Run, checkpoint: str | None, dtype: torch.dtype) -> ModelRef:
    from lookalike.models.trained import open_trained, trained_folder

    try:
        folder = trained_folder(run, checkpoint)
    except LookalikeError as err:
        raise LookalikeError(f"{err}, or set generate.checkpoint=base to render with the untrained base model") from None
    pipeline, info = open_trained(run, checkpoint=checkpoint, dtype=dtype)
    name = run.root.resolve().name + (f"-{checkpoint}" if checkpoint else "")
    if info["method"] == "full":
        return ModelRef(pipeline, info["family"], "full", name, info["base_model"], weights_hash(weight_files(folder)), None)
    base = run.config.model.model_copy(update={"source": info["base_model"]})
    lora = folder / LORA_FILE
    lora_hash = weights_hash([lora]) if lora.is_file() else None
    return ModelRef(pipeline, info["family"], info["method"], name, info["base_model"], base_hash(base), lora_hash)


def open_model(run: Run, checkpoint: str | None, dtype: torch.dtype, device: str) -> ModelRef:
    """The pipeline on ``device`` and what it is, for the PNG metadata."""
    ref = _open_base(run, dtype) if checkpoint == "base" else _open_trained(run, checkpoint, dtype)
    ref.pipeline.to(device)
    ref.pipeline.set_progress_bar_config(disable=True)  # generate shows one bar over all images
    return ref
