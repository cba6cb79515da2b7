"""A run folder ready for `lookalike train`: prepared photos and class priors written as real PNGs with manifests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import make_photos
from lookalike.run import Run

FAST = [
    "prepare.resolution=64",
    "priors.num_images=3",
    "train.max_steps=2",
    "train.checkpoint_every=100",
    "train.learning_rate=1e-3",
    "train.log_every=1",
]


def write_manifest(folder: Path, rows: list[dict]) -> None:
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_train_run(root: Path, model: Path, *overrides: str, subjects: tuple[str, ...] = ("cat",)) -> Run:
    """A run on a tiny model: 3 photos and 3 priors per subject at 64 px."""
    names = [f"subjects.{i}.name={name}" for i, name in enumerate(subjects)]
    ids = [f"subjects.{i}.identifier=zq{i}x" for i in range(len(subjects))]
    run = Run.open(root, overrides=[f"model.source={model}", *FAST, *names, *ids, *overrides])
    for i, subject in enumerate(run.config.subjects):
        photos = make_photos(run.instance_dir(subject.name), count=3, size=64, seed=10 + i)
        write_manifest(run.instance_dir(subject.name), [
            {"file": p.name, "source": str(p), "crop": "center", "original_size": [80, 96], "crop_top_left": [4, 8]}
            for p in photos
        ])
        priors = make_photos(run.priors_dir(subject.name), count=3, size=64, seed=20 + i)
        write_manifest(run.priors_dir(subject.name), [
            {"file": p.name, "prompt": subject.resolved_class_prompt(), "negative_prompt": "", "seed": k,
             "steps": 2, "guidance_scale": 7.5, "scheduler": "dpm++", "model": str(model), "resolution": 64}
            for k, p in enumerate(priors)
        ])
    return run


def sample_latents(pipe, prompt: str = "a photo of zq0x person") -> torch.Tensor:
    """One cheap denoising step's latents: enough to see whether two pipelines differ."""
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe(prompt, num_inference_steps=1, height=64, width=64, generator=generator, output_type="latent").images
