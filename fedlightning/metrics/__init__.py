"""Evaluation measures beyond a module's own test_step (e.g. sample quality of generators)."""

from fedlightning.metrics.classifier_scores import (
    classifier_probabilities,
    classifier_scores,
    score_from_probabilities,
)
from fedlightning.metrics.frechet import (
    extract_features,
    frechet_distance,
    frechet_distance_images,
    gaussian_statistics,
)

__all__ = [
    "classifier_probabilities",
    "classifier_scores",
    "extract_features",
    "frechet_distance",
    "frechet_distance_images",
    "gaussian_statistics",
    "score_from_probabilities",
]
