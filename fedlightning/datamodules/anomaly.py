"""Seed 000's anomaly-detection data: inlier/outlier clients and per-inlier-class test sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from fedlightning.datamodules.datamodule import FederatedDataModule
from fedlightning.datamodules.partitioners import InlierOutlier

__all__ = ["AnomalyDataModule"]


class AnomalyDataModule(FederatedDataModule):
    """Clients with one inlier class plus a share ``d`` of outliers; test sets per inlier class.

    The training set is split by ``InlierOutlier(p, d)``: ``p`` clients per class, each with
    ``n_in`` inliers of its class and ``floor(d n_in / (1 - d))`` outliers of the other
    classes. The test set is split the same way with ``p = 1``, so each inlier class has one
    test set (about 900 inliers and 100 outliers on Fashion-MNIST), and every client is
    evaluated on the test set of its inlier class. Anomaly labels are 0 for inliers and 1
    for outliers (outliers are the positives of the AUC).

    Args:
        dataset: ``"fashion_mnist"`` (or another named dataset) or a pair ``(x, y)``.
        clients_per_class: ``p`` >= 1.
        outlier_fraction: ``d`` in [0, 1).
        num_classes: Number of classes (10 for Fashion-MNIST).
        batch_size: Training batch size.
        seed: Seed of both partitions.
        data_dir: Directory searched first for the dataset files.
        test: Test pair ``(x, y)`` for tensor datasets.
        download: Allow a torchvision download when the files are nowhere.

    Raises:
        ValueError: On invalid settings (``InlierOutlier`` names the parameter).

    Example:
        >>> dm = AnomalyDataModule("fashion_mnist", clients_per_class=9,
        ...                        outlier_fraction=0.1)  # doctest: +SKIP
        >>> dm.setup(); dm.num_clients, dm.inlier_class(10)  # doctest: +SKIP
        (90, 1)

    References:
        M. Nardi, L. Valerio, A. Passarella, seed 000, Sec. 3.1 and 4.2 (test protocol from
        the authors' reference implementation).
    """

    def __init__(
        self,
        dataset: str | tuple[Tensor, Tensor] = "fashion_mnist",
        *,
        clients_per_class: int = 9,
        outlier_fraction: float = 0.1,
        num_classes: int = 10,
        batch_size: int = 32,
        seed: int = 0,
        data_dir: str | Path | None = None,
        test: tuple[Tensor, Tensor] | None = None,
        download: bool = True,
    ) -> None:
        super().__init__(
            dataset,
            partition=InlierOutlier(clients_per_class, outlier_fraction, num_classes),
            test_partition=InlierOutlier(1, outlier_fraction, num_classes),
            batch_size=batch_size,
            seed=seed,
            data_dir=data_dir,
            test=test,
            download=download,
            eval_batch_size=1024,
        )
        self.anomaly_partition: InlierOutlier = self.partition  # type: ignore[assignment]
        self.clients_per_class = clients_per_class
        self.outlier_fraction = float(outlier_fraction)

    @property
    def inlier_classes(self) -> NDArray[np.int64]:
        """Inlier class of every client: the mode of its labels."""
        self.setup()
        out = np.empty(self.num_clients, dtype=np.int64)
        for cid in self.client_ids:
            labels = self.client_data(cid)[1]
            out[cid] = int(torch.bincount(labels).argmax())
        return out

    def inlier_class(self, cid: int) -> int:
        """Inlier class of client ``cid`` (the mode of its labels)."""
        labels = self.client_data(cid)[1]
        return int(torch.bincount(labels).argmax())

    def client_anomaly_data(self, cid: int) -> tuple[Tensor, Tensor]:
        """Client ``cid``'s training images and anomaly labels (1 = outlier)."""
        x, y = self.client_data(cid)
        return x, (y != self.inlier_class(cid)).long()

    def class_test_data(self, inlier_class: int) -> tuple[Tensor, Tensor]:
        """The test set of one inlier class: images and anomaly labels (1 = outlier).

        Raises:
            ValueError: If the class is out of range or there is no test set.
        """
        self.setup()
        n = self.anomaly_partition.num_classes
        if not 0 <= inlier_class < n:
            raise ValueError(f"inlier_class must be in [0, {n}), got inlier_class={inlier_class}")
        if self._test is None or self._test_parts is None:
            raise ValueError("this datamodule has no test set: pass test=(x, y)")
        idx = torch.from_numpy(self._test_parts[inlier_class])
        x, y = self._test[0][idx], self._test[1][idx]
        return x, (y != inlier_class).long()

    def client_test_data(self, cid: int) -> tuple[Tensor, Tensor]:
        """The test data client ``cid`` is evaluated on: its inlier class's test set."""
        return self.class_test_data(self.inlier_class(cid))
