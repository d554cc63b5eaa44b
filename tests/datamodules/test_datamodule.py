"""FederatedDataModule over tensors and over the real Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedlightning.datamodules import (
    IID,
    Dirichlet,
    FederatedDataModule,
    InlierOutlier,
    SortedShards,
    TensorLoader,
)


def tensors(n: int = 200, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = torch.arange(n) % classes
    return x, y


def test_tensor_dataset_partition_and_loaders() -> None:
    x, y = tensors()
    test = tensors(50, seed=1)
    dm = FederatedDataModule((x, y), partition=IID(8), batch_size=7, seed=3, test=test)
    dm.setup()
    dm.setup()  # idempotent
    assert dm.num_clients == 8 and dm.client_ids == list(range(8))
    assert dm.num_classes == 5 and dm.input_shape == (1, 4, 4)
    assert sum(dm.num_samples(c) for c in dm.client_ids) == 200
    cx, cy = dm.client_data(2)
    idx = torch.from_numpy(dm.client_indices(2))
    assert torch.equal(cx, x[idx]) and torch.equal(cy, y[idx])
    loader = dm.train_loader(2, seed=11)
    assert isinstance(loader, TensorLoader) and len(loader) == -(-25 // 7)
    assert torch.equal(
        torch.cat([b for _, b in loader]), torch.cat([b for _, b in dm.train_loader(2, seed=11)])
    )
    test_loader = dm.test_loader()
    assert sum(len(b) for _, b in test_loader) == 50
    assert dm.client_test_loader(0) is None
    assert dm.has_test


def test_partition_is_a_function_of_seed() -> None:
    x, y = tensors()
    a = FederatedDataModule((x, y), partition=Dirichlet(5, 0.5, min_size=2), seed=1)
    b = FederatedDataModule((x, y), partition=Dirichlet(5, 0.5, min_size=2), seed=1)
    c = FederatedDataModule((x, y), partition=Dirichlet(5, 0.5, min_size=2), seed=2)
    ia = [a.client_indices(k) for k in range(5)]
    assert all(np.array_equal(p, b.client_indices(k)) for k, p in enumerate(ia))
    assert not all(np.array_equal(p, c.client_indices(k)) for k, p in enumerate(ia))


def test_uint8_inputs_are_scaled_and_labels_become_int64() -> None:
    x = torch.full((10, 1, 2, 2), 255, dtype=torch.uint8)
    y = torch.arange(10, dtype=torch.int32) % 2
    dm = FederatedDataModule((x, y), partition=IID(2))
    cx, cy = dm.client_data(0)
    assert cx.dtype == torch.float32 and float(cx.max()) == 1.0 and cy.dtype == torch.int64


def test_per_client_test_sets_same_number_of_clients() -> None:
    x, y = tensors()
    xt, yt = tensors(40, seed=2)
    dm = FederatedDataModule((x, y), partition=IID(4), test=(xt, yt), test_partition=IID(4))
    sizes = []
    for c in dm.client_ids:
        loader = dm.client_test_loader(c)
        assert loader is not None
        sizes.append(loader.num_samples)
    assert sizes == [10, 10, 10, 10]


def test_inlier_outlier_clients_are_tested_on_their_inlier_class() -> None:
    x, y = tensors(400, classes=4)
    xt, yt = tensors(200, classes=4, seed=5)
    train = InlierOutlier(clients_per_class=3, outlier_fraction=0.1, num_classes=4)
    dm = FederatedDataModule(
        (x, y),
        partition=train,
        test=(xt, yt),
        test_partition=InlierOutlier(clients_per_class=1, outlier_fraction=0.1, num_classes=4),
    )
    for c in dm.client_ids:
        loader = dm.client_test_loader(c)
        assert loader is not None
        counts = torch.bincount(loader.y, minlength=4)
        assert int(counts.argmax()) == int(train.inlier_classes()[c])
        assert int(counts.max()) == 45 and loader.num_samples == 50  # 90% of 50, + 5 outliers


def test_mismatched_test_partition() -> None:
    x, y = tensors()
    dm = FederatedDataModule((x, y), partition=IID(4), test=tensors(40), test_partition=IID(3))
    with pytest.raises(ValueError, match="test_partition must have as many clients"):
        dm.setup()


def test_report_and_plot(tmp_path: Path) -> None:
    x, y = tensors(100, classes=5)
    dm = FederatedDataModule((x, y), partition=SortedShards(5, 1))
    r = dm.report()
    assert r.histogram.shape == (5, 5) and (r.classes_per_client == 1).all()
    assert dm.plot_partition(tmp_path / "p.png").is_file()
    assert dm.hparams["partition"] == "SortedShards(num_clients=5, shards_per_client=1)"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got batch_size=0"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"seed": -2}, "seed must be an integer >= 0"),
        ({"partition": "iid"}, "partition must be a Partitioner"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"partition": IID(2), **kwargs}
    with pytest.raises(ValueError, match=match):
        FederatedDataModule(tensors(), **args)  # type: ignore[arg-type]


def test_bad_data_and_ids() -> None:
    with pytest.raises(ValueError, match=r"dataset must be one of \['cifar10'.*imagenet"):
        FederatedDataModule("imagenet", partition=IID(2))
    with pytest.raises(ValueError, match="len"):
        FederatedDataModule((torch.zeros(3, 2), torch.zeros(4, dtype=torch.long)), partition=IID(2))
    with pytest.raises(ValueError, match="integers"):
        FederatedDataModule((torch.zeros(3, 2), torch.zeros(3)), partition=IID(2))
    dm = FederatedDataModule(tensors(), partition=IID(2))
    with pytest.raises(ValueError, match=r"cid must be in \[0, 2\), got cid=2"):
        dm.num_samples(2)
    with pytest.raises(ValueError, match="no test set"):
        dm.test_loader()
    too_many = FederatedDataModule(tensors(10), partition=IID(11))
    with pytest.raises(ValueError, match="num_clients must be <= the number of samples"):
        too_many.setup()


def test_fashion_mnist_sorted_shards() -> None:
    dm = FederatedDataModule(
        "fashion_mnist", partition=SortedShards(100, 2), batch_size=60, seed=0, download=False
    )
    assert dm.num_classes == 10 and dm.input_shape == (1, 28, 28)
    assert [dm.num_samples(c) for c in dm.client_ids] == [600] * 100
    assert len(dm.train_loader(0, seed=0)) == 10
    xb, yb = next(iter(dm.train_loader(0, seed=0)))
    assert xb.shape == (60, 1, 28, 28) and yb.dtype == torch.int64
    assert dm.test_loader().num_samples == 10_000
    assert dm.report().classes_per_client.max() <= 2
