"""Write the toy model as the project ships it: a diffusers pipeline folder and a CLIP folder, fp16.

Both are standard ``save_pretrained`` folders (safetensors), so ``StableDiffusionPipeline`` and
``CLIPModel`` / ``CLIPProcessor`` load them offline with ``from_pretrained``.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch

from lookalike.run import atomic_dir
from lookalike.toyworld import models


def _half(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).to(torch.float16).eval()


def _load_as_float32(config: Path) -> None:
    """Weights stay fp16 on disk, but transformers loads a model in its config's dtype ("auto"):
    recording float32 there gives CPU users float32 parts that match the diffusers ones."""
    data = json.loads(config.read_text())
    for section in (data, data.get("text_config", {}), data.get("vision_config", {})):
        if "dtype" in section:
            section["dtype"] = "float32"
    config.write_text(json.dumps(data, indent=2) + "\n")


def _drop_key(config: Path, key: str) -> None:
    data = json.loads(config.read_text())
    if data.pop(key, None) is not None:
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def clip_processor(tokenizer):
    from transformers import CLIPImageProcessor, CLIPProcessor

    size = models.IMAGE_SIZE
    images = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_mean=list(models.CLIP_MEAN), image_std=list(models.CLIP_STD),
    )
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def export_pipeline(out: Path, unet, vae, text_encoder, tokenizer, clip, unet_step: int) -> None:
    """Replace ``out/pipeline`` and ``out/clip`` (each in one rename) with the given weights."""
    from diffusers import StableDiffusionPipeline

    # A tokenizer called with padding / truncation keeps them in its backend, and save_pretrained
    # would write them into tokenizer.json; the shipped files describe the plain tokenizer.
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.no_truncation()
    pipeline = StableDiffusionPipeline(
        vae=_half(vae), text_encoder=_half(text_encoder), tokenizer=tokenizer, unet=_half(unet),
        scheduler=models.noise_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    with atomic_dir(out / "pipeline") as tmp:
        pipeline.save_pretrained(tmp, safe_serialization=True)
        _load_as_float32(tmp / "text_encoder" / "config.json")
        for part in ("unet", "vae"):  # a UNet / VAE loaded from a folder records that folder's path
            _drop_key(tmp / part / "config.json", "_name_or_path")
        (tmp / "toyworld.json").write_text(json.dumps({"unet_step": unet_step}) + "\n")
    with atomic_dir(out / "clip") as tmp:
        _half(clip).save_pretrained(tmp, safe_serialization=True)
        _load_as_float32(tmp / "config.json")
        clip_processor(tokenizer).save_pretrained(tmp)
        (tmp / "toyworld.json").write_text(json.dumps({"unet_step": unet_step}) + "\n")  # marks a toy CLIP (is_toy_clip)


def ship(export: Path, assets: Path) -> int:
    """Copy the exported pipeline and CLIP into the package's assets; returns the UNet step shipped."""
    info = json.loads((export / "pipeline" / "toyworld.json").read_text())
    for name in ("pipeline", "clip"):
        with atomic_dir(assets / name) as tmp:
            shutil.copytree(export / name, tmp, dirs_exist_ok=True)
    return info["unet_step"]
