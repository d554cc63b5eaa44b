"""Phase I detectors: a local anomaly model that can travel to peers and score their data.

A detector is fitted on one client's unlabeled data, turned into a
:class:`~fedlightning.messages.Message` (what a peer receives), rebuilt from that message on
the receiving side, and asked which samples it considers inliers. Two detectors ship:
:class:`AutoencoderDetector` (seed 000's 5-layer convolutional autoencoder, thresholded at
the ``100 (1 - d)`` percentile of its training distances) and
:class:`~fedlightning.models.ocsvm.OneClassSVMDetector` (the prior work's OC-SVM).

References:
    M. Nardi, L. Valerio, A. Passarella, seed 000, Sec. 3.1.1 and Table 1.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from fedlightning.algorithms.base import load_tensors
from fedlightning.client import fit_local
from fedlightning.datamodules.loader import TensorLoader
from fedlightning.messages import Message
from fedlightning.models.autoencoders import ConvAutoencoder5, ReconstructionAutoencoder

__all__ = ["AutoencoderDetector", "Detector", "fit_autoencoder"]


@runtime_checkable
class Detector(Protocol):
    """What Phase I needs from a local anomaly model."""

    # ``fit`` and ``from_message`` are typed ``Any`` so that implementations may return
    # their own class and still match the protocol for jsonargparse (YAML configs).
    def fit(self, x: Tensor, seed: int = 0) -> Any:
        """Fit on one client's samples and return ``self``."""
        ...

    def inlier_mask(self, x: Tensor) -> Tensor:
        """Boolean tensor: True where a sample is classified as an inlier."""
        ...

    def to_message(self) -> Message:
        """The fitted model as sent to a peer."""
        ...

    def from_message(self, message: Message) -> Any:
        """A new detector rebuilt from a peer's message."""
        ...


def _reset_parameters(module: torch.nn.Module) -> None:
    for layer in module.modules():
        reset = getattr(layer, "reset_parameters", None)
        if callable(reset):
            reset()


def fit_autoencoder(
    prototype: ReconstructionAutoencoder,
    x: Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
) -> ReconstructionAutoencoder:
    """Train a fresh copy of ``prototype`` on ``x`` with freshly seeded weights.

    Args:
        prototype: The architecture to copy (its weights are not used).
        x: Training samples ``(N, C, H, W)``.
        epochs: Local epochs, >= 1.
        batch_size: Batch size, >= 1.
        seed: Seed of the initial weights and of the batch order.

    Returns:
        The trained copy.
    """
    module = copy.deepcopy(prototype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _reset_parameters(module)
        if module.channels_last:
            module.to(memory_format=torch.channels_last)
        loader = TensorLoader(x, torch.zeros(len(x)), batch_size, shuffle=True, seed=seed)
        fit_local(module, loader, epochs=epochs)
    module.eval()
    return module


class AutoencoderDetector:
    """An autoencoder that calls inliers the samples it reconstructs well enough.

    The threshold is the ``100 (1 - d)`` percentile of the training distances
    (``d = outlier_fraction``), as in the reference implementation; it travels with the
    weights (4 bytes) so a peer applies the sender's own threshold.

    Args:
        model: Architecture to train (default :class:`ConvAutoencoder5`, seed 000's Phase I
            model); it is copied per client and re-initialised from the fit seed.
        epochs: Local training epochs, >= 1.
        batch_size: Batch size, >= 1.
        outlier_fraction: ``d`` in [0, 1): share of training samples above the threshold.

    Raises:
        ValueError: On a setting outside the ranges above.

    References:
        Seed 000, Sec. 4 and Appendix A.1; NOTES on the reference implementation.
    """

    def __init__(
        self,
        model: ReconstructionAutoencoder | None = None,
        *,
        epochs: int = 10,
        batch_size: int = 32,
        outlier_fraction: float = 0.1,
    ) -> None:
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got epochs={epochs!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got batch_size={batch_size!r}")
        if not isinstance(outlier_fraction, (int, float)) or not 0 <= outlier_fraction < 1:
            raise ValueError(
                f"outlier_fraction must be in [0, 1), got outlier_fraction={outlier_fraction!r}"
            )
        self.prototype: ReconstructionAutoencoder = (
            model if model is not None else ConvAutoencoder5()
        )
        self.epochs = epochs
        self.batch_size = batch_size
        self.outlier_fraction = float(outlier_fraction)
        self.model: ReconstructionAutoencoder | None = None
        self.threshold: float = float("inf")

    def fit(self, x: Tensor, seed: int = 0) -> AutoencoderDetector:
        """Train on ``x`` and set the threshold from the training distances."""
        if len(x) < 1:
            raise ValueError("AutoencoderDetector.fit needs at least one sample, got 0")
        self.model = fit_autoencoder(
            self.prototype, x, epochs=self.epochs, batch_size=self.batch_size, seed=seed
        )
        distances = self.model.anomaly_score(x)
        threshold = torch.quantile(distances.double(), 1.0 - self.outlier_fraction)
        # Rounded to float32 here, as it travels, so sender and receivers apply the same value.
        self.threshold = float(threshold.to(torch.float32))
        return self

    def _fitted(self) -> ReconstructionAutoencoder:
        if self.model is None:
            raise RuntimeError("AutoencoderDetector is not fitted: call fit() first")
        return self.model

    def anomaly_score(self, x: Tensor) -> Tensor:
        """Reconstruction distance of each sample."""
        return self._fitted().anomaly_score(x)

    def inlier_mask(self, x: Tensor) -> Tensor:
        """True where the reconstruction distance is at most the threshold."""
        return self.anomaly_score(x) <= self.threshold

    def to_message(self) -> Message:
        """Weights (encoded as tensors) plus the threshold as a float32 extra."""
        model = self._fitted()
        return Message(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            extras={"threshold": torch.tensor([self.threshold], dtype=torch.float32)},
        )

    def from_message(self, message: Message) -> AutoencoderDetector:
        """Rebuild a peer's detector from its weights and threshold."""
        if "threshold" not in message.extras:
            raise ValueError("autoencoder detector message lacks its 'threshold'")
        other = AutoencoderDetector(
            self.prototype,
            epochs=self.epochs,
            batch_size=self.batch_size,
            outlier_fraction=self.outlier_fraction,
        )
        model = copy.deepcopy(self.prototype)
        load_tensors(model, message.decode())
        model.eval()
        other.model = model
        other.threshold = float(message.extras["threshold"][0])
        return other

    def __repr__(self) -> str:
        return (
            f"AutoencoderDetector(model={type(self.prototype).__name__}, epochs={self.epochs}, "
            f"batch_size={self.batch_size}, outlier_fraction={self.outlier_fraction})"
        )
