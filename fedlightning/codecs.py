"""Codecs: how a tensor is turned into the parts that travel, and back.

A codec sits on one direction of an algorithm (``FedAvg(uplink=TopK(0.1))``) and changes
what is sent, and so the bytes that :class:`~fedlightning.messages.Message` counts. Codecs
only touch floating-point tensors; integer tensors (BatchNorm's ``num_batches_tracked``,
indices, bits) always travel as they are.

References:
    TopK sparsification as used by FedMorph's baselines: Z. Wang et al., "FedMorph:
    Communication Efficient Federated Learning via Morphing Neural Network" (seed 004);
    A. F. Aji and K. Heafield, "Sparse Communication for Distributed Gradient Descent", 2017.
    UInt8's affine (asymmetric) quantization: B. Jacob et al., "Quantization and Training of
    Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["Codec", "Float16", "Identity", "TopK", "UInt8", "index_dtype"]


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


class UInt8(Codec):
    """Affine 8-bit quantization: each value becomes ``round((x - lo) / scale)`` in 0..255.

    With ``lo`` and ``hi`` the minimum and maximum of the values quantized together and
    ``scale = (hi - lo) / 255``, a value travels as one ``uint8`` code ``q`` and comes back as
    ``lo + q * scale``, within ``scale / 2`` of where it started (Jacob et al., CVPR 2018,
    eq. 1, with the zero point folded into ``lo``). ``per_row=True`` quantizes every slice
    along dim 0 (every image of a batch) with its own ``lo`` and ``scale``; ``False`` uses
    one pair for the whole tensor (as does a 0-d tensor in either mode).

    The parts are ``{"q": uint8 codes (the tensor's shape), "lo": float32, "scale":
    float32}``, ``lo`` and ``scale`` of shape ``(rows,)`` per row or 0-d per tensor; the bytes
    counted are ``numel`` plus 8 per row (plus 8 per tensor). A constant row (``hi ==
    lo``) has ``scale = 0`` and decodes exactly to its value (any float16, bfloat16 or
    float32 value; a float64 one is rounded to float32). Integer tensors travel as they are.

    Args:
        per_row: One ``lo``/``scale`` pair per slice along dim 0 (default) instead of one
            for the whole tensor.

    Raises:
        ValueError: If ``per_row`` is not a bool; :meth:`encode` if a value is not finite.

    Example:
        >>> import torch
        >>> from fedlightning.messages import Message
        >>> images = torch.rand(60, 1, 28, 28)
        >>> Message(extras=UInt8().encode(images)).nbytes  # 60 * 784 codes + 60 * 8
        47520
    """

    LEVELS = 255

    def __init__(self, per_row: bool = True) -> None:
        if not isinstance(per_row, bool):
            raise ValueError(f"UInt8 per_row must be a bool, got per_row={per_row!r}")
        self.per_row = per_row

    def encode(self, tensor: Tensor) -> dict[str, Tensor]:
        """See :meth:`Codec.encode`.

        Raises:
            ValueError: If ``tensor`` holds an infinite or NaN value, or values whose range
                (max - min) float32 cannot hold.
        """
        if not tensor.is_floating_point():
            return {"data": tensor}
        work = tensor.detach().to(_work_dtype(tensor.dtype))
        per_row = self.per_row and work.dim() > 0
        shape = (work.shape[0], math.prod(work.shape[1:])) if per_row else (1, work.numel())
        rows = work.reshape(shape)
        if rows.shape[1] == 0:  # no values: nothing to quantize
            lo = torch.zeros(rows.shape[0], dtype=torch.float32, device=work.device)
            scale = torch.zeros_like(lo)
            codes = torch.zeros(work.shape, dtype=torch.uint8, device=work.device)
            return {
                "q": codes,
                "lo": lo if per_row else lo[0],
                "scale": scale if per_row else scale[0],
            }
        if not bool(torch.isfinite(rows).all()):
            raise ValueError("UInt8 can only encode finite values: the tensor holds inf or NaN")
        low, high = rows.amin(dim=1), rows.amax(dim=1)
        # What travels (float32) is what both ends compute with.
        lo = low.to(torch.float32)
        scale = ((high - low) / self.LEVELS).to(torch.float32)
        if not bool(torch.isfinite(scale * self.LEVELS).all()):
            raise ValueError("UInt8 can only encode values whose range float32 can hold")
        lo_w, scale_w = lo.to(work.dtype)[:, None], scale.to(work.dtype)[:, None]
        divisor = torch.where(scale_w > 0, scale_w, torch.ones_like(scale_w))
        codes = ((rows - lo_w) / divisor).round_().clamp_(0, self.LEVELS).to(torch.uint8)
        if not per_row:
            lo, scale = lo[0], scale[0]
        return {"q": codes.reshape(work.shape), "lo": lo, "scale": scale}

    def decode(self, parts: dict[str, Tensor], shape: torch.Size, dtype: torch.dtype) -> Tensor:
        """See :meth:`Codec.decode`."""
        if "data" in parts:
            return parts["data"].reshape(shape).to(dtype)
        codes = parts["q"].reshape(shape)
        work = _work_dtype(dtype)
        lo, scale = parts["lo"].to(work), parts["scale"].to(work)
        if lo.dim() > 0:  # per row: broadcast along dim 0
            lo = lo.reshape(-1, *([1] * (codes.dim() - 1)))
            scale = scale.reshape(-1, *([1] * (codes.dim() - 1)))
        return (lo + codes.to(work) * scale).to(dtype)

    def __repr__(self) -> str:
        return f"UInt8(per_row={self.per_row})"


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 tensors, float32 for every other floating type."""
    return torch.float64 if dtype == torch.float64 else torch.float32
