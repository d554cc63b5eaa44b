"""FedDropout: each round, clients train a random sub-network of the server's network."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from lightning.pytorch import LightningModule
from typing_extensions import override

from fedlightning.algorithms.subnetwork import SubNetworkAlgorithm
from fedlightning.codecs import Codec
from fedlightning.models.masked.morph import Kept, random_kept

if TYPE_CHECKING:
    from fedlightning.datamodules import FederatedDataModule
    from fedlightning.round import ServerContext

__all__ = ["FedDropout"]

_STREAM_DROPOUT = 41


class FedDropout(SubNetworkAlgorithm):
    """Federated Dropout: a fresh random ``keep_ratio`` of every layer's channels each round.

    The server keeps the full network and evaluates it whole; clients train the random
    sub-network and their updates are averaged back per parameter. Seed 004 sets the kept
    share per layer to 0.25 for MNIST / ResNet8 and 0.6 for CIFAR-10.

    Args:
        keep_ratio: Share of channels kept in every mask group, in (0, 1].
        per_client: Draw one sub-network per client (Caldas et al.) instead of one per
            round shared by the round's clients (seed 004's description).
        uplink: Codec for client updates.
        downlink: Codec for the sub-network weights.

    Raises:
        ValueError: If ``keep_ratio`` is not in (0, 1].

    Example:
        >>> from fedlightning.codecs import TopK
        >>> algorithm = FedDropout(keep_ratio=0.25, uplink=TopK(0.1))

    References:
        S. Caldas et al., "Expanding the Reach of Federated Learning by Reducing Client
        Resource Requirements", arXiv:1812.07210, 2018; seed 004, section 5.1 and table 3.
    """

    def __init__(
        self,
        keep_ratio: float = 0.25,
        *,
        per_client: bool = False,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
    ) -> None:
        if not (isinstance(keep_ratio, (int, float)) and 0.0 < keep_ratio <= 1.0):
            raise ValueError(f"keep_ratio must be in (0, 1], got keep_ratio={keep_ratio!r}")
        super().__init__(uplink=uplink, downlink=downlink)
        self.keep_ratio = float(keep_ratio)
        self.per_client = bool(per_client)

    @override
    def setup(
        self, server: ServerContext, model: LightningModule, datamodule: FederatedDataModule
    ) -> None:
        super().setup(server, model, datamodule)
        with torch.no_grad():  # the server evaluates the whole network
            for v in self.model.mask_logits.values():
                v.fill_(1.0)

    @override
    def share_key(self, round: int, client: int) -> tuple[int, int]:
        return (round, client if self.per_client else -1)

    @override
    def kept(self, round: int, client: int) -> Kept:
        key = self.share_key(round, client)[1]
        seed = self.server.seed_for(round, key + 1, _STREAM_DROPOUT)
        return random_kept(self.model, self.keep_ratio, torch.Generator().manual_seed(seed))
