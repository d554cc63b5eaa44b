"""FedAvg: the base algorithm's defaults, under their usual name."""

from __future__ import annotations

from fedlightning.algorithms.base import Algorithm

__all__ = ["FedAvg"]


class FedAvg(Algorithm):
    """Federated averaging: clients train locally, the server averages weighted by samples.

    Every hook is :class:`~fedlightning.algorithms.base.Algorithm`'s default.

    Args:
        uplink: Codec for client updates, e.g. ``TopK(0.1)``.
        downlink: Codec for the global weights.
        local_bn: Keep BatchNorm layers local (FedBN).

    Example:
        >>> from fedlightning.codecs import TopK
        >>> algorithm = FedAvg(uplink=TopK(0.1))

    References:
        H. B. McMahan et al., "Communication-Efficient Learning of Deep Networks from
        Decentralized Data", AISTATS 2017.
    """
