"""Pure functions behind the aggregation rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["proximal_term", "weighted_average"]


def weighted_average(
    tensors: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> dict[str, Tensor]:
    """Weighted mean of several name -> tensor mappings, key by key.

    Floating-point tensors are averaged in their own dtype; integer tensors (counters such
    as BatchNorm's ``num_batches_tracked``) are averaged in float64 and rounded back.

    Args:
        tensors: One mapping per contributor, all with the same keys and shapes.
        weights: One non-negative weight per contributor, not all zero.

    Returns:
        The weighted mean of every key.

    Raises:
        ValueError: If the inputs are empty, of different lengths, or the weights are invalid.

    References:
        H. B. McMahan et al., "Communication-Efficient Learning of Deep Networks from
        Decentralized Data", AISTATS 2017 (FedAvg, weights = client sample counts).
    """
    if len(tensors) == 0:
        raise ValueError("weighted_average needs at least one mapping, got tensors=[]")
    if len(tensors) != len(weights):
        raise ValueError(
            f"weighted_average needs one weight per mapping, got {len(tensors)} mappings "
            f"and {len(weights)} weights"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 and not all zero, got weights={list(weights)}")
    total = float(sum(weights))
    shares = [float(w) / total for w in weights]
    out: dict[str, Tensor] = {}
    for name, first in tensors[0].items():
        if first.is_floating_point():
            acc = first * shares[0]
            for share, mapping in zip(shares[1:], tensors[1:], strict=True):
                acc = acc.add(mapping[name], alpha=share)
            out[name] = acc
        else:
            acc64 = first.to(torch.float64) * shares[0]
            for share, mapping in zip(shares[1:], tensors[1:], strict=True):
                acc64 = acc64 + mapping[name].to(torch.float64) * share
            out[name] = acc64.round().to(first.dtype)
    return out


def proximal_term(module: nn.Module, anchor: Mapping[str, Tensor], mu: float) -> Tensor:
    """FedProx's proximal term ``mu / 2 * ||w - w_anchor||^2`` over the module's parameters.

    Parameters missing from ``anchor`` (e.g. kept local) are left out.

    Args:
        module: The client's module.
        anchor: The weights the client received, by parameter name.
        mu: Proximal coefficient.

    Returns:
        A scalar tensor (zero when nothing is anchored).

    References:
        T. Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.
    """
    total = torch.zeros(())
    for name, param in module.named_parameters():
        if name in anchor:
            total = total + ((param - anchor[name]) ** 2).sum()
    return 0.5 * mu * total
