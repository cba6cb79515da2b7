"""Open the model a generate run renders with, and say what it is (name, family, weight hashes).

``generate.checkpoint`` picks it: unset for the trained model in ``model/``, a checkpoint name
(``step-000400``), or ``base`` for the untrained base model (to compare before and after).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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


def base_location(run: Run) -> Path | None:
    """Where the base model's files are on disk, if they are (hub models only when cached)."""
    from lookalike.models.sources import resolve_source

    source = resolve_source(run.config.model)
    if source.kind != "hub":
        return Path(source.location)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source.location, revision=source.revision, local_files_only=True))
    except Exception:  # not cached: the image simply carries no model hash, as A1111 does then
        return None


def trained_location(run: Run, checkpoint: str | None) -> Path:
    location = run.model_dir if checkpoint is None else run.checkpoints_dir / checkpoint
    if not location.is_dir():
        what = "trained model" if checkpoint is None else f"checkpoint {checkpoint}"
        raise LookalikeError(
            f"no {what} in {location}: run `lookalike train {run.root}` first, "
            "or set generate.checkpoint=base to render with the untrained base model"
        )
    return location


def open_model(run: Run, checkpoint: str | None, dtype: torch.dtype, device: str) -> ModelRef:
    """The pipeline on ``device`` and what it is, for the PNG metadata."""
    source = run.config.model.source
    base_files = weight_files(base_location(run) or Path("/nonexistent"))
    if checkpoint == "base":
        from lookalike.models.load import load_pipeline

        pipeline, family = load_pipeline(run.config.model, dtype)
        ref = ModelRef(pipeline, family, "base", Path(source).stem, source, weights_hash(base_files), None)
    else:
        location = trained_location(run, checkpoint)
        from lookalike.models.trained import open_trained

        pipeline, info = open_trained(run, checkpoint=checkpoint, dtype=dtype)
        lora = location / LORA_FILE
        lora_run = info["method"] == "lora"
        name = run.root.resolve().name + (f"-{checkpoint}" if checkpoint else "")
        model_hash = weights_hash(base_files if lora_run else weight_files(location))
        lora_hash = weights_hash([lora]) if lora_run and lora.is_file() else None
        ref = ModelRef(pipeline, info["family"], info["method"], name, source, model_hash, lora_hash)
    ref.pipeline.to(device)
    ref.pipeline.set_progress_bar_config(disable=True)  # generate shows one bar over all images
    return ref
