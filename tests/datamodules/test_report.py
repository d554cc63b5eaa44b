"""PartitionReport numbers and the partition plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedlightning.datamodules import IID, PartitionReport, SortedShards, plot_partition


def test_histogram_and_summary_by_hand() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    parts = [np.array([0, 1]), np.array([2, 3, 4]), np.array([5])]
    r = PartitionReport.from_partition(labels, parts, num_classes=4)
    assert r.histogram.tolist() == [[2, 0, 0, 0], [0, 1, 2, 0], [0, 0, 1, 0]]
    assert r.sizes.tolist() == [2, 3, 1]
    assert r.classes_per_client.tolist() == [1, 2, 1]
    s = r.summary()
    assert s["num_samples"] == 6 and s["size_min"] == 1 and s["size_max"] == 3
    assert s["size_mean"] == 2 and s["classes_per_client_mean"] == pytest.approx(4 / 3)
    # pooled proportions (2, 1, 3, 0) / 6; TV of client 0 = 0.5 * (2/3 + 1/6 + 1/2) = 2/3
    tv0 = 0.5 * (abs(1 - 2 / 6) + 1 / 6 + 3 / 6)
    tv1 = 0.5 * (2 / 6 + abs(1 / 3 - 1 / 6) + abs(2 / 3 - 3 / 6))
    tv2 = 0.5 * (2 / 6 + 1 / 6 + abs(1 - 3 / 6))
    assert s["mean_tv_from_global"] == pytest.approx((tv0 + tv1 + tv2) / 3)
    d = r.to_dict()
    assert json.loads(json.dumps(d))["histogram"] == r.histogram.tolist()
    assert d["sizes"] == [2, 3, 1]


def test_iid_is_less_skewed_than_shards() -> None:
    labels = np.repeat(np.arange(10), 100)
    iid = PartitionReport.from_partition(labels, IID(10)(labels, 0)).summary()
    shards = PartitionReport.from_partition(labels, SortedShards(10, 2)(labels, 0)).summary()
    assert iid["mean_tv_from_global"] < 0.2 < 0.7 < shards["mean_tv_from_global"]
    assert shards["classes_per_client_mean"] <= 2


def test_num_classes_too_small() -> None:
    with pytest.raises(ValueError, match="num_classes must be >= 3"):
        PartitionReport.from_partition(np.array([0, 2]), [np.array([0, 1])], num_classes=2)


def test_plot_partition_writes_png(tmp_path: Path) -> None:
    labels = np.repeat(np.arange(10), 30)
    r = PartitionReport.from_partition(labels, SortedShards(15, 2)(labels, 0))
    out = plot_partition(r, tmp_path / "sub" / "p.png", title="shards")
    assert out == tmp_path / "sub" / "p.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000
