"""The vectorized executor gives the sequential executor's global model, or falls back."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from fedlightning.algorithms import FedAvg, FedProx
from fedlightning.algorithms.base import ClientContext
from fedlightning.demos import BoringClassifier
from fedlightning.executors import resolve_executor
from fedlightning.executors.vectorized import VectorizedExecutor, vectorizable
from fedlightning.models.autoencoders import ConvAutoencoder5, FlatAutoencoder
from tests.executors.conftest import fit, image_datamodule, max_abs_diff, relative_diff

# Batched kernels sum in a different order than per-client ones: float32 round-off only.
ATOL = 1e-5
# The same, relative to how far training moved the weights (see ``relative_diff``).
RTOL = 1e-3


def _pair(make: Any, algorithm: Any, **kwargs: Any) -> tuple[Any, Any, VectorizedExecutor]:
    torch.manual_seed(0)
    seq_model = make()
    torch.manual_seed(0)
    vec_model = make()
    seq = fit(seq_model, image_datamodule(), "sequential", algorithm(), **kwargs)
    executor = VectorizedExecutor()
    vec = fit(vec_model, image_datamodule(), executor, algorithm(), **kwargs)
    return (seq_model, seq), (vec_model, vec), executor


MODELS = {
    "mlp_sgd_momentum": lambda: BoringClassifier(in_features=64, momentum=0.9),
    "conv_autoencoder_adam": lambda: ConvAutoencoder5(lr=1e-2),
    "flat_autoencoder_adam": lambda: FlatAutoencoder(input_shape=(1, 8, 8), hidden=(16, 8, 16)),
}


@pytest.mark.parametrize("algorithm", [FedAvg, lambda: FedProx(mu=0.5)], ids=["fedavg", "fedprox"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_same_global_model_as_sequential(model: str, algorithm: Any) -> None:
    (seq_model, seq), (vec_model, vec), executor = _pair(MODELS[model], algorithm)
    assert executor.fallbacks == []
    assert len(executor.seconds) == 2
    torch.manual_seed(0)
    start = MODELS[model]()
    # Adam with FedProx can park a weight where the loss and proximal gradients cancel; there
    # round-off decides the sign of Adam's step, so one weight may differ by up to ``lr``
    # (3.4e-5 for one of 1,152 in the conv autoencoder on AVX-512, 2.7e-4 of the distance
    # moved). The whole state must agree; a wrong step or optimizer state moves every weight.
    assert relative_diff(seq_model, vec_model, start) < RTOL
    # The untrained model is far away: the comparison is not vacuous.
    assert max_abs_diff(seq_model, start) > 100 * ATOL
    for a, b in zip(seq.history, vec.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["bytes_up"] == b["bytes_up"]


def test_fedprox_term_is_applied_inside_the_vmapped_loss() -> None:
    (_, _), (prox_model, _), _ = _pair(MODELS["mlp_sgd_momentum"], lambda: FedProx(mu=5.0))
    (_, _), (avg_model, _), _ = _pair(MODELS["mlp_sgd_momentum"], FedAvg)
    assert max_abs_diff(prox_model, avg_model) > 1e-3


def test_local_steps_and_eval_local() -> None:
    (seq_model, seq), (vec_model, vec), executor = _pair(
        MODELS["mlp_sgd_momentum"], FedAvg, local_epochs=None, local_steps=3, eval_local=True
    )
    assert executor.fallbacks == []
    assert max_abs_diff(seq_model, vec_model) < ATOL
    assert vec.history[-1]["acc_local"] == pytest.approx(seq.history[-1]["acc_local"], abs=1e-6)


def test_registered_by_name() -> None:
    assert isinstance(resolve_executor("vectorized"), VectorizedExecutor)


class _DataDependent(BoringClassifier):
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        if logits.mean() > 0:  # data-dependent Python control flow
            logits = logits * 2
        return F.cross_entropy(logits, y)


class _WithDropout(BoringClassifier):
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(F.dropout(self(x), 0.5, training=True), y)


class _RMSprop(BoringClassifier):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(self.parameters(), lr=0.01)


class _Scheduled(BoringClassifier):
    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)]


class _L1(FedAvg):
    def training_loss(
        self, ctx: ClientContext, module: LightningModule, batch: Any, loss: Tensor
    ) -> Tensor:
        return loss + 1e-2 * sum(p.abs().sum() for p in module.parameters())


@pytest.mark.parametrize(
    "make, algorithm, reason",
    [
        (lambda: BoringClassifier(in_features=64, batchnorm=True), FedAvg, "BatchNorm1d"),
        (lambda: _DataDependent(in_features=64), FedAvg, "vmap"),
        (lambda: _WithDropout(in_features=64), FedAvg, "vmap"),
        (lambda: _RMSprop(in_features=64), FedAvg, "RMSprop"),
        (lambda: _Scheduled(in_features=64), FedAvg, "scheduler"),
        (lambda: BoringClassifier(in_features=64), _L1, "training_loss is overridden"),
    ],
    ids=["batchnorm", "control_flow", "dropout", "rmsprop", "scheduler", "custom_loss"],
)
def test_falls_back_with_a_logged_reason(
    make: Any, algorithm: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedlightning.executors.vectorized"):
        (seq_model, _), (vec_model, _), executor = _pair(make, algorithm, rounds=2)
    assert [r for r, _ in executor.fallbacks] == [1, 2]
    assert all(reason in text for _, text in executor.fallbacks)
    assert reason in caplog.text
    assert caplog.text.count("runs sequentially") == 1  # one warning per distinct reason
    # The fallback is the sequential executor itself: bit-exact.
    assert max_abs_diff(seq_model, vec_model) == 0.0


def test_declared_safe_loss_hook_is_vectorized() -> None:
    torch.manual_seed(0)
    seq_model = BoringClassifier(in_features=64)
    torch.manual_seed(0)
    vec_model = BoringClassifier(in_features=64)
    fit(seq_model, image_datamodule(), "sequential", _L1())
    executor = VectorizedExecutor(vmap_losses=[_L1])
    fit(vec_model, image_datamodule(), executor, _L1())
    assert executor.fallbacks == []
    assert max_abs_diff(seq_model, vec_model) < ATOL


def test_failing_client_is_dropped_as_sequential_would() -> None:
    class Failing(type(image_datamodule())):  # type: ignore[misc]
        def train_loader(self, cid: int, seed: int = 0) -> Any:
            if cid == self.bad:
                raise RuntimeError("disk on fire")
            return super().train_loader(cid, seed)

    dm = image_datamodule()
    dm.__class__ = Failing
    dm.bad = 0  # type: ignore[attr-defined]
    torch.manual_seed(0)
    executor = VectorizedExecutor()
    trainer = fit(BoringClassifier(in_features=64), dm, executor, FedAvg(), clients_per_round=6)
    assert [d["client"] for d in trainer.drops] == [0, 0]
    assert "disk on fire" in executor.fallbacks[0][1]


def test_static_check_and_bad_input() -> None:
    assert vectorizable(BoringClassifier(), FedProx(mu=0.1)) is None
    assert "BatchNorm" in str(vectorizable(BoringClassifier(batchnorm=True), FedAvg()))
    with pytest.raises(ValueError, match="vmap_losses must hold Algorithm subclasses"):
        VectorizedExecutor(vmap_losses=[nn.Linear])  # type: ignore[list-item]


class _DropoutLayer(BoringClassifier):
    def __init__(self) -> None:
        super().__init__(in_features=64)
        self.net.insert(2, nn.Dropout(0.5))


def test_module_left_in_eval_mode_still_trains_in_training_mode() -> None:
    """Dropout as a layer: the batched step runs in training mode, so vmap refuses it."""
    torch.manual_seed(0)
    model = _DropoutLayer()
    model.eval()
    executor = VectorizedExecutor()
    fit(model, image_datamodule(), executor, FedAvg(), rounds=1)
    assert executor.fallbacks and "vmap" in executor.fallbacks[0][1]


def test_persisted_client_state_matches_sequential() -> None:
    (seq_model, seq), (vec_model, vec), executor = _pair(
        lambda: FlatAutoencoder(input_shape=(1, 8, 8), hidden=(16, 8, 16)),
        lambda: FedAvg(local_bn=True),
        rounds=3,
    )
    assert executor.fallbacks == []
    assert max_abs_diff(seq_model, vec_model) < ATOL
    assert seq.client_states.keys() == vec.client_states.keys() != set()
