"""FSNet's hidden model H: a decoder from the class-probability simplex back to input space,
trained through the frozen global model by minimising eq. (3), then used to synthesize D'.

References:
    J. Guo, S. Guo, J. Zhang, Z. Liu, "Fed-FSNet: Mitigating Non-I.I.D. Federated Learning
    via Fuzzy Synthesizing Network", arXiv:2208.12044, 2022 (sections 3.2.1-3.2.2).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedlightning.algorithms.fsnet.functional import (
    MixtureWeights,
    mixture_coefficients,
    reconstruction_loss,
    sample_mixture,
)
from fedlightning.models.follow import to_module

__all__ = ["HiddenModel", "MixturePrior", "train_hidden_model"]


class HiddenModel(nn.Module):
    """MLP decoder ``H_omega``: class probabilities -> an input-shaped sample.

    The paper does not give H's layers. This one is ``Linear(n -> w1) -> ReLU -> ... ->
    Linear(-> prod(input_shape))`` with a linear output: eq. (3)'s targets are Gaussian
    draws, not bounded to the data range.

    Args:
        num_classes: Size of the probability vectors it reads, >= 2.
        input_shape: Shape of one sample it writes, e.g. ``(1, 28, 28)``.
        hidden: Widths of the hidden layers (may be empty: a linear decoder).

    Raises:
        ValueError: If a size is out of range.

    Example:
        >>> h = HiddenModel(10, (1, 28, 28))
        >>> h(torch.full((4, 10), 0.1)).shape
        torch.Size([4, 1, 28, 28])
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        hidden: Sequence[int] = (256, 512),
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got num_classes={num_classes}")
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"input_shape must be positive sizes, got input_shape={input_shape}")
        if any(w < 1 for w in hidden):
            raise ValueError(f"hidden widths must be >= 1, got hidden={tuple(hidden)}")
        self.num_classes = int(num_classes)
        self.input_shape = shape
        widths = [self.num_classes, *(int(w) for w in hidden)]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], math.prod(shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, probabilities: Tensor) -> Tensor:
        """Decode probability vectors of shape ``(N, num_classes)`` into ``(N, *input_shape)``."""
        if probabilities.dim() != 2 or probabilities.shape[1] != self.num_classes:
            raise ValueError(
                f"probabilities must have shape (N, {self.num_classes}), "
                f"got {tuple(probabilities.shape)}"
            )
        return self.net(probabilities).reshape(-1, *self.input_shape)


@dataclass(frozen=True)
class MixturePrior:
    """The Gaussian mixture ``sum_k pi_k N(mu_k, Sigma_k)`` formed from client statistics.

    Attributes:
        means: Component means, ``(K,)`` or ``(K, *input_shape)``.
        variances: Component variances, same shape.
        num_samples: Each component's client sample count, ``(K,)``.
        weights: How the coefficients pi are chosen (see
            :func:`~fedlightning.algorithms.fsnet.functional.mixture_coefficients`).
    """

    means: Tensor
    variances: Tensor
    num_samples: Tensor
    weights: MixtureWeights = "dirichlet"

    def sample(self, n: int, input_shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Draw ``n`` samples; ``"dirichlet"`` coefficients are drawn afresh for this batch."""
        pi = mixture_coefficients(self.num_samples, self.weights, generator)
        return sample_mixture(self.means, self.variances, pi, n, input_shape, generator)


def train_hidden_model(
    hidden: nn.Module,
    classifier: Callable[[Tensor], Tensor],
    prior: MixturePrior,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    batch_size: int,
    input_shape: tuple[int, ...],
    generator: torch.Generator,
) -> list[float]:
    """Minimise eq. (3), ``E_z ||H(P(z)) - z||_2`` with z from the mixture prior.

    ``P`` is the global model, frozen: it maps z to class probabilities (softmax of its
    logits) without gradients; only ``H``'s parameters move. The draws are made on the
    generator's device (the prior's tensors must be there) and moved to ``hidden``'s device
    and floating dtype, which must be the classifier's too.

    Args:
        hidden: The hidden model H.
        classifier: The frozen global model, returning logits.
        prior: The Gaussian mixture z is drawn from.
        optimizer: Optimizer over ``hidden``'s parameters.
        steps: Optimizer steps, >= 1.
        batch_size: Draws per step, >= 1.
        input_shape: Shape of one sample.
        generator: Source of randomness for the draws.

    Returns:
        The loss of every step.

    Raises:
        ValueError: If ``steps`` or ``batch_size`` is below 1.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got steps={steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got batch_size={batch_size}")
    hidden.train()
    losses: list[float] = []
    for _ in range(steps):
        z = to_module(prior.sample(batch_size, input_shape, generator), hidden)
        with torch.no_grad():
            probabilities = torch.softmax(classifier(z), dim=1)
        loss = reconstruction_loss(hidden(probabilities), z)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
