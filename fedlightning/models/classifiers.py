"""Small convolutional classifiers sized for on-device training, as LightningModules.

Two architectures, one per input shape used in the papers the library reproduces:

* :class:`MNISTClassifier` for 1x28x28 grayscale images (MNIST, Fashion-MNIST);
* :class:`CIFARClassifier` for 3x32x32 colour images (CIFAR-10).

Both are plain LightningModules trained with SGD, so they work with any algorithm,
plain FedAvg included. ``training_step`` logs ``train_loss``; ``test_step`` (and
``validation_step``) log ``test_loss`` and ``test_acc`` (resp. ``val_loss``/``val_acc``).

Seed 003 (Fed-FSNet, section 4.1) uses "three simple model architectures that fit the
on-device training scenario" without giving their layers; the layers here are our choice:
two 5x5 convolutions with max pooling and two fully connected layers, LeNet-5 style
(LeCun et al., 1998), small enough that a federated round of 10 clients x 10 local epochs
runs in seconds on a CPU.

References:
    J. Guo, S. Guo, J. Zhang, Z. Liu, "Fed-FSNet: Mitigating Non-I.I.D. Federated Learning
    via Fuzzy Synthesizing Network", arXiv:2208.12044, 2022 (section 4.1).
    Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to
    document recognition", Proc. IEEE 86(11), 1998.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["CIFARClassifier", "ConvClassifier", "MNISTClassifier"]


def _check_settings(lr: float, num_classes: int) -> None:
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got lr={lr}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got num_classes={num_classes!r}")


class ConvClassifier(LightningModule):
    """Two conv + pool blocks and two linear layers, trained with SGD on cross-entropy.

    ``forward`` returns logits. Subclasses fix the input shape and layer widths.

    Args:
        in_channels: Channels of the input images.
        image_size: Height (= width) of the input images.
        channels: Output channels of the two 5x5 convolutions.
        hidden: Width of the hidden fully connected layer.
        lr: SGD learning rate.
        num_classes: Number of classes.
        momentum: SGD momentum (0: plain SGD, as in seed 003).

    Raises:
        ValueError: If a setting is out of range.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        channels: tuple[int, int],
        hidden: int,
        lr: float = 0.01,
        num_classes: int = 10,
        momentum: float = 0.0,
    ) -> None:
        super().__init__()
        _check_settings(lr, num_classes)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got momentum={momentum}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got image_size={image_size}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.num_classes = int(num_classes)
        self.input_shape = (int(in_channels), int(image_size), int(image_size))
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = ((image_size - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a batch of images of shape ``(N, *input_shape)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x must have shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        return self.classifier(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Cross-entropy of one batch ``(x, y)``; logs ``train_loss``."""
        x, y = batch[0], batch[1]
        loss = functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, batch_size=int(x.shape[0]))
        return loss

    def _evaluate(self, batch: Any, prefix: str) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = functional.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        n = int(x.shape[0])
        self.log(f"{prefix}_loss", loss, batch_size=n)
        self.log(f"{prefix}_acc", acc, batch_size=n)
        return {f"{prefix}_loss": loss, f"{prefix}_acc": acc}

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Logs ``test_loss`` and ``test_acc`` (fraction of correct predictions)."""
        return self._evaluate(batch, "test")

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Logs ``val_loss`` and ``val_acc``."""
        return self._evaluate(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD with the configured learning rate (and momentum, 0 by default)."""
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


class MNISTClassifier(ConvClassifier):
    """CNN for 1x28x28 grayscale images (MNIST, Fashion-MNIST); 19,670 parameters with 10 classes.

    Layers: Conv(1->6, 5x5) -> ReLU -> MaxPool(2) -> Conv(6->16, 5x5) -> ReLU ->
    MaxPool(2) -> Linear(256->64) -> ReLU -> Linear(64->num_classes).

    Args:
        lr: SGD learning rate (seed 003 uses 0.01).
        num_classes: Number of classes.

    Raises:
        ValueError: If ``lr <= 0`` or ``num_classes < 2``.

    Example:
        >>> model = MNISTClassifier(lr=0.01)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])

    References:
        Guo et al., Fed-FSNet, arXiv:2208.12044, 2022 (section 4).
    """

    def __init__(self, lr: float = 0.01, num_classes: int = 10) -> None:
        super().__init__(
            in_channels=1,
            image_size=28,
            channels=(6, 16),
            hidden=64,
            lr=lr,
            num_classes=num_classes,
        )
        self.save_hyperparameters()


class CIFARClassifier(ConvClassifier):
    """CNN for 3x32x32 colour images (CIFAR-10); 52,202 parameters with 10 classes.

    Layers: Conv(3->6, 5x5) -> ReLU -> MaxPool(2) -> Conv(6->16, 5x5) -> ReLU ->
    MaxPool(2) -> Linear(400->120) -> ReLU -> Linear(120->num_classes) (LeNet-5 widths).

    Args:
        lr: SGD learning rate (seed 003 uses 0.01).
        num_classes: Number of classes.

    Raises:
        ValueError: If ``lr <= 0`` or ``num_classes < 2``.

    Example:
        >>> model = CIFARClassifier()
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])

    References:
        Guo et al., Fed-FSNet, arXiv:2208.12044, 2022 (section 4).
    """

    def __init__(self, lr: float = 0.01, num_classes: int = 10) -> None:
        super().__init__(
            in_channels=3,
            image_size=32,
            channels=(6, 16),
            hidden=120,
            lr=lr,
            num_classes=num_classes,
        )
        self.save_hyperparameters()
