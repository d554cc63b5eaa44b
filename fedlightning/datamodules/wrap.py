"""Read the labelled train and test sets of a Lightning ``LightningDataModule`` into tensors.

This is the machinery behind :meth:`FederatedDataModule.from_datamodule
<fedlightning.datamodules.FederatedDataModule.from_datamodule>`. Map-style datasets are read
in index order, whatever the loader's shuffling, so a datamodule always yields the same tensors
(and therefore, for the same seed, the same federated split).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    WeightedRandomSampler,
)

__all__ = ["DatamoduleData", "read_datamodule"]

_WHO = "FederatedDataModule.from_datamodule"


@dataclass(frozen=True)
class DatamoduleData:
    """What :func:`read_datamodule` found.

    Attributes:
        train: Train inputs and integer labels, in the dataset's index order.
        test: Test pair from ``test_dataloader()`` (else ``val_dataloader()``), or None.
        test_source: ``"test"``, ``"val"`` or None: where ``test`` came from.
        batch_size: Batch size of the train loader, when it has one.
    """

    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor] | None
    test_source: str | None
    batch_size: int | None


def datamodule_bases() -> tuple[type, ...]:
    """The accepted ``LightningDataModule`` classes.

    ``lightning``'s, and ``pytorch_lightning``'s when that package is loaded (a datamodule of
    it can only exist then).
    """
    from lightning.pytorch import LightningDataModule

    bases: list[type] = [LightningDataModule]
    legacy = sys.modules.get("pytorch_lightning")
    legacy_base = getattr(legacy, "LightningDataModule", None)
    if isinstance(legacy_base, type) and legacy_base is not LightningDataModule:
        bases.append(legacy_base)
    return tuple(bases)


def check_datamodule(dm: Any) -> type:
    """The ``LightningDataModule`` base of ``dm``; a ValueError saying what is allowed if none."""
    bases = datamodule_bases()
    for base in bases:
        if isinstance(dm, base):
            return base
    if isinstance(dm, type) and issubclass(dm, bases):
        raise ValueError(
            f"dm must be a LightningDataModule instance, got the class {dm.__qualname__} itself: "
            f"pass an instance, e.g. {dm.__qualname__}(...)"
        )
    raise ValueError(
        f"dm must be a LightningDataModule instance (lightning.pytorch or pytorch_lightning) "
        f"with a labelled train set, got dm of type {type(dm).__qualname__}; for tensors use "
        f"FederatedDataModule((x, y), partition=...), for a named dataset "
        f"FederatedDataModule('fashion_mnist', partition=...)"
    )


def _defines(dm: Any, name: str, base: type) -> bool:
    """Whether ``dm`` overrides ``base.name``, on its class or (like ``from_datasets``) itself."""
    attr = getattr(dm, name, None)
    if attr is None:
        return False
    func = getattr(attr, "__func__", attr)
    return func is not getattr(base, name, None)


def read_datamodule(dm: Any) -> DatamoduleData:
    """Prepare ``dm`` as Lightning would and read its train and test sets into tensors.

    Calls ``prepare_data()`` and ``setup("fit")``, reads ``train_dataloader()``; then, if the
    datamodule defines ``test_dataloader``, calls ``setup("test")`` and reads it, else reads
    ``val_dataloader`` if defined.

    Args:
        dm: A ``LightningDataModule`` whose loaders yield ``(input, label)`` batches.

    Returns:
        The tensors, the test set's origin and the train loader's batch size.

    Raises:
        ValueError: If ``dm`` is not a LightningDataModule, defines no ``train_dataloader``,
            or its data are not ``(input, label)`` pairs with integer labels.
    """
    base = check_datamodule(dm)
    name = type(dm).__name__
    if not _defines(dm, "train_dataloader", base):
        raise ValueError(
            f"{_WHO}: {name} defines no train_dataloader(); a datamodule with a labelled train "
            f"set is needed"
        )
    dm.prepare_data()
    dm.setup("fit")
    loader = _single_loader(dm.train_dataloader(), name, "train_dataloader()")
    if loader is None:
        raise ValueError(f"{_WHO}: {name}.train_dataloader() returned no loader")
    train = _read(loader, name, "train_dataloader()")
    test: tuple[Tensor, Tensor] | None = None
    source: str | None = None
    if _defines(dm, "test_dataloader", base):
        dm.setup("test")
        test_loader = _single_loader(dm.test_dataloader(), name, "test_dataloader()")
        if test_loader is not None:
            test, source = _read(test_loader, name, "test_dataloader()"), "test"
    if test is None and _defines(dm, "val_dataloader", base):
        val_loader = _single_loader(dm.val_dataloader(), name, "val_dataloader()")
        if val_loader is not None:
            test, source = _read(val_loader, name, "val_dataloader()"), "val"
    return DatamoduleData(train, test, source, _batch_size(loader))


def _batch_size(loader: Any) -> int | None:
    if isinstance(loader, DataLoader):
        size = loader.batch_size
        if size is None and loader.batch_sampler is not None:
            size = getattr(loader.batch_sampler, "batch_size", None)
        return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else None
    return None


def _single_loader(loaders: Any, name: str, where: str) -> Any:
    """The one loader a hook returned (``[loader]`` is unwrapped); None when it returned none."""
    if loaders is None:
        return None
    if isinstance(loaders, Mapping):
        if not loaders:
            return None
        raise ValueError(
            f"{_WHO}: {name}.{where} returned a dict of {len(loaders)} loaders "
            f"({sorted(map(str, loaders))}); wrap a datamodule with a single loader"
        )
    if isinstance(loaders, Sequence) and not isinstance(loaders, DataLoader):
        if len(loaders) == 0:
            return None
        if all(isinstance(item, DataLoader) for item in loaders):
            if len(loaders) == 1:
                return loaders[0]
            raise ValueError(
                f"{_WHO}: {name}.{where} returned {len(loaders)} loaders; wrap a datamodule "
                f"with a single loader"
            )
    return loaders


def _batches(loader: Any, name: str, where: str) -> Iterable[Any]:
    """The loader's batches in a fixed order, independent of any shuffling.

    A ``DataLoader`` over a map-style dataset is re-read over the indices its sampler can
    draw, each once and in increasing order, with the loader's ``collate_fn`` and batch size
    (all samples kept, no ``drop_last``). Iterable datasets and other iterables are read once,
    in their own order.
    """
    if not isinstance(loader, DataLoader):
        if not isinstance(loader, Iterable):
            raise ValueError(
                f"{_WHO}: {name}.{where} must return a DataLoader or an iterable of "
                f"(input, label) batches, got {type(loader).__qualname__}"
            )
        return loader
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        return loader
    n = len(dataset)
    batch_size = loader.batch_size
    batch_sampler = loader.batch_sampler
    sampler: Any
    if batch_sampler is None:  # automatic batching off: every item is already a batch
        sampler = loader.sampler
    elif isinstance(batch_sampler, BatchSampler):
        sampler = batch_sampler.sampler
    else:  # a custom batch sampler: rebatch its indices at its batch size
        sampler = batch_sampler
        batch_size = _batch_size(loader) or 64
    indices: Sequence[int]
    if isinstance(sampler, (SequentialSampler, RandomSampler, WeightedRandomSampler)):
        indices = range(n)  # these draw from the whole dataset
    else:
        drawn: set[int] = set()
        for item in sampler:
            if isinstance(item, (Tensor, np.ndarray)):  # an index, or a batch of them
                drawn.update(int(i) for i in item.reshape(-1).tolist())
            elif isinstance(item, (list, tuple)):
                drawn.update(int(i) for i in item)
            else:
                drawn.add(int(item))
        indices = sorted(drawn)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if loader.num_workers else None,
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, (Tensor, np.ndarray)):
        return f"a {type(obj).__name__} of shape {tuple(obj.shape)} and dtype {obj.dtype}"
    if isinstance(obj, Mapping):
        return f"a {type(obj).__name__} with keys {sorted(map(str, obj))}"
    if isinstance(obj, (tuple, list)):
        inner = ", ".join(type(o).__name__ for o in obj[:4]) + (", ..." if len(obj) > 4 else "")
        return f"a {type(obj).__name__} of {len(obj)} items ({inner})"
    return f"a {type(obj).__qualname__}"


def _pair(batch: Any, name: str, where: str, k: int) -> tuple[Tensor, Tensor]:
    """Batch ``k`` as ``(x, y)`` tensors with ``y`` integer labels of shape ``(B,)``."""
    what = f"{_WHO}: {name}.{where} must yield (input, label) pairs (or batches of them)"
    if isinstance(batch, Mapping) or not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(f"{what}, but batch {k} is {_describe(batch)}")
    raw_x, raw_y = batch
    try:
        x = torch.as_tensor(raw_x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{what}; the inputs of batch {k} are {_describe(raw_x)}, not a tensor or array "
            f"(transform them to tensors in the dataset)"
        ) from err
    try:
        y = torch.as_tensor(raw_y)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{what}; the labels of batch {k} are {_describe(raw_y)}, not integer class ids"
        ) from err
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(
            f"{what} with integer class-id labels, but the labels of batch {k} have dtype "
            f"{y.dtype} (first values {y.flatten()[:5].tolist()}); only classification data with "
            f"integer labels can be partitioned"
        )
    if y.ndim == 0:  # a single sample (x, label)
        x, y = x.unsqueeze(0), y.reshape(1)
    if y.ndim != 1 or x.ndim == 0 or len(x) != len(y):
        raise ValueError(
            f"{what} with labels of shape (batch,), but batch {k} has inputs of shape "
            f"{tuple(x.shape)} and labels of shape {tuple(y.shape)}"
        )
    if len(y) and int(y.min()) < 0:
        raise ValueError(
            f"{what} with non-negative integer class ids, but batch {k} has label {int(y.min())}"
        )
    return x, y


def _read(loader: Any, name: str, where: str) -> tuple[Tensor, Tensor]:
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    try:
        for k, batch in enumerate(_batches(loader, name, where)):
            x, y = _pair(batch, name, where, k)
            if xs and x.shape[1:] != xs[0].shape[1:]:
                raise ValueError(
                    f"{_WHO}: the inputs of {name}.{where} must all have one shape (they are "
                    f"kept as one tensor), but batch 0 has samples of shape "
                    f"{tuple(xs[0].shape[1:])} and batch {k} of shape {tuple(x.shape[1:])}"
                )
            xs.append(x)
            ys.append(y)
    except (TypeError, RuntimeError) as err:  # e.g. default_collate meeting PIL images
        raise ValueError(
            f"{_WHO}: could not read (input, label) pairs from {name}.{where}: {err}"
        ) from err
    if not ys or sum(len(y) for y in ys) == 0:
        raise ValueError(f"{_WHO}: {name}.{where} yielded no samples")
    return torch.cat(xs), torch.cat(ys).long()
