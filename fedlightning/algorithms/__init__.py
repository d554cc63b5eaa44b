"""Federated algorithms: hooks on the round loop, FedAvg by default.

Seed-specific algorithms live in sub-modules: :mod:`fedlightning.algorithms.community`
(seed 000), :mod:`fedlightning.algorithms.fsnet` (seed 003) and the sub-network family of
seed 004 (:class:`FedMorph`, :class:`FedMorphProx`, :class:`FedDropout`, :class:`FedPruned`).
"""

from fedlightning.algorithms.adaptive import FedAdagrad, FedAdam, FedAvgM, FedYogi
from fedlightning.algorithms.base import Algorithm, ClientContext, Reply, ServerContext
from fedlightning.algorithms.community import CommunityFedAvg, GroupIdentification
from fedlightning.algorithms.fed_dropout import FedDropout
from fedlightning.algorithms.fed_pruned import FedPruned
from fedlightning.algorithms.fedavg import FedAvg
from fedlightning.algorithms.fedmorph import FedMorph, FedMorphProx
from fedlightning.algorithms.fedprox import FedProx
from fedlightning.algorithms.fsnet import FedFSNet
from fedlightning.algorithms.functional import weighted_average
from fedlightning.algorithms.scaffold import Scaffold
from fedlightning.algorithms.server_optim import AdaptiveServerOptimizer
from fedlightning.algorithms.subnetwork import SubNetworkAlgorithm

__all__ = [
    "AdaptiveServerOptimizer",
    "Algorithm",
    "ClientContext",
    "CommunityFedAvg",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedDropout",
    "FedFSNet",
    "FedMorph",
    "FedMorphProx",
    "FedProx",
    "FedPruned",
    "FedYogi",
    "GroupIdentification",
    "Reply",
    "Scaffold",
    "ServerContext",
    "SubNetworkAlgorithm",
    "weighted_average",
]
