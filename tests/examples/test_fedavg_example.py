"""The core example, end to end on the real Fashion-MNIST, in a small configuration."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
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


def _argv(algorithm: str, output_dir: Path) -> list[str]:
    return [
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
        str(output_dir),
    ]


@pytest.fixture(scope="module")
def quick_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """The small configuration with algorithm ``request.param``, run in this process."""
    algorithm = request.param
    out = tmp_path_factory.mktemp(algorithm)
    _load("fedavg").main(_argv(algorithm, out))
    return algorithm, out


@pytest.mark.parametrize("quick_run", ["fedavg", "fedprox"], indirect=True)
def test_fedavg_example_writes_the_results_contract(quick_run: tuple[str, Path]) -> None:
    algorithm, tmp_path = quick_run
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


@pytest.mark.parametrize("quick_run", ["fedprox"], indirect=True)
def test_same_command_same_results(
    quick_run: tuple[str, Path], tmp_path: Path, rerun: Callable, assert_same_results: Callable
) -> None:
    # The fedprox run above again, as its command line in a fresh process, into another folder:
    # the same results.json but for durations and the output folder (see conftest.py).
    algorithm, first = quick_run
    rerun([str(ROOT / "examples" / "fedavg.py"), *_argv(algorithm, tmp_path)])
    assert assert_same_results(first, tmp_path) == ["results.json"]


def test_resume_extends_the_main_job_to_the_uninterrupted_result(tmp_path: Path) -> None:
    example = _load("fedavg")
    whole, part = tmp_path / "whole", tmp_path / "part"
    example.main(_argv("fedavg", whole))
    one_round = _argv("fedavg", part)
    one_round[one_round.index("--rounds") + 1] = "1"
    example.main(one_round)
    example.main([*_argv("fedavg", part), "--resume"])
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, part))
    assert b["final"]["acc_global"] == a["final"]["acc_global"]
    assert b["bytes"] == a["bytes"]
    assert [h["train_loss"] for h in b["history"]] == [h["train_loss"] for h in a["history"]]
