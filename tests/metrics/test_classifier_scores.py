"""Tests of classifier-based sample scores (fedlightning.metrics.classifier_scores)."""

from __future__ import annotations

import math

import pytest
import torch

from fedlightning.metrics import (
    classifier_probabilities,
    classifier_scores,
    score_from_probabilities,
)


def test_confident_and_diverse_images_score_the_number_of_classes() -> None:
    s = score_from_probabilities(torch.eye(5))
    assert s["sample_confidence"] == pytest.approx(1.0)
    assert s["classifier_score"] == pytest.approx(5.0)
    assert s["class_entropy"] == pytest.approx(math.log(5))


def test_uncertain_or_collapsed_images_score_one() -> None:
    uniform = score_from_probabilities(torch.full((6, 4), 0.25))
    assert uniform["sample_confidence"] == pytest.approx(0.25)
    assert uniform["classifier_score"] == pytest.approx(1.0)
    collapsed = score_from_probabilities(torch.tensor([[0.0, 1.0, 0.0]] * 7))
    assert collapsed["sample_confidence"] == pytest.approx(1.0)
    assert collapsed["classifier_score"] == pytest.approx(1.0)
    assert collapsed["class_entropy"] == pytest.approx(0.0, abs=1e-12)


def test_intermediate_case_by_hand_and_accuracy() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    marginal = torch.tensor([0.55, 0.45])
    kl = (probs * (probs.log() - marginal.log())).sum(1).mean()
    s = score_from_probabilities(probs, labels=torch.tensor([0, 0]))
    assert s["sample_confidence"] == pytest.approx(0.85)
    assert s["classifier_score"] == pytest.approx(float(kl.exp()), rel=1e-6)
    assert s["accuracy"] == pytest.approx(0.5)


def test_classifier_scores_batches_and_restores_mode() -> None:
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    linear.train()
    x = torch.randn(10, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    probs = classifier_probabilities(linear, x, batch_size=3)
    assert probs.shape == (10, 3) and linear.training
    torch.testing.assert_close(probs, torch.softmax(linear(x).double(), 1))
    labels = probs.argmax(1)
    assert classifier_scores(linear, x, labels=labels)["accuracy"] == 1.0


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"probs must have shape \(N, K\)"):
        score_from_probabilities(torch.zeros(3))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\), got \(3,\)"):
        score_from_probabilities(torch.eye(2), labels=torch.zeros(3))
    with pytest.raises(ValueError, match="images must hold at least one image"):
        classifier_probabilities(torch.nn.Identity(), torch.zeros(0, 2))
