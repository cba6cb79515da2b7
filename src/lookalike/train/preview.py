"""Preview images during training: the current weights, a fixed seed, the same prompts every time."""

from __future__ import annotations

import io
from typing import Any

import torch


def render_previews(base: Any, prompts: list[str], resolution: int, steps: int, seed: int) -> list[bytes]:
    """PNG bytes of one image per prompt, sampled with DPM-Solver++ from ``base``'s current modules.

    A new pipeline object shares ``base``'s modules but has its own scheduler, so the pipeline
    that a full fine-tune saves keeps the model's original scheduler.
    """
    from lookalike.sample.schedulers import make_scheduler

    pipe = type(base)(**{**base.components, "scheduler": make_scheduler("dpm++", base.scheduler.config)})
    pipe.set_progress_bar_config(disable=True)
    was_training = base.unet.training
    base.unet.eval()
    images = []
    try:
        for prompt in prompts:
            # The same seed at every preview step: differences between previews are the training's.
            with torch.no_grad():
                image = pipe(prompt, num_inference_steps=steps, height=resolution, width=resolution,
                             generator=torch.Generator().manual_seed(seed)).images[0]
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            images.append(buffer.getvalue())
    finally:
        base.unet.train(was_training)
    return images
