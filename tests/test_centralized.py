"""Tests of centralized training with per-epoch evaluation (fedlightning.centralized)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from fedlightning.centralized import fit_centralized
from fedlightning.checkpoint import load_checkpoint, save_checkpoint
from fedlightning.datamodules import TensorLoader
from fedlightning.demos import BoringClassifier, blobs
from fedlightning.environment import environment


class _AdamClassifier(BoringClassifier):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)


def test_one_optimizer_across_epochs_equals_a_plain_loop() -> None:
    x, y = blobs(n=96, seed=0)
    torch.manual_seed(0)
    model = _AdamClassifier(in_features=x.shape[1], num_classes=int(y.max()) + 1)
    twin = _AdamClassifier(in_features=x.shape[1], num_classes=int(y.max()) + 1)
    twin.load_state_dict(model.state_dict())
    loader = TensorLoader(x, y, batch_size=16, shuffle=True, seed=3)
    history = fit_centralized(model, loader, epochs=3, test_loader=[(x, y)])

    # The same computation by hand: one Adam for all epochs, the loader's epoch permutations.
    optimizer = torch.optim.Adam(twin.parameters(), lr=0.01)
    reference = TensorLoader(x, y, batch_size=16, shuffle=True, seed=3)
    for epoch in range(3):
        reference.set_epoch(epoch)
        for xb, yb in reference:
            loss = functional.cross_entropy(twin(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)

    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_loss"] < history[0]["test_loss"]
    assert history[-1]["wall_s"] >= history[0]["wall_s"] >= 0


def test_callbacks_and_loggers_receive_each_epoch() -> None:
    x, y = blobs(n=32, seed=1)
    model = BoringClassifier(in_features=x.shape[1], num_classes=int(y.max()) + 1)
    seen: list[int] = []

    class _Logger:
        def __init__(self) -> None:
            self.steps: list[int] = []

        def log_metrics(self, metrics: dict[str, float], step: int) -> None:
            self.steps.append(step)

    logger = _Logger()
    fit_centralized(
        model,
        [(x, y)],
        epochs=2,
        loggers=[logger],  # type: ignore[list-item]
        on_epoch_end=lambda e, h: seen.append(e),
    )
    assert seen == [1, 2] and logger.steps == [1, 2]


def test_bad_epochs() -> None:
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got epochs=0"):
        fit_centralized(BoringClassifier(), [], epochs=0)


class _NoisyScheduledClassifier(BoringClassifier):
    """Uses torch's generator in every step and an epoch scheduler: resume must restore both."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):  # type: ignore[override]
        x, y = batch
        return super().training_step((x + 0.5 * torch.randn_like(x), y), batch_idx)

    def configure_optimizers(self):  # type: ignore[override]
        optimizer = torch.optim.Adam(self.parameters(), lr=0.02)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def test_resume_from_a_checkpoint_gives_the_uninterrupted_run(tmp_path) -> None:
    x, y = blobs(n=96, seed=0)

    def fresh() -> _NoisyScheduledClassifier:
        torch.manual_seed(0)
        return _NoisyScheduledClassifier(in_features=x.shape[1], num_classes=int(y.max()) + 1)

    def loader() -> TensorLoader:
        return TensorLoader(x, y, batch_size=16, shuffle=True, seed=3)

    whole = fresh()
    expected = fit_centralized(whole, loader(), epochs=3, test_loader=[(x, y)], seed=5)

    ckpt = tmp_path / "centralized.ckpt"
    fit_centralized(fresh(), loader(), epochs=1, test_loader=[(x, y)], seed=5, checkpoint=ckpt)
    resumed = fresh()
    history = fit_centralized(
        resumed, loader(), epochs=3, test_loader=[(x, y)], seed=5, checkpoint=ckpt, resume=ckpt
    )
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in h.items() if k != "wall_s"} for h in history]
    assert strip == [{k: v for k, v in h.items() if k != "wall_s"} for h in expected]
    assert [h["wall_s"] for h in history] == sorted(h["wall_s"] for h in history)

    with pytest.raises(ValueError, match="holds 3 epochs, more than epochs=2"):
        fit_centralized(fresh(), loader(), epochs=2, resume=ckpt)


def test_a_checkpoint_records_its_environment_and_a_resume_elsewhere_warns(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    x, y = blobs(n=48, seed=0)
    torch.manual_seed(0)
    model = _AdamClassifier(in_features=x.shape[1], num_classes=int(y.max()) + 1)
    ckpt = tmp_path / "centralized.ckpt"
    fit_centralized(model, TensorLoader(x, y, batch_size=16), epochs=1, checkpoint=ckpt)
    state = load_checkpoint(ckpt)
    assert state["environment"] == environment()
    save_checkpoint(ckpt, state | {"environment": environment() | {"torch_threads": 97}})
    with caplog.at_level("WARNING", logger="fedlightning.checkpoint"):
        fit_centralized(model, TensorLoader(x, y, batch_size=16), epochs=2, resume=ckpt)
    assert "another environment" in caplog.text and "torch_threads: 97 -> " in caplog.text
