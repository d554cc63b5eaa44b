"""Dataset loading: the IDX parser, CIFAR-10 batches, lookup order and errors."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fedlightning.datamodules import DatasetNotFoundError, load_dataset
from fedlightning.datamodules import datasets as ds
from fedlightning.datamodules.datasets import read_idx


def write_idx(path: Path, arr: np.ndarray, *, compress: bool = False, cut: int = 0) -> Path:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}[arr.dtype]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.tobytes()
    raw = raw[: len(raw) - cut] if cut else raw
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_mnist_like(root: Path, n_train: int = 12, n_test: int = 5, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images, compress=True)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels)
    return root


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "a.idx", arr, compress=compress))
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_read_idx_big_endian_types(tmp_path: Path) -> None:
    ints = np.array([1, -2, 70000], dtype=">i4")
    floats = np.array([[0.5, -1.25]], dtype=">f4")
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i", ints)), [1, -2, 70000])
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "f", floats)), [[0.5, -1.25]])


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_truncated_names_the_file(tmp_path: Path, compress: bool) -> None:
    arr = np.zeros((4, 5, 5), dtype=np.uint8)
    path = write_idx(tmp_path / "train-images-idx3-ubyte", arr, compress=compress, cut=7)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated.*\(4, 5, 5\)"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.gz", np.zeros((50, 50), dtype=np.uint8), compress=True)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"x\.gz.*truncated"):
        read_idx(path)


def test_read_idx_bad_magic_and_trailing_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="bad: not an IDX file"):
        read_idx(bad)
    path = write_idx(tmp_path / "t", np.zeros(3, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"xx")
    with pytest.raises(ValueError, match="2 trailing bytes"):
        read_idx(path)
    header_only = tmp_path / "h"
    header_only.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(header_only)


def test_real_fashion_mnist() -> None:
    x, y = load_dataset("fashion_mnist", split="train", download=False)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.99
    assert torch.bincount(y).tolist() == [6000] * 10
    xt, yt = load_dataset("fashion-mnist", split="test", download=False)
    assert xt.shape == (10000, 1, 28, 28) and torch.bincount(yt).tolist() == [1000] * 10
    again, _ = load_dataset("fashion_mnist", download=False)
    assert again is x  # cached: loaded once per process


def test_mnist_from_data_dir_torchvision_layout(tmp_path: Path) -> None:
    write_mnist_like(tmp_path / "MNIST" / "raw", n_train=12, n_test=5)
    x, y = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [i % 10 for i in range(12)]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    xt, _ = load_dataset("mnist", split="test", data_dir=tmp_path, download=False)
    assert xt.shape == (5, 1, 28, 28)


def test_pixel_scaling(tmp_path: Path) -> None:
    root = write_mnist_like(tmp_path, n_train=2)
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 255, 51
    write_idx(root / "train-images-idx3-ubyte.gz", images, compress=True)
    x, _ = load_dataset("mnist", data_dir=root, download=False)
    assert float(x[0, 0, 0, 0]) == 1.0 and float(x[1, 0, 0, 0]) == pytest.approx(0.2)


def test_env_var_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist_like(tmp_path / "mnist", n_train=7)
    monkeypatch.setenv("FEDLIGHTNING_DATA", str(tmp_path))
    x, _ = load_dataset("mnist", download=False)
    assert len(x) == 7


def test_data_dir_comes_before_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist_like(tmp_path / "env", n_train=7)
    write_mnist_like(tmp_path / "explicit", n_train=9)
    monkeypatch.setenv("FEDLIGHTNING_DATA", str(tmp_path / "env"))
    x, _ = load_dataset("mnist", data_dir=tmp_path / "explicit", download=False)
    assert len(x) == 9


def test_truncated_dataset_file_is_reported(tmp_path: Path) -> None:
    root = write_mnist_like(tmp_path)
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(12, dtype=np.uint8), cut=3)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*truncated"):
        load_dataset("mnist", data_dir=root, download=False)


def test_images_and_labels_must_agree(tmp_path: Path) -> None:
    root = write_mnist_like(tmp_path)
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(12, 28, 28\) and \(11,\)"):
        load_dataset("mnist", data_dir=root, download=False)


def write_cifar(root: Path, n: int = 4) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        }
        with (d / name).open("wb") as fh:
            pickle.dump(batch, fh)
    return d


def test_cifar10_python_batches(tmp_path: Path) -> None:
    d = write_cifar(tmp_path, n=4)
    x, y = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    with (d / "data_batch_1").open("rb") as fh:
        first = pickle.load(fh)
    # channel-major layout: the first 1024 bytes are the red plane of image 0
    red = first[b"data"][0, :1024].reshape(32, 32) / 255.0
    np.testing.assert_allclose(x[0, 0].numpy(), red, atol=1e-6)
    assert y[:4].tolist() == first[b"labels"]
    xt, _ = load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)
    assert xt.shape == (4, 3, 32, 32)


def test_cifar10_truncated_batch(tmp_path: Path) -> None:
    d = write_cifar(tmp_path)
    (d / "data_batch_3").write_bytes((d / "data_batch_3").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"data_batch_3.*truncated"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_missing_dataset_names_places_and_remedies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDLIGHTNING_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(ds, "SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path / "mine", download=False)
    msg = str(info.value)
    for place in ("mine", "env", "system"):
        assert str(tmp_path / place) in msg
    assert "apt-get install -y dataset-fashion-mnist" in msg
    assert "FEDLIGHTNING_DATA" in msg and "data_dir" in msg and "download=False" in msg


def test_failed_download_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str, target: Path) -> None:
        raise OSError("no network")

    monkeypatch.setattr(ds, "_download", offline)
    monkeypatch.setattr(ds, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.delenv("FEDLIGHTNING_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match="download failed: no network"):
        load_dataset("cifar10", data_dir=tmp_path, download=True)


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(ValueError, match=r"\['cifar10', 'fashion_mnist', 'mnist'\].*svhn"):
        load_dataset("svhn", download=False)
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist", split="val", download=False)  # type: ignore[arg-type]
