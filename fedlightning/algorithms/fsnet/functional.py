"""Pure functions of Fed-FSNet: client statistics, the Gaussian mixture prior, eq. (3),
the synthesis matrix S of eq. (9), and the KL-to-uniform regularizer of eq. (10)/(11).

References:
    J. Guo, S. Guo, J. Zhang, Z. Liu, "Fed-FSNet: Mitigating Non-I.I.D. Federated Learning
    via Fuzzy Synthesizing Network", arXiv:2208.12044, 2022 (section 3).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "MixtureWeights",
    "Statistics",
    "client_statistics",
    "kl_uniform",
    "mixture_coefficients",
    "reconstruction_loss",
    "sample_mixture",
    "synthesis_matrix",
]

Statistics = Literal["scalar", "pixel"]
MixtureWeights = Literal["samples", "uniform", "dirichlet"]

_STATISTICS = ("scalar", "pixel")
_MIXTURE_WEIGHTS = ("samples", "uniform", "dirichlet")


def client_statistics(x: Tensor, kind: Statistics = "scalar") -> tuple[Tensor, Tensor]:
    """Mean and variance of a client's inputs: its component of the mixture prior of eq. (3).

    Section 3.2.1 has every client upload "two simple scalars including its local mean
    mu_k and variance Sigma_k"; that is ``kind="scalar"`` (over all samples and features).
    ``kind="pixel"`` computes them per input feature (a diagonal covariance), a richer
    prior that also reveals each client's mean image.

    Args:
        x: The client's inputs, shape ``(N, *input_shape)``, ``N >= 1``.
        kind: ``"scalar"`` or ``"pixel"``.

    Returns:
        ``(mean, variance)``: 0-d tensors for ``"scalar"``, tensors of shape ``input_shape``
        for ``"pixel"``; float32, the variance is the population variance (divides by N).

    Raises:
        ValueError: If ``kind`` is unknown or ``x`` is empty.
    """
    if kind not in _STATISTICS:
        raise ValueError(f"kind must be one of {_STATISTICS}, got kind={kind!r}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    data = x.detach().to(torch.float64)
    if kind == "scalar":
        mean, var = data.mean(), data.var(unbiased=False)
    else:
        mean, var = data.mean(dim=0), data.var(dim=0, unbiased=False)
    return mean.to(torch.float32), var.to(torch.float32)


def mixture_coefficients(
    num_samples: Tensor, kind: MixtureWeights, generator: torch.Generator | None = None
) -> Tensor:
    """Mixture coefficients pi_k of the prior sum_k pi_k N(mu_k, Sigma_k); they sum to 1.

    The paper asks for "variational mixture coefficients" that sum to 1 (section 4.3) and
    does not say how they are chosen. ``"samples"`` weighs each client by its share of
    samples (as FedAvg does); ``"uniform"`` gives every client the same weight;
    ``"dirichlet"`` draws fresh coefficients from a flat Dirichlet at every call, so the
    mixture varies between batches.

    Args:
        num_samples: Sample count of each component, shape ``(K,)``, positive.
        kind: ``"samples"``, ``"uniform"`` or ``"dirichlet"``.
        generator: Source of randomness for ``"dirichlet"``.

    Returns:
        Coefficients of shape ``(K,)``, float64, summing to 1.

    Raises:
        ValueError: If ``kind`` is unknown or ``num_samples`` is empty or not positive.
    """
    if kind not in _MIXTURE_WEIGHTS:
        raise ValueError(f"kind must be one of {_MIXTURE_WEIGHTS}, got kind={kind!r}")
    counts = num_samples.detach().to(torch.float64).reshape(-1)
    if counts.numel() == 0 or not bool((counts > 0).all()):
        raise ValueError(
            f"num_samples must be a non-empty tensor of positive counts, got {counts.tolist()}"
        )
    if kind == "samples":
        weights = counts
    elif kind == "uniform":
        weights = torch.ones_like(counts)
    else:  # a flat Dirichlet: normalised i.i.d. Exp(1) draws
        u = torch.rand(counts.shape, generator=generator, dtype=torch.float64)
        weights = -torch.log1p(-u)
    return weights / weights.sum()


def sample_mixture(
    means: Tensor,
    variances: Tensor,
    weights: Tensor,
    num_samples: int,
    input_shape: tuple[int, ...],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw ``z ~ sum_k pi_k N(mu_k, Sigma_k)`` with diagonal covariances (eq. 3's prior).

    Args:
        means: Component means, shape ``(K,)`` (scalar statistics) or ``(K, *input_shape)``.
        variances: Component variances, same shape as ``means``, non-negative.
        weights: Mixture coefficients ``pi``, shape ``(K,)``, non-negative, summing to 1.
        num_samples: Number of draws, >= 1.
        input_shape: Shape of one sample.
        generator: Source of randomness.

    Returns:
        Samples of shape ``(num_samples, *input_shape)``, float32.

    Raises:
        ValueError: If shapes disagree or values are out of range.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got num_samples={num_samples}")
    if means.shape != variances.shape:
        raise ValueError(
            f"means and variances must have the same shape, got {tuple(means.shape)} and "
            f"{tuple(variances.shape)}"
        )
    k = means.shape[0] if means.dim() > 0 else 0
    if k == 0 or tuple(means.shape[1:]) not in ((), tuple(input_shape)):
        raise ValueError(
            f"means must have shape (K,) or (K, {', '.join(map(str, input_shape))}) with K >= 1, "
            f"got {tuple(means.shape)}"
        )
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape ({k},), got {tuple(weights.shape)}")
    if bool((variances < 0).any()):
        raise ValueError("variances must be >= 0")
    if bool((weights < 0).any()) or not math.isclose(float(weights.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(f"weights must be >= 0 and sum to 1, got sum {float(weights.sum())}")
    component = torch.multinomial(
        weights.to(torch.float64), num_samples, replacement=True, generator=generator
    )
    extra = (1,) * (len(input_shape) - (means.dim() - 1))
    mu = means.to(torch.float32)[component].reshape(num_samples, *means.shape[1:], *extra)
    std = variances.to(torch.float32)[component].sqrt().reshape(mu.shape)
    noise = torch.randn((num_samples, *input_shape), generator=generator)
    return mu + std * noise


def reconstruction_loss(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Eq. (3): the mean over samples of the L2 distance ``||H(P(z)) - z||_2``.

    The paper writes the (unsquared) L2 distance; it is used as written.

    Args:
        reconstruction: ``H(P(z))``, shape ``(N, ...)``.
        target: ``z``, the same shape.

    Returns:
        A 0-d tensor.

    Raises:
        ValueError: If the shapes differ.
    """
    if reconstruction.shape != target.shape:
        raise ValueError(
            f"reconstruction and target must have the same shape, got "
            f"{tuple(reconstruction.shape)} and {tuple(target.shape)}"
        )
    diff = (reconstruction - target).flatten(1)
    return diff.norm(dim=1).mean()


def synthesis_matrix(
    num_classes: int,
    num_samples: int,
    dominance: tuple[float, float] = (0.7, 0.95),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The matrix S of eq. (9): softmax-like vectors with one dominant class each.

    Sample ``j`` targets class ``j mod num_classes`` (so 60 samples and 10 classes give 6
    per class). Its dominant entry ``C`` is drawn uniformly from ``dominance``; the rest
    ``1 - C`` is the paper's ``epsilon``, split evenly over the other classes when
    ``dominance[0] == dominance[1]`` and with flat Dirichlet shares otherwise, so that the
    samples of one class differ. Every row sums to 1 and ``C`` dominates (``C > 1/n``).

    Rows are samples (the paper writes one column per sample; this is its transpose).

    Args:
        num_classes: Number of classes ``n``, >= 2.
        num_samples: Number of synthetic samples, >= 1.
        dominance: ``(low, high)`` range of the dominant entry, ``1/n < low <= high <= 1``.
        generator: Source of randomness.

    Returns:
        ``(S, classes)``: S of shape ``(num_samples, num_classes)`` and the dominant class of
        each row, shape ``(num_samples,)``, int64.

    Raises:
        ValueError: If an argument is out of range.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got num_classes={num_classes}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got num_samples={num_samples}")
    low, high = (float(v) for v in dominance)
    if not (1.0 / num_classes < low <= high <= 1.0):
        raise ValueError(
            f"dominance must satisfy 1/num_classes < low <= high <= 1, got dominance={dominance} "
            f"with num_classes={num_classes}"
        )
    classes = torch.arange(num_samples) % num_classes
    dominant = low + (high - low) * torch.rand(
        num_samples, generator=generator, dtype=torch.float64
    )
    if low == high:
        shares = torch.ones(num_samples, num_classes, dtype=torch.float64)
    else:
        shares = -torch.log1p(
            -torch.rand(num_samples, num_classes, generator=generator, dtype=torch.float64)
        )
    rows = torch.arange(num_samples)
    shares[rows, classes] = 0.0
    shares = shares / shares.sum(dim=1, keepdim=True)
    s = shares * (1.0 - dominant)[:, None]
    s[rows, classes] = dominant
    return s.to(torch.float32), classes


def kl_uniform(logits: Tensor) -> Tensor:
    """Term (ii) of eq. (10)/(11): mean over samples of ``KL(U || softmax(logits))``.

    ``KL(U || P) = sum_c (1/n) log((1/n) / P_c) = -log n - mean_c log P_c``; it is 0 exactly
    when the prediction is uniform.

    Args:
        logits: Model outputs on the synthetic samples, shape ``(N, n)``.

    Returns:
        A 0-d tensor, >= 0.

    Raises:
        ValueError: If ``logits`` is not 2-d.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, num_classes), got {tuple(logits.shape)}")
    log_p = torch.log_softmax(logits, dim=1)
    return (-math.log(logits.shape[1]) - log_p.mean(dim=1)).mean()
