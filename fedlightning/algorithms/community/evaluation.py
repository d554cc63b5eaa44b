"""Seed 000's test protocol: every client's model scored on its inlier class's test set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from torch import Tensor

from fedlightning.metrics.anomaly import auc_roc

__all__ = ["Scorer", "client_aucs", "true_communities"]


class Scorer(Protocol):
    """Anything with an anomaly score (autoencoders, OC-SVM)."""

    def anomaly_score(self, x: Tensor) -> Tensor:
        """Higher for more anomalous samples."""
        ...


def true_communities(classes: Sequence[int]) -> list[list[int]]:
    """The ideal grouping: clients sharing an inlier class, ordered by class.

    Example:
        >>> true_communities([0, 0, 1, 1, 0])
        [[0, 1, 4], [2, 3]]
    """
    groups: dict[int, list[int]] = {}
    for client, cls in enumerate(classes):
        groups.setdefault(int(cls), []).append(client)
    return [groups[c] for c in sorted(groups)]


def client_aucs(
    models: Sequence[Scorer],
    classes: Sequence[int],
    test_data: Callable[[int], tuple[Tensor, Tensor]],
) -> list[float]:
    """AUC-ROC of each client's model on the test set of its inlier class.

    Clients that share a model object and a class (members of one community) share one
    scoring pass.

    Args:
        models: The model each client uses (the same object for a community's members).
        classes: Each client's inlier class.
        test_data: ``class -> (x, anomaly labels)``, e.g.
            :meth:`~fedlightning.datamodules.anomaly.AnomalyDataModule.class_test_data`.

    Returns:
        One AUC per client.

    Raises:
        ValueError: If ``models`` and ``classes`` differ in length.
    """
    if len(models) != len(classes):
        raise ValueError(
            f"need one model per client, got {len(models)} models and {len(classes)} classes"
        )
    cache: dict[tuple[int, int], float] = {}
    out = []
    for model, cls in zip(models, classes, strict=True):
        key = (id(model), int(cls))
        if key not in cache:
            x, labels = test_data(int(cls))
            cache[key] = auc_roc(model.anomaly_score(x), labels)
        out.append(cache[key])
    return out
