"""What travels between the server and the clients, and its exact size in bytes.

A :class:`Message` holds three kinds of content:

* ``tensors``: model weights or updates, encoded by the direction's codec
  (:mod:`fedlightning.codecs`) at construction, so that what is stored is what is sent;
* ``extras``: other tensors sent as they are (synthetic samples, per-client statistics,
  masks, association bits);
* ``scalars``: a few numbers (sample counts, round numbers), 8 bytes each.

``nbytes`` is the payload that would cross the wire: the encoded tensors' and extras'
``numel * element_size`` plus 8 bytes per scalar. Names, shapes and dtypes are not counted:
both ends know the model, as in every FL cost model (seed 000, eq. 1-3), and a transport's
framing is not part of the algorithm.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

import torch
from torch import Tensor, nn

from fedlightning.codecs import Codec, Identity

__all__ = ["Message", "SCALAR_BYTES", "tensor_bytes"]

SCALAR_BYTES = 8
_IDENTITY = Identity()


def tensor_bytes(tensor: Tensor) -> int:
    """Bytes of a tensor's payload: ``numel * element_size``."""
    return tensor.numel() * tensor.element_size()


class Message:
    """A message between server and client that knows its size in bytes as sent.

    Args:
        tensors: Weights or updates; encoded with ``codec`` now (lossy codecs lose here).
        extras: Tensors sent as they are.
        scalars: Small numbers, 8 bytes each.
        codec: The codec for ``tensors``; :class:`~fedlightning.codecs.Identity` by default.
        dense: Names in ``tensors`` sent as they are, whatever the codec: statistics such as
            BatchNorm's running mean and variance, which a sparsifying codec would freeze.

    Raises:
        TypeError: If a value in ``tensors`` or ``extras`` is not a tensor.

    Example:
        >>> import torch
        >>> from fedlightning.codecs import TopK
        >>> m = Message({"w": torch.arange(10.0)}, codec=TopK(0.2))
        >>> m.nbytes  # 2 float32 values + 2 int16 indices
        12
    """

    def __init__(
        self,
        tensors: Mapping[str, Tensor] | None = None,
        *,
        extras: Mapping[str, Tensor] | None = None,
        scalars: Mapping[str, float] | None = None,
        codec: Codec | None = None,
        dense: Collection[str] | None = None,
    ) -> None:
        self.codec: Codec = codec if codec is not None else Identity()
        self._dense = frozenset(dense or ())
        self._meta: dict[str, tuple[torch.Size, torch.dtype]] = {}
        self._parts: dict[str, dict[str, Tensor]] = {}
        for name, tensor in (tensors or {}).items():
            _check_tensor("tensors", name, tensor)
            detached = tensor.detach()
            self._meta[name] = (detached.shape, detached.dtype)
            self._parts[name] = self._codec_for(name).encode(detached)
        self.extras: dict[str, Tensor] = {}
        for name, tensor in (extras or {}).items():
            _check_tensor("extras", name, tensor)
            self.extras[name] = tensor.detach()
        self.scalars: dict[str, float] = dict(scalars or {})
        self._decoded: dict[str, Tensor] | None = None

    @classmethod
    def of_state(
        cls,
        module: nn.Module,
        tensors: Mapping[str, Tensor],
        *,
        extras: Mapping[str, Tensor] | None = None,
        scalars: Mapping[str, float] | None = None,
        codec: Codec | None = None,
    ) -> Message:
        """A message of tensors keyed like ``module``'s state, its buffers marked dense.

        Buffers (BatchNorm running statistics, counters...) travel as they are whatever the
        codec: a sparsifying codec would otherwise freeze them. Use this for anything built
        from a module's state (weights, updates, sub-network slices).

        Args:
            module: The module whose state-dict keys ``tensors`` uses.
            tensors: Weights or updates by state-dict key (a subset of the module's).
            extras: Tensors sent as they are.
            scalars: Small numbers, 8 bytes each.
            codec: The codec for the parameters in ``tensors``.

        Returns:
            The message.
        """
        buffers = {name for name, _ in module.named_buffers()}
        dense = [name for name in tensors if name in buffers]
        return cls(tensors, extras=extras, scalars=scalars, codec=codec, dense=dense)

    def add_extras(self, extras: Mapping[str, Tensor]) -> Message:
        """Add tensors sent as they are, without rebuilding (or re-encoding) the message.

        Args:
            extras: Name -> tensor; a name already in :attr:`extras` is replaced.

        Returns:
            ``self``.

        Raises:
            TypeError: If a value is not a tensor.
        """
        for name, tensor in extras.items():
            _check_tensor("extras", name, tensor)
            self.extras[name] = tensor.detach()
        return self

    def _codec_for(self, name: str) -> Codec:
        return _IDENTITY if name in self._dense else self.codec

    @property
    def names(self) -> list[str]:
        """Names of the encoded tensors."""
        return list(self._meta)

    @property
    def parts(self) -> Mapping[str, Mapping[str, Tensor]]:
        """The encoded parts of each tensor, exactly as they travel."""
        return self._parts

    def shape(self, name: str) -> torch.Size:
        """Shape of the tensor ``name`` once decoded."""
        return self._meta[name][0]

    def decode(self) -> dict[str, Tensor]:
        """Return the dense tensors after the codec's round trip (computed once, cached)."""
        if self._decoded is None:
            self._decoded = {
                name: self._codec_for(name).decode(self._parts[name], shape, dtype)
                for name, (shape, dtype) in self._meta.items()
            }
        return self._decoded

    @property
    def tensor_nbytes(self) -> int:
        """Bytes of the encoded ``tensors``."""
        return sum(tensor_bytes(p) for parts in self._parts.values() for p in parts.values())

    @property
    def extras_nbytes(self) -> int:
        """Bytes of the ``extras``."""
        return sum(tensor_bytes(t) for t in self.extras.values())

    @property
    def nbytes(self) -> int:
        """Exact payload size in bytes: encoded tensors + extras + 8 per scalar."""
        return self.tensor_nbytes + self.extras_nbytes + SCALAR_BYTES * len(self.scalars)

    def to(self, device: torch.device | str) -> Message:
        """The same message with every tensor on ``device``; its size in bytes is unchanged.

        Returns ``self`` when everything is already there.
        """
        device = torch.device(device)
        tensors = [p for parts in self._parts.values() for p in parts.values()]
        tensors += list(self.extras.values())
        if all(t.device == device for t in tensors):
            return self
        moved = Message.__new__(Message)
        moved.codec = self.codec
        moved._dense = self._dense
        moved._meta = dict(self._meta)
        moved._parts = {
            name: {k: v.to(device) for k, v in parts.items()} for name, parts in self._parts.items()
        }
        moved.extras = {k: v.to(device) for k, v in self.extras.items()}
        moved.scalars = dict(self.scalars)
        moved._decoded = None
        return moved

    def __iter__(self) -> Iterator[str]:
        return iter(self._meta)

    def __len__(self) -> int:
        return len(self._meta)

    def __repr__(self) -> str:
        return (
            f"Message(tensors={len(self._meta)}, extras={sorted(self.extras)}, "
            f"scalars={sorted(self.scalars)}, codec={self.codec!r}, nbytes={self.nbytes})"
        )


def _check_tensor(field: str, name: str, value: object) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"Message {field}[{name!r}] must be a torch.Tensor, got {type(value).__name__}"
        )
