"""Anomaly-detection metrics laid out as seed 000's tables.

* :func:`auc_roc`: AUC-ROC of raw anomaly scores, outliers positive (torchmetrics).
* :func:`auc_table`: per-client AUCs summarised per inlier class (Table 3).
* :func:`community_table` and :func:`adjusted_rand`: community membership against the true
  inlier classes (Table 2, plus the adjusted Rand index).

References:
    M. Nardi, L. Valerio, A. Passarella, seed 000, Tables 2 and 3.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

__all__ = ["adjusted_rand", "auc_roc", "auc_table", "community_table"]


def auc_roc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of anomaly scores (higher = more anomalous).

    Args:
        scores: One score per sample.
        labels: 1 for outliers (positives), 0 for inliers.

    Returns:
        The AUC in [0, 1].

    Raises:
        ValueError: If the shapes differ or a class is missing.
    """
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(
            f"scores and labels must be 1-D of the same shape, got {tuple(scores.shape)} and "
            f"{tuple(labels.shape)}"
        )
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        raise ValueError("AUC-ROC needs both inliers (0) and outliers (1) in labels")
    return float(binary_auroc(scores.float(), labels.long(), thresholds=None))


def auc_table(
    aucs: Sequence[float], classes: Sequence[int], num_classes: int | None = None
) -> dict[str, Any]:
    """Summarise per-client AUCs per inlier class, as Table 3 of seed 000.

    Args:
        aucs: One AUC per client.
        classes: The inlier class of each client.
        num_classes: Classes to report (default: ``max(classes) + 1``).

    Returns:
        ``{"per_class": {"0": mean, ...}, "per_class_std": {"0": std, ...}, "mean": m,
        "std": s, "per_client": [...]}`` where ``mean`` is the mean over clients and ``std``
        the mean over classes of the standard deviation across that class's clients (the
        "Std Dev" row of Table 3). Classes without clients are left out.

    Raises:
        ValueError: If the inputs differ in length or are empty.
    """
    a = np.asarray(aucs, dtype=np.float64)
    c = np.asarray(classes, dtype=np.int64)
    if a.shape != c.shape or a.size == 0:
        raise ValueError(
            f"aucs and classes must be non-empty and of the same length, got {a.size} and {c.size}"
        )
    k = int(num_classes) if num_classes is not None else int(c.max()) + 1
    per_class: dict[str, float] = {}
    per_class_std: dict[str, float] = {}
    for cls in range(k):
        values = a[c == cls]
        if values.size:
            per_class[str(cls)] = float(values.mean())
            per_class_std[str(cls)] = float(values.std())
    return {
        "per_class": per_class,
        "per_class_std": per_class_std,
        "mean": float(a.mean()),
        "std": float(np.mean(list(per_class_std.values()))),
        "per_client": a.tolist(),
    }


def community_table(
    communities: Sequence[Sequence[int]], classes: Sequence[int]
) -> list[dict[str, Any]]:
    """Community membership by inlier class, as Table 2 of seed 000.

    Args:
        communities: Client ids per community.
        classes: Inlier class of every client.

    Returns:
        One entry per community: ``{"community": k, "size": n, "classes": {"c": count}}``
        with classes ordered by count (largest first).
    """
    out = []
    for k, group in enumerate(communities):
        counts = Counter(int(classes[i]) for i in group)
        out.append(
            {
                "community": k,
                "size": len(group),
                "classes": {str(c): n for c, n in counts.most_common()},
            }
        )
    return out


def adjusted_rand(communities: Sequence[Sequence[int]], classes: Sequence[int]) -> float:
    """Adjusted Rand index between the communities and the true inlier classes."""
    from sklearn.metrics import adjusted_rand_score

    labels = np.full(len(classes), -1, dtype=np.int64)
    for k, group in enumerate(communities):
        labels[list(group)] = k
    if (labels < 0).any():
        raise ValueError("communities must cover every client to compute the Rand index")
    return float(adjusted_rand_score(np.asarray(classes), labels))
