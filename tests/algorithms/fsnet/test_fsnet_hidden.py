"""Tests of FSNet's hidden model and its training on eq. (3)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from fedlightning.algorithms.fsnet import HiddenModel, MixturePrior, train_hidden_model


def test_hidden_model_maps_probabilities_to_input_shape() -> None:
    h = HiddenModel(4, (3, 5, 5), hidden=(8,))
    assert h(torch.full((2, 4), 0.25)).shape == (2, 3, 5, 5)
    assert HiddenModel(3, (7,), hidden=())(torch.ones(1, 3)).shape == (1, 7)
    with pytest.raises(ValueError, match=r"probabilities must have shape \(N, 4\)"):
        h(torch.ones(2, 5))
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        HiddenModel(1, (3,))
    with pytest.raises(ValueError, match="hidden widths must be >= 1"):
        HiddenModel(2, (3,), hidden=(0,))


def _sign_classifier(z: Tensor) -> Tensor:
    """A fixed 'global model': class 1 when the sample's mean is positive (sharp logits)."""
    m = z.flatten(1).mean(1, keepdim=True)
    return torch.cat([-20 * m, 20 * m], dim=1)


def test_training_inverts_the_frozen_classifier_on_the_mixture() -> None:
    torch.manual_seed(0)
    prior = MixturePrior(
        means=torch.tensor([-1.0, 1.0]),
        variances=torch.tensor([0.01, 0.01]),
        num_samples=torch.tensor([50, 50]),
        weights="samples",
    )
    hidden = HiddenModel(2, (1, 4, 4), hidden=(16,))
    optimizer = torch.optim.Adam(hidden.parameters(), lr=1e-2)
    losses = train_hidden_model(
        hidden,
        _sign_classifier,
        prior,
        optimizer,
        steps=150,
        batch_size=32,
        input_shape=(1, 4, 4),
        generator=torch.Generator().manual_seed(0),
    )
    assert len(losses) == 150
    # Before training, H's output is unrelated to z (||z|| is about 4); after, only the
    # component noise is left (about 0.1 * sqrt(16) = 0.4).
    assert losses[0] > 3.0
    assert sum(losses[-10:]) / 10 < 0.6
    with torch.no_grad():
        decoded = hidden(torch.eye(2))
    assert decoded[0].mean().item() == pytest.approx(-1.0, abs=0.15)
    assert decoded[1].mean().item() == pytest.approx(1.0, abs=0.15)


def test_training_validates_its_budget() -> None:
    prior = MixturePrior(torch.zeros(1), torch.ones(1), torch.ones(1))
    hidden = HiddenModel(2, (4,))
    optimizer = torch.optim.Adam(hidden.parameters())
    kwargs = {"input_shape": (4,), "generator": torch.Generator()}
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_hidden_model(
            hidden, _sign_classifier, prior, optimizer, steps=0, batch_size=2, **kwargs
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        train_hidden_model(
            hidden, _sign_classifier, prior, optimizer, steps=1, batch_size=0, **kwargs
        )  # type: ignore[arg-type]
