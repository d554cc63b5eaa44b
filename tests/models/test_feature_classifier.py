"""Tests of the scoring classifier (fedlightning.models.feature_classifier)."""

from __future__ import annotations

import pytest
import torch

from fedlightning.evaluation import evaluate
from fedlightning.models import ClassifierFeatures, FeatureClassifier, fit_classifier


def _quadrants(n: int = 256, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is which quadrant is bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, size, size, generator=g)
    h = size // 2
    for i, k in enumerate(y.tolist()):
        r, c = divmod(k, 2)
        x[i, 0, r * h : (r + 1) * h, c * h : (c + 1) * h] += 0.8
    return x, y


def test_default_shapes_and_size() -> None:
    clf = FeatureClassifier()
    x = torch.rand(3, 1, 28, 28)
    assert clf(x).shape == (3, 10)
    assert clf.embed(x).shape == (3, 128)
    assert sum(p.numel() for p in clf.parameters()) == 206_922


def test_fit_classifier_learns_and_is_seeded() -> None:
    x, y = _quadrants()
    torch.manual_seed(0)
    small = {"image_size": 12, "channels": (4, 8), "embedding_dim": 16, "lr": 0.01}
    clf = FeatureClassifier(num_classes=4, **small)  # type: ignore[arg-type]
    state = {k: v.clone() for k, v in clf.state_dict().items()}
    fit = fit_classifier(clf, x, y, epochs=4, batch_size=32, seed=1)
    xt, yt = _quadrants(seed=1)
    assert evaluate(clf, [(xt, yt)])["test_acc"] > 0.95
    assert fit["train_acc"] > 0.9
    # Same seed, same start -> same weights.
    twin = FeatureClassifier(num_classes=4, **small)  # type: ignore[arg-type]
    twin.load_state_dict(state)
    fit_classifier(twin, x, y, epochs=4, batch_size=32, seed=1)
    for a, b in zip(clf.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_classifier_features_is_the_frozen_embedding() -> None:
    clf = FeatureClassifier(num_classes=4, image_size=12, channels=(4, 8), embedding_dim=16)
    clf.train()
    features = ClassifierFeatures(clf)
    x = torch.rand(5, 1, 12, 12)
    out = features(x)
    assert features.num_features == 16
    assert out.shape == (5, 16) and not out.requires_grad
    clf.eval()
    assert torch.equal(out, clf.embed(x))


def test_bad_settings_and_inputs() -> None:
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2, got num_classes=1"):
        FeatureClassifier(num_classes=1)
    with pytest.raises(ValueError, match="image_size must be a multiple of 4, got image_size=30"):
        FeatureClassifier(image_size=30)
    with pytest.raises(ValueError, match="lr must be > 0"):
        FeatureClassifier(lr=0.0)
    clf = FeatureClassifier()
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 28, 28\)"):
        clf(torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got epochs=0"):
        fit_classifier(clf, torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), epochs=0)
    with pytest.raises(ValueError, match="same positive number of samples, got 2 and 3"):
        fit_classifier(clf, torch.zeros(2, 1, 28, 28), torch.zeros(3, dtype=torch.long))
