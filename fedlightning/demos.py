"""Tiny modules and data for tests, docs and users' own tests (like Lightning's demos).

They run in milliseconds and need no dataset on disk.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from fedlightning.datamodules import IID, FederatedDataModule, Partitioner

__all__ = ["BoringClassifier", "blobs", "demo_datamodule"]


class BoringClassifier(LightningModule):
    """A two-layer MLP classifier with optional BatchNorm, trained with SGD.

    Args:
        in_features: Input features (inputs are flattened).
        num_classes: Number of classes.
        hidden: Hidden width.
        lr: SGD learning rate.
        batchnorm: Put a BatchNorm1d after the hidden layer.
        momentum: SGD momentum.
    """

    def __init__(
        self,
        in_features: int = 16,
        num_classes: int = 3,
        hidden: int = 32,
        lr: float = 0.1,
        batchnorm: bool = False,
        momentum: float = 0.0,
    ) -> None:
        super().__init__()
        self.lr = lr
        self.momentum = momentum
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(in_features, hidden)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(), nn.Linear(hidden, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Cross-entropy; logs ``train_loss``."""
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Logs ``test_loss``."""
        x, y = batch
        self.log("test_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD."""
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


def blobs(
    n: int = 600, in_features: int = 16, num_classes: int = 3, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Gaussian blobs around one random centre per class: easy to learn, fast to train."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, in_features, generator=g) * 2.0
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, in_features, generator=g)
    return x, y


def demo_datamodule(
    num_clients: int = 6,
    n: int = 600,
    partition: Partitioner | None = None,
    batch_size: int = 20,
    seed: int = 0,
) -> FederatedDataModule:
    """A federated datamodule over :func:`blobs` (train and test drawn independently)."""
    n_test = max(60, n // 5)
    x, y = blobs(n + n_test, seed=seed)
    return FederatedDataModule(
        (x[:n], y[:n]),
        test=(x[n:], y[n:]),
        partition=partition if partition is not None else IID(num_clients=num_clients),
        batch_size=batch_size,
        seed=seed,
    )
