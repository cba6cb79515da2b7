"""Open what `lookalike train` wrote: the final model or any checkpoint, as a ready pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lookalike.errors import LookalikeError
from lookalike.run import Run


def trained_folder(run: Run, checkpoint: str | int | Path | None = None) -> Path:
    """``model/`` by default; a step number, a ``step-000200`` name or a folder picks a checkpoint."""
    from lookalike.train.checkpoint import checkpoint_name

    if checkpoint is None:
        folder = run.model_dir
    elif isinstance(checkpoint, int):
        folder = run.checkpoints_dir / checkpoint_name(checkpoint)
    elif Path(checkpoint).is_dir():
        folder = Path(checkpoint)
    else:
        folder = run.checkpoints_dir / str(checkpoint)
    if not folder.is_dir():
        raise LookalikeError(f"no trained model at {folder}: run `lookalike train {run.root}` first")
    return folder


def open_trained(
    run: Run, checkpoint: str | int | Path | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Any, dict[str, Any]]:
    """(pipeline, info): the base model with the trained weights (a full pipeline, LoRA fused in, or identifier embeddings set)."""
    from diffusers import DiffusionPipeline

    from lookalike.models.load import load_pipeline
    from lookalike.train.checkpoint import read_info

    folder = trained_folder(run, checkpoint)
    info = read_info(folder)
    if info["method"] == "full":
        return DiffusionPipeline.from_pretrained(folder, torch_dtype=dtype), info
    base = run.config.model.model_copy(update={"source": info["base_model"]})
    pipeline, _ = load_pipeline(base, dtype)
    if info["method"] == "embedding":
        from lookalike.models.embedding import load_rows, pipeline_encoders

        load_rows(folder, pipeline_encoders(pipeline))
    else:
        fuse_lora_file(pipeline, folder)
    return pipeline, info


def fuse_lora_file(pipeline: Any, folder: Path) -> None:
    """Fuse the LoRA saved in ``folder`` into the parts of ``pipeline`` it has adapters for.

    ``load_lora_weights`` offers the file to every text encoder too and warns "No LoRA keys
    associated to CLIPTextModel" for each one a UNet-only LoRA has nothing for; loading part by
    part keeps that warning for files that really lack what they should have.
    """
    from lookalike.models.lora import TEXT_ENCODER_NAMES, WEIGHT_NAME

    state, alphas, metadata = pipeline.lora_state_dict(folder, weight_name=WEIGHT_NAME, return_lora_metadata=True)
    encoders = [n for n in TEXT_ENCODER_NAMES if hasattr(pipeline, n) and any(k.startswith(n + ".") for k in state)]
    pipeline.load_lora_into_unet(state, alphas, pipeline.unet, metadata=metadata, _pipeline=pipeline)
    for name in encoders:
        pipeline.load_lora_into_text_encoder(
            state, alphas, getattr(pipeline, name), prefix=name, metadata=metadata, _pipeline=pipeline
        )
    # Fused weights then no adapter layers: the pipeline behaves like a plain base model.
    pipeline.fuse_lora(components=["unet", *encoders])
    pipeline.unload_lora_weights()
