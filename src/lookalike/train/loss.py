"""The DreamBooth loss as pure functions over tensors: no models, no state, unit-tested by hand.

A training batch is ``n_instance`` subject examples followed by as many class-prior examples;
one UNet forward covers both halves and :func:`paired_prior_loss` splits the error again.
"""

from __future__ import annotations

import torch


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) of each timestep."""
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alpha_bar / (1.0 - alpha_bar)


def velocity(
    alphas_cumprod: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """v = √ᾱ_t · ε − √(1 − ᾱ_t) · x₀ (the v-prediction target of SD2.x)."""
    alpha_bar = alphas_cumprod.to(latents.device)[timesteps].to(latents.dtype).view(-1, 1, 1, 1)
    return alpha_bar.sqrt() * noise - (1.0 - alpha_bar).sqrt() * latents


def prediction_target(
    prediction_type: str,
    alphas_cumprod: torch.Tensor,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """What the UNet should output for a noised batch, given the scheduler's prediction type."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return velocity(alphas_cumprod, latents, noise, timesteps)
    raise ValueError(f"unsupported prediction type {prediction_type!r} (expected epsilon or v_prediction)")


def min_snr_weights(snr_values: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-example loss weights of Min-SNR-γ (Hang et al. 2023).

    Min-SNR weights the x₀ error by min(SNR, γ). The errors relate as ‖ε − ε̂‖² = SNR·‖x₀ − x̂₀‖²
    and ‖v − v̂‖² = (SNR + 1)·‖x₀ − x̂₀‖², so the weight on the ε loss is min(SNR, γ) / SNR and
    on the v loss min(SNR, γ) / (SNR + 1).
    """
    clipped = torch.clamp(snr_values, max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr_values
    if prediction_type == "v_prediction":
        return clipped / (snr_values + 1.0)
    raise ValueError(f"unsupported prediction type {prediction_type!r} (expected epsilon or v_prediction)")


def offset_noise(noise: torch.Tensor, offset: float, generator: torch.Generator | None) -> torch.Tensor:
    """Add one random constant per example and channel, so the model can shift mean brightness."""
    if offset == 0:
        return noise
    shift = torch.randn(noise.shape[:2], generator=generator, dtype=noise.dtype).to(noise.device)
    return noise + offset * shift.view(*noise.shape[:2], 1, 1)


def paired_prior_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    n_instance: int,
    prior_loss_weight: float,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, instance, prior) losses for a batch of ``n_instance`` subject examples then priors.

    Each half is the mean over its examples of the (optionally weighted) per-example MSE;
    total = instance + prior_loss_weight · prior. Without priors (n_instance == batch) the
    prior loss is 0.
    """
    per_example = ((prediction.float() - target.float()) ** 2).mean(dim=tuple(range(1, prediction.ndim)))
    if weights is not None:
        per_example = per_example * weights.to(per_example.device)
    instance = per_example[:n_instance].mean()
    if n_instance == per_example.shape[0]:
        prior = torch.zeros((), device=per_example.device)
    else:
        prior = per_example[n_instance:].mean()
    return instance + prior_loss_weight * prior, instance, prior
