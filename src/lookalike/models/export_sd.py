"""Diffusers pipeline -> one original-layout ("LDM") ``.safetensors`` file for SD1.x, SD2.x and SDXL.

diffusers can read these files (``from_single_file``) but not write them, so this is the inverse of
its loader (``diffusers/loaders/single_file_utils.py``), driven by the model's own configs rather than
by fixed SD1.5 / SDXL block counts. A1111, ComfyUI and kohya read the original names strictly, so
every weight gets exactly the name the CompVis / Stability code gives it, and a weight that has no
known original name stops the export instead of being written under a made-up one.

Layouts written::

    model.diffusion_model.*                    UNet (input_blocks / middle_block / output_blocks)
    first_stage_model.*                        VAE (encoder.down.N.block.M, mid.attn_1 as 1x1 convs)
    cond_stage_model.transformer.text_model.*  SD1 CLIP ViT-L (Hugging Face layout, as in the originals)
    cond_stage_model.model.*                   SD2 OpenCLIP ViT-H (resblocks, fused in_proj)
    conditioner.embedders.0.transformer.text_model.*   SDXL CLIP ViT-L
    conditioner.embedders.1.model.*            SDXL OpenCLIP bigG (with text_projection, transposed)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from lookalike.errors import LookalikeError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIXES = {
    "sd1": ["cond_stage_model.transformer."],
    "sd2": ["cond_stage_model.model."],
    "sdxl": ["conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."],
}

# Inside a UNet ResBlock the original code numbers the layers of nn.Sequential containers.
UNET_RESNET_NAMES = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}
UNET_TOP_LEVEL = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",  # SDXL's size / crop / pooled-text embedding
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
VAE_ATTENTION_NAMES = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}


def _per_block(value: Any, count: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * count


def unet_prefix_map(config: Any) -> dict[str, str]:
    """Diffusers UNet module prefix -> original prefix, computed from the UNet config.

    Input block 0 is conv_in; each down level then contributes one input block per layer (ResBlock,
    then its SpatialTransformer at index 1 when the level has attention) and one for its Downsample.
    Output blocks run the same way upwards with one more layer per level; the Upsample sits after the
    ResBlock and the transformer, so its index is 1 or 2.
    """
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise LookalikeError(f"single-file export supports the SD mid block only, not {config['mid_block_type']}")
    levels = len(config["block_out_channels"])
    down_layers = _per_block(config["layers_per_block"], levels)
    mapping = {"mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
               "mid_block.resnets.1.": "middle_block.2."}
    index = 1
    for level, block_type in enumerate(config["down_block_types"]):
        for layer in range(down_layers[level]):
            mapping[f"down_blocks.{level}.resnets.{layer}."] = f"input_blocks.{index}.0."
            if "CrossAttn" in block_type:
                mapping[f"down_blocks.{level}.attentions.{layer}."] = f"input_blocks.{index}.1."
            index += 1
        if level < levels - 1:
            mapping[f"down_blocks.{level}.downsamplers.0.conv."] = f"input_blocks.{index}.0.op."
            index += 1
    index = 0
    up_layers = list(reversed(down_layers))
    for level, block_type in enumerate(config["up_block_types"]):
        attention = "CrossAttn" in block_type
        for layer in range(up_layers[level] + 1):
            mapping[f"up_blocks.{level}.resnets.{layer}."] = f"output_blocks.{index}.0."
            if attention:
                mapping[f"up_blocks.{level}.attentions.{layer}."] = f"output_blocks.{index}.1."
            index += 1
        if level < levels - 1:
            mapping[f"up_blocks.{level}.upsamplers.0."] = f"output_blocks.{index - 1}.{2 if attention else 1}."
    return mapping


def _rename(key: str, prefixes: dict[str, str], what: str) -> str:
    """Swap the longest matching prefix of ``key``; a key with none has no original name."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut]) + "."
        if head in prefixes:
            return prefixes[head] + key[len(head):]
    raise LookalikeError(f"{what} weight {key!r} has no original-layout name; this architecture cannot be exported to one file")


def unet_to_original(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    blocks = unet_prefix_map(config)
    out = {}
    for key, value in state_dict.items():
        new = _rename(key, {**blocks, **UNET_TOP_LEVEL}, "UNet")
        if ".resnets." in key or key.startswith("mid_block.resnets."):
            new = _rename_inner(new, UNET_RESNET_NAMES)
        out[UNET_PREFIX + new] = value
    return out


def _rename_inner(key: str, names: dict[str, str]) -> str:
    for old, new in names.items():
        if f".{old}" in key:
            return key.replace(f".{old}", f".{new}", 1)
    return key


def vae_prefix_map(config: Any) -> dict[str, str]:
    """Diffusers VAE prefix -> original; the decoder's levels are numbered bottom-up in the original."""
    levels = len(config["block_out_channels"])
    mapping = {"quant_conv.": "quant_conv.", "post_quant_conv.": "post_quant_conv."}
    for part in ("encoder", "decoder"):
        for name in ("conv_in.", "conv_out."):
            mapping[f"{part}.{name}"] = f"{part}.{name}"
        mapping[f"{part}.conv_norm_out."] = f"{part}.norm_out."
        mapping[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
        for k in range(2):
            mapping[f"{part}.mid_block.resnets.{k}."] = f"{part}.mid.block_{k + 1}."
    for level in range(levels):
        for layer in range(config["layers_per_block"] + 1):
            mapping[f"encoder.down_blocks.{level}.resnets.{layer}."] = f"encoder.down.{level}.block.{layer}."
            mapping[f"decoder.up_blocks.{level}.resnets.{layer}."] = f"decoder.up.{levels - 1 - level}.block.{layer}."
        mapping[f"encoder.down_blocks.{level}.downsamplers.0."] = f"encoder.down.{level}.downsample."
        mapping[f"decoder.up_blocks.{level}.upsamplers.0."] = f"decoder.up.{levels - 1 - level}.upsample."
    return mapping


def vae_to_original(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    prefixes = vae_prefix_map(config)
    out = {}
    for key, value in state_dict.items():
        new = _rename(key, prefixes, "VAE").replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in new:
            new = _rename_inner(new, VAE_ATTENTION_NAMES)
            if value.ndim == 2:  # the original attention uses 1x1 convolutions
                value = value[:, :, None, None]
        out[VAE_PREFIX + new] = value
    return out


def clip_to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP ViT-L keeps the Hugging Face names, under ``text_model.`` (transformers 5 dropped it).

    The released SD1.x / SDXL files also carry the ``position_ids`` buffer (0..76), which newer
    transformers no longer saves; it is written back so the key set matches theirs.
    """
    out = {key if key.startswith("text_model.") else f"text_model.{key}": value for key, value in state_dict.items()}
    positions = out["text_model.embeddings.position_embedding.weight"].shape[0]
    out["text_model.embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64)[None]
    return out


OPEN_CLIP_LAYER_NAMES = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}
OPEN_CLIP_TOP_LEVEL = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def open_clip_to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP layout: ``transformer.resblocks.N`` with q/k/v fused into one ``in_proj`` matrix."""
    flat = {k.removeprefix("text_model."): v for k, v in state_dict.items() if not k.endswith("position_ids")}
    out = {}
    for key, value in flat.items():
        if key in OPEN_CLIP_TOP_LEVEL:
            out[OPEN_CLIP_TOP_LEVEL[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()  # OpenCLIP multiplies x @ P; nn.Linear stores P.T
        elif key.startswith("encoder.layers."):
            layer, _, rest = key.removeprefix("encoder.layers.").partition(".")
            block = f"transformer.resblocks.{layer}."
            if rest.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
                if rest.startswith("self_attn.q_proj."):
                    kind = rest.rsplit(".", 1)[1]  # weight | bias
                    parts = [flat[f"encoder.layers.{layer}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                    out[f"{block}attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
                continue
            out[block + _rename(rest, OPEN_CLIP_LAYER_NAMES, "OpenCLIP")] = value
        else:
            raise LookalikeError(f"OpenCLIP text-encoder weight {key!r} has no original-layout name")
    return out


def original_state_dict(pipeline: Any, family: str) -> dict[str, torch.Tensor]:
    """Every weight of ``pipeline`` under its original-layout name (tensors shared, not copied)."""
    if family not in TEXT_PREFIXES:
        raise LookalikeError(f"single-file export knows sd1, sd2 and sdxl, not {family!r}")
    out = unet_to_original(pipeline.unet.state_dict(), pipeline.unet.config)
    out.update(vae_to_original(pipeline.vae.state_dict(), pipeline.vae.config))
    encoders = [pipeline.text_encoder] + ([pipeline.text_encoder_2] if family == "sdxl" else [])
    for encoder, prefix in zip(encoders, TEXT_PREFIXES[family]):
        convert = open_clip_to_original if prefix.endswith(".model.") else clip_to_original
        out.update({prefix + k: v for k, v in convert(encoder.state_dict()).items()})
    return out


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write to a temporary file beside ``path`` and rename, so a crash never leaves half a file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_single_file(pipeline: Any, family: str, path: Path, dtype: torch.dtype, metadata: dict[str, str]) -> int:
    """Write ``pipeline`` as one original-layout file in ``dtype``; returns the number of tensors."""
    tensors = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype)
        for k, v in original_state_dict(pipeline, family).items()
    }
    save_safetensors_atomic(tensors, path, {k: str(v) for k, v in metadata.items()})
    return len(tensors)
