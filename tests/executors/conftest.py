"""Small federated workloads shared by the executor tests."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from fedlightning import FederatedTrainer
from fedlightning.algorithms import Algorithm
from fedlightning.datamodules import Dirichlet, FederatedDataModule
from fedlightning.executors import Executor


def image_datamodule(
    num_clients: int = 6, n: int = 240, side: int = 8, batch_size: int = 16, seed: int = 0
) -> FederatedDataModule:
    """Images in [0, 1] split unevenly (Dirichlet), so clients differ in size and last batch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n + 40, 1, side, side, generator=g)
    y = torch.randint(0, 3, (n + 40,), generator=g)
    return FederatedDataModule(
        (x[:n], y[:n]),
        test=(x[n:], y[n:]),
        partition=Dirichlet(num_clients=num_clients, alpha=1.0, min_size=10),
        batch_size=batch_size,
        seed=seed,
    )


def fit(
    model: LightningModule,
    datamodule: Any,
    executor: str | Executor,
    algorithm: Algorithm,
    *,
    rounds: int = 2,
    clients_per_round: int = 4,
    local_epochs: int = 2,
    **kwargs: Any,
) -> FederatedTrainer:
    """Train ``model`` in place and return the trainer."""
    trainer = FederatedTrainer(
        algorithm=algorithm,
        rounds=rounds,
        clients_per_round=clients_per_round,
        local_epochs=local_epochs,
        seed=3,
        executor=executor,
        progress_bar=False,
        **kwargs,
    )
    trainer.fit(model, datamodule)
    return trainer


def max_abs_diff(a: LightningModule, b: LightningModule) -> float:
    """Largest absolute difference between two modules' states."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


def relative_diff(a: LightningModule, b: LightningModule, start: LightningModule) -> float:
    """Distance between two trained modules over the distance ``a`` moved from ``start``.

    All floating-point state is taken as one vector (L2 norms). Unlike ``max_abs_diff`` it is
    not set off by one weight whose gradient is near zero, where Adam's ``m / sqrt(v)`` scales
    float32 round-off up to a step of size ``lr``; a wrong update moves every weight.
    """
    sa, sb, s0 = a.state_dict(), b.state_dict(), start.state_dict()
    assert sa.keys() == sb.keys() == s0.keys()
    keys = [k for k in sa if sa[k].is_floating_point()]
    diff = torch.cat([(sa[k] - sb[k]).flatten() for k in keys]).norm()
    moved = torch.cat([(sa[k] - s0[k]).flatten() for k in keys]).norm()
    return float(diff / moved)
