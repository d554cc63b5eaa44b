"""The core example, end to end on the real Fashion-MNIST, in a small configuration."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("algorithm", ["fedavg", "fedprox"])
def test_fedavg_example_writes_the_results_contract(tmp_path: Path, algorithm: str) -> None:
    example = _load("fedavg")
    args = [
        "--dataset",
        "fashion_mnist",
        "--partition",
        "shards",
        "--clients",
        "100",
        "--clients-per-round",
        "3",
        "--rounds",
        "2",
        "--local-epochs",
        "1",
        "--batch-size",
        "60",
        "--lr",
        "0.01",
        "--algorithm",
        algorithm,
        "--logger",
        "csv",
        "--output-dir",
        str(tmp_path),
    ]
    example.main(args)
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"config", "seed", "version", "wall_s", "history", "final", "bytes"} <= set(results)
    assert [h["round"] for h in results["history"]] == [1, 2]
    for entry in results["history"]:
        assert {"round", "bytes_down", "bytes_up", "test_acc", "train_loss"} <= set(entry)
        assert 0.0 <= entry["test_acc"] <= 1.0
    assert {"acc_global", "acc_local"} <= set(results["final"])
    # the MNIST CNN's float32 weights, to 3 clients per round, for 2 rounds
    down = sum(h["bytes_down"] for h in results["history"])
    assert results["bytes"]["down"] == down and down % (3 * 2 * 4) == 0
    assert results["bytes"]["total"] == results["bytes"]["down"] + results["bytes"]["up"]
    assert results["config"]["algorithm"] == algorithm
    assert (tmp_path / "partition.png").stat().st_size > 1000
