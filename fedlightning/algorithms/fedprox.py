"""FedProx: FedAvg plus a proximal term on the local loss."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule
from torch import Tensor
from typing_extensions import override

from fedlightning.algorithms.base import ClientContext
from fedlightning.algorithms.fedavg import FedAvg
from fedlightning.algorithms.functional import proximal_term
from fedlightning.codecs import Codec

__all__ = ["FedProx"]


class FedProx(FedAvg):
    """FedAvg with the proximal term ``mu / 2 * ||w - w_global||^2`` added to each local loss.

    Args:
        mu: Proximal coefficient, >= 0 (``mu = 0`` is FedAvg).
        uplink: Codec for client updates.
        downlink: Codec for the global weights.
        local_bn: Keep BatchNorm layers local.

    Raises:
        ValueError: If ``mu`` is negative.

    References:
        T. Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.
    """

    def __init__(
        self,
        mu: float = 0.01,
        *,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
        local_bn: bool = False,
    ) -> None:
        if not mu >= 0:
            raise ValueError(f"FedProx mu must be >= 0, got mu={mu!r}")
        super().__init__(uplink=uplink, downlink=downlink, local_bn=local_bn)
        self.mu = float(mu)

    @override
    def training_loss(
        self, ctx: ClientContext, module: LightningModule, batch: Any, loss: Tensor
    ) -> Tensor:
        if self.mu == 0.0:
            return loss
        return loss + proximal_term(module, ctx.received, self.mu)
