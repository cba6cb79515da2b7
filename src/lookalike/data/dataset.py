"""What training reads: each subject's prepared photos and its class priors, and which of them each step uses.

Every random choice of a step (which priors, flips, noise, timesteps) comes from one generator
seeded by (seed, micro-step, process rank), and the photo order is a fresh shuffle per pass seeded
by (seed, pass). A step's data is therefore a function of its number alone: a resumed run draws
exactly what an uninterrupted one would, and each process of a data-parallel run draws its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lookalike.config import SubjectConfig
from lookalike.errors import LookalikeError
from lookalike.run import Run, read_jsonl


@dataclass(frozen=True)
class Example:
    path: Path
    prompt: str
    subject: str
    original_size: tuple[int, int]  # (height, width) before cropping: SDXL's size conditioning
    crop_top_left: tuple[int, int]  # (top, left) of the crop: SDXL's crop conditioning


@dataclass
class TrainingSet:
    instances: list[Example]
    priors: dict[str, list[Example]] = field(default_factory=dict)  # subject name -> its class images

    def all_examples(self) -> list[Example]:
        return self.instances + [e for group in self.priors.values() for e in group]


def caption_prompt(caption: str | None, subject: SubjectConfig) -> str:
    """A photo's training prompt: the instance prompt, or the photo's caption (from ``photo.txt``).

    A caption that names the identifier is the whole prompt ("ohwx man on a beach at dusk"); any
    other caption describes the photo and follows the instance prompt ("at the beach" makes "a
    photo of ohwx man at the beach"), so the photo's context is not learned as part of the subject.
    """
    prompt = subject.resolved_instance_prompt()
    if caption is None:
        return prompt
    if subject.identifier.lower() in caption.lower().replace(",", " ").split():
        return caption
    return f"{prompt} {caption}"


def _instances(run: Run, subject: SubjectConfig, resolution: int) -> list[Example]:
    name = subject.name
    folder = run.instance_dir(name)
    rows = read_jsonl(folder / "manifest.jsonl")
    missing = [r["file"] for r in rows if not (folder / r["file"]).is_file()]
    if not rows or missing:
        what = f"{len(missing)} prepared photos are missing" if missing else "no prepared photos"
        raise LookalikeError(f"subject {name!r}: {what} in {folder}: run `lookalike prepare {run.root}` first")
    square = (resolution, resolution)
    return [
        Example(
            path=folder / r["file"],
            prompt=caption_prompt(r.get("caption"), subject),
            subject=name,
            original_size=tuple(r.get("original_size") or square),
            crop_top_left=_scaled_crop(r, resolution),
        )
        for r in rows
    ]


def _scaled_crop(row: dict, resolution: int) -> tuple[int, int]:
    """The crop's top-left corner in the pixels of the image scaled so the crop is ``resolution`` wide.

    prepare records it in original pixels; SDXL was trained with the corner measured after the
    resize (crop a `crop_size` square, then resize it = resize, then crop a `resolution` square).
    """
    top, left = row.get("crop_top_left") or (0, 0)
    scale = resolution / row["crop_size"] if row.get("crop_size") else 1.0
    return round(top * scale), round(left * scale)


def _priors(run: Run, name: str, class_prompt: str, needed: int) -> list[Example]:
    folder = run.priors_dir(name)
    rows = [r for r in read_jsonl(folder / "manifest.jsonl") if (folder / r["file"]).is_file()]
    user_supplied = any(r.get("user_supplied") for r in rows)
    # Priors of another class prompt (say, before `audit.apply` refined it) would teach the old one.
    outdated = [r for r in rows if not r.get("user_supplied") and r["prompt"] != class_prompt]
    if outdated:
        raise LookalikeError(
            f"subject {name!r}: {len(outdated)} class-prior images were made from {outdated[0]['prompt']!r}, "
            f"but the class prompt is now {class_prompt!r}: run `lookalike priors {run.root}` to regenerate them"
        )
    if not rows or (len(rows) < needed and not user_supplied):
        raise LookalikeError(
            f"subject {name!r}: {len(rows)} of {needed} class-prior images in {folder}: "
            f"run `lookalike priors {run.root}` first (or set train.with_prior_preservation=false)"
        )
    examples = []
    for r in rows:
        with Image.open(folder / r["file"]) as image:
            size = (image.height, image.width)
        examples.append(Example(folder / r["file"], r["prompt"], name, size, (0, 0)))
    return examples


def load_training_set(run: Run) -> TrainingSet:
    """Every subject's prepared photos (with its instance prompt or their captions) and, with prior preservation, its priors."""
    config = run.config
    resolution = config.prepare.resolution
    data = TrainingSet(instances=[])
    for subject in config.subjects:
        data.instances += _instances(run, subject, resolution)
        if config.train.with_prior_preservation:
            data.priors[subject.name] = _priors(run, subject.name, subject.resolved_class_prompt(), config.priors.num_images)
    return data


def load_pixels(path: Path, resolution: int) -> torch.Tensor:
    """An image as a (3, resolution, resolution) tensor in [-1, 1]; centre-cropped and resized if needed."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (resolution, resolution):
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.LANCZOS)
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def step_generator(seed: int, micro_step: int, rank: int) -> torch.Generator:
    """The generator for every random draw of one micro-step on one process."""
    mixed = np.random.SeedSequence([seed, micro_step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(mixed[0]) << 31 | int(mixed[1]) >> 1)


@lru_cache(maxsize=8)
def _shuffled_pass(count: int, seed: int, pass_index: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + pass_index)
    return tuple(torch.randperm(count, generator=generator).tolist())


def draw_batch(
    data: TrainingSet, seed: int, micro_step: int, rank: int, world_size: int, batch_size: int,
    generator: torch.Generator,
) -> tuple[list[Example], list[Example]]:
    """(instances, priors) of one micro-step on one process: each photo paired with a prior of its subject.

    Photos are taken in shuffled passes over all subjects' photos, the processes taking
    consecutive slices; priors are drawn at random from the photo's own subject.
    """
    count = len(data.instances)
    start = (micro_step * world_size + rank) * batch_size
    instances = []
    for position in range(start, start + batch_size):
        pass_index, offset = divmod(position, count)
        instances.append(data.instances[_shuffled_pass(count, seed, pass_index)[offset]])
    priors = []
    for example in instances if data.priors else []:
        group = data.priors[example.subject]
        priors.append(group[int(torch.randint(len(group), (1,), generator=generator))])
    return instances, priors
