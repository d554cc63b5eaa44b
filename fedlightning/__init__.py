"""fedlightning: federated learning research on PyTorch Lightning.

Researchers write ordinary LightningModules; :class:`FederatedTrainer` runs them across
simulated clients with pluggable algorithms, counts every byte that crosses the simulated
wire, and logs to any Lightning logger (Weights & Biases first).
"""

from fedlightning.trainer import FederatedTrainer
from fedlightning.version import __version__

__all__ = ["FederatedTrainer", "__version__"]
