"""Federated algorithms: hooks on the round loop, FedAvg by default."""

from fedlightning.algorithms.base import Algorithm, ClientContext, Reply
from fedlightning.algorithms.fedavg import FedAvg
from fedlightning.algorithms.fedprox import FedProx
from fedlightning.algorithms.functional import weighted_average

__all__ = ["Algorithm", "ClientContext", "FedAvg", "FedProx", "Reply", "weighted_average"]
