"""FedPruned: FedAvg on a random sub-network fixed at initialisation (seed 004's baseline)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from typing_extensions import override

from fedlightning.algorithms.subnetwork import SubNetworkAlgorithm
from fedlightning.codecs import Codec
from fedlightning.models.masked.morph import Kept, random_kept

if TYPE_CHECKING:
    from fedlightning.datamodules import FederatedDataModule
    from fedlightning.round import ServerContext

__all__ = ["FedPruned"]

_STREAM_PRUNED = 43


class FedPruned(SubNetworkAlgorithm):
    """FedAvg on a sub-network randomly pruned from the global network at initialisation.

    A ``keep_ratio`` share of every mask group's channels is drawn once from the trainer's
    seed; the server's masks are set to that choice (``v = +1`` kept, ``-1`` pruned), so the
    evaluated network is the pruned one.

    Args:
        keep_ratio: Share of channels kept in every mask group, in (0, 1].
        uplink: Codec for client updates.
        downlink: Codec for the sub-network weights.

    Raises:
        ValueError: If ``keep_ratio`` is not in (0, 1].

    Example:
        >>> algorithm = FedPruned(keep_ratio=0.25)

    References:
        Seed 004, section 5.1 ("FedPruned") and table 3.
    """

    server_attributes: ClassVar[tuple[str, ...]] = ("fixed",)

    def __init__(
        self,
        keep_ratio: float = 0.25,
        *,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
    ) -> None:
        if not (isinstance(keep_ratio, (int, float)) and 0.0 < keep_ratio <= 1.0):
            raise ValueError(f"keep_ratio must be in (0, 1], got keep_ratio={keep_ratio!r}")
        super().__init__(uplink=uplink, downlink=downlink)
        self.keep_ratio = float(keep_ratio)
        self.fixed: Kept = {}

    @override
    def setup(
        self, server: ServerContext, model: LightningModule, datamodule: FederatedDataModule
    ) -> None:
        super().setup(server, model, datamodule)
        if not self.fixed:
            gen = torch.Generator().manual_seed(server.seed_for(0, _STREAM_PRUNED))
            self.fixed = random_kept(self.model, self.keep_ratio, gen)
        with torch.no_grad():
            for group, v in self.model.mask_logits.items():
                v.fill_(-1.0)
                v[self.fixed[group].to(v.device)] = 1.0

    @override
    def kept(self, round: int, client: int) -> Kept:
        return self.fixed

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fixed": {g: i.clone() for g, i in self.fixed.items()}}

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.fixed = {g: i.clone() for g, i in state.get("fixed", {}).items()}
