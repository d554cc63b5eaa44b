"""Pure functions behind FedMorph's soft masks: eq. (6), logistic noise, JS divergence.

References:
    Z. Wang et al., "FedMorph: Communication Efficient Federated Learning via Morphing
    Neural Network" (seed 004), eq. (4) and (6); E. Jang, S. Gu, B. Poole, "Categorical
    Reparameterization with Gumbel-Softmax", ICLR 2017; Y. Bengio, N. Leonard, A. Courville,
    "Estimating or Propagating Gradients Through Stochastic Neurons for Conditional
    Computation", arXiv:1308.3432, 2013 (the straight-through mask).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from fedlightning.models.follow import draw_device

__all__ = [
    "js_divergence",
    "keep_probability",
    "logistic_noise",
    "relaxed_mask",
    "straight_through_mask",
]


def logistic_noise(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Samples of the standard logistic distribution, ``l = log(u / (1 - u))``.

    Args:
        shape: Output shape.
        generator: Source of randomness (explicit seed); the global one when ``None``. A
            generator draws on its own device and the result is moved to ``device``, so a
            CPU generator gives the same samples whatever the output device.
        device: Output device.
        dtype: Output dtype.

    Returns:
        A tensor of standard logistic samples.
    """
    eps = torch.finfo(dtype).tiny
    if device is None:
        u = torch.rand(shape, generator=generator, dtype=dtype)
    else:
        u = torch.rand(
            shape, generator=generator, device=draw_device(generator, device), dtype=dtype
        ).to(device)
    u = u.clamp(eps, 1.0 - torch.finfo(dtype).eps)
    return torch.log(u) - torch.log1p(-u)


def relaxed_mask(v: Tensor, tau: float, noise: Tensor | None = None) -> Tensor:
    """The soft mask of eq. (6): ``m = sigmoid((v + l) / tau)``.

    ``v = log(pi / (1 - pi))`` is the learnable mask logit. With ``noise`` (logistic samples
    ``l``, broadcastable to ``v``) the mask is stochastic, as while distilling; without it
    the mask is the deterministic ``sigmoid(v / tau)`` used at evaluation.

    Args:
        v: Mask logits.
        tau: Temperature, > 0 (the paper uses 1e-3).
        noise: Logistic noise, or ``None`` for the deterministic mask.

    Returns:
        Mask values in (0, 1), of the broadcast shape of ``v`` and ``noise``.

    Raises:
        ValueError: If ``tau`` is not > 0.

    References:
        Seed 004, eq. (6).
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got tau={tau!r}")
    logits = v if noise is None else v + noise
    return torch.sigmoid(logits / tau)


def straight_through_mask(v: Tensor, temperature: float = 1.0) -> Tensor:
    """The hard mask ``1[v >= 0]`` forward, the gradient of ``sigmoid(v / temperature)`` back.

    Forward, the masked network is exactly the sub-network that morphing cuts (channels
    with ``v >= 0``), with no noise; backward, each logit gets the gradient it would get
    through the smooth keep probability, so the logits still learn which channels matter.
    An alternative to eq. (6)'s noisy masks while distilling; not in the paper.

    Args:
        v: Mask logits.
        temperature: Temperature of the surrogate sigmoid, > 0 (1 matches the gradient of
            :func:`keep_probability`, the quantity the size regularizer sums).

    Returns:
        Masks of ``v``'s shape, exactly 0 or 1.

    Raises:
        ValueError: If ``temperature`` is not > 0.

    References:
        Bengio et al. 2013 (straight-through estimator).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got temperature={temperature!r}")
    hard = (v >= 0).to(v.dtype)
    soft = torch.sigmoid(v / temperature)
    return hard + (soft - soft.detach())


def keep_probability(v: Tensor) -> Tensor:
    """Probability ``pi = sigmoid(v)`` that a unit is kept by the noisy mask as tau -> 0.

    Since ``l`` is standard logistic, ``P(v + l > 0) = sigmoid(v)``; this is the expected
    value of eq. (6)'s mask in the paper's low-temperature regime, and the smooth quantity
    the relaxed size regularizer sums ("the L1 norm of the soft-mask layer").

    Args:
        v: Mask logits.

    Returns:
        ``sigmoid(v)``.
    """
    return torch.sigmoid(v)


def js_divergence(logits_p: Tensor, logits_q: Tensor, *, reduction: str = "mean") -> Tensor:
    """Jensen-Shannon divergence between two categorical distributions given as logits.

    ``JS(p || q) = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``, in nats; it is
    symmetric and lies in ``[0, log 2]``.

    Args:
        logits_p: Logits of shape ``(N, C)``.
        logits_q: Logits of the same shape.
        reduction: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` (one value per row).

    Returns:
        The divergence, reduced as asked.

    Raises:
        ValueError: If the shapes differ or ``reduction`` is unknown.

    References:
        Seed 004, eq. (4): the distillation loss between the morphed and the aggregated
        network.
    """
    if logits_p.shape != logits_q.shape:
        raise ValueError(
            f"logits_p and logits_q must have the same shape, got {tuple(logits_p.shape)} "
            f"and {tuple(logits_q.shape)}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got reduction={reduction!r}")
    log_p = F.log_softmax(logits_p, dim=-1)
    log_q = F.log_softmax(logits_q, dim=-1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    js = 0.5 * (kl_pm + kl_qm)
    if reduction == "mean":
        return js.mean()
    if reduction == "sum":
        return js.sum()
    return js
