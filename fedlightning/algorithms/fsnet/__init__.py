"""Fed-FSNet: server-side fuzzy synthesizing network against non-IID clients.

References:
    J. Guo, S. Guo, J. Zhang, Z. Liu, "Fed-FSNet: Mitigating Non-I.I.D. Federated Learning
    via Fuzzy Synthesizing Network", arXiv:2208.12044, 2022.
"""

from fedlightning.algorithms.fsnet.algorithm import FedFSNet
from fedlightning.algorithms.fsnet.functional import (
    client_statistics,
    kl_uniform,
    mixture_coefficients,
    reconstruction_loss,
    sample_mixture,
    synthesis_matrix,
)
from fedlightning.algorithms.fsnet.hidden import HiddenModel, MixturePrior, train_hidden_model
from fedlightning.algorithms.fsnet.payload import PayloadBreakdown
from fedlightning.algorithms.fsnet.schedules import BetaSchedule, ConstantBeta, StepDecay

__all__ = [
    "BetaSchedule",
    "ConstantBeta",
    "FedFSNet",
    "HiddenModel",
    "MixturePrior",
    "PayloadBreakdown",
    "StepDecay",
    "client_statistics",
    "kl_uniform",
    "mixture_coefficients",
    "reconstruction_loss",
    "sample_mixture",
    "synthesis_matrix",
    "train_hidden_model",
]
