"""Federated data: in-memory datasets, partitioners, loaders and the FederatedDataModule."""

from fedlightning.datamodules.datamodule import FederatedDataModule
from fedlightning.datamodules.datasets import DatasetNotFoundError, load_dataset
from fedlightning.datamodules.loader import TensorLoader
from fedlightning.datamodules.partitioners import (
    IID,
    Dirichlet,
    InlierOutlier,
    Partitioner,
    SortedShards,
)
from fedlightning.datamodules.report import PartitionReport, plot_partition

__all__ = [
    "IID",
    "DatasetNotFoundError",
    "Dirichlet",
    "FederatedDataModule",
    "InlierOutlier",
    "PartitionReport",
    "Partitioner",
    "SortedShards",
    "TensorLoader",
    "load_dataset",
    "plot_partition",
]
