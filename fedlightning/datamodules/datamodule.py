"""FederatedDataModule: a dataset, a partitioner, and one loader per client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from fedlightning.datamodules.datasets import DATASETS, load_dataset
from fedlightning.datamodules.loader import TensorLoader
from fedlightning.datamodules.partitioners import InlierOutlier, Partitioner
from fedlightning.datamodules.report import PartitionReport, plot_partition

__all__ = ["FederatedDataModule"]


def _as_pair(name: str, data: Any) -> tuple[Tensor, Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(f"{name} must be a pair (x, y) of tensors, got {type(data).__name__}")
    x, y = (torch.as_tensor(t) for t in data)
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"{name} must be (x, y) with y of shape (N,) and len(x) == N, got x of shape "
            f"{tuple(x.shape)} and y of shape {tuple(y.shape)}"
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"{name}: labels y must be integers, got dtype {y.dtype}")
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    return x, y.long()


def _first_index(mask: Tensor) -> int | None:
    """Index of the first True of a 1-D mask, or None."""
    hits = torch.nonzero(mask)
    return int(hits[0, 0]) if len(hits) else None


class FederatedDataModule:
    """Pairs a dataset with a partitioner; yields per-client train loaders and test loaders.

    Data live in memory as tensors: images as ``float32`` in [0, 1] with shape ``(N, C, H, W)``
    (``uint8`` tensors passed in are scaled), labels as ``int64``. The partition is computed
    once in :meth:`setup` from the training labels and ``seed``; every client's samples are
    then copied into contiguous tensors so batches are cheap to index.

    Args:
        dataset: ``"fashion_mnist"``, ``"mnist"``, ``"cifar10"``, or a pair ``(x, y)``.
        partition: How the training set is split among clients.
        batch_size: Training batch size, >= 1.
        seed: Seed of the partition(s).
        data_dir: Directory searched first for dataset files (see :func:`load_dataset`).
        test: Test pair ``(x, y)``; by default the named dataset's test split (none for
            tensor datasets).
        test_partition: Splits the test set into per-client test sets. It must have as many
            clients as ``partition``, or, for two :class:`InlierOutlier` partitioners with the
            same classes, clients are matched by inlier class (seed 000's protocol).
        download: Allow a torchvision download when the files are nowhere to be found.
        eval_batch_size: Batch size of the test loaders (default ``max(batch_size, 500)``:
            evaluation needs no small batches, and large ones are several times faster).
        num_classes: Number of classes of a tensor dataset; train and test labels must then
            lie in ``[0, num_classes)``. By default it is inferred as ``max(y) + 1``. The
            named datasets have a fixed count (10); ``num_classes`` must be None or equal it.

    Raises:
        ValueError: On an unknown dataset name, malformed tensors or bad settings; in
            :meth:`setup`, on a negative label or one ``>= num_classes`` (the message names
            the tensor, the first bad index and its value).

    Example:
        >>> from fedlightning.datamodules import SortedShards
        >>> dm = FederatedDataModule("fashion_mnist", partition=SortedShards(100, 2),
        ...                          batch_size=60)  # doctest: +SKIP
        >>> dm.setup(); dm.num_clients, len(dm.train_loader(0, seed=1))  # doctest: +SKIP
        (100, 10)
    """

    def __init__(
        self,
        dataset: str | tuple[Tensor, Tensor],
        *,
        partition: Partitioner,
        batch_size: int = 32,
        seed: int = 0,
        data_dir: str | Path | None = None,
        test: tuple[Tensor, Tensor] | None = None,
        test_partition: Partitioner | None = None,
        download: bool = True,
        eval_batch_size: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        if num_classes is not None and (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, (int, np.integer))
            or num_classes < 1
        ):
            raise ValueError(
                f"num_classes must be None or an integer >= 1, got num_classes={num_classes!r}"
            )
        if isinstance(dataset, str):
            key = dataset.lower().replace("-", "_")
            if key not in DATASETS:
                raise ValueError(
                    f"dataset must be one of {sorted(DATASETS)} or a pair (x, y) of tensors, "
                    f"got dataset={dataset!r}"
                )
            if num_classes is not None and num_classes != DATASETS[key]:
                raise ValueError(
                    f"{key} has {DATASETS[key]} classes; num_classes must be None or "
                    f"{DATASETS[key]}, got num_classes={num_classes!r}"
                )
            self.dataset_name: str = key
            self._given: tuple[Tensor, Tensor] | None = None
            num_classes = DATASETS[key]
        else:
            self.dataset_name = "tensors"
            self._given = _as_pair("dataset", dataset)
        # Declared class count: the user's, or the named dataset's; None = inferred.
        self._num_classes: int | None = None if num_classes is None else int(num_classes)
        if not isinstance(partition, Partitioner):
            raise ValueError(
                f"partition must be a Partitioner (IID, Dirichlet, SortedShards, InlierOutlier), "
                f"got partition={partition!r}"
            )
        if test_partition is not None and not isinstance(test_partition, Partitioner):
            raise ValueError(
                f"test_partition must be a Partitioner or None, got {test_partition!r}"
            )
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is None and name == "eval_batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got seed={seed!r}")
        self.partition = partition
        self.test_partition = test_partition
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 500)
        self.seed = seed
        self.data_dir = data_dir
        self.download = download
        self._test_given = _as_pair("test", test) if test is not None else None
        self._ready = False
        self._x: Tensor
        self._y: Tensor
        self._test: tuple[Tensor, Tensor] | None = None
        self._parts: list[NDArray[np.int64]] = []
        self._client: list[tuple[Tensor, Tensor]] = []
        self._test_parts: list[NDArray[np.int64]] | None = None
        self._test_map: list[int] = []

    @classmethod
    def from_datamodule(
        cls, dm: Any, *, partition: Partitioner, **kwargs: Any
    ) -> FederatedDataModule:
        """Wrap an ordinary Lightning ``LightningDataModule`` with a labelled train set.

        The datamodule is prepared as Lightning would (``prepare_data()``, ``setup("fit")``)
        and its train set is read once into in-memory tensors, which ``partition`` then splits
        among the clients. A ``DataLoader`` over a map-style dataset is read in index order
        (the samples its sampler can draw, each once), with the loader's ``collate_fn``,
        whatever its shuffling: the same datamodule always gives the same tensors, hence the
        same federated split for the same ``seed``. Iterable datasets and other iterables are
        read once in their own order. The test set comes from ``test_dataloader()`` (after
        ``setup("test")``) if the datamodule defines it, else from ``val_dataloader()`` if
        defined, else there is none. Random transforms of the dataset are applied once, when
        the data are read.

        Args:
            dm: A ``lightning.pytorch`` (or ``pytorch_lightning``) ``LightningDataModule``
                whose loaders yield ``(input, label)`` batches with integer class-id labels
                and inputs of one shape.
            partition: How the training set is split among clients.
            **kwargs: Forwarded to the constructor: ``batch_size`` (default: the train
                loader's batch size, else 32), ``seed``, ``test`` (overrides the datamodule's
                test set; ``test=None`` drops it), ``test_partition``, ``eval_batch_size``,
                ``num_classes``.

        Returns:
            A ``FederatedDataModule`` over the tensors; its ``dataset_name`` is the
            datamodule's class name.

        Raises:
            ValueError: If ``dm`` is not a LightningDataModule instance, has no
                ``train_dataloader``, or its batches are not ``(input, label)`` pairs with
                integer labels; and on the constructor's bad settings.
            TypeError: If ``dataset`` is passed (the datamodule is the dataset).

        Example:
            >>> import torch
            >>> from lightning.pytorch import LightningDataModule
            >>> from torch.utils.data import DataLoader, TensorDataset
            >>> from fedlightning.datamodules import IID
            >>> class Blobs(LightningDataModule):
            ...     def setup(self, stage):
            ...         self.data = TensorDataset(torch.randn(100, 8), torch.arange(100) % 3)
            ...     def train_dataloader(self):
            ...         return DataLoader(self.data, batch_size=10, shuffle=True)
            >>> fdm = FederatedDataModule.from_datamodule(Blobs(), partition=IID(4), seed=0)
            >>> fdm.num_clients, fdm.batch_size, fdm.num_samples(0), fdm.has_test
            (4, 10, 25, False)
        """
        from fedlightning.datamodules.wrap import read_datamodule

        if "dataset" in kwargs:
            raise TypeError(
                "from_datamodule() got an unexpected keyword argument 'dataset': the "
                "datamodule's train set is the dataset"
            )
        data = read_datamodule(dm)
        if "batch_size" not in kwargs and data.batch_size is not None:
            kwargs["batch_size"] = data.batch_size
        kwargs.setdefault("test", data.test)
        wrapped = cls(data.train, partition=partition, **kwargs)
        wrapped.dataset_name = type(dm).__name__
        return wrapped

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Load the tensors, check the labels and partition them; later calls do nothing.

        Args:
            stage: Ignored (accepted for Lightning compatibility).

        Raises:
            ValueError: If a train or test label is negative, or ``>= num_classes`` when the
                number of classes is declared (the message names the tensor, the first bad
                index and its value).
        """
        if self._ready:
            return
        if self._given is not None:
            self._x, self._y = self._given
            self._test = self._test_given
        else:
            kw: dict[str, Any] = {"data_dir": self.data_dir, "download": self.download}
            self._x, self._y = load_dataset(self.dataset_name, split="train", **kw)
            self._test = self._test_given or load_dataset(self.dataset_name, split="test", **kw)
        self._check_loaded_labels()
        labels = self._y.numpy()
        self._parts = [np.asarray(p, dtype=np.int64) for p in self.partition(labels, self.seed)]
        self._client = []
        for p in self._parts:
            idx = torch.from_numpy(p)
            self._client.append((self._x[idx], self._y[idx]))
        if self.test_partition is not None:
            if self._test is None:
                raise ValueError("test_partition needs a test set: pass test=(x, y)")
            self._test_parts = [
                np.asarray(p, dtype=np.int64)
                for p in self.test_partition(self._test[1].numpy(), self.seed)
            ]
            self._test_map = self._match_test_clients()
        self._ready = True

    def _label_sets(self) -> list[tuple[str, Tensor]]:
        sets = [("train labels", self._y)]
        if self._test is not None:
            sets.append(("test labels", self._test[1]))
        return sets

    def _check_loaded_labels(self) -> None:
        n = self._num_classes
        for what, y in self._label_sets():
            i = _first_index(y < 0)
            if i is not None:
                raise ValueError(
                    f"{what}: label {int(y[i])} at index {i} is negative; class labels must be "
                    f"integers >= 0"
                )
            i = _first_index(y >= n) if n is not None else None
            if i is not None:
                raise ValueError(
                    f"{what}: label {int(y[i])} at index {i} is out of range for "
                    f"num_classes={n}; labels must lie in [0, {n}): fix the labels or pass "
                    f"the right num_classes"
                )

    def check_labels(self, num_outputs: int) -> None:
        """Check that every train and test label is a valid output of the model.

        A classifier with ``num_outputs`` outputs predicts classes ``0 .. num_outputs - 1``;
        a label beyond them would fail the loss (IndexError) or be silently unscorable. The
        trainer calls this at fit with the model's output size.

        Args:
            num_outputs: The model's number of outputs (logits), >= 1.

        Raises:
            ValueError: If ``num_outputs`` is not an integer >= 1, or a train or test label
                is ``>= num_outputs``; the message names the tensor (``"train labels"`` or
                ``"test labels"``), the first bad index, its value and ``num_outputs``.

        Example:
            >>> import torch
            >>> from fedlightning.datamodules import IID
            >>> dm = FederatedDataModule((torch.zeros(4, 2), torch.tensor([0, 1, 2, 3])),
            ...                          partition=IID(2))
            >>> dm.check_labels(4)
            >>> dm.check_labels(3)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: train labels: label 3 at index 3 is >= the model's output size 3 ...
        """
        if (
            isinstance(num_outputs, bool)
            or not isinstance(num_outputs, (int, np.integer))
            or num_outputs < 1
        ):
            raise ValueError(
                f"num_outputs must be an integer >= 1, got num_outputs={num_outputs!r}"
            )
        self.setup()
        for what, y in self._label_sets():
            i = _first_index(y >= num_outputs)
            if i is not None:
                top = int(y.max())
                raise ValueError(
                    f"{what}: label {int(y[i])} at index {i} is >= the model's output size "
                    f"{num_outputs} (its outputs are classes 0..{num_outputs - 1}; the largest "
                    f"label is {top}). Fix the labels, build the model with at least {top + 1} "
                    f"outputs, or pass num_classes= to the datamodule to declare the number "
                    f"of classes (labels are then checked against it at setup)."
                )

    def _match_test_clients(self) -> list[int]:
        train_p, test_p = self.partition, self.test_partition
        assert test_p is not None
        if test_p.num_clients == train_p.num_clients:
            return list(range(train_p.num_clients))
        if (
            isinstance(train_p, InlierOutlier)
            and isinstance(test_p, InlierOutlier)
            and train_p.num_classes == test_p.num_classes
        ):
            # Client k of class c is evaluated on a test set of class c (seed 000's protocol).
            per = test_p.clients_per_class
            inlier = train_p.inlier_classes()
            return [int(c) * per + k % per for k, c in enumerate(inlier)]
        raise ValueError(
            f"test_partition must have as many clients as partition ({train_p.num_clients}) or "
            f"both must be InlierOutlier with the same num_classes, got {test_p!r}"
        )

    def _check_cid(self, cid: int) -> int:
        self.setup()
        if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)):
            raise ValueError(f"cid must be an int client id, got cid={cid!r}")
        if not 0 <= cid < len(self._parts):
            raise ValueError(f"cid must be in [0, {len(self._parts)}), got cid={cid}")
        return int(cid)

    # ------------------------------------------------------------- properties
    @property
    def num_clients(self) -> int:
        """Number of clients of the partition."""
        return self.partition.num_clients

    @property
    def client_ids(self) -> list[int]:
        """Client ids ``0 .. num_clients - 1``."""
        return list(range(self.num_clients))

    @property
    def num_classes(self) -> int:
        """Number of classes: 10 for the named datasets; for tensors, ``num_classes`` if it
        was passed (labels checked against it), else ``max(y) + 1`` over train and test."""
        if self._given is None and self._num_classes is not None:
            return self._num_classes
        self.setup()
        if self._num_classes is not None:
            return self._num_classes
        top = int(self._y.max()) if len(self._y) else -1
        if self._test is not None and len(self._test[1]):
            top = max(top, int(self._test[1].max()))
        return top + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(1, 28, 28)``."""
        self.setup()
        return tuple(self._x.shape[1:])

    @property
    def has_test(self) -> bool:
        """Whether a global test set exists."""
        self.setup()
        return self._test is not None

    @property
    def hparams(self) -> dict[str, Any]:
        """Settings for a results file: dataset, partition, batch sizes, seed."""
        return {
            "dataset": self.dataset_name,
            "partition": repr(self.partition),
            "test_partition": repr(self.test_partition) if self.test_partition else None,
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "seed": self.seed,
            "num_classes": self._num_classes,
        }

    # ------------------------------------------------------------------- data
    def client_indices(self, cid: int) -> NDArray[np.int64]:
        """Indices into the training set of client ``cid``'s samples."""
        cid = self._check_cid(cid)  # first: it runs setup()
        return self._parts[cid]

    def num_samples(self, cid: int) -> int:
        """Number of training samples of client ``cid``."""
        cid = self._check_cid(cid)
        return len(self._parts[cid])

    def client_data(self, cid: int) -> tuple[Tensor, Tensor]:
        """Client ``cid``'s training tensors ``(x, y)`` (shared; do not modify in place)."""
        cid = self._check_cid(cid)
        return self._client[cid]

    def train_loader(self, cid: int, seed: int = 0) -> TensorLoader:
        """Shuffled training batches of client ``cid``.

        Args:
            cid: Client id.
            seed: Seed of the batch order (each pass over the loader reshuffles).

        Returns:
            A fresh loader.
        """
        x, y = self.client_data(cid)
        return TensorLoader(x, y, self.batch_size, shuffle=True, seed=seed)

    def test_loader(self) -> TensorLoader:
        """Batches of the global test set, in order.

        Raises:
            ValueError: If there is no test set (tensor dataset without ``test=``).
        """
        self.setup()
        if self._test is None:
            raise ValueError("this datamodule has no test set: pass test=(x, y)")
        return TensorLoader(*self._test, self.eval_batch_size)

    def client_test_loader(self, cid: int) -> TensorLoader | None:
        """Batches of client ``cid``'s own test set, or None without ``test_partition``."""
        cid = self._check_cid(cid)
        if self._test_parts is None or self._test is None:
            return None
        idx = torch.from_numpy(self._test_parts[self._test_map[cid]])
        return TensorLoader(self._test[0][idx], self._test[1][idx], self.eval_batch_size)

    # ----------------------------------------------------------------- report
    def report(self) -> PartitionReport:
        """Per-client class histogram and sizes of the training partition."""
        self.setup()
        return PartitionReport.from_partition(self._y.numpy(), self._parts, self.num_classes)

    def plot_partition(self, path: str | Path) -> Path:
        """Save a stacked bar chart of each client's class counts; returns the path."""
        title = f"{self.dataset_name}: {self.partition!r}"
        return plot_partition(self.report(), path, title=title)

    def __repr__(self) -> str:
        return (
            f"FederatedDataModule(dataset={self.dataset_name!r}, partition={self.partition!r}, "
            f"batch_size={self.batch_size}, seed={self.seed})"
        )
