"""One training step on a randomly initialised model of Stable Diffusion 1.5's full size, at 512 px.

Slow (about a minute of compute, ~17 GiB of memory for the full fine-tune's Adam state): outside
the default suite. Run with `python -m pytest -m slow tests/test_smoke_sd15.py`.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_photos
from lookalike.models.tiny import save_tiny
from lookalike.run import Run
from lookalike.train.loop import train_run


@pytest.mark.slow
def test_one_full_finetune_step_at_sd15_size(tmp_path):
    model = save_tiny("sd1", tmp_path / "sd15", size="sd15", resolution=512)
    run = Run.open(tmp_path / "run", overrides=[
        f"model.source={model}", "prepare.resolution=512", "priors.num_images=1", "train.method=full",
        "train.max_steps=1", "train.learning_rate=1e-5", "train.batch_size=1",
    ])
    subject = run.config.subjects[0]
    for folder, prompt in ((run.instance_dir(subject.name), None), (run.priors_dir(subject.name), subject.resolved_class_prompt())):
        photo = make_photos(folder, count=1, size=512)[0]
        row = {"file": photo.name, "source": str(photo), "crop": "center"} if prompt is None else {
            "file": photo.name, "prompt": prompt, "negative_prompt": "", "seed": 0, "steps": 1,
            "guidance_scale": 7.5, "scheduler": "dpm++", "model": str(model), "resolution": 512}
        (folder / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    train_run(run)
    from safetensors.torch import load_file

    before = load_file(model / "unet" / "diffusion_pytorch_model.safetensors")["conv_in.weight"]
    after = load_file(run.model_dir / "unet" / "diffusion_pytorch_model.safetensors")["conv_in.weight"]
    assert before.shape == after.shape == (320, 4, 3, 3)
    assert not torch.equal(before, after) and torch.isfinite(after).all()
    assert json.loads((run.model_dir / "lookalike.json").read_text())["step"] == 1
