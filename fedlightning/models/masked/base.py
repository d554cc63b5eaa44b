"""The base of FedMorph's soft-masked classifiers: mask groups, layer specs, local training.

A :class:`MaskedClassifier` is a LightningModule whose channels are organised in *mask
groups*: every group is one vector of soft masks (eq. 6) applied to the output channels of
the layers that share it (a residual block's output and its skip path share one, appendix
A). Each convolution or linear layer is described by a :class:`LayerSpec` naming the groups
of its input and output channels, which is all that morphing (cutting a smaller network out
of the masked one, :mod:`fedlightning.models.masked.morph`) and the relaxed size regularizer
need. The same class with ``masked=False`` and smaller ``widths`` is the plain sub-network
that clients train.

References:
    Z. Wang et al., "FedMorph: Communication Efficient Federated Learning via Morphing
    Neural Network" (seed 004), sections 4.1-4.2 and appendix A.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.nn import functional as F

from fedlightning.models.masked.functional import (
    logistic_noise,
    relaxed_mask,
    straight_through_mask,
)

__all__ = ["LayerSpec", "MaskedClassifier"]


@dataclass(frozen=True)
class LayerSpec:
    """A convolution or linear layer, and the mask groups of its channels.

    Attributes:
        name: Module path of the layer, e.g. ``"blocks.0.conv1"``.
        in_group: Mask group of its input channels, ``None`` for a fixed dimension (the
            image channels).
        out_group: Mask group of its output channels, ``None`` for the unmasked classifier.
        in_channels: Input channels in this instance.
        out_channels: Output channels in this instance.
        kernel: Number of kernel positions (``k * k``; 1 for a linear layer).
        out_pixels: Output positions per sample (``H_out * W_out``; 1 for a linear layer).
        bias: Whether the layer has a bias.
        bn: Module path of the BatchNorm that follows it, if any.
    """

    name: str
    in_group: str | None
    out_group: str | None
    in_channels: int
    out_channels: int
    kernel: int
    out_pixels: int
    bias: bool
    bn: str | None


class MaskedClassifier(LightningModule, ABC):
    """Base class of the soft-masked ResNet and VGG classifiers of seed 004.

    Subclasses implement :meth:`default_widths`, :meth:`build` (create the layers with the
    widths in ``self.widths`` and append a :class:`LayerSpec` per layer) and
    :meth:`forward_masked`. Training is cross-entropy with SGD (momentum, weight decay) as in
    the paper's appendix B.2.

    Args:
        in_channels: Image channels (1 for 28 x 28 x 1 inputs, 3 for 32 x 32 x 3).
        image_size: Image height (= width), e.g. 28 or 32.
        num_classes: Classes of the final, unmasked, linear layer.
        masked: Whether the network carries soft masks (the server's network) or not (a
            plain network, e.g. a morphed sub-network or the FedAvg baseline).
        widths: Channels of every mask group (default: the architecture's full widths).
        tau: Temperature of eq. (6) (paper: 1e-3).
        mask_init_mean: Mean of the logistic distribution the mask logits ``v`` start from.
        mask_init_scale: Scale of that distribution, >= 0.
        lr: Local SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (not applied to mask logits).
        seed: Seed of the mask logits' initialisation.

    Raises:
        ValueError: For a setting outside what is allowed; the message names it.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        num_classes: int,
        masked: bool,
        widths: Mapping[str, int] | None,
        tau: float,
        mask_init_mean: float,
        mask_init_scale: float,
        lr: float,
        momentum: float,
        weight_decay: float,
        seed: int,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("image_size", image_size, 8),
            ("num_classes", num_classes, 2),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got tau={tau!r}")
        if not mask_init_scale >= 0:
            raise ValueError(
                f"mask_init_scale must be >= 0, got mask_init_scale={mask_init_scale!r}"
            )
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got lr={lr!r}")
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "image_size": image_size,
            "num_classes": num_classes,
            "tau": float(tau),
            "mask_init_mean": float(mask_init_mean),
            "mask_init_scale": float(mask_init_scale),
            "lr": float(lr),
            "momentum": float(momentum),
            "weight_decay": float(weight_decay),
            "seed": int(seed),
        }
        self.save_hyperparameters({**self.config, "masked": masked, "widths": widths})
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.masked = bool(masked)
        self.tau = float(tau)
        self.full_widths: dict[str, int] = self.default_widths()
        self.widths: dict[str, int] = self._check_widths(widths)
        self.specs: list[LayerSpec] = []
        self.noise_generator: torch.Generator | None = None
        #: Masks in training mode: ``"noisy"`` (eq. 6), ``"straight_through"`` or
        #: ``"deterministic"``; in evaluation mode they are always deterministic.
        self.train_masks = "noisy"
        self.build()
        self.mask_logits = nn.ParameterDict()
        if self.masked:
            gen = torch.Generator().manual_seed(int(seed))
            for group, width in self.widths.items():
                v = mask_init_mean + mask_init_scale * logistic_noise((width,), generator=gen)
                self.mask_logits[group] = nn.Parameter(v)

    # ------------------------------------------------------------------ architecture
    @abstractmethod
    def default_widths(self) -> dict[str, int]:
        """Channels of every mask group in the full architecture (the paper's tables)."""

    @abstractmethod
    def build(self) -> None:
        """Create the layers with ``self.widths`` and append their specs to ``self.specs``."""

    @abstractmethod
    def forward_masked(self, x: Tensor, masks: Mapping[str, Tensor] | None) -> Tensor:
        """Forward pass; ``masks`` maps each group to ``(1 or N, C)`` mask values, or None."""

    def _check_widths(self, widths: Mapping[str, int] | None) -> dict[str, int]:
        if widths is None:
            return dict(self.full_widths)
        unknown = sorted(set(widths) - set(self.full_widths))
        missing = sorted(set(self.full_widths) - set(widths))
        if unknown or missing:
            raise ValueError(
                f"widths must name exactly the mask groups {sorted(self.full_widths)}, got "
                f"unknown {unknown} and missing {missing}"
            )
        out: dict[str, int] = {}
        for group, full in self.full_widths.items():
            width = widths[group]
            if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= full:
                raise ValueError(
                    f"widths[{group!r}] must be an integer in [1, {full}], got {width!r}"
                )
            out[group] = width
        return out

    def with_widths(self, widths: Mapping[str, int], *, masked: bool = False) -> MaskedClassifier:
        """A new network of the same architecture and settings with other widths.

        Args:
            widths: Channels of every mask group.
            masked: Whether the new network carries masks (default: a plain network).

        Returns:
            A freshly initialised network (weights are not copied; see ``morph.cut``).
        """
        return type(self)(**self.config, masked=masked, widths=dict(widths))

    @property
    def groups(self) -> list[str]:
        """Names of the mask groups, in layer order."""
        return list(self.widths)

    # ------------------------------------------------------------------ masks
    def mask_values(self, batch_size: int) -> dict[str, Tensor] | None:
        """Mask values of every group for one forward pass, or None when unmasked.

        In training mode they follow ``self.train_masks``: ``"noisy"`` (the default, eq. 6,
        as while distilling) gives each sample its own logistic noise, drawn from
        ``self.noise_generator`` when set; ``"straight_through"`` gives the noiseless hard
        masks ``1[v >= 0]`` with a sigmoid gradient (:func:`straight_through_mask`);
        ``"deterministic"`` gives what evaluation mode always gives, ``sigmoid(v / tau)``.

        Args:
            batch_size: Samples in the batch.

        Returns:
            Group -> tensor of shape ``(batch_size, C)`` (training) or ``(1, C)`` (eval).
        """
        if not self.masked:
            return None
        out: dict[str, Tensor] = {}
        for group, v in self.mask_logits.items():
            kind = self.train_masks if self.training else "deterministic"
            if kind == "straight_through":
                out[group] = straight_through_mask(v).unsqueeze(0)
            elif kind == "noisy":
                noise = logistic_noise(
                    (batch_size, v.shape[0]),
                    generator=self.noise_generator,
                    device=v.device,
                    dtype=v.dtype,
                )
                out[group] = relaxed_mask(v, self.tau, noise)
            else:
                out[group] = relaxed_mask(v, self.tau).unsqueeze(0)
        return out

    @staticmethod
    def apply_mask(h: Tensor, masks: Mapping[str, Tensor] | None, group: str) -> Tensor:
        """Multiply the channels of ``h`` (``(N, C, ...)``) by the masks of ``group``."""
        if masks is None:
            return h
        m = masks[group]
        return h * m.reshape(m.shape[0], m.shape[1], *([1] * (h.ndim - 2)))

    def channel_map(self) -> dict[str, tuple[tuple[int, str], ...]]:
        """For each state-dict key, the (dimension, mask group) pairs that index it.

        Returns:
            A mapping of every key to the dimensions that morphing slices (empty for keys
            that keep their shape, e.g. the classifier's bias).
        """
        out: dict[str, tuple[tuple[int, str], ...]] = {}
        for spec in self.specs:
            dims: list[tuple[int, str]] = []
            if spec.out_group is not None:
                dims.append((0, spec.out_group))
            if spec.in_group is not None:
                dims.append((1, spec.in_group))
            out[f"{spec.name}.weight"] = tuple(dims)
            if spec.bias:
                out[f"{spec.name}.bias"] = ((0, spec.out_group),) if spec.out_group else ()
            if spec.bn is not None:
                per_channel = ((0, spec.out_group),) if spec.out_group else ()
                for suffix in ("weight", "bias", "running_mean", "running_var"):
                    out[f"{spec.bn}.{suffix}"] = per_channel
                out[f"{spec.bn}.num_batches_tracked"] = ()
        for group in self.mask_logits:
            out[f"mask_logits.{group}"] = ((0, group),)
        return out

    # ------------------------------------------------------------------ LightningModule
    def forward(self, x: Tensor) -> Tensor:
        """Class logits of a batch of images ``(N, in_channels, image_size, image_size)``."""
        return self.forward_masked(x, self.mask_values(x.shape[0]))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Cross-entropy on a labelled batch; logs ``train_loss`` and ``train_acc``."""
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss)
        self.log("train_acc", (logits.argmax(1) == y).float().mean())
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Logs the cross-entropy ``loss`` of a labelled batch."""
        x, y = batch[0], batch[1]
        self.log("loss", F.cross_entropy(self(x), y))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Same as :meth:`test_step`."""
        self.test_step(batch, batch_idx)

    def weight_parameters(self) -> list[nn.Parameter]:
        """All parameters except the mask logits."""
        masks = {id(p) for p in self.mask_logits.parameters()}
        return [p for p in self.parameters() if id(p) not in masks]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD with momentum and weight decay (appendix B.2); mask logits without decay."""
        groups: list[dict[str, Any]] = [
            {"params": self.weight_parameters(), "weight_decay": self.config["weight_decay"]}
        ]
        if self.masked:
            groups.append({"params": list(self.mask_logits.parameters()), "weight_decay": 0.0})
        return torch.optim.SGD(groups, lr=self.config["lr"], momentum=self.config["momentum"])
