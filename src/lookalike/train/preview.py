"""Preview images during training: the current weights, a fixed seed, the same prompts every time."""

from __future__ import annotations

import io
from typing import Any

import torch


def render_previews(base: Any, prompts: list[str], resolution: int, steps: int, seed: int) -> list[bytes]:
    """PNG bytes of one image per prompt, sampled with DPM-Solver++ from ``base``'s current modules.

    The scheduler is swapped only for the duration: the pipeline that a full fine-tune saves keeps
    the model's own scheduler.
    """
    from lookalike.sample.schedulers import make_scheduler

    original_scheduler, was_training = base.scheduler, base.unet.training
    base.scheduler = make_scheduler("dpm++", original_scheduler.config)
    base.set_progress_bar_config(disable=True)
    base.unet.eval()
    images = []
    try:
        for prompt in prompts:
            # The same seed at every preview step: differences between previews are the training's.
            with torch.no_grad():
                image = base(prompt, num_inference_steps=steps, height=resolution, width=resolution,
                             generator=torch.Generator().manual_seed(seed)).images[0]
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            images.append(buffer.getvalue())
    finally:
        base.scheduler = original_scheduler
        base.unet.train(was_training)
    return images
