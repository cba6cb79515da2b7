"""Diffusers-format LoRA -> the kohya / AUTOMATIC1111 key layout.

Training writes ``pytorch_lora_weights.safetensors`` as diffusers does: ``unet.<module>.lora.down``
/ ``.lora.up`` (or peft's ``lora_A`` / ``lora_B``), with the peft settings (rank, alpha) in the
``lora_adapter_metadata`` header. kohya-layout files name each adapted module with underscores and
carry its alpha as a tensor::

    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha
    lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight     (SD1 / SD2)
    lora_te1_... / lora_te2_...                                               (SDXL's two encoders)

UNet modules keep their diffusers names (as kohya's SD1/SD2 LoRAs do; A1111, ComfyUI and diffusers
map them onto the original blocks themselves). Text-encoder modules are named from the CLIP model's
root, ``text_model.``, which transformers 5 no longer has in CLIPTextModel's own names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from lookalike.errors import LookalikeError

# diffusers' older spelling, its newer one for text encoders, and peft's own.
_WEIGHT_SUFFIXES = {
    ".lora.down.weight": "down",
    ".lora.up.weight": "up",
    ".lora_linear_layer.down.weight": "down",
    ".lora_linear_layer.up.weight": "up",
    ".lora_A.weight": "down",
    ".lora_B.weight": "up",
}
_COMPONENTS = ("unet", "text_encoder_2", "text_encoder")  # text_encoder_2 before its prefix text_encoder


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not path.is_file():
        raise LookalikeError(f"no LoRA weights at {path}: train a LoRA first (lookalike train RUN train.method=lora)")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except SafetensorError as err:
        raise LookalikeError(f"{path} is not a readable safetensors file ({err}); re-run training or its last checkpoint") from None


def split_key(key: str) -> tuple[str, str, str]:
    """``unet.a.b.lora.down.weight`` -> ("unet", "a.b", "down")."""
    for suffix, kind in _WEIGHT_SUFFIXES.items():
        if key.endswith(suffix):
            component, _, module = key[: -len(suffix)].partition(".")
            if component in _COMPONENTS and module:
                return component, module, kind
    raise LookalikeError(
        f"LoRA weight {key!r} is not in diffusers format (unet./text_encoder. + lora down/up); "
        "export it from the run that trained it"
    )


def kohya_name(component: str, module: str, family: str) -> str:
    if component == "unet":
        return "lora_unet_" + module.replace(".", "_")
    if not module.startswith(("text_model.", "text_projection")):
        module = "text_model." + module
    if component == "text_encoder_2":
        prefix = "lora_te2_"
    else:
        prefix = "lora_te1_" if family == "sdxl" else "lora_te_"
    return prefix + module.replace(".", "_")


def adapter_settings(metadata: dict[str, str], component: str) -> dict:
    """The peft settings diffusers stored for ``component`` ({} when the file has none)."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    flat = json.loads(raw)
    return {k.removeprefix(f"{component}."): v for k, v in flat.items() if k.startswith(f"{component}.")}


def module_alpha(settings: dict, module: str, rank: int) -> float:
    """peft's alpha for one module: a matching ``alpha_pattern`` entry, else ``lora_alpha``.

    Without stored settings diffusers loads the weights at scale 1, i.e. alpha = rank; the kohya file
    says the same so both render alike.
    """
    for pattern, alpha in (settings.get("alpha_pattern") or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            return float(alpha)
    return float(settings.get("lora_alpha", rank))


def to_kohya(state_dict: dict[str, torch.Tensor], metadata: dict[str, str], family: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    settings = {c: adapter_settings(metadata, c) for c in _COMPONENTS}
    for key, value in state_dict.items():
        component, module, kind = split_key(key)
        name = kohya_name(component, module, family)
        out[f"{name}.lora_{kind}.weight"] = value
        if kind == "down":
            rank = value.shape[0]
            out[f"{name}.alpha"] = torch.tensor(module_alpha(settings[component], module, rank))
    missing = [k for k in out if k.endswith(".lora_down.weight") and k.replace("_down.", "_up.") not in out]
    if missing:
        raise LookalikeError(f"LoRA file is incomplete: {missing[0]} has no matching up weight; re-export from training")
    return out


def kohya_metadata(family: str, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
    """The ``ss_*`` fields A1111 and kohya tools show for a LoRA."""
    downs = [v for k, v in state_dict.items() if k.endswith(".lora_down.weight")]
    alphas = [float(v) for k, v in state_dict.items() if k.endswith(".alpha")]
    base_version = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}[family]
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(max(d.shape[0] for d in downs)),
        "ss_network_alpha": f"{max(alphas):g}",
        "ss_base_model_version": base_version,
        "ss_v2": str(family == "sd2"),
    }
