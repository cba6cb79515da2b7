"""The loss functions against values worked out by hand."""

import math

import pytest
import torch

from lookalike.train import loss


def test_snr_is_alpha_bar_over_one_minus_alpha_bar():
    alphas_cumprod = torch.tensor([0.8, 0.5, 0.2])
    got = loss.snr(alphas_cumprod, torch.tensor([0, 1, 2]))
    assert torch.allclose(got, torch.tensor([4.0, 1.0, 0.25]))


def test_velocity_target_by_hand():
    alphas_cumprod = torch.tensor([0.64, 0.36])
    latents = torch.full((2, 1, 1, 1), 2.0)
    noise = torch.full((2, 1, 1, 1), 1.0)
    v = loss.prediction_target("v_prediction", alphas_cumprod, latents, noise, torch.tensor([0, 1]))
    # t=0: 0.8·1 − 0.6·2 = −0.4; t=1: 0.6·1 − 0.8·2 = −1.0
    assert torch.allclose(v.flatten(), torch.tensor([-0.4, -1.0]))


def test_epsilon_target_is_the_noise():
    noise = torch.randn(2, 4, 3, 3)
    got = loss.prediction_target("epsilon", torch.ones(10), torch.zeros_like(noise), noise, torch.tensor([0, 1]))
    assert got is noise


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="sample"):
        loss.prediction_target("sample", torch.ones(2), torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.tensor([0]))


def test_min_snr_weights_epsilon_and_v():
    snr_values = torch.tensor([10.0, 5.0, 1.0])
    eps = loss.min_snr_weights(snr_values, 5.0, "epsilon")
    assert torch.allclose(eps, torch.tensor([0.5, 1.0, 1.0]))
    v = loss.min_snr_weights(snr_values, 5.0, "v_prediction")
    assert torch.allclose(v, torch.tensor([5 / 11, 5 / 6, 1 / 2]))


def test_min_snr_v_weight_equals_epsilon_weight_on_x0_error():
    """The same x₀ error gets the same weighted loss whether the model predicts ε or v."""
    alpha_bar = torch.tensor([0.9, 0.3])
    snr_values = alpha_bar / (1 - alpha_bar)
    x0_err = torch.tensor([0.2, 0.7])
    eps_loss = snr_values * x0_err**2 * loss.min_snr_weights(snr_values, 2.0, "epsilon")
    v_loss = (snr_values + 1) * x0_err**2 * loss.min_snr_weights(snr_values, 2.0, "v_prediction")
    assert torch.allclose(eps_loss, v_loss)


def test_paired_prior_loss_by_hand():
    target = torch.zeros(4, 1, 1, 2)
    prediction = torch.tensor([1.0, 1.0, 2.0, 0.0, 3.0, 3.0, 0.0, 0.0]).view(4, 1, 1, 2)
    # per-example MSE: 1, 2, 9, 0 → instance mean 1.5, prior mean 4.5
    total, instance, prior = loss.paired_prior_loss(prediction, target, n_instance=2, prior_loss_weight=0.5)
    assert instance.item() == pytest.approx(1.5)
    assert prior.item() == pytest.approx(4.5)
    assert total.item() == pytest.approx(1.5 + 0.5 * 4.5)


def test_paired_prior_loss_weights_and_no_priors():
    target = torch.zeros(2, 1, 1, 1)
    prediction = torch.tensor([2.0, 4.0]).view(2, 1, 1, 1)
    total, instance, prior = loss.paired_prior_loss(prediction, target, 2, 1.0, weights=torch.tensor([0.5, 0.25]))
    assert instance.item() == pytest.approx((4 * 0.5 + 16 * 0.25) / 2)
    assert prior.item() == 0.0
    assert total.item() == instance.item()


def test_offset_noise_adds_one_constant_per_channel():
    noise = torch.zeros(2, 3, 4, 4)
    shifted = loss.offset_noise(noise, 0.1, torch.Generator().manual_seed(0))
    per_channel = shifted.flatten(2)
    assert torch.all(per_channel.max(-1).values == per_channel.min(-1).values)
    expected = 0.1 * torch.randn((2, 3), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(per_channel[..., 0], expected)
    assert loss.offset_noise(noise, 0.0, None) is noise
    assert math.isclose(float(shifted.abs().max()), float(expected.abs().max()), rel_tol=1e-6)
