"""Tests of the Frechet distance (fedlightning.metrics.frechet)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from fedlightning.metrics import (
    extract_features,
    frechet_distance,
    frechet_distance_images,
    gaussian_statistics,
)
from fedlightning.models import ClassifierFeatures, FeatureClassifier


def _psd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(n, dtype=torch.float64)


def test_one_dimensional_closed_form() -> None:
    # (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2) = (m1 - m2)^2 + (sd1 - sd2)^2
    value = frechet_distance(
        torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]])
    )
    assert value == pytest.approx(9.0 + 1.0)


def test_diagonal_closed_form_and_identity() -> None:
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    v1, v2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 1.0])
    expected = float(((mu1 - mu2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum())
    assert frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(expected)
    s = _psd(6, 0)
    assert frechet_distance(torch.zeros(6), s, torch.zeros(6), s) == pytest.approx(0.0, abs=1e-9)


def test_matches_the_scipy_sqrtm_formula_and_is_symmetric() -> None:
    s1, s2 = _psd(8, 1), _psd(8, 2)
    mu1 = torch.linspace(0, 1, 8, dtype=torch.float64)
    mu2 = torch.zeros(8, dtype=torch.float64)
    covmean = linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * np.trace(covmean))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)


def test_singular_covariances_stay_real_and_non_negative() -> None:
    v = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert frechet_distance(torch.zeros(2), v, torch.zeros(2), v) == pytest.approx(0.0, abs=1e-12)


def test_gaussian_statistics_match_numpy() -> None:
    f = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    mean, cov = gaussian_statistics(f)
    assert mean.dtype == torch.float64
    np.testing.assert_allclose(mean.numpy(), f.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(f.double().numpy(), rowvar=False), rtol=1e-10)


def test_images_in_a_feature_space_and_extractor_batching() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.rand(300, 1, 4, 4, generator=g)
    shifted = real + 0.5
    flat = torch.nn.Flatten()
    # Same images -> 0; a shift by 0.5 in 16 pixels -> 16 * 0.25 (covariance unchanged).
    assert frechet_distance_images(real, real, flat) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance_images(real, shifted, flat, batch_size=7) == pytest.approx(4.0)
    assert torch.equal(extract_features(flat, real, batch_size=7), real.flatten(1))


def test_agrees_with_torchmetrics_fid_given_the_same_extractor() -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance

    torch.manual_seed(0)
    features = ClassifierFeatures(
        FeatureClassifier(image_size=12, channels=(4, 8), embedding_dim=8)
    )
    g = torch.Generator().manual_seed(1)
    real, fake = torch.rand(200, 1, 12, 12, generator=g), torch.rand(150, 1, 12, 12, generator=g)
    fake = fake**2
    fid = FrechetInceptionDistance(feature=features, normalize=True)
    fid.set_dtype(torch.float64)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    ours = frechet_distance_images(real, fake, features)
    assert ours > 0
    assert ours == pytest.approx(float(fid.compute()), rel=1e-4)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"features must have shape \(N, F\) with N >= 2"):
        gaussian_statistics(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="mu1 and mu2 must be vectors of the same size"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(2, 2\), got \(3, 3\)"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3))
    with pytest.raises(ValueError, match="real and fake images must have the same shape"):
        frechet_distance_images(
            torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 5, 5), torch.nn.Flatten()
        )
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got batch_size=0"):
        extract_features(torch.nn.Flatten(), torch.zeros(2, 3), batch_size=0)
    assert math.isfinite(
        frechet_distance(torch.zeros(1), torch.eye(1), torch.ones(1), torch.eye(1))
    )
