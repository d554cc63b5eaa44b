"""In-memory image datasets: Fashion-MNIST, MNIST (IDX files) and CIFAR-10 (python batches).

Images are returned as ``float32`` tensors in [0, 1] of shape ``(N, C, H, W)`` and labels as
``int64`` tensors of shape ``(N,)``. Files are parsed directly with numpy (no PIL, no per-sample
objects) and cached per process, so the 60,000 training images load once.

Lookup order for the files: an explicit ``data_dir``; ``$FEDLIGHTNING_DATA``; Debian's
``/usr/share/datasets/<name>`` (``apt-get install dataset-fashion-mnist``); otherwise, when
``download=True``, torchvision downloads the files into ``data_dir`` (or
``$FEDLIGHTNING_DATA``, or ``~/.cache/fedlightning``).

Example:
    >>> x, y = load_dataset("fashion_mnist", split="train", download=False)  # doctest: +SKIP
    >>> tuple(x.shape), y.dtype  # doctest: +SKIP
    ((60000, 1, 28, 28), torch.int64)
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

__all__ = ["DATASETS", "DatasetNotFoundError", "load_dataset", "read_idx"]

DATASETS: dict[str, int] = {"fashion_mnist": 10, "mnist": 10, "cifar10": 10}
"""Known dataset names and their number of classes."""

ENV_VAR = "FEDLIGHTNING_DATA"
SYSTEM_DIR = Path("/usr/share/datasets")

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Sub-directories tried under each root, per dataset (torchvision's layouts included).
_SUBDIRS = {
    "fashion_mnist": ("", "fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
    "mnist": ("", "mnist", "MNIST/raw"),
    "cifar10": ("", "cifar-10-batches-py", "cifar10", "cifar10/cifar-10-batches-py"),
}
_SYSTEM_NAMES = {"fashion_mnist": "fashion-mnist", "mnist": "mnist", "cifar10": "cifar10"}

_CACHE: dict[tuple[str, str, str], tuple[Tensor, Tensor]] = {}

Split = Literal["train", "test"]


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset's files are in none of the searched places."""


def read_idx(path: str | Path) -> NDArray[np.generic]:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    The header is validated: two zero bytes, a known type code and the number of dimensions,
    then one big-endian ``uint32`` size per dimension; the payload must hold exactly the
    declared number of elements.

    Args:
        path: File path; gzip is detected from the content, not the name.

    Returns:
        Array with the declared shape and dtype.

    Raises:
        ValueError: If the file is not IDX, is truncated, or has trailing bytes; the message
            names the file.

    References:
        Y. LeCun et al., the MNIST database file format (http://yann.lecun.com/exdb/mnist/).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, gzip.BadGzipFile) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'}, expected "
            f"00 00 <type in {sorted(_IDX_DTYPES)}> <ndim>)"
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, expected {header})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header
    if payload < expected:
        raise ValueError(
            f"{path}: truncated IDX file, header declares shape {shape} ({expected} bytes of "
            f"data) but only {payload} bytes follow"
        )
    if payload > expected:
        raise ValueError(
            f"{path}: IDX file has {payload - expected} trailing bytes after shape {shape}"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header)
    return np.array(arr.reshape(shape), dtype=dtype.newbyteorder("="))  # writable copy


def _check_label_range(path: Path, labels: NDArray[Any], num_classes: int) -> None:
    """Raise if a label of ``path`` lies outside ``[0, num_classes)``, naming the first one."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{path}: label {int(labels[i])} at index {i} is out of range; labels must lie in "
            f"[0, {num_classes}) ({bad.size} out-of-range label(s) in this file)"
        )


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def _roots(data_dir: str | Path | None, name: str) -> list[Path]:
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        roots.append(Path(env).expanduser())
    roots.append(SYSTEM_DIR / _SYSTEM_NAMES[name])
    return roots


def _candidates(name: str, roots: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        for sub in _SUBDIRS[name]:
            d = root / sub if sub else root
            if d not in out:
                out.append(d)
    return out


def _load_idx_dir(directory: Path, split: Split, num_classes: int) -> tuple[Tensor, Tensor] | None:
    img_stem, lbl_stem = _IDX_FILES[split]
    img_path, lbl_path = _find_file(directory, img_stem), _find_file(directory, lbl_stem)
    if img_path is None or lbl_path is None:
        return None
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{img_path} and {lbl_path}: expected images (N, H, W) and labels (N,), got "
            f"{images.shape} and {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{lbl_path}: labels must be integers, got IDX type {labels.dtype}")
    _check_label_range(lbl_path, labels, num_classes)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).unsqueeze(1)
    return x.float().div_(255.0), torch.from_numpy(labels.astype(np.int64))


def _load_cifar_dir(
    directory: Path, split: Split, num_classes: int
) -> tuple[Tensor, Tensor] | None:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    paths = [directory / n for n in names]
    if not all(p.is_file() for p in paths):
        return None
    xs, ys = [], []
    for p in paths:
        try:
            with p.open("rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
        except (EOFError, pickle.UnpicklingError, ValueError) as err:
            raise ValueError(f"{p}: corrupt or truncated CIFAR-10 batch ({err})") from err
        data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
        labels = batch.get(b"labels", batch.get("labels")) if isinstance(batch, dict) else None
        if data is None or labels is None:
            raise ValueError(f"{p}: not a CIFAR-10 python batch (no 'data'/'labels' entries)")
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise ValueError(
                f"{p}: expected data of shape (N, 3072) and N labels, got {data.shape} and "
                f"{len(labels)} labels"
            )
        try:
            label_arr = np.asarray(labels, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"{p}: CIFAR-10 labels must be integers ({err})") from err
        if label_arr.ndim != 1:
            raise ValueError(f"{p}: expected a flat list of labels, got shape {label_arr.shape}")
        _check_label_range(p, label_arr, num_classes)
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(label_arr)
    x = torch.from_numpy(np.concatenate(xs)).float().div_(255.0)
    return x, torch.from_numpy(np.concatenate(ys))


def _download(name: str, target: Path) -> None:
    import torchvision.datasets as tvd  # deferred: only needed when downloading

    target.mkdir(parents=True, exist_ok=True)
    cls = {"fashion_mnist": tvd.FashionMNIST, "mnist": tvd.MNIST, "cifar10": tvd.CIFAR10}[name]
    for train in (True, False):
        cls(root=str(target), train=train, download=True)


def _has_files(name: str, split: Split, directory: Path) -> bool:
    if name == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        return all((directory / n).is_file() for n in names)
    return all(_find_file(directory, stem) is not None for stem in _IDX_FILES[split])


def _search(name: str, split: Split, dirs: Sequence[Path]) -> tuple[Tensor, Tensor] | None:
    for d in dirs:
        if not (d.is_dir() and _has_files(name, split, d)):
            continue
        cache_key = (name, split, str(d.resolve()))
        if cache_key not in _CACHE:
            loader = _load_cifar_dir if name == "cifar10" else _load_idx_dir
            found = loader(d, split, DATASETS[name])
            if found is None:  # pragma: no cover - _has_files checked the same names
                continue
            _CACHE[cache_key] = found
        return _CACHE[cache_key]
    return None


def load_dataset(
    name: str,
    *,
    split: Split = "train",
    data_dir: str | Path | None = None,
    download: bool = True,
) -> tuple[Tensor, Tensor]:
    """Load a dataset split as in-memory tensors, cached per process.

    Args:
        name: One of ``"fashion_mnist"``, ``"mnist"``, ``"cifar10"``.
        split: ``"train"`` or ``"test"``.
        data_dir: Directory searched first (also the download target when given).
        download: Allow a torchvision download when the files are found nowhere.

    Returns:
        ``(x, y)``: ``float32`` images in [0, 1], shape ``(N, C, H, W)``; ``int64`` labels.
        The tensors are shared by all callers; do not modify them in place.

    Raises:
        ValueError: For an unknown name or split, a corrupt or truncated file, or a label
            outside ``[0, number of classes)`` (the message names the file, the first bad
            label's index and value, and the allowed range).
        DatasetNotFoundError: If the files are nowhere and downloading is not allowed or fails.
    """
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got dataset={name!r}")
    if split not in _IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got split={split!r}")
    roots = _roots(data_dir, key)
    dirs = _candidates(key, roots)
    found = _search(key, split, dirs)
    download_error: Exception | None = None
    if found is None and download:
        env = os.environ.get(ENV_VAR)
        target = Path(data_dir or env or Path.home() / ".cache" / "fedlightning").expanduser()
        try:
            _download(key, target)
        except Exception as err:  # network failures surface below with the search list
            download_error = err
        else:
            found = _search(key, split, _candidates(key, [target]))
    if found is None:
        searched = "\n  ".join(str(d) for d in dirs)
        how = (
            "apt-get install -y dataset-fashion-mnist (Debian), " if key == "fashion_mnist" else ""
        )
        reason = (
            f"download failed: {download_error}"
            if download_error is not None
            else "download=False"
            if not download
            else "download did not produce the files"
        )
        raise DatasetNotFoundError(
            f"dataset {key!r} ({split}) not found; searched:\n  {searched}\n"
            f"Provide it with {how}${ENV_VAR} or data_dir pointing to a directory holding the "
            f"files, or download=True on a machine with internet ({reason})."
        )
    return found
