"""A minimal batch loader over in-memory tensors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["TensorLoader"]


class TensorLoader:
    """Iterate ``(x[idx], y[idx])`` batches by indexing whole tensors, no per-sample collate.

    With ``shuffle=True`` every pass (epoch) uses a new permutation drawn from
    ``np.random.default_rng([seed, epoch])``, where ``epoch`` counts the passes started so far;
    two loaders with the same seed therefore yield the same batches in the same order.
    Without shuffling the batches are contiguous slices (views, no copy).

    Args:
        x: Inputs, first dimension = samples.
        y: Targets, same first dimension as ``x``.
        batch_size: Samples per batch, >= 1.
        shuffle: Draw a new order every epoch.
        seed: Seed of the permutations.
        drop_last: Drop the last, smaller batch.

    Raises:
        ValueError: If ``batch_size < 1``, ``seed < 0`` or ``x`` and ``y`` differ in length.

    Example:
        >>> loader = TensorLoader(torch.zeros(10, 3), torch.arange(10), batch_size=4)
        >>> len(loader), [len(b[1]) for b in loader]
        (3, [4, 4, 2])
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got batch_size={batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got seed={seed!r}")
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Number of samples the loader iterates over per epoch."""
        return len(self.x)

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch counter that the next pass's permutation derives from."""
        self.epoch = epoch

    def permutation(self, epoch: int) -> Tensor:
        """The sample order of a given epoch (``arange`` without shuffling)."""
        n = len(self.x)
        if not self.shuffle:
            return torch.arange(n)
        rng = np.random.default_rng([self.seed, epoch])
        return torch.from_numpy(rng.permutation(n))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        n, b = len(self.x), self.batch_size
        stop = (n // b) * b if self.drop_last else n
        if not self.shuffle:
            for start in range(0, stop, b):
                yield self.x[start : start + b], self.y[start : start + b]
            return
        order = self.permutation(epoch)
        for start in range(0, stop, b):
            idx = order[start : start + b]
            yield self.x[idx], self.y[idx]

    def __repr__(self) -> str:
        return (
            f"TensorLoader(num_samples={len(self.x)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})"
        )
