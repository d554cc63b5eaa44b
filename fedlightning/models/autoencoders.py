"""The autoencoders of seed 000 as LightningModules, each with a reconstruction anomaly score.

* :class:`ConvAutoencoder5`: the 5-layer convolutional autoencoder of Appendix A.1, the
  Phase I model of this work (3,217 parameters; the paper rounds it to "about 4,000").
* :class:`ConvAutoencoder7`: the 7-layer convolutional autoencoder of Appendix A.2, the
  Phase II model of this work (28,353 parameters).
* :class:`FlatAutoencoder`: the prior work's fully connected autoencoder ``[64, 32, 64]``
  (105,392 parameters for 28 x 28 inputs).

All three train on the mean squared reconstruction error with Adam (lr 1e-3) and score a
sample by the Euclidean distance between it and its reconstruction (outliers score high).
Convolutions use ``same`` padding, the only choice under which Appendix A's layer lists map
28 x 28 inputs back to 28 x 28.

References:
    M. Nardi, L. Valerio, A. Passarella, "Communication Costs Analysis of Unsupervised
    Federated Learning: an Anomaly Detection Scenario", Ital-IA 2023 (seed 000), Table 1 and
    Appendix A; M. Nardi et al., "Anomaly detection through unsupervised federated
    learning", arXiv:2209.04184 (the prior work's flat autoencoder).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from fedlightning.models.follow import to_module

__all__ = [
    "ConvAutoencoder5",
    "ConvAutoencoder7",
    "FlatAutoencoder",
    "ReconstructionAutoencoder",
    "reconstruction_distance",
]


def reconstruction_distance(x: Tensor, reconstruction: Tensor) -> Tensor:
    """Euclidean distance between each sample and its reconstruction.

    Args:
        x: Inputs of shape ``(N, ...)``.
        reconstruction: Reconstructions of the same shape.

    Returns:
        Distances of shape ``(N,)``.

    Raises:
        ValueError: If the shapes differ.
    """
    if x.shape != reconstruction.shape:
        raise ValueError(
            f"reconstruction shape {tuple(reconstruction.shape)} must equal input shape "
            f"{tuple(x.shape)}"
        )
    return (x - reconstruction).flatten(1).norm(dim=1)


def _images(batch: Any) -> Tensor:
    """The inputs of a batch: a tensor, or the first element of an ``(x, y)`` pair."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise ValueError(f"batch must be a tensor or an (x, y) pair, got {type(batch).__name__}")


class ReconstructionAutoencoder(LightningModule):
    """Base class: an autoencoder ``net`` trained on reconstruction error, scored by distance.

    Subclasses build ``self.net`` (input shape in, same shape out). The module logs
    ``train_loss`` during training and ``val_loss`` / ``test_loss`` when evaluated.

    Args:
        lr: Adam learning rate (seed 000's reference: 1e-3).
        channels_last: Run convolutions in channels-last memory format, which is about 1.6x
            faster on CPU for these small-channel networks; the maths is unchanged.

    Raises:
        ValueError: If ``lr`` is not positive.
    """

    net: nn.Module

    def __init__(self, *, lr: float = 1e-3, channels_last: bool = False) -> None:
        super().__init__()
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got lr={lr}")
        self.lr = float(lr)
        self.channels_last = bool(channels_last)

    def _finish_init(self) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct ``x`` (shape ``(N, C, H, W)``)."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out: Tensor = self.net(x)
        return out

    @torch.no_grad()
    def anomaly_score(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """Euclidean distance between each sample and its reconstruction (higher = outlier).

        Args:
            x: Inputs of shape ``(N, C, H, W)``, moved to the model's device and floating
                dtype (a community model of a float64 or GPU run scores CPU data).
            batch_size: Samples per forward pass.

        Returns:
            Scores of shape ``(N,)``, on the CPU, in the model's floating dtype.
        """
        was_training = self.training
        self.eval()
        scores = [
            reconstruction_distance(chunk, self(chunk)).cpu()
            for chunk in to_module(x, self).split(batch_size)
        ]
        self.train(was_training)
        return torch.cat(scores) if scores else torch.empty(0)

    def _loss(self, batch: Any) -> Tensor:
        x = _images(batch)
        return nn.functional.mse_loss(self(x), x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Mean squared reconstruction error of one batch."""
        loss = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Log ``val_loss``."""
        loss = self._loss(batch)
        self.log("val_loss", loss)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Log ``test_loss``."""
        loss = self._loss(batch)
        self.log("test_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with the module's learning rate."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters())


def _check_channels(in_channels: int) -> None:
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be an int >= 1, got in_channels={in_channels!r}")


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    """A 3x3 transposed convolution with stride 2 that doubles height and width ("same")."""
    return nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)


class ConvAutoencoder5(ReconstructionAutoencoder):
    """Seed 000's 5-layer convolutional autoencoder (Appendix A.1), 3,217 parameters.

    ``C2D(16,3,2,R) -> C2D(8,3,2,R) -> C2DT(8,3,2,R) -> C2DT(16,3,2,R) -> C2D(1,3,S)``:
    28 x 28 -> 14 x 14 -> 7 x 7 -> 14 x 14 -> 28 x 28. Input sides must be multiples of 4.

    Args:
        in_channels: Image channels (1 for Fashion-MNIST).
        lr: Adam learning rate.
        channels_last: See :class:`ReconstructionAutoencoder`.

    Example:
        >>> ConvAutoencoder5().num_parameters
        3217

    References:
        Nardi et al., Ital-IA 2023 (seed 000), Appendix A.1; the Phase I model.
    """

    def __init__(
        self, in_channels: int = 1, *, lr: float = 1e-3, channels_last: bool = False
    ) -> None:
        super().__init__(lr=lr, channels_last=channels_last)
        _check_channels(in_channels)
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            _up(8, 8),
            nn.ReLU(),
            _up(8, 16),
            nn.ReLU(),
            nn.Conv2d(16, in_channels, 3, padding=1),
            nn.Sigmoid(),
        )
        self._finish_init()


class ConvAutoencoder7(ReconstructionAutoencoder):
    """Seed 000's 7-layer convolutional autoencoder (Appendix A.2), 28,353 parameters.

    ``C2D(32,3,R) -> MP2D(2) -> C2D(32,3,R) -> MP2D(2) -> C2DT(32,3,2,R) -> C2DT(32,3,2,R)
    -> C2D(1,3,S)``. Input sides must be multiples of 4.

    Args:
        in_channels: Image channels (1 for Fashion-MNIST).
        lr: Adam learning rate.
        channels_last: See :class:`ReconstructionAutoencoder`.

    Example:
        >>> ConvAutoencoder7().num_parameters
        28353

    References:
        Nardi et al., Ital-IA 2023 (seed 000), Appendix A.2; the Phase II model.
    """

    def __init__(
        self, in_channels: int = 1, *, lr: float = 1e-3, channels_last: bool = False
    ) -> None:
        super().__init__(lr=lr, channels_last=channels_last)
        _check_channels(in_channels)
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            _up(32, 32),
            nn.ReLU(),
            _up(32, 32),
            nn.ReLU(),
            nn.Conv2d(32, in_channels, 3, padding=1),
            nn.Sigmoid(),
        )
        self._finish_init()


class FlatAutoencoder(ReconstructionAutoencoder):
    """The prior work's fully connected autoencoder, hidden layers ``[64, 32, 64]``.

    ``Linear(D, 64, R) -> Linear(64, 32, R) -> Linear(32, 64, R) -> Linear(64, D, S)`` on the
    flattened image (D = 784 for 28 x 28: 105,392 parameters); the output keeps the input's
    shape.

    Args:
        input_shape: Shape of one sample, e.g. ``(1, 28, 28)``.
        hidden: Widths of the hidden layers.
        lr: Adam learning rate.

    Example:
        >>> FlatAutoencoder().num_parameters
        105392

    References:
        Nardi et al., arXiv:2209.04184 (the prior work), as listed in seed 000's Table 1.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (64, 32, 64),
        *,
        lr: float = 1e-3,
    ) -> None:
        super().__init__(lr=lr, channels_last=False)
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"input_shape must be positive sizes, got input_shape={input_shape}")
        widths = [int(h) for h in hidden]
        if not widths or any(h < 1 for h in widths):
            raise ValueError(f"hidden must be positive widths, got hidden={list(hidden)}")
        self.save_hyperparameters()
        self.input_shape = shape
        dims = [math.prod(shape), *widths, math.prod(shape)]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(a, b))
            layers.append(nn.Sigmoid() if i == len(dims) - 2 else nn.ReLU())
        layers.append(nn.Unflatten(1, shape))
        self.net = nn.Sequential(*layers)
