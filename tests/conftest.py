"""Shared fixtures: tiny SD1 / SD2 / SDXL models built from configs, saved once per session, loaded offline."""

from __future__ import annotations

import os
from pathlib import Path

# Tests never reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread per process: the tiny models gain nothing from two, and two threads per process
# on a busy 2-core machine (or two processes in the distributed test) slowed the suite up to 7x.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402  (after the thread settings, which BLAS reads at import)
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """family -> folder of a saved tiny random pipeline (64 px)."""
    from lookalike.models.tiny import FAMILIES, save_tiny

    root = tmp_path_factory.mktemp("tiny-models")
    return {family: save_tiny(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_sd1(tiny_models) -> Path:
    return tiny_models["sd1"]


def make_photos(folder: Path, count: int = 4, size: int = 96, seed: int = 0) -> list[Path]:
    """Distinct synthetic 'photos' (coloured shapes on noise) written as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        arr[y : y + size // 2, x : x + size // 2] = rng.integers(0, 256, 3, dtype=np.uint8)
        path = folder / f"photo_{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    make_photos(folder)
    return folder


def untrained_toy_export(folder: Path) -> Path:
    """A toy build's export (``pipeline/`` and ``clip/``) with untrained weights: the toy model's
    architecture and tokenizer, for tests that need a build's folder but not its learning."""
    import torch

    from lookalike.toyworld import models
    from lookalike.toyworld.export import export_pipeline
    from lookalike.toyworld.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    clip = models.clip_model(tokenizer)
    export_pipeline(folder, models.unet_model(), models.vae_model(), models.text_encoder_from(clip), tokenizer, clip, unet_step=0)
    return folder
