"""Where and in which precision clients train: Lightning's accelerator and precision names.

``FederatedTrainer(accelerator=..., devices=..., precision=...)`` takes the names of
``lightning.Trainer`` and resolves them once, before round 1, into a :class:`Placement`: a
device and a precision setting. The device checks are Lightning Fabric's accelerators
(``CUDAAccelerator``, ``MPSAccelerator``) and the numerics are Fabric's precision plugins
(``MixedPrecision`` for autocast and gradient scaling, ``DoublePrecision``, ``HalfPrecision``),
so fedlightning writes no autocast or ``GradScaler`` code of its own.

A :class:`Placement` holds only strings and an index, so it pickles to Ray workers; each
local run builds a fresh precision plugin (:meth:`Placement.plugin`), so a gradient scaler's
state never leaks from one client into another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from lightning.fabric.accelerators import CUDAAccelerator, MPSAccelerator
from lightning.fabric.plugins.precision import (
    DoublePrecision,
    HalfPrecision,
    MixedPrecision,
    Precision,
)
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

__all__ = ["ACCELERATORS", "PRECISIONS", "Placement", "resolve_placement"]

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
"""Accelerator names, as ``lightning.Trainer`` spells them."""

PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "bf16-true")
"""Precision names, as ``lightning.Trainer`` spells them."""

_ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}


@dataclass(frozen=True)
class Placement:
    """A resolved device and precision for local training, evaluation and aggregation.

    Attributes:
        accelerator: ``"cpu"``, ``"cuda"`` or ``"mps"``.
        index: The device index (``None`` on the CPU).
        precision: One of :data:`PRECISIONS`.
    """

    accelerator: str = "cpu"
    index: int | None = None
    precision: str = "32-true"

    @property
    def device(self) -> torch.device:
        """The torch device."""
        if self.accelerator == "cpu":
            return torch.device("cpu")
        return torch.device(self.accelerator, self.index or 0)

    @property
    def is_default(self) -> bool:
        """Whether this is plain float32 on the CPU (nothing to move or convert)."""
        return self.accelerator == "cpu" and self.precision == "32-true"

    def plugin(self) -> Precision:
        """A fresh Lightning Fabric precision plugin for one local run."""
        if self.precision in ("16-mixed", "bf16-mixed"):
            return MixedPrecision(self.precision, device=self.accelerator)  # type: ignore[arg-type]
        if self.precision == "64-true":
            return DoublePrecision()
        if self.precision == "bf16-true":
            return HalfPrecision("bf16-true")
        return Precision()

    def place_module(self, module: nn.Module) -> nn.Module:
        """Move ``module`` to the device and convert it to the precision's parameter dtype."""
        module = self.plugin().convert_module(module)
        return module.to(self.device)

    def place_batch(self, batch: Any, plugin: Precision | None = None) -> Any:
        """Move a batch to the device and convert its floating tensors as the plugin does."""
        if self.accelerator != "cpu":
            batch = move_data_to_device(batch, self.device)
        if self.precision != "32-true":
            batch = (plugin or self.plugin()).convert_input(batch)
        return batch


def resolve_placement(
    accelerator: str = "auto", devices: int | str | list[int] = 1, precision: str = "32-true"
) -> Placement:
    """Resolve Lightning's ``accelerator`` / ``devices`` / ``precision`` settings.

    Args:
        accelerator: One of :data:`ACCELERATORS`; ``"auto"`` takes CUDA, else MPS, else the
            CPU; ``"gpu"`` takes CUDA, else MPS.
        devices: One device: ``1``, ``"1"``, ``"auto"`` or a one-element list of indices such
            as ``[2]``. Clients of one process train on one device; spread a run over
            several GPUs with Ray workers (``RayExecutor(num_gpus_per_worker=...)``).
        precision: One of :data:`PRECISIONS` (``32``, ``64``, ``16`` and ``bf16`` are taken
            as ``lightning.Trainer`` takes them).

    Returns:
        The placement.

    Raises:
        ValueError: For an unknown name, an accelerator that is not available here, or
            more than one device; the message names the setting, its value and what is
            allowed.
    """
    if not isinstance(accelerator, str) or accelerator.lower() not in ACCELERATORS:
        raise ValueError(
            f"accelerator must be one of {list(ACCELERATORS)}, got accelerator={accelerator!r}"
        )
    name = accelerator.lower()
    key = str(precision)
    key = _ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {list(PRECISIONS)}, got precision={precision!r}"
        )
    cuda, mps = CUDAAccelerator.is_available(), MPSAccelerator.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    elif name == "gpu":
        if not (cuda or mps):
            raise ValueError(
                "accelerator='gpu' needs a CUDA or MPS device, and none is available here; "
                "use accelerator='cpu' or 'auto'"
            )
        name = "cuda" if cuda else "mps"
    elif name == "cuda" and not cuda:
        raise ValueError(
            "accelerator='cuda' needs a CUDA device, and torch.cuda.is_available() is False "
            "here; use accelerator='cpu' or 'auto'"
        )
    elif name == "mps" and not mps:
        raise ValueError(
            "accelerator='mps' needs Apple's MPS backend, which is not available here; use "
            "accelerator='cpu' or 'auto'"
        )
    index = _one_device(devices, name)
    if key == "16-mixed" and name == "cpu":
        # As lightning.Trainer: float16 autocast is a GPU feature; bf16 is the CPU's.
        raise ValueError(
            "precision='16-mixed' needs a GPU (float16 autocast with gradient scaling); on the "
            "CPU use precision='bf16-mixed' or '32-true'"
        )
    return Placement(name, index, key)


def _one_device(devices: Any, accelerator: str) -> int | None:
    allowed = "devices=1, 'auto' or a one-element list such as [0]"
    if devices == "auto" or devices == 1 or devices == "1":
        index = 0
    elif (
        isinstance(devices, (list, tuple))
        and len(devices) == 1
        and isinstance(devices[0], int)
        and devices[0] >= 0
    ):
        index = int(devices[0])
    else:
        raise ValueError(
            f"devices must be one device for in-process training ({allowed}), got "
            f"devices={devices!r}; use RayExecutor(num_gpus_per_worker=...) for several GPUs"
        )
    if accelerator == "cpu":
        return None
    if accelerator == "cuda" and index >= torch.cuda.device_count():
        raise ValueError(
            f"devices={devices!r} names CUDA device {index}, but this machine has "
            f"{torch.cuda.device_count()}"
        )
    return index
