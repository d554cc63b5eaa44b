"""What a partition looks like: per-client sizes and class histograms, and a plot of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["PartitionReport", "plot_partition"]


@dataclass(frozen=True)
class PartitionReport:
    """Per-client class histogram of a partition.

    Attributes:
        histogram: ``(num_clients, num_classes)`` integer counts; row ``k`` is client ``k``.

    Example:
        >>> import numpy as np
        >>> r = PartitionReport.from_partition(np.array([0, 0, 1, 1]), [np.array([0, 1]),
        ...     np.array([2, 3])], num_classes=2)
        >>> r.sizes.tolist(), r.classes_per_client.tolist()
        ([2, 2], [1, 1])
    """

    histogram: NDArray[np.int64]

    @classmethod
    def from_partition(
        cls, labels: ArrayLike, parts: Sequence[ArrayLike], num_classes: int | None = None
    ) -> PartitionReport:
        """Count the labels of every client's samples.

        Args:
            labels: Class label of every sample, shape ``(N,)``.
            parts: One index array per client.
            num_classes: Number of classes (default: ``max(labels) + 1``).

        Returns:
            The report.

        Raises:
            ValueError: If ``num_classes`` is smaller than the labels require.
        """
        y = np.asarray(labels).astype(np.int64)
        needed = int(y.max()) + 1 if y.size else 0
        k = needed if num_classes is None else num_classes
        if k < needed:
            raise ValueError(f"num_classes must be >= {needed} for these labels, got {k}")
        hist = (
            np.stack([np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=k) for p in parts])
            if len(parts)
            else np.zeros((0, k), dtype=np.int64)
        )
        return cls(hist.astype(np.int64))

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return int(self.histogram.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return int(self.histogram.shape[1])

    @property
    def sizes(self) -> NDArray[np.int64]:
        """Samples per client."""
        return self.histogram.sum(axis=1)

    @property
    def classes_per_client(self) -> NDArray[np.int64]:
        """Number of distinct classes each client holds."""
        return (self.histogram > 0).sum(axis=1)

    @property
    def class_proportions(self) -> NDArray[np.float64]:
        """Row-normalised histogram (zeros for empty clients)."""
        sizes = self.sizes[:, None].astype(np.float64)
        return np.divide(self.histogram, sizes, out=np.zeros(self.histogram.shape), where=sizes > 0)

    def summary(self) -> dict[str, float]:
        """Summary statistics of sizes and label skew.

        ``mean_tv_from_global`` is the mean total-variation distance between a client's class
        proportions and the pooled ones (0 for a perfectly IID split).
        """
        sizes = self.sizes.astype(np.float64)
        total = float(sizes.sum())
        pooled = self.histogram.sum(axis=0) / total if total else np.zeros(self.num_classes)
        tv = 0.5 * np.abs(self.class_proportions - pooled).sum(axis=1)
        empty = len(sizes) == 0
        return {
            "num_clients": float(self.num_clients),
            "num_classes": float(self.num_classes),
            "num_samples": total,
            "size_min": 0.0 if empty else float(sizes.min()),
            "size_max": 0.0 if empty else float(sizes.max()),
            "size_mean": 0.0 if empty else float(sizes.mean()),
            "size_std": 0.0 if empty else float(sizes.std()),
            "classes_per_client_mean": 0.0 if empty else float(self.classes_per_client.mean()),
            "mean_tv_from_global": 0.0 if empty else float(tv[sizes > 0].mean()),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: sizes, histogram (lists) and :meth:`summary`."""
        return {
            "sizes": self.sizes.tolist(),
            "histogram": self.histogram.tolist(),
            "summary": self.summary(),
        }


def plot_partition(
    report: PartitionReport,
    path: str | Path,
    *,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Save a stacked bar chart of class counts per client.

    Args:
        report: The partition report.
        path: Output file (PNG, PDF or SVG by suffix); parent directories are created.
        title: Figure title.
        class_names: Legend labels, one per class.

    Returns:
        The path written.
    """
    # The object-oriented API with the Agg canvas leaves pyplot's global backend alone.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hist = report.histogram
    k = report.num_clients
    fig = Figure(figsize=(min(14.0, 4.0 + 0.08 * k), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["tab10" if report.num_classes <= 10 else "tab20"]
    bottom = np.zeros(k)
    xs = np.arange(k)
    for c in range(report.num_classes):
        label = class_names[c] if class_names is not None else str(c)
        ax.bar(
            xs,
            hist[:, c],
            bottom=bottom,
            width=0.85 if k <= 100 else 1.0,
            color=cmap(c % cmap.N),
            label=label,
            linewidth=0,
        )
        bottom += hist[:, c]
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_xlabel("client")
    ax.set_ylabel("samples")
    if title:
        ax.set_title(title)
    ax.legend(title="class", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=7, ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
