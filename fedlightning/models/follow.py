"""Keep tensors and modules where a reference module lives: its device and floating dtype.

``FederatedTrainer(accelerator=..., precision=...)`` places the global model (moves it to the
device and, for ``"64-true"`` / ``"bf16-true"``, converts its floating parameters) before the
algorithm's ``setup``. Server-side work (a hidden model, distillation inputs, a teacher cut
from the global model) follows it with these helpers, whatever the device and precision, and
client hooks convert what a message carries to the working module's placement before use.

Random draws stay reproducible across devices: a CPU ``torch.Generator`` draws on the CPU and
the result is moved (:func:`draw_device`), so a run on a GPU sees the numbers a CPU run sees.

With mixed precision (``"16-mixed"``, ``"bf16-mixed"``) parameters stay float32 and only the
clients' forward passes run under autocast; server-side work then runs in float32, outside
autocast.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

__all__ = ["draw_device", "follow_module", "module_device", "module_dtype", "to_module"]


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); the CPU when it has none."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def module_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first floating parameter (or buffer).

    Integer buffers (BatchNorm's ``num_batches_tracked``) are skipped; a module without
    floating tensors gives torch's default dtype.
    """
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def to_module(x: Tensor, module: nn.Module) -> Tensor:
    """``x`` on ``module``'s device and, when floating, in its floating dtype.

    Returns ``x`` itself when it is already there (float32 on the CPU for a default run).
    """
    device = module_device(module)
    if x.is_floating_point():
        return x.to(device=device, dtype=module_dtype(module))
    return x.to(device)


def follow_module(module: nn.Module, reference: nn.Module) -> nn.Module:
    """Move ``module`` (in place) to ``reference``'s device and floating dtype; return it.

    Integer buffers keep their dtype, as with ``Module.to(dtype=...)``.
    """
    return module.to(device=module_device(reference), dtype=module_dtype(reference))


def draw_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device:
    """Where to draw random numbers for a tensor that ends up on ``device``.

    On the generator's own device when one is given (a CPU generator cannot draw on a GPU;
    the caller moves the result), else on ``device`` with torch's global generator there.
    """
    return generator.device if generator is not None else torch.device(device)
