"""Local training runs a LightningModule's own hooks, without a Lightning Trainer."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedlightning.client import fit_local, parse_optimizers
from fedlightning.datamodules import TensorLoader
from fedlightning.demos import BoringClassifier, blobs


class WithScheduler(BoringClassifier):
    def __init__(self, form: str, interval: str = "epoch") -> None:
        super().__init__(lr=1.0)
        self.form, self.interval = form, interval

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        if self.form == "tuple":
            return [opt], [sched]
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self.interval}}


@pytest.mark.parametrize(
    "form,interval,expected_lr", [("tuple", "epoch", 0.125), ("dict", "step", 0.5**9)]
)
def test_schedulers_step_per_epoch_or_per_step(
    form: str, interval: str, expected_lr: float
) -> None:
    x, y = blobs(30)
    model = WithScheduler(form, interval)
    seen: list[float] = []
    original = model.configure_optimizers

    def capture() -> Any:
        out = original()
        seen.append(out)
        return out

    model.configure_optimizers = capture  # type: ignore[method-assign]
    fit_local(model, TensorLoader(x, y, batch_size=10), epochs=3)
    setup = parse_optimizers(seen[0])
    assert setup.optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr)


def test_self_log_is_captured_and_averaged() -> None:
    x, y = blobs(40)
    metrics = fit_local(BoringClassifier(), TensorLoader(x, y, batch_size=10), epochs=2)
    assert metrics["steps"] == 8
    assert metrics["train_loss"] == pytest.approx(metrics["loss"])


def test_local_steps_bound_the_work() -> None:
    x, y = blobs(100)
    metrics = fit_local(BoringClassifier(), TensorLoader(x, y, batch_size=10), epochs=None, steps=3)
    assert metrics["steps"] == 3


def test_multiple_optimizers_are_rejected() -> None:
    class Two(BoringClassifier):
        def configure_optimizers(self) -> Any:
            return [torch.optim.SGD(self.parameters(), lr=0.1)] * 2, []

    x, y = blobs(10)
    with pytest.raises(ValueError, match="one optimizer"):
        fit_local(Two(), TensorLoader(x, y, batch_size=5))


def test_manual_optimization_is_rejected() -> None:
    model = BoringClassifier()
    model.automatic_optimization = False
    x, y = blobs(10)
    with pytest.raises(ValueError, match="manual optimization"):
        fit_local(model, TensorLoader(x, y, batch_size=5))
