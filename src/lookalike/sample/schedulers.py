"""Sampler names users type -> diffusers schedulers, built from the model's own scheduler config."""

from __future__ import annotations

from typing import Any

SCHEDULERS = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
}

# The names AUTOMATIC1111 writes in a PNG's `parameters` chunk.
A1111_NAMES = {"dpm++": "DPM++ 2M", "ddim": "DDIM", "euler": "Euler", "euler_a": "Euler a", "pndm": "PLMS"}


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh scheduler of the given kind that keeps the model's betas and prediction type."""
    import diffusers

    class_name, extra = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(base_config, **extra)
