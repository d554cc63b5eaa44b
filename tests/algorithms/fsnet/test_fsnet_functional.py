"""Tests of Fed-FSNet's pure functions (fedlightning.algorithms.fsnet.functional)."""

from __future__ import annotations

import math

import pytest
import torch

from fedlightning.algorithms.fsnet import (
    client_statistics,
    kl_uniform,
    mixture_coefficients,
    reconstruction_loss,
    sample_mixture,
    synthesis_matrix,
)


def test_scalar_statistics_are_the_mean_and_population_variance_of_all_values() -> None:
    x = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 3.0]]]])  # (2, 1, 1, 2): values 0..3
    mean, var = client_statistics(x, "scalar")
    assert mean.shape == () and var.shape == ()
    assert mean.item() == pytest.approx(1.5)
    assert var.item() == pytest.approx(1.25)  # ((1.5^2 + 0.5^2) * 2) / 4


def test_pixel_statistics_are_per_feature() -> None:
    x = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 5.0]]]])
    mean, var = client_statistics(x, "pixel")
    assert mean.shape == (1, 1, 2)
    torch.testing.assert_close(mean.flatten(), torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(var.flatten(), torch.tensor([1.0, 4.0]))


def test_statistics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        client_statistics(torch.zeros(2, 3), "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="N >= 1"):
        client_statistics(torch.zeros(0, 3))


def test_mixture_coefficients_sum_to_one_for_every_kind() -> None:
    counts = torch.tensor([100, 300])
    torch.testing.assert_close(
        mixture_coefficients(counts, "samples"), torch.tensor([0.25, 0.75], dtype=torch.float64)
    )
    torch.testing.assert_close(
        mixture_coefficients(counts, "uniform"), torch.tensor([0.5, 0.5], dtype=torch.float64)
    )
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([mixture_coefficients(counts, "dirichlet", g) for _ in range(200)])
    torch.testing.assert_close(draws.sum(1), torch.ones(200, dtype=torch.float64))
    assert draws.std(0).min() > 0.1  # the coefficients vary between calls
    assert abs(float(draws[:, 0].mean()) - 0.5) < 0.08  # flat Dirichlet: mean 1/K


def test_mixture_coefficients_reject_bad_counts() -> None:
    with pytest.raises(ValueError, match="positive counts"):
        mixture_coefficients(torch.tensor([3, 0]), "samples")
    with pytest.raises(ValueError, match="kind must be one of"):
        mixture_coefficients(torch.tensor([3]), "softmax")  # type: ignore[arg-type]


def test_mixture_samples_follow_their_components() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([-50.0, 50.0])
    variances = torch.tensor([0.01, 4.0])
    z = sample_mixture(means, variances, torch.tensor([0.2, 0.8]), 4000, (1, 2, 2), g)
    assert z.shape == (4000, 1, 2, 2)
    per_sample = z.flatten(1)
    low = per_sample[:, 0] < 0
    # Each sample comes from one component (all its features on one side).
    assert bool((per_sample[low] < 0).all()) and bool((per_sample[~low] > 0).all())
    assert float(low.float().mean()) == pytest.approx(0.2, abs=0.03)
    assert float(per_sample[low].std()) == pytest.approx(0.1, rel=0.1)
    assert float(per_sample[~low].std()) == pytest.approx(2.0, rel=0.1)


def test_pixel_mixture_uses_per_feature_means() -> None:
    g = torch.Generator().manual_seed(1)
    means = torch.tensor([[[0.0, 10.0]]])  # K=1, input (1, 2)
    z = sample_mixture(means, torch.zeros_like(means), torch.tensor([1.0]), 3, (1, 2), g)
    torch.testing.assert_close(z, means.expand(3, 1, 2))


def test_mixture_sampling_is_reproducible_and_validates() -> None:
    args = (torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5]), 5, (3,))
    a = sample_mixture(*args, torch.Generator().manual_seed(7))
    b = sample_mixture(*args, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="sum to 1"):
        sample_mixture(args[0], args[1], torch.tensor([0.5, 0.6]), 5, (3,))
    with pytest.raises(ValueError, match="variances must be >= 0"):
        sample_mixture(args[0], torch.tensor([1.0, -1.0]), args[2], 5, (3,))
    with pytest.raises(ValueError, match="means must have shape"):
        sample_mixture(torch.zeros(2, 4), torch.zeros(2, 4), args[2], 5, (3,))


def test_reconstruction_loss_is_the_mean_l2_distance() -> None:
    target = torch.zeros(2, 1, 2, 2)
    recon = torch.zeros(2, 1, 2, 2)
    recon[0, 0, 0, 0], recon[0, 0, 0, 1] = 3.0, 4.0  # distance 5
    recon[1] += 1.0  # distance sqrt(4) = 2
    assert reconstruction_loss(recon, target).item() == pytest.approx(3.5)
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_loss(recon, torch.zeros(2, 4))


def test_synthesis_matrix_rows_sum_to_one_with_a_dominant_class() -> None:
    g = torch.Generator().manual_seed(0)
    s, classes = synthesis_matrix(10, 60, (0.7, 0.95), g)
    assert s.shape == (60, 10)
    torch.testing.assert_close(s.sum(1), torch.ones(60))
    assert classes.tolist() == [j % 10 for j in range(60)]
    assert bool((s.argmax(1) == classes).all())
    dominant = s[torch.arange(60), classes]
    assert bool(((dominant >= 0.7) & (dominant <= 0.95)).all())
    # The 6 samples of a class differ, so D' holds 60 distinct samples.
    assert len({tuple(row.tolist()) for row in s}) == 60


def test_synthesis_matrix_with_fixed_dominance_is_eq_9_exactly() -> None:
    s, _ = synthesis_matrix(4, 4, (0.7, 0.7))
    eps = 0.1  # (1 - 0.7) / 3
    expected = torch.full((4, 4), eps) + torch.eye(4) * (0.7 - eps)
    torch.testing.assert_close(s, expected)


def test_synthesis_matrix_validates() -> None:
    with pytest.raises(ValueError, match="dominance must satisfy"):
        synthesis_matrix(4, 8, (0.2, 0.5))  # 0.2 < 1/4 does not dominate
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        synthesis_matrix(1, 8)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        synthesis_matrix(3, 0)


def test_kl_uniform_matches_the_definition() -> None:
    assert kl_uniform(torch.zeros(3, 5)).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.25)]])
    expected = sum((1 / 3) * math.log((1 / 3) / p) for p in (0.5, 0.25, 0.25))
    assert kl_uniform(logits).item() == pytest.approx(expected, rel=1e-5)
    assert kl_uniform(torch.tensor([[10.0, 0.0, 0.0]])).item() > 2.0
    with pytest.raises(ValueError, match="logits must have shape"):
        kl_uniform(torch.zeros(5))


def test_kl_uniform_gradient_flattens_the_prediction() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    kl_uniform(logits).backward()
    assert logits.grad is not None
    assert logits.grad[0, 0] > 0 > logits.grad[0, 2]  # descent lowers the top logit
