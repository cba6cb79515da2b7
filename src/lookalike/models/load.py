"""Load a base model's parts (UNet, VAE, text encoders, tokenizers, noise scheduler) for any family.

Training, priors and generation all start from :func:`load_components`; nothing else opens
model files. The family is read from the pipeline's configs: two text encoders mean SDXL, an OpenCLIP
(gelu) text encoder means SD2.x, otherwise SD1.x.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lookalike.config import ModelConfig
from lookalike.errors import LookalikeError


@dataclass
class Components:
    family: str  # "sd1" | "sd2" | "sdxl"
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    noise_scheduler: Any  # DDPMScheduler built from the model's scheduler config (training)
    source: str  # what the user named, recorded in manifests and metadata
    pipeline: Any = field(default=None, repr=False)  # the pipeline the parts came from

    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def detect_family(pipeline: Any) -> str:
    """sdxl: two text encoders; sd2: OpenCLIP-H text encoder (gelu); sd1: OpenAI CLIP-L (quick_gelu).

    The text encoder, not the scheduler, tells SD2 from SD1: SD2-base (512 px) predicts epsilon
    and SD2.1 (768 px) v; training reads the prediction type from the scheduler either way.
    """
    if getattr(pipeline, "text_encoder_2", None) is not None:
        return "sdxl"
    text_encoder = getattr(pipeline, "text_encoder", None)
    if text_encoder is not None:
        return "sd2" if text_encoder.config.hidden_act == "gelu" else "sd1"
    return "sd2" if pipeline.scheduler.config.get("prediction_type") == "v_prediction" else "sd1"


def load_pipeline(model: ModelConfig, dtype: torch.dtype = torch.float32) -> tuple[Any, str]:
    """The base pipeline and its family. The source is resolved by :mod:`lookalike.models.sources`."""
    from lookalike.models.sources import open_pipeline

    pipeline = open_pipeline(model, dtype)
    family = detect_family(pipeline)
    if model.family != "auto" and model.family != family:
        raise LookalikeError(
            f"model.family is {model.family!r} but {model.source} looks like {family}: "
            f"set model.family={family} or model.family=auto"
        )
    return pipeline, family


def load_tokenizers(model: ModelConfig) -> list[Any]:
    """The base model's tokenizer(s) only (two for SDXL): cheap, for checks before any weights load."""
    from lookalike.models.sources import open_tokenizers

    return open_tokenizers(model)


def load_components(model: ModelConfig, dtype: torch.dtype = torch.float32) -> Components:
    from diffusers import DDPMScheduler

    pipeline, family = load_pipeline(model, dtype)
    text_encoders = [pipeline.text_encoder] + ([pipeline.text_encoder_2] if family == "sdxl" else [])
    tokenizers = [pipeline.tokenizer] + ([pipeline.tokenizer_2] if family == "sdxl" else [])
    return Components(
        family=family,
        unet=pipeline.unet,
        vae=pipeline.vae,
        text_encoders=text_encoders,
        tokenizers=tokenizers,
        noise_scheduler=DDPMScheduler.from_config(pipeline.scheduler.config),
        source=model.source,
        pipeline=pipeline,
    )

