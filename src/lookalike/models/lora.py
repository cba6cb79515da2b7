"""LoRA adapters on the UNet and text encoders (peft), saved in the diffusers LoRA format.

The file we write is what ``StableDiffusionPipeline.save_lora_weights`` writes
(``pytorch_lora_weights.safetensors``, keys prefixed ``unet.`` / ``text_encoder.`` /
``text_encoder_2.``, the peft config as metadata), so ``pipe.load_lora_weights(folder)`` loads it
in diffusers and other tools. Adapters are injected with peft directly rather than through
transformers' ``add_adapter``, which demands a newer peft than diffusers needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
ADAPTER = "default"
TEXT_ENCODER_NAMES = ("text_encoder", "text_encoder_2")
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def lora_config(targets: list[str], rank: int, alpha: float | None):
    from peft import LoraConfig

    # "gaussian" starts B at zero: the adapted model begins exactly at the base model.
    return LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian", target_modules=targets)


def add_lora(model: torch.nn.Module, targets: list[str], rank: int, alpha: float | None) -> None:
    """Inject trainable LoRA layers into ``model``; only they keep requires_grad."""
    from peft import inject_adapter_in_model

    model.requires_grad_(False)
    inject_adapter_in_model(lora_config(targets, rank, alpha), model, adapter_name=ADAPTER)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)


def _diffusers_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    return convert_state_dict_to_diffusers({k: v.detach().float().cpu().contiguous() for k, v in state.items()})


def save_lora(folder: Path, family: str, unet: torch.nn.Module, text_encoders: list[torch.nn.Module]) -> Path:
    """Write the adapters of ``unet`` and of the trained ``text_encoders`` as diffusers LoRA weights."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipeline_class = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    kwargs: dict[str, Any] = {
        "unet_lora_layers": _diffusers_state(unet),
        "unet_lora_adapter_metadata": unet.peft_config[ADAPTER].to_dict(),
    }
    for name, encoder in zip(TEXT_ENCODER_NAMES, text_encoders):
        kwargs[f"{name}_lora_layers"] = _diffusers_state(encoder)
        kwargs[f"{name}_lora_adapter_metadata"] = encoder.peft_config[ADAPTER].to_dict()
    pipeline_class.save_lora_weights(folder, weight_name=WEIGHT_NAME, safe_serialization=True, **kwargs)
    return folder / WEIGHT_NAME


def load_lora_into(folder: Path, unet: torch.nn.Module, text_encoders: list[torch.nn.Module]) -> None:
    """Set the adapters already injected in ``unet`` / ``text_encoders`` from a saved LoRA file (resume)."""
    from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(folder / WEIGHT_NAME)
    parts = {"unet": unet, **dict(zip(TEXT_ENCODER_NAMES, text_encoders))}
    for prefix, model in parts.items():
        own = {k.removeprefix(prefix + "."): v for k, v in state.items() if k.startswith(prefix + ".")}
        own = convert_unet_state_dict_to_peft(own) if prefix == "unet" else convert_state_dict_to_peft(own)
        result = set_peft_model_state_dict(model, own, adapter_name=ADAPTER)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{folder / WEIGHT_NAME}: {prefix} LoRA keys do not fit: {result.unexpected_keys[:3]}")
