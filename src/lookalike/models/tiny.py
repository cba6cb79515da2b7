"""Randomly initialised SD1 / SD2 / SDXL-shaped pipelines, built from configs, for tests and benchmarks.

They have the real architectures' structure (and Stable Diffusion's real 49,408-token CLIP
vocabulary, when the ``open-clip-torch`` wheel is installed) at a fraction of the size, so every
code path is the one real models take. Nothing here reaches a model hub.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import torch

from lookalike.errors import LookalikeError

FAMILIES = ("sd1", "sd2", "sdxl")

# (UNet block channels, layers per block, text hidden size, text layers) per size.
SIZES = {
    "tiny": dict(blocks=(32, 64), layers=1, text_hidden=32, text_layers=2, vae_blocks=(32, 64)),
    "mid": dict(blocks=(128, 256, 512), layers=2, text_hidden=256, text_layers=4, vae_blocks=(64, 128, 128)),
    # Stable Diffusion 1.5's real dimensions (860M-parameter UNet), for a smoke test at full size.
    "sd15": dict(blocks=(320, 640, 1280, 1280), layers=2, text_hidden=768, text_layers=12, vae_blocks=(128, 256, 512, 512)),
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet: every byte maps to a printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def sd_clip_tokenizer():
    """Stable Diffusion's CLIP tokenizer (49,408 tokens), built from the BPE file in open-clip-torch."""
    from transformers import CLIPTokenizer

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise LookalikeError(
            "the SD CLIP vocabulary comes from the open-clip-torch wheel: "
            "pip install --no-deps open-clip-torch (--no-deps keeps your torch build)"
        )
    bpe = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    # CLIP keeps the first 49152 - 256 - 2 merges; the vocabulary is bytes, bytes</w>, merges, specials.
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=77)


def _text_config(hidden: int, layers: int, act: str, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_attention_heads=max(1, hidden // 64) if hidden >= 512 else max(1, hidden // 8),
        num_hidden_layers=layers,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection_dim or hidden,
    )


def _unet(family: str, size: dict, cross_dim: int, sample_size: int, text_proj: int):
    from diffusers import UNet2DConditionModel

    blocks = size["blocks"]
    down = ["CrossAttnDownBlock2D"] * (len(blocks) - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (len(blocks) - 1)
    kwargs = dict(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=blocks,
        layers_per_block=size["layers"],
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        cross_attention_dim=cross_dim,
        norm_num_groups=min(32, blocks[0]),
    )
    if family == "sd1":
        kwargs["attention_head_dim"] = 8
    else:
        kwargs["attention_head_dim"] = tuple(max(1, b // 16) for b in blocks)
        kwargs["use_linear_projection"] = True
    if family == "sdxl":
        time_dim = 8
        kwargs.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + text_proj,
            transformer_layers_per_block=tuple([1] * len(blocks)),
        )
    return UNet2DConditionModel(**kwargs)


def build_pipeline(family: str, size: str = "tiny", resolution: int = 64, seed: int = 0):
    """A randomly initialised diffusers pipeline of the given family and size."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if family not in FAMILIES:
        raise LookalikeError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    spec = SIZES[size]
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(spec["vae_blocks"]),
        up_block_types=("UpDecoderBlock2D",) * len(spec["vae_blocks"]),
        block_out_channels=spec["vae_blocks"],
        latent_channels=4,
        norm_num_groups=min(32, spec["vae_blocks"][0]),
        sample_size=resolution,
    )
    latent_size = resolution // 2 ** (len(spec["vae_blocks"]) - 1)
    hidden = spec["text_hidden"]
    tokenizer = sd_clip_tokenizer()
    beta = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    if family == "sd1":
        text_encoder = CLIPTextModel(_text_config(hidden, spec["text_layers"], "quick_gelu"))
        unet = _unet(family, spec, hidden, latent_size, 0)
        scheduler = DDIMScheduler(**beta, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        return StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    if family == "sd2":
        text_encoder = CLIPTextModel(_text_config(hidden, spec["text_layers"], "gelu"))
        unet = _unet(family, spec, hidden, latent_size, 0)
        scheduler = DDIMScheduler(
            **beta, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction"
        )
        return StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    # SDXL: CLIP-L-like encoder 1 + OpenCLIP-bigG-like encoder 2 (with projection); their hidden
    # states are concatenated for cross-attention, encoder 2's pooled projection feeds the time embedding.
    hidden2 = hidden * 2
    text_encoder = CLIPTextModel(_text_config(hidden, spec["text_layers"], "quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(hidden2, spec["text_layers"], "gelu", hidden2))
    unet = _unet(family, spec, hidden + hidden2, latent_size, hidden2)
    scheduler = EulerDiscreteScheduler(**beta, steps_offset=1, timestep_spacing="leading")
    vae.config.force_upcast = False
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=sd_clip_tokenizer(), unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )


def save_tiny(family: str, out_dir: Path | str, size: str = "tiny", resolution: int = 64, seed: int = 0) -> Path:
    """Build and save a random pipeline as a diffusers folder (safetensors); returns the folder."""
    out_dir = Path(out_dir)
    build_pipeline(family, size, resolution, seed).save_pretrained(out_dir, safe_serialization=True)
    return out_dir
