"""Label checks: out-of-range labels in dataset files, tensors and against the model's size."""

from __future__ import annotations

import gzip
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fedlightning.datamodules import IID, FederatedDataModule, load_dataset


def _write_idx(path: Path, arr: np.ndarray, *, compress: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _write_fashion(root: Path, labels: np.ndarray, *, compress: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    for split in ("train", "t10k"):
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)), compress=True)
        suffix = ".gz" if compress else ""
        _write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    return root


def _tensors(y: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(len(y), 1, 2, 2), torch.tensor(y)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_label_out_of_range_names_file_index_value_and_range(
    tmp_path: Path, compress: bool
) -> None:
    labels = np.array([0, 1, 2, 200, 4, 255], dtype=np.uint8)
    root = _write_fashion(tmp_path, labels, compress=compress)
    with pytest.raises(ValueError) as info:
        load_dataset("fashion_mnist", data_dir=root, download=False)
    msg = str(info.value)
    assert "train-labels-idx1-ubyte" in msg and str(root) in msg
    assert "label 200 at index 3" in msg and "[0, 10)" in msg
    # the datamodule surfaces the same error at setup instead of failing clients later
    dm = FederatedDataModule("fashion_mnist", partition=IID(2), data_dir=root, download=False)
    with pytest.raises(ValueError, match=r"label 200 at index 3"):
        dm.setup()


def test_idx_valid_labels_load(tmp_path: Path) -> None:
    root = _write_fashion(tmp_path, np.arange(10, dtype=np.uint8), compress=True)
    _, y = load_dataset("fashion_mnist", data_dir=root, download=False)
    assert y.tolist() == list(range(10))


def test_cifar_label_out_of_range_names_batch_file(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [0, 1, 10] if name == "data_batch_2" else [0, 1, 2]
        with (d / name).open("wb") as fh:
            pickle.dump({b"data": np.zeros((3, 3072), dtype=np.uint8), b"labels": labels}, fh)
    with pytest.raises(ValueError, match=r"data_batch_2: label 10 at index 2 .*\[0, 10\)"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_tensor_label_at_num_classes_fails_at_setup() -> None:
    dm = FederatedDataModule(_tensors([0, 1, 2, 10, 3, 4]), partition=IID(2), num_classes=10)
    with pytest.raises(ValueError, match=r"train labels: label 10 at index 3 .*num_classes=10"):
        dm.setup()
    test = _tensors([0, 10])
    dm = FederatedDataModule(_tensors([0, 1]), partition=IID(2), test=test, num_classes=10)
    with pytest.raises(ValueError, match=r"test labels: label 10 at index 1"):
        _ = dm.num_classes


def test_num_classes_argument_is_reported_and_validated() -> None:
    dm = FederatedDataModule(_tensors([0, 1, 2, 3]), partition=IID(2), num_classes=10)
    assert dm.num_classes == 10 and dm.hparams["num_classes"] == 10
    assert FederatedDataModule(_tensors([0, 1, 2, 3]), partition=IID(2)).num_classes == 4
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_classes must be None or an integer >= 1"):
            FederatedDataModule(_tensors([0, 1]), partition=IID(2), num_classes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fashion_mnist has 10 classes"):
        FederatedDataModule("fashion_mnist", partition=IID(2), num_classes=5)
    named = FederatedDataModule("mnist", partition=IID(2), num_classes=10, download=False)
    assert named.num_classes == 10


@pytest.mark.parametrize("where", ["train", "test"])
def test_check_labels_against_model_outputs(where: str) -> None:
    good, bad = _tensors([0, 1, 2, 3, 4, 5]), _tensors([0, 1, 10, 3, 10, 5])
    train, test = (bad, good) if where == "train" else (good, bad)
    dm = FederatedDataModule(train, partition=IID(2), test=test)
    with pytest.raises(ValueError) as info:
        dm.check_labels(10)
    msg = str(info.value)
    assert msg.startswith(f"{where} labels: label 10 at index 2 ")
    assert "output size 10" in msg
    for remedy in ("num_classes=", "Fix the labels", "at least 11 outputs"):
        assert remedy in msg
    dm.check_labels(11)


def test_negative_label_fails_at_setup_with_first_index() -> None:
    dm = FederatedDataModule(_tensors([0, 1, -3, 2, -1]), partition=IID(2))
    with pytest.raises(ValueError, match=r"train labels: label -3 at index 2 is negative"):
        dm.setup()
    dm = FederatedDataModule(_tensors([0, 1]), partition=IID(2), test=_tensors([1, -2]))
    with pytest.raises(ValueError, match=r"test labels: label -2 at index 1 is negative"):
        dm.setup()


def test_valid_labels_pass_untouched() -> None:
    x, y = _tensors([3, 0, 2, 1, 2, 0, 1, 3])
    test = _tensors([0, 1, 2, 3])
    for num_classes in (None, 4, 7):
        dm = FederatedDataModule((x, y), partition=IID(2), test=test, num_classes=num_classes)
        dm.setup()
        dm.check_labels(4)
        dm.check_labels(7)
        assert dm.num_classes == (num_classes or 4)
        assert torch.equal(dm._y, y) and torch.equal(dm.test_loader().y, test[1])
        merged = torch.cat([dm.client_data(c)[1] for c in dm.client_ids])
        assert sorted(merged.tolist()) == sorted(y.tolist())


def test_check_labels_rejects_bad_output_size() -> None:
    dm = FederatedDataModule(_tensors([0, 1]), partition=IID(2))
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=re.escape(f"num_outputs={bad!r}")):
            dm.check_labels(bad)  # type: ignore[arg-type]
