"""From examples to UNet inputs: prompt embeddings, VAE latents, SDXL time ids, and their caches.

Latents are always *sampled* from the VAE's posterior, mean + std · ε, with ε from the step's
generator, whether the (mean, std) pair was cached or computed this step: the cached and the
per-step paths draw the same numbers and train the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lookalike.data.dataset import Example, load_pixels


def encode_prompts(
    prompts: list[str], tokenizers: list[Any], text_encoders: list[Any], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden states for cross-attention, pooled embedding or None) as the family's pipeline computes them.

    SD1/SD2 use the last hidden state of their one encoder. SDXL concatenates the penultimate
    hidden states of both encoders and takes the pooled projection of the second.
    """
    if len(text_encoders) == 1:
        ids = _token_ids(tokenizers[0], prompts).to(device)
        return text_encoders[0](ids)[0], None
    hidden, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, text_encoders):
        out = encoder(_token_ids(tokenizer, prompts).to(device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]
    return torch.cat(hidden, dim=-1), pooled


def _token_ids(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def latent_distribution(vae: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the VAE posterior for a batch of images in [-1, 1]."""
    posterior = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    return posterior.mean, posterior.std


def sample_latents(
    mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator, scaling_factor: float
) -> torch.Tensor:
    eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device, mean.dtype)
    return (mean + std * eps) * scaling_factor


def time_ids(examples: list[Example], resolution: int) -> torch.Tensor:
    """SDXL's size/crop conditioning per example: original (h, w), crop (top, left), target (h, w)."""
    rows = [[*e.original_size, *e.crop_top_left, resolution, resolution] for e in examples]
    return torch.tensor(rows, dtype=torch.float32)


def load_batch_pixels(examples: list[Example], flips: torch.Tensor, resolution: int) -> torch.Tensor:
    pixels = torch.stack([load_pixels(e.path, resolution) for e in examples])
    return torch.where(flips.view(-1, 1, 1, 1), pixels.flip(-1), pixels)


class LatentCache:
    """(mean, std) of each image and of its mirror, computed once before training."""

    def __init__(self, vae: Any, examples: list[Example], resolution: int, batch_size: int = 8, show: bool = True):
        self.entries: dict[Path, torch.Tensor] = {}
        with torch.no_grad():
            for start in tqdm(range(0, len(examples), batch_size), desc="caching latents", disable=not show):
                chunk = examples[start : start + batch_size]
                pixels = torch.stack([load_pixels(e.path, resolution) for e in chunk])
                mean, std = latent_distribution(vae, torch.cat([pixels, pixels.flip(-1)]))
                n = len(chunk)
                for i, example in enumerate(chunk):
                    # [plain, mirrored] × [mean, std]
                    self.entries[example.path] = torch.stack(
                        [torch.stack([mean[i], std[i]]), torch.stack([mean[n + i], std[n + i]])]
                    )

    def lookup(self, examples: list[Example], flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = torch.stack([self.entries[e.path][int(f)] for e, f in zip(examples, flips)])
        return stacked[:, 0], stacked[:, 1]


class PromptCache:
    """Embeddings of each distinct prompt, computed once when the text encoders are frozen."""

    def __init__(self, prompts: set[str], tokenizers: list[Any], text_encoders: list[Any], device: torch.device):
        ordered = sorted(prompts)
        with torch.no_grad():
            hidden, pooled = encode_prompts(ordered, tokenizers, text_encoders, device)
        self.entries = {p: (hidden[i], None if pooled is None else pooled[i]) for i, p in enumerate(ordered)}

    def lookup(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = torch.stack([self.entries[p][0] for p in prompts])
        first_pooled = self.entries[prompts[0]][1]
        pooled = None if first_pooled is None else torch.stack([self.entries[p][1] for p in prompts])
        return hidden, pooled
