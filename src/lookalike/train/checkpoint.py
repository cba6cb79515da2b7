"""Checkpoint folders: the trained model's files plus the state that resumes training exactly.

``checkpoints/step-000200/`` holds what ``model/`` would hold at that step (a full diffusers
pipeline, ``pytorch_lora_weights.safetensors`` or ``identifier_embeddings.safetensors``), ``lookalike.json``, and
``training_state.pt``: optimizer, LR schedule, step and the global RNG state of every process.
Folders are written whole with :func:`lookalike.run.atomic_dir`, so every ``step-*`` folder that
exists is complete.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from lookalike.config import RunConfig
from lookalike.errors import LookalikeError
from lookalike.run import atomic_write_text

INFO_NAME = "lookalike.json"
STATE_NAME = "training_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path | None:
    checkpoints = list_checkpoints(folder)
    return checkpoints[-1][1] if checkpoints else None


def prune_checkpoints(folder: Path, keep: int) -> None:
    for _, path in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def write_info(folder: Path, info: dict[str, Any]) -> None:
    atomic_write_text(folder / INFO_NAME, json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_info(folder: Path) -> dict[str, Any]:
    path = folder / INFO_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LookalikeError(f"{folder} holds no trained model ({INFO_NAME} missing): run `lookalike train` first") from None
    except json.JSONDecodeError as err:
        raise LookalikeError(f"{path} is damaged ({err}); delete that folder and train again") from None


def write_training_state(folder: Path, state: dict[str, Any]) -> None:
    torch.save(state, folder / STATE_NAME)


def read_training_state(folder: Path) -> dict[str, Any]:
    # weights_only: our own file, but it is still opened without running any pickled code.
    return torch.load(folder / STATE_NAME, map_location="cpu", weights_only=True)


def load_full_weights(folder: Path, modules: dict[str, torch.nn.Module]) -> None:
    """Copy the weights saved in a checkpoint's pipeline subfolders (``unet``, ``text_encoder``...) into ``modules``."""
    for subfolder, module in modules.items():
        saved = type(module).from_pretrained(folder / subfolder, torch_dtype=torch.float32)
        module.load_state_dict(saved.state_dict())


def model_info(config: RunConfig, source: str, family: str, step: int) -> dict[str, Any]:
    """What ``lookalike.json`` says about a trained model: how it was made and for which subjects."""
    subjects = [
        {"name": s.name, "identifier": s.identifier, "class_noun": s.class_noun,
         "instance_prompt": s.resolved_instance_prompt()}
        for s in config.subjects
    ]
    return {"method": config.train.method, "base_model": source, "family": family, "subjects": subjects,
            "step": step, "train": config.train.model_dump()}


def write_model_files(folder: Path, config: RunConfig, parts: Any, trained_encoders: list[Any], step: int) -> None:
    """The trained model as ``model/`` holds it: a full diffusers pipeline, diffusers LoRA weights, or identifier embeddings."""
    from lookalike.models import embedding
    from lookalike.models.lora import save_lora

    if config.train.method == "full":
        parts.pipeline.save_pretrained(folder, safe_serialization=True)
    elif config.train.method == "embedding":
        ids = embedding.token_ids_per_tokenizer(parts.tokenizers, config.subjects)
        embedding.save_rows(folder, trained_encoders, ids, parts.tokenizers)
    else:
        save_lora(folder, parts.family, parts.unet, trained_encoders)
    write_info(folder, model_info(config, parts.source, parts.family, step))
