"""The model card (README.md) written beside exported files: how it was trained and how to use it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lookalike.run import Run, atomic_write_text

PIPELINE_CLASS = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}
FAMILY_NAME = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "Stable Diffusion XL"}
TRAIN_FIELDS = ("max_steps", "learning_rate", "lora_rank", "lora_alpha", "train_text_encoder", "with_prior_preservation",
                "prior_loss_weight", "batch_size", "lr_scheduler", "mixed_precision", "seed")
MAX_SAMPLES = 4


def training_metadata(info: dict[str, Any], family: str) -> dict[str, str]:
    """Plain-string header fields for exported safetensors files (what, from what, for whom)."""
    subjects = info.get("subjects", [])
    first = subjects[0] if subjects else {}
    return {
        "lookalike.method": str(info.get("method", "")),
        "lookalike.base_model": str(info.get("base_model", "")),
        "lookalike.family": family,
        "lookalike.step": str(info.get("step", "")),
        "lookalike.identifier": str(first.get("identifier", "")),
        "lookalike.class_noun": str(first.get("class_noun", "")),
        "lookalike.instance_prompt": str(first.get("instance_prompt", "")),
        "lookalike.subjects": json.dumps(subjects, sort_keys=True),
        "lookalike.train": json.dumps(info.get("train", {}), sort_keys=True),
    }


def _newest_images(run: Run) -> list[Path]:
    """Up to a few images from the newest generate run, else the newest training previews."""
    for root in (run.root / "samples", run.previews_dir):
        if not root.is_dir():
            continue
        images = sorted(root.rglob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
        if images:
            return images[:MAX_SAMPLES]
    return []


def copy_samples(run: Run, out_dir: Path) -> list[Path]:
    """Copy sample images next to the card so it shows them wherever the folder goes."""
    target = out_dir / "samples"
    copied = []
    for i, image in enumerate(_newest_images(run)):
        target.mkdir(parents=True, exist_ok=True)
        dest = target / f"{i:02d}-{image.name}"
        shutil.copyfile(image, dest)
        copied.append(dest)
    return copied


def _usage(files: dict[str, Path], family: str, prompt: str, out_dir: Path) -> list[str]:
    cls = PIPELINE_CLASS[family]
    lines = ["## How to use it", ""]
    if "single-file" in files:
        name = files["single-file"].name
        lines += [
            f"**AUTOMATIC1111 / Forge / ComfyUI:** copy `{name}` into `models/Stable-diffusion/` (ComfyUI: "
            "`models/checkpoints/`) and pick it as the checkpoint.",
        ]
        if family == "sd2":
            lines += ["This is a v-prediction model: if your tool does not detect that, give it the SD 2.x "
                      "`v2-inference-v.yaml` config under the same name."]
        lines += ["", "```python", f"from diffusers import {cls}", f'pipe = {cls}.from_single_file("{name}")',
                  f'pipe("{prompt}").images[0].save("out.png")', "```", ""]
    if "lora-kohya" in files:
        name = files["lora-kohya"].name
        lines += [f"**AUTOMATIC1111 / Forge:** copy `{name}` into `models/Lora/` and add "
                  f"`<lora:{files['lora-kohya'].stem}:1>` to the prompt. **ComfyUI:** `models/loras/`, then a "
                  "LoraLoader node. Use it on the base model named above.", ""]
    lora = files.get("lora-diffusers", files.get("lora-kohya"))
    if lora is not None:  # diffusers reads either LoRA layout
        lines += ["```python", f"from diffusers import {cls}", f'pipe = {cls}.from_pretrained("<base model>")',
                  f'pipe.load_lora_weights("{lora.relative_to(out_dir).as_posix()}")',
                  f'pipe("{prompt}").images[0].save("out.png")', "```", ""]
    if "embedding" in files:
        lines += [f"**AUTOMATIC1111 / Forge:** copy the files in `{files['embedding'].name}/` into `embeddings/`; "
                  "each file's name is the word that calls it, as in the prompt below. **ComfyUI:** "
                  "`models/embeddings/`, and write `embedding:<name>` for the word. Use them on the base model named above.", ""]
        first = next(iter(sorted(files["embedding"].glob("*.safetensors"))), None)
        if first is not None and family != "sdxl":  # SDXL needs one call per text encoder: docs/EXPORT.md
            lines += ["```python", f"from diffusers import {cls}", f'pipe = {cls}.from_pretrained("<base model>")',
                      f'pipe.load_textual_inversion("{first.relative_to(out_dir).as_posix()}", token="{first.stem}")',
                      f'pipe("{prompt}").images[0].save("out.png")', "```", ""]
    if "diffusers" in files:
        lines += ["```python", f"from diffusers import {cls}", f'pipe = {cls}.from_pretrained("{files["diffusers"].name}")',
                  f'pipe("{prompt}").images[0].save("out.png")', "```", ""]
    return lines


def render_card(run: Run, info: dict[str, Any], family: str, files: dict[str, Path], samples: list[Path], out_dir: Path) -> str:
    subjects = info.get("subjects", [])
    prompt = subjects[0]["instance_prompt"] if subjects else "a photo"
    lines = [f"# {run.root.name}", "",
             f"A DreamBooth {'LoRA' if info.get('method') == 'lora' else 'fine-tune'} of `{info.get('base_model')}` "
             f"({FAMILY_NAME[family]}), trained with lookalike for {info.get('step', '?')} steps.", "",
             "| subject | identifier | class | prompt |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | `{s['identifier']}` | {s['class_noun']} | `{s['instance_prompt']}` |" for s in subjects]
    lines += ["", "Write the identifier and the class together in prompts (\"`" + prompt + "` as an oil painting\").", "",
              "## Training", "", "| setting | value |", "|---|---|"]
    train = info.get("train", {})
    lines += [f"| {k} | {train[k]} |" for k in TRAIN_FIELDS if k in train]
    lines += ["", "## Files", ""]
    lines += [f"- `{p.relative_to(out_dir)}` ({fmt})" for fmt, p in files.items()]
    if samples:
        lines += ["", "## Samples", ""] + [f"![sample]({p.relative_to(out_dir).as_posix()})" for p in samples]
    lines += [""] + _usage(files, family, prompt, out_dir)
    return "\n".join(lines) + "\n"


def write_card(run: Run, info: dict[str, Any], family: str, files: dict[str, Path], out_dir: Path) -> Path:
    samples = copy_samples(run, out_dir)
    path = out_dir / "README.md"
    atomic_write_text(path, render_card(run, info, family, files, samples, out_dir))
    return path
