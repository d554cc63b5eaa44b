"""Seed 000's *local* baseline: each client trains the autoencoder on its own data only."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor

from fedlightning.algorithms.community.detectors import _reset_parameters
from fedlightning.client import parse_optimizers
from fedlightning.datamodules.loader import TensorLoader
from fedlightning.models.autoencoders import ReconstructionAutoencoder

__all__ = ["train_local"]


def train_local(
    prototype: ReconstructionAutoencoder,
    x: Tensor,
    *,
    max_epochs: int = 40,
    patience: int = 3,
    val_fraction: float = 0.1,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[ReconstructionAutoencoder, int]:
    """Train a fresh copy of ``prototype`` on one client's data with early stopping.

    A random ``val_fraction`` of the samples is held out; training stops when the
    validation reconstruction loss has not improved for ``patience`` epochs, or after
    ``max_epochs``, and the weights of the best epoch are kept. One optimizer (the module's
    own, Adam in seed 000) lives across all epochs.

    Args:
        prototype: Architecture to copy; weights are re-initialised from ``seed``.
        x: The client's training samples.
        max_epochs: Upper bound on epochs (reference: 40).
        patience: Epochs without improvement before stopping (reference: 3).
        val_fraction: Held-out share in (0, 1) (reference: 0.1).
        batch_size: Batch size.
        seed: Seed of the weights, the split and the batch order.

    Returns:
        The trained module and the number of epochs run.

    Raises:
        ValueError: On a setting out of range or fewer than 2 samples.

    References:
        Seed 000, Sec. 4.2 ("local" baseline); NOTES on the reference implementation.
    """
    for name, value in (("max_epochs", max_epochs), ("patience", patience)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got val_fraction={val_fraction}")
    if len(x) < 2:
        raise ValueError(f"local training needs at least 2 samples, got {len(x)}")
    rng = np.random.default_rng(seed)
    order = torch.from_numpy(rng.permutation(len(x)))
    n_val = min(len(x) - 1, max(1, round(val_fraction * len(x))))
    x_val, x_train = x[order[:n_val]], x[order[n_val:]]
    module = copy.deepcopy(prototype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _reset_parameters(module)
        if module.channels_last:
            module.to(memory_format=torch.channels_last)
        optimizer = parse_optimizers(module.configure_optimizers()).optimizer
        targets = torch.zeros(len(x_train))
        loader = TensorLoader(x_train, targets, batch_size, shuffle=True, seed=seed)
        best = float("inf")
        best_state = copy.deepcopy(module.state_dict())
        stale = 0
        epochs = 0
        for _ in range(max_epochs):
            module.train()
            for xb, _y in loader:
                loss = torch.nn.functional.mse_loss(module(xb), xb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            epochs += 1
            module.eval()
            with torch.no_grad():
                val = float(torch.nn.functional.mse_loss(module(x_val), x_val))
            if val < best:
                best, stale = val, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                stale += 1
                if stale >= patience:
                    break
    module.load_state_dict(best_state)
    module.eval()
    return module, epochs
