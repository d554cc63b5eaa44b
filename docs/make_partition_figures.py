"""Draw the partition figures of docs/partitioners.md on Fashion-MNIST.

Usage: python docs/make_partition_figures.py [--out docs/img]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedlightning.datamodules import (
    IID,
    Dirichlet,
    InlierOutlier,
    Partitioner,
    PartitionReport,
    SortedShards,
    load_dataset,
    plot_partition,
)

CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Boot"]  # fmt: skip

FIGURES: dict[str, tuple[Partitioner, str]] = {
    "partition_iid.png": (IID(30), "IID(30)"),
    "partition_dirichlet_0.1.png": (Dirichlet(30, 0.1), "Dirichlet(30, alpha=0.1)"),
    "partition_dirichlet_1.png": (Dirichlet(30, 1.0), "Dirichlet(30, alpha=1)"),
    "partition_shards.png": (SortedShards(30, 2), "SortedShards(30, shards_per_client=2)"),
    "partition_inlier_outlier.png": (
        InlierOutlier(clients_per_class=3, outlier_fraction=0.1),
        "InlierOutlier(clients_per_class=3, outlier_fraction=0.1)",
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "img")
    args = parser.parse_args()
    _, y = load_dataset("fashion_mnist", split="train", download=False)
    labels = y.numpy()
    for name, (partitioner, title) in FIGURES.items():
        report = PartitionReport.from_partition(labels, partitioner(labels, seed=0), 10)
        path = plot_partition(report, args.out / name, title=f"Fashion-MNIST, {title}",
                              class_names=CLASSES)  # fmt: skip
        print(path, report.summary())


if __name__ == "__main__":
    main()
