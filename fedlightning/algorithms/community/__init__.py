"""Community-based federated anomaly detection (seed 000): Phase I groups, Phase II FedAvg.

Example:
    >>> from fedlightning.algorithms.community import CommunityFedAvg, GroupIdentification
    >>> algorithm = CommunityFedAvg(phase1=GroupIdentification(tolerance=0.06))

References:
    M. Nardi, L. Valerio, A. Passarella, "Communication Costs Analysis of Unsupervised
    Federated Learning: an Anomaly Detection Scenario", Ital-IA 2023 (seed 000).
"""

from fedlightning.algorithms.community.detectors import (
    AutoencoderDetector,
    Detector,
    fit_autoencoder,
)
from fedlightning.algorithms.community.evaluation import client_aucs, true_communities
from fedlightning.algorithms.community.fedavg import CommunityFedAvg
from fedlightning.algorithms.community.graph import (
    COMMUNITY_METHODS,
    accepts,
    candidate_lists,
    community_labels,
    detect_communities,
    graph_modularity,
    sampling_tolerance,
    similarity_graph,
)
from fedlightning.algorithms.community.local import train_local
from fedlightning.algorithms.community.phase1 import (
    GroupIdentification,
    Phase1Result,
    inlier_ratio_matrix,
)

__all__ = [
    "COMMUNITY_METHODS",
    "AutoencoderDetector",
    "CommunityFedAvg",
    "Detector",
    "GroupIdentification",
    "Phase1Result",
    "accepts",
    "candidate_lists",
    "client_aucs",
    "community_labels",
    "detect_communities",
    "fit_autoencoder",
    "graph_modularity",
    "inlier_ratio_matrix",
    "sampling_tolerance",
    "similarity_graph",
    "train_local",
    "true_communities",
]
