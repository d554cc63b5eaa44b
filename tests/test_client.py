"""Local training runs a LightningModule's own hooks, without a Lightning Trainer."""

from __future__ import annotations

import copy
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


# ---------------------------------------------------------------------- the Lightning contract
_CONTRACT_HOOKS = (
    "on_fit_start",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "training_step",
    "on_before_zero_grad",
    "optimizer_zero_grad",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "configure_gradient_clipping",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_train_end",
    "on_fit_end",
)


class Recording(BoringClassifier):
    """Records every contract hook (with batch_idx, global_step, current_epoch)."""

    def __init__(self, skip_from: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[Any, ...]] = []
        self.skip_from = skip_from

    def _record(self, name: str, *extra: Any) -> None:
        self.calls.append((name, self.global_step, self.current_epoch, *extra))

    def on_fit_start(self) -> None:
        self._record("on_fit_start")

    def on_train_start(self) -> None:
        self._record("on_train_start")

    def on_train_epoch_start(self) -> None:
        self._record("on_train_epoch_start")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        self._record("on_train_batch_start", batch_idx)
        if self.skip_from is not None and batch_idx >= self.skip_from:
            return -1
        return None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self._record("training_step", batch_idx)
        return super().training_step(batch, batch_idx)

    def on_before_zero_grad(self, optimizer: Any) -> None:
        self._record("on_before_zero_grad")

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        self._record("optimizer_zero_grad", epoch, batch_idx)
        super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def on_before_backward(self, loss: torch.Tensor) -> None:
        self._record("on_before_backward")

    def on_after_backward(self) -> None:
        self._record("on_after_backward")

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        self._record("on_before_optimizer_step")

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        self._record("configure_gradient_clipping", gradient_clip_val)
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._record("on_train_batch_end", batch_idx)

    def on_train_epoch_end(self) -> None:
        self._record("on_train_epoch_end")

    def on_train_end(self) -> None:
        self._record("on_train_end")

    def on_fit_end(self) -> None:
        self._record("on_fit_end")


def _lightning_fit(model: Any, x: torch.Tensor, y: torch.Tensor, **options: Any) -> Any:
    """The same local work under lightning.Trainer, for comparison."""
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader, TensorDataset

    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **options,
    )
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=10, shuffle=False))
    return trainer


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"gradient_clip_val": 0.05},
        {"gradient_clip_val": 0.01, "gradient_clip_algorithm": "value"},
        {"accumulate_grad_batches": 3},
    ],
    ids=["plain", "clip-norm", "clip-value", "accumulate-3"],
)
def test_local_fit_keeps_lightning_trainers_hooks_order_and_maths(options: dict[str, Any]) -> None:
    """Hook order, global_step, current_epoch and the weights equal lightning.Trainer's."""
    x, y = blobs(70)  # 7 batches: accumulation by 3 leaves a short last window
    torch.manual_seed(0)
    ours = Recording(lr=0.5, momentum=0.9)
    theirs = copy.deepcopy(ours)
    metrics = fit_local(ours, TensorLoader(x, y, batch_size=10), epochs=2, **options)
    trainer = _lightning_fit(theirs, x, y, max_epochs=2, **options)
    assert ours.calls == theirs.calls
    assert metrics["steps"] == trainer.global_step
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert ours.global_step == 0 and ours.current_epoch == 0  # detached after the run


def test_on_train_batch_start_minus_one_skips_the_rest_of_the_epoch_as_lightning() -> None:
    x, y = blobs(50)
    torch.manual_seed(0)
    ours = Recording(skip_from=3)
    theirs = copy.deepcopy(ours)
    metrics = fit_local(ours, TensorLoader(x, y, batch_size=10), epochs=2)
    trainer = _lightning_fit(theirs, x, y, max_epochs=2)
    assert ours.calls == theirs.calls
    assert metrics["steps"] == trainer.global_step == 6


def test_global_step_and_current_epoch_count_within_one_local_run() -> None:
    x, y = blobs(30)
    model = Recording()
    fit_local(model, TensorLoader(x, y, batch_size=10), epochs=2)
    fit_local(model, TensorLoader(x, y, batch_size=10), epochs=1)
    steps = [(c[1], c[2]) for c in model.calls if c[0] == "training_step"]
    assert steps == [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1), (0, 0), (1, 0), (2, 0)]


def test_lightning_trainer_options_are_checked() -> None:
    x, y = blobs(10)
    loader = TensorLoader(x, y, batch_size=5)
    with pytest.raises(ValueError, match="gradient_clip_val=-1"):
        fit_local(BoringClassifier(), loader, gradient_clip_val=-1)
    with pytest.raises(ValueError, match="gradient_clip_algorithm='max'"):
        fit_local(BoringClassifier(), loader, gradient_clip_algorithm="max")
    with pytest.raises(ValueError, match="accumulate_grad_batches=0"):
        fit_local(BoringClassifier(), loader, accumulate_grad_batches=0)


class AutocastProbe(BoringClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, torch.dtype, torch.dtype]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        out = self(x)
        self.seen.append((torch.is_autocast_enabled("cpu"), x.dtype, out.dtype))
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(
    "precision,autocast,input_dtype,param_dtype",
    [
        ("32-true", False, torch.float32, torch.float32),
        ("bf16-mixed", True, torch.bfloat16, torch.float32),
        ("64-true", False, torch.float64, torch.float64),
        ("bf16-true", False, torch.bfloat16, torch.bfloat16),
    ],
)
def test_precision_plugins_drive_the_local_run(
    precision: str, autocast: bool, input_dtype: torch.dtype, param_dtype: torch.dtype
) -> None:
    """Fabric's precision plugins: autocast for mixed, converted modules and inputs for true."""
    from fedlightning.accelerators import resolve_placement

    placement = resolve_placement("cpu", 1, precision)
    model = placement.place_module(AutocastProbe())
    assert isinstance(model, AutocastProbe)
    x, y = blobs(20)
    before = copy.deepcopy(model.state_dict())
    metrics = fit_local(model, TensorLoader(x, y, batch_size=10), epochs=1, placement=placement)
    assert metrics["steps"] == 2
    assert all(seen[0] == autocast and seen[1] == input_dtype for seen in model.seen)
    if autocast:
        assert all(seen[2] == torch.bfloat16 for seen in model.seen)
    assert all(p.dtype == param_dtype for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
