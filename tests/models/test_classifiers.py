"""Tests of the small CNN classifiers (fedlightning.models.classifiers)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from fedlightning.client import fit_local
from fedlightning.evaluation import evaluate
from fedlightning.models import CIFARClassifier, MNISTClassifier
from fedlightning.models.classifiers import ConvClassifier

CASES = [(MNISTClassifier, (1, 28, 28), 19_670), (CIFARClassifier, (3, 32, 32), 52_202)]


def _separable(shape: tuple[int, ...], n: int = 120, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Images whose class is the brightness of one of 4 quadrants: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.1 * torch.rand((n, *shape), generator=g)
    h, w = shape[1] // 2, shape[2] // 2
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, r * h : (r + 1) * h, c * w : (c + 1) * w] += 0.9
    return x, y


def _batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, ...]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


@pytest.mark.parametrize(("cls", "shape", "params"), CASES)
def test_shapes_and_parameter_count(
    cls: type[ConvClassifier], shape: tuple[int, ...], params: int
) -> None:
    model = cls(num_classes=7)
    assert model(torch.rand(3, *shape)).shape == (3, 7)
    assert sum(p.numel() for p in cls().parameters()) == params


@pytest.mark.parametrize(("cls", "shape", "params"), CASES)
def test_wrong_input_shape_is_rejected(
    cls: type[ConvClassifier], shape: tuple[int, ...], params: int
) -> None:
    wrong = (shape[0] + 1, *shape[1:])
    with pytest.raises(ValueError, match="x must have shape"):
        cls()(torch.rand(2, *wrong))


@pytest.mark.parametrize("cls", [MNISTClassifier, CIFARClassifier])
def test_bad_settings_are_rejected(cls: type[ConvClassifier]) -> None:
    with pytest.raises(ValueError, match="lr must be > 0, got lr=0"):
        cls(lr=0)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2, got num_classes=1"):
        cls(num_classes=1)


def test_optimizer_is_plain_sgd_with_configured_lr() -> None:
    model = MNISTClassifier(lr=0.05)
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["lr"] == 0.05
    assert opt.param_groups[0]["momentum"] == 0.0
    assert model.hparams["lr"] == 0.05


def test_test_step_logs_loss_and_accuracy_that_match_a_manual_computation() -> None:
    torch.manual_seed(0)
    model = MNISTClassifier()
    x, y = torch.rand(50, 1, 28, 28), torch.randint(0, 10, (50,))
    results = evaluate(model, _batches(x, y, 20))
    with torch.no_grad():
        logits = model(x)
    assert results["test_acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert results["test_loss"] == pytest.approx(
        functional.cross_entropy(logits, y).item(), rel=1e-5
    )


@pytest.mark.parametrize(("cls", "shape", "params"), CASES)
def test_local_training_logs_train_loss_and_learns(
    cls: type[ConvClassifier], shape: tuple[int, ...], params: int
) -> None:
    torch.manual_seed(0)
    model = cls(lr=0.1, num_classes=4)
    x, y = _separable(shape)
    before = evaluate(model, _batches(x, y, 60))["test_acc"]
    metrics = fit_local(model, _batches(x, y, 20), epochs=15)
    after = evaluate(model, _batches(x, y, 60))
    assert "train_loss" in metrics
    assert metrics["steps"] == 15 * 6
    assert after["test_acc"] >= 0.9 > before
