"""Algorithms that send clients a sub-network of the server's masked network.

The server keeps the full :class:`~fedlightning.models.masked.MaskedClassifier`; each round
a subclass chooses which channels each client gets (:meth:`SubNetworkAlgorithm.kept`), the
server cuts that physically smaller network and sends its tensors (plus its widths, a few
int32 values) through the downlink codec; the client builds the plain sub-network and trains
it; the server scatters the clients' updates back, averaging each parameter over the clients
that held it, weighted by their sample counts. FedMorph, FedDropout and FedPruned differ
only in how channels are chosen (and FedMorph in its server-side distillation).

References:
    Z. Wang et al., "FedMorph: Communication Efficient Federated Learning via Morphing
    Neural Network" (seed 004), Algorithm 1; S. Caldas et al., "Expanding the Reach of
    Federated Learning by Reducing Client Resource Requirements", arXiv:1812.07210, 2018.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from typing_extensions import override

from fedlightning.algorithms.base import Algorithm, ClientContext, Reply, load_tensors
from fedlightning.codecs import Codec
from fedlightning.messages import Message
from fedlightning.models.masked.base import MaskedClassifier
from fedlightning.models.masked.morph import (
    Kept,
    count_flops,
    count_params,
    size_from_widths,
    slice_state,
)

if TYPE_CHECKING:
    from fedlightning.datamodules import FederatedDataModule
    from fedlightning.round import ServerContext

__all__ = ["SubNetworkAlgorithm", "WIDTHS_KEY"]

#: Name of the extras tensor that carries the sub-network's widths to the client.
WIDTHS_KEY = "widths"


class SubNetworkAlgorithm(Algorithm, ABC):
    """Base of algorithms that train sub-networks cut from a masked server network.

    Subclasses implement :meth:`kept`. The global model must be a
    :class:`~fedlightning.models.masked.MaskedClassifier` with ``masked=True``; its masks
    decide what the trainer evaluates (set them in :meth:`setup` when the algorithm does not
    learn them).

    Each round, the sub-network's exact parameter and FLOP counts relative to the full
    network are logged as ``params_ratio`` and ``flops_ratio`` (means over the round's
    clients) and kept in :attr:`size_history`.

    Kept channel indices may live on the CPU (random choices from a CPU generator) or on the
    model's device (read from its masks); slicing and aggregation move them to the tensors
    they index, so the server network stays where the trainer placed it.

    Args:
        uplink: Codec for client updates (e.g. ``TopK(0.1)``).
        downlink: Codec for the sub-network weights.
    """

    server_attributes: ClassVar[tuple[str, ...]] = (
        "size_history",
        "full_params",
        "full_flops",
        "_kept_cache",
        "_state_cache",
        "_round_sizes",
        "_sizes_round",
    )

    def __init__(self, *, uplink: Codec | None = None, downlink: Codec | None = None) -> None:
        super().__init__(uplink=uplink, downlink=downlink)
        self.size_history: list[dict[str, float]] = []
        self.full_params = 0
        self.full_flops = 0
        self._kept_cache: dict[tuple[int, int], Kept] = {}
        self._state_cache: tuple[tuple[int, int], dict[str, Tensor]] | None = None
        self._round_sizes: list[tuple[float, float]] = []
        self._sizes_round = -1
        self._modules: dict[tuple[int, ...], MaskedClassifier] = {}

    @property
    def model(self) -> MaskedClassifier:
        """The server's masked network."""
        model = self.global_model
        assert isinstance(model, MaskedClassifier)
        return model

    # ------------------------------------------------------------------ to override
    @abstractmethod
    def kept(self, round: int, client: int) -> Kept:
        """The channels ``client`` gets in ``round``, per mask group (sorted indices)."""

    def share_key(self, round: int, client: int) -> tuple[int, int]:
        """Clients with the same key get the same sub-network (default: one per round)."""
        return (round, -1)

    # ------------------------------------------------------------------ server
    @override
    def setup(
        self, server: ServerContext, model: LightningModule, datamodule: FederatedDataModule
    ) -> None:
        if not isinstance(model, MaskedClassifier) or not model.masked:
            raise ValueError(
                f"{type(self).__name__} needs a MaskedClassifier with masked=True (e.g. "
                f"MaskedResNet8()), got {type(model).__name__}"
                + (" with masked=False" if isinstance(model, MaskedClassifier) else "")
            )
        super().setup(server, model, datamodule)
        plain = model.with_widths(model.widths)
        self.full_params = count_params(plain)
        self.full_flops = count_flops(plain)

    def kept_for(self, round: int, client: int) -> Kept:
        """:meth:`kept`, computed once per :meth:`share_key`."""
        key = self.share_key(round, client)
        if key not in self._kept_cache:
            self._kept_cache = {k: v for k, v in self._kept_cache.items() if k[0] == round}
            self._kept_cache[key] = self.kept(round, client)
        return self._kept_cache[key]

    def widths_of(self, kept: Kept) -> dict[str, int]:
        """Widths of the sub-network cut with ``kept``."""
        return {g: int(kept[g].numel()) for g in self.model.groups}

    @override
    def server_message(self, round: int, client: int) -> Message:
        key = self.share_key(round, client)
        kept = self.kept_for(round, client)
        if self._state_cache is None or self._state_cache[0] != key:
            self._state_cache = (key, slice_state(self.model, kept))
        widths = self.widths_of(kept)
        if round != self._sizes_round:
            self._round_sizes = []
            self._sizes_round = round
        params = float(size_from_widths(self.model, widths, "params")) / self.full_params
        flops = float(size_from_widths(self.model, widths, "flops")) / self.full_flops
        self._round_sizes.append((params, flops))
        ratios = {
            "params_ratio": sum(p for p, _ in self._round_sizes) / len(self._round_sizes),
            "flops_ratio": sum(f for _, f in self._round_sizes) / len(self._round_sizes),
        }
        self.server.log(ratios)
        if self.size_history and self.size_history[-1]["round"] == round:
            self.size_history[-1].update(ratios)
        else:
            self.size_history.append({"round": float(round), **ratios})
        extras = {
            WIDTHS_KEY: torch.tensor([widths[g] for g in self.model.groups], dtype=torch.int32)
        }
        return Message.of_state(
            self.model, self._state_cache[1], extras=extras, codec=self.downlink
        )

    @override
    def aggregate(self, round: int, replies: list[Reply]) -> None:
        """Average every parameter over the clients whose sub-network held it, in place."""
        if not replies:
            return
        model = self.model
        cmap = model.channel_map()
        state = model.state_dict()
        sums: dict[str, Tensor] = {}
        weights: dict[str, Tensor] = {}
        for reply in replies:
            kept = self.kept_for(round, reply.client)
            w = float(reply.num_samples)
            for key, delta in reply.message.decode().items():
                target = state[key]
                if key not in sums:
                    sums[key] = torch.zeros_like(target, dtype=torch.float64)
                    weights[key] = torch.zeros_like(target, dtype=torch.float64)
                index = _index(cmap.get(key, ()), kept, target)
                sums[key][index] += w * delta.to(torch.float64)
                weights[key][index] += w
        with torch.no_grad():
            for key, total in sums.items():
                held = weights[key] > 0
                mean = torch.where(held, total / weights[key].clamp_min(1e-300), 0.0)
                target = state[key]
                if target.is_floating_point():
                    target.add_(mean.to(target.dtype))
                else:
                    target.add_(mean.round().to(target.dtype))

    # ------------------------------------------------------------------ client
    @override
    def configure_client(self, ctx: ClientContext, module: LightningModule) -> LightningModule:
        """Build the plain sub-network the message describes and load its weights."""
        if not isinstance(module, MaskedClassifier):
            raise ValueError(
                f"{type(self).__name__} clients need a MaskedClassifier, got "
                f"{type(module).__name__}"
            )
        if WIDTHS_KEY not in ctx.message.extras:
            raise ValueError(f"the server message carries no {WIDTHS_KEY!r} extras tensor")
        values = [int(v) for v in ctx.message.extras[WIDTHS_KEY].tolist()]
        if len(values) != len(module.groups):
            raise ValueError(
                f"the message describes {len(values)} mask groups, the model has "
                f"{len(module.groups)}"
            )
        shape = tuple(values)
        sub = self._modules.get(shape)
        if sub is None:
            sub = module.with_widths(dict(zip(module.groups, values, strict=True)))
            sub = sub.to(device=module.device, dtype=module.dtype)
            self._modules = {shape: sub}
        load_tensors(sub, ctx.received)
        sub.train()
        return sub

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"size_history": [dict(h) for h in self.size_history]}

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size_history = [dict(h) for h in state.get("size_history", [])]


def _index(dims: tuple[tuple[int, str], ...], kept: Kept, target: Tensor) -> tuple[Any, ...]:
    """Advanced index selecting the kept channels along ``dims`` of ``target``, on its device."""
    if not dims:
        return (Ellipsis,)
    index: list[Any] = [slice(None)] * target.ndim
    sliced = sorted(dims)
    if len(sliced) == 1:
        dim, group = sliced[0]
        index[dim] = kept[group].to(target.device)
        return tuple(index)
    (d0, g0), (d1, g1) = sliced[0], sliced[1]
    index[d0] = kept[g0].to(target.device).reshape(-1, 1)
    index[d1] = kept[g1].to(target.device).reshape(1, -1)
    return tuple(index)
