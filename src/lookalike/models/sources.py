"""Where a base model comes from: a hub id, a local diffusers folder, or a single file.

(First cut: diffusers folders and hub ids. Single files, pickle refusal and the bundled toy model
are filled in by the model-sources work.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lookalike.config import ModelConfig
from lookalike.errors import LookalikeError


def open_pipeline(model: ModelConfig, dtype: torch.dtype = torch.float32) -> Any:
    from diffusers import DiffusionPipeline

    path = Path(model.source).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise LookalikeError(f"{path} is not a diffusers model folder (no model_index.json)")
        return DiffusionPipeline.from_pretrained(path, torch_dtype=dtype)
    raise LookalikeError(f"model.source {model.source!r}: not a diffusers folder")
