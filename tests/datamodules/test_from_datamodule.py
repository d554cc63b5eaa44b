"""FederatedDataModule.from_datamodule: wrapping an ordinary LightningDataModule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    SubsetRandomSampler,
    TensorDataset,
)

from fedlightning import FederatedTrainer
from fedlightning.datamodules import IID, Dirichlet, FederatedDataModule
from fedlightning.demos import BoringClassifier

N, N_TEST, CLASSES = 200, 60, 3


def generated(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


TRAIN, TEST = generated(N, 0), generated(N_TEST, 1)


class ToyDataModule(LightningDataModule):
    """Train and test sets of generated tensors; records the hooks Lightning would call."""

    def __init__(self, shuffle: bool = False, batch_size: int = 16) -> None:
        super().__init__()
        self.shuffle = shuffle
        self.batch_size = batch_size
        self.calls: list[str] = []

    def prepare_data(self) -> None:
        self.calls.append("prepare_data")

    def setup(self, stage: str) -> None:
        self.calls.append(f"setup:{stage}")
        self.train_set = TensorDataset(*TRAIN)
        self.test_set = TensorDataset(*TEST)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=self.shuffle)

    def test_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.test_set, batch_size=7)


class ValOnly(LightningDataModule):
    def setup(self, stage: str) -> None:
        self.train_set, self.val_set = TensorDataset(*TRAIN), TensorDataset(*TEST)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train_set, batch_size=10, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val_set, batch_size=10)


class Items(Dataset[Any]):
    """A map-style dataset returning ``make(x, y)`` per item."""

    def __init__(self, make: Any) -> None:
        self.make = make

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int) -> Any:
        return self.make(TRAIN[0][i], TRAIN[1][i], i)


class ItemsDataModule(LightningDataModule):
    def __init__(self, make: Any) -> None:
        super().__init__()
        self.make = make

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(Items(self.make), batch_size=5)


def rows(x: Tensor, y: Tensor) -> Tensor:
    """Samples as sorted unique rows (x flattened, then the label): a multiset fingerprint."""
    return torch.unique(torch.cat([x.flatten(1), y[:, None].to(x.dtype)], dim=1), dim=0)


def clients(fdm: FederatedDataModule) -> tuple[Tensor, Tensor]:
    data = [fdm.client_data(c) for c in fdm.client_ids]
    return torch.cat([x for x, _ in data]), torch.cat([y for _, y in data])


def test_clients_together_hold_exactly_the_source_train_set() -> None:
    dm = ToyDataModule()
    fdm = FederatedDataModule.from_datamodule(dm, partition=IID(num_clients=4), seed=3)
    assert dm.calls == ["prepare_data", "setup:fit", "setup:test"]
    assert fdm.num_clients == 4 and fdm.batch_size == 16  # the source loader's batch size
    assert fdm.num_classes == CLASSES and fdm.input_shape == (1, 8, 8)
    assert fdm.dataset_name == "ToyDataModule" and fdm.hparams["seed"] == 3
    # Indices are disjoint, cover the train set, and index it in the source's order.
    indices = np.concatenate([fdm.client_indices(c) for c in fdm.client_ids])
    assert np.array_equal(np.sort(indices), np.arange(N))
    for c in fdm.client_ids:
        x, y = fdm.client_data(c)
        idx = torch.from_numpy(fdm.client_indices(c))
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, TRAIN[0][idx]) and torch.equal(y, TRAIN[1][idx])
    # As a multiset the clients' samples are the train set, no sample lost or repeated.
    cx, cy = clients(fdm)
    assert len(cy) == N and torch.equal(rows(cx, cy), rows(*TRAIN))
    assert len(rows(*TRAIN)) == N


def test_test_set_comes_from_test_dataloader_in_order() -> None:
    fdm = FederatedDataModule.from_datamodule(ToyDataModule(), partition=IID(4))
    assert fdm.has_test
    batches = list(fdm.test_loader())
    assert torch.equal(torch.cat([x for x, _ in batches]), TEST[0])
    assert torch.equal(torch.cat([y for _, y in batches]), TEST[1])


def test_val_dataloader_is_the_fallback_test_set_and_none_without_either() -> None:
    fdm = FederatedDataModule.from_datamodule(ValOnly(), partition=IID(2))
    x, y = next(iter(fdm.test_loader()))
    assert torch.equal(x, TEST[0]) and torch.equal(y, TEST[1])

    class TrainOnly(LightningDataModule):
        def train_dataloader(self) -> DataLoader[Any]:
            return DataLoader(TensorDataset(*TRAIN), batch_size=8)

    fdm = FederatedDataModule.from_datamodule(TrainOnly(), partition=IID(2))
    assert not fdm.has_test
    # test= given explicitly wins over the datamodule's; batch_size too.
    fdm = FederatedDataModule.from_datamodule(
        ToyDataModule(), partition=IID(2), test=None, batch_size=5
    )
    assert not fdm.has_test and fdm.batch_size == 5


@pytest.mark.parametrize("partition", [IID(4), Dirichlet(4, alpha=0.5, min_size=5)])
def test_shuffling_loader_gives_the_same_split_as_a_sequential_one(partition: Any) -> None:
    torch.manual_seed(0)  # the shuffling loader draws from the global generator
    plain = FederatedDataModule.from_datamodule(ToyDataModule(), partition=partition, seed=7)
    shuffled = [
        FederatedDataModule.from_datamodule(
            ToyDataModule(shuffle=True), partition=partition, seed=7
        )
        for _ in range(2)
    ]
    for fdm in shuffled:
        for c in plain.client_ids:
            assert np.array_equal(fdm.client_indices(c), plain.client_indices(c))
            a, b = fdm.client_data(c), plain.client_data(c)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    other = FederatedDataModule.from_datamodule(ToyDataModule(), partition=partition, seed=8)
    assert not all(
        np.array_equal(other.client_indices(c), plain.client_indices(c)) for c in plain.client_ids
    )


def test_from_datasets_subset_sampler_and_iterable_dataset() -> None:
    # LightningDataModule.from_datasets sets the hooks on the instance.
    dm = LightningDataModule.from_datasets(
        train_dataset=TensorDataset(*TRAIN), test_dataset=TensorDataset(*TEST), batch_size=8
    )
    fdm = FederatedDataModule.from_datamodule(dm, partition=IID(3))
    assert fdm.batch_size == 8 and fdm.has_test and torch.equal(rows(*clients(fdm)), rows(*TRAIN))

    # A sampler over a subset: exactly those samples, in index order, whatever its order.
    keep = torch.randperm(N, generator=torch.Generator().manual_seed(5))[:150]

    class Subset(LightningDataModule):
        def train_dataloader(self) -> DataLoader[Any]:
            return DataLoader(
                TensorDataset(*TRAIN), batch_size=8, sampler=SubsetRandomSampler(keep)
            )

    fdm = FederatedDataModule.from_datamodule(Subset(), partition=IID(3))
    idx = keep.sort().values
    assert torch.equal(rows(*clients(fdm)), rows(TRAIN[0][idx], TRAIN[1][idx]))
    assert sum(fdm.num_samples(c) for c in fdm.client_ids) == 150

    class Stream(IterableDataset[Any]):
        def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
            return zip(TRAIN[0], TRAIN[1], strict=True)

    class Streaming(LightningDataModule):
        def train_dataloader(self) -> DataLoader[Any]:
            return DataLoader(Stream(), batch_size=32)

    fdm = FederatedDataModule.from_datamodule(Streaming(), partition=IID(2), batch_size=4)
    assert torch.equal(rows(*clients(fdm)), rows(*TRAIN)) and fdm.batch_size == 4


def test_federated_trainer_fits_a_model_on_the_wrapped_datamodule() -> None:
    fdm = FederatedDataModule.from_datamodule(ToyDataModule(), partition=IID(num_clients=4))
    torch.manual_seed(0)
    model = BoringClassifier(in_features=64, num_classes=CLASSES)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = FederatedTrainer(rounds=1, progress_bar=False)
    trainer.fit(model, fdm)
    assert len(trainer.history) == 1
    assert 0.0 <= trainer.results["final"]["acc_global"] <= 1.0
    after = list(trainer.global_model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("dm", "message"),
    [
        ((TRAIN[0], TRAIN[1]), r"dm must be a LightningDataModule.*got dm of type tuple"),
        (DataLoader(TensorDataset(*TRAIN)), r"got dm of type DataLoader"),
        ("fashion_mnist", r"got dm of type str.*FederatedDataModule\('fashion_mnist'"),
        (ToyDataModule, r"got the class ToyDataModule itself.*ToyDataModule\(\.\.\.\)"),
    ],
)
def test_not_a_datamodule_is_rejected(dm: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FederatedDataModule.from_datamodule(dm, partition=IID(2))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x, y, i: x, r"batch 0 is a Tensor of shape \(5, 1, 8, 8\)"),
        (lambda x, y, i: (x, y, 0), r"batch 0 is a list of 3 items"),
        (
            lambda x, y, i: {"image": x, "label": y},
            r"batch 0 is a dict with keys \['image', 'label'\]",
        ),
        (lambda x, y, i: (x, y.float()), r"integer class-id labels.*dtype torch\.float32"),
        (lambda x, y, i: (x, torch.nn.functional.one_hot(y, 3)), r"labels of shape \(5, 3\)"),
        (lambda x, y, i: (x, y - 5), r"non-negative integer class ids.*label -"),
        (lambda x, y, i: (x[:, : 1 + i // 5], y), r"batch 0 has samples of shape \(1, 1, 8\)"),
        (lambda x, y, i: (x[:, : 1 + i % 2], y), r"could not read.*stack expects each tensor"),
        (lambda x, y, i: (object(), y), r"could not read \(input, label\) pairs"),
    ],
)
def test_items_that_are_not_integer_labelled_pairs_are_rejected(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"ItemsDataModule\.train_dataloader\(\)") as info:
        FederatedDataModule.from_datamodule(ItemsDataModule(make), partition=IID(2))
    assert info.match(message)


def test_datamodule_without_a_single_train_loader_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"LightningDataModule defines no train_dataloader"):
        FederatedDataModule.from_datamodule(LightningDataModule(), partition=IID(2))

    class Two(LightningDataModule):
        def train_dataloader(self) -> list[DataLoader[Any]]:
            return [DataLoader(TensorDataset(*TRAIN))] * 2

    with pytest.raises(ValueError, match=r"Two\.train_dataloader\(\) returned 2 loaders"):
        FederatedDataModule.from_datamodule(Two(), partition=IID(2))
    with pytest.raises(TypeError, match="dataset"):
        FederatedDataModule.from_datamodule(ToyDataModule(), partition=IID(2), dataset="mnist")
    with pytest.raises(ValueError, match="partition must be a Partitioner"):
        FederatedDataModule.from_datamodule(ToyDataModule(), partition=4)  # type: ignore[arg-type]
