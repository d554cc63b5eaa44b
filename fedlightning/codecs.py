"""Codecs: how a tensor is turned into the parts that travel, and back.

A codec sits on one direction of an algorithm (``FedAvg(uplink=TopK(0.1))``) and changes
what is sent, and so the bytes that :class:`~fedlightning.messages.Message` counts. Codecs
only touch floating-point tensors; integer tensors (BatchNorm's ``num_batches_tracked``,
indices, bits) always travel as they are.

References:
    TopK sparsification as used by FedMorph's baselines: Z. Wang et al., "FedMorph:
    Communication Efficient Federated Learning via Morphing Neural Network" (seed 004);
    A. F. Aji and K. Heafield, "Sparse Communication for Distributed Gradient Descent", 2017.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["Codec", "Float16", "Identity", "TopK", "index_dtype"]


def index_dtype(numel: int) -> torch.dtype:
    """Return the narrowest signed integer type that can index ``numel`` elements.

    Args:
        numel: Number of elements in the tensor being indexed.

    Returns:
        ``torch.int16``, ``torch.int32`` or ``torch.int64``.
    """
    if numel <= 2**15:
        return torch.int16
    if numel <= 2**31:
        return torch.int32
    return torch.int64


class Codec(ABC):
    """Encodes one tensor into the parts that travel, and decodes them back."""

    @abstractmethod
    def encode(self, tensor: Tensor) -> dict[str, Tensor]:
        """Encode ``tensor`` into named parts whose bytes are what is sent.

        Args:
            tensor: A dense tensor.

        Returns:
            The parts that travel, e.g. ``{"values": ..., "indices": ...}``.
        """

    @abstractmethod
    def decode(self, parts: dict[str, Tensor], shape: torch.Size, dtype: torch.dtype) -> Tensor:
        """Rebuild a dense tensor from the parts produced by :meth:`encode`.

        Args:
            parts: The parts returned by :meth:`encode`.
            shape: Shape of the original tensor (known to both ends from the model).
            dtype: Dtype of the original tensor.

        Returns:
            The decoded dense tensor (lossy codecs return an approximation).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(Codec):
    """Sends tensors unchanged."""

    def encode(self, tensor: Tensor) -> dict[str, Tensor]:
        """See :meth:`Codec.encode`."""
        return {"data": tensor}

    def decode(self, parts: dict[str, Tensor], shape: torch.Size, dtype: torch.dtype) -> Tensor:
        """See :meth:`Codec.decode`."""
        return parts["data"].reshape(shape).to(dtype)


class Float16(Codec):
    """Sends floating-point tensors as IEEE half precision (2 bytes per value)."""

    def encode(self, tensor: Tensor) -> dict[str, Tensor]:
        """See :meth:`Codec.encode`."""
        if not tensor.is_floating_point():
            return {"data": tensor}
        return {"data": tensor.to(torch.float16)}

    def decode(self, parts: dict[str, Tensor], shape: torch.Size, dtype: torch.dtype) -> Tensor:
        """See :meth:`Codec.decode`."""
        return parts["data"].reshape(shape).to(dtype)


class TopK(Codec):
    """Keeps the ``ratio`` share of entries with the largest magnitude: values plus indices.

    The bytes counted are those of the kept values (in the tensor's dtype) and of their flat
    indices, in the narrowest integer type that can address the tensor
    (:func:`index_dtype`). At least one entry of every non-empty tensor is kept.

    Args:
        ratio: Share of entries kept, in (0, 1].

    Raises:
        ValueError: If ``ratio`` is not in (0, 1].

    Example:
        >>> from fedlightning.algorithms import FedAvg
        >>> algo = FedAvg(uplink=TopK(0.1))
    """

    def __init__(self, ratio: float) -> None:
        if not isinstance(ratio, (int, float)) or not (0.0 < float(ratio) <= 1.0):
            raise ValueError(f"TopK ratio must be in (0, 1], got ratio={ratio!r}")
        self.ratio = float(ratio)

    def kept(self, numel: int) -> int:
        """Number of entries kept out of ``numel``."""
        if numel == 0:
            return 0
        return max(1, min(numel, math.ceil(self.ratio * numel)))

    def encode(self, tensor: Tensor) -> dict[str, Tensor]:
        """See :meth:`Codec.encode`."""
        if not tensor.is_floating_point():
            return {"data": tensor}
        flat = tensor.reshape(-1)
        k = self.kept(flat.numel())
        if k == flat.numel():
            return {"data": tensor}
        indices = torch.topk(flat.abs(), k, sorted=False).indices
        return {"values": flat[indices], "indices": indices.to(index_dtype(flat.numel()))}

    def decode(self, parts: dict[str, Tensor], shape: torch.Size, dtype: torch.dtype) -> Tensor:
        """See :meth:`Codec.decode`."""
        if "data" in parts:
            return parts["data"].reshape(shape).to(dtype)
        out = torch.zeros(math.prod(shape), dtype=dtype, device=parts["values"].device)
        out[parts["indices"].long()] = parts["values"].to(dtype)
        return out.reshape(shape)

    def __repr__(self) -> str:
        return f"TopK(ratio={self.ratio})"
