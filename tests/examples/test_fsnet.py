"""Tests of examples/fsnet.py on small generated tensors of Fashion-MNIST's shape."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fsnet.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fsnet_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fsnet_example"] = module
    spec.loader.exec_module(module)
    return module


def _pair(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = 0.3 * torch.rand(n, 1, 28, 28, generator=g)
    for i, label in enumerate(y.tolist()):
        x[i, 0, 2 * label : 2 * label + 6, :] += 0.7  # a class-specific band
    return x, y


def test_quick_defaults_and_protocol_defaults() -> None:
    example = _load()
    full = example.parse_args(["--output-dir", "x"])
    assert (full.clients, full.fraction, full.rounds, full.local_epochs) == (100, 0.1, 50, 10)
    assert (full.batch_size, full.lr, full.num_synthetic) == (60, 0.01, 60)
    assert full.method_list == ["fedavg_iid", "fedavg", "fedprox", "fedfsnet"]
    quick = example.parse_args(["--output-dir", "x", "--quick"])
    assert quick.rounds < full.rounds and quick.clients < full.clients
    with pytest.raises(SystemExit):
        example.parse_args(["--output-dir", "x", "--methods", "fedavg,scaffold"])


ROUNDS, CLIENTS_PER_ROUND, SYNTHETIC = 2, 2, 10
EVERY_METHOD = [
    "--logger", "none", "--clients", "4", "--fraction", "0.5", "--rounds", str(ROUNDS),
    "--local-epochs", "1", "--num-synthetic", str(SYNTHETIC), "--hidden-steps", "2",
]  # fmt: skip


def _every_method_data() -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    return _pair(200, 0), _pair(50, 1)


@pytest.fixture(scope="module")
def every_method_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``EVERY_METHOD`` run in this process: its output folder and returned results."""
    out = tmp_path_factory.mktemp("fsnet")
    return out, _load().main([*EVERY_METHOD, "--output-dir", str(out)], data=_every_method_data())


def test_runs_every_method_and_writes_results_and_figures(
    every_method_run: tuple[Path, dict],
) -> None:
    tmp_path, results = every_method_run
    rounds, clients_per_round, synthetic = ROUNDS, CLIENTS_PER_ROUND, SYNTHETIC
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["methods"].keys() == {"fedavg_iid", "fedavg", "fedprox", "fedfsnet"}
    for summary in on_disk["methods"].values():
        assert {"acc_global", "acc_local", "curve", "bytes_down", "bytes_up", "wall_s"} <= set(
            summary
        )
        assert [c["round"] for c in summary["curve"]] == [1, 2]
        assert all(0.0 <= c["acc_global"] <= 1.0 for c in summary["curve"])
        assert summary["acc_global"] == summary["curve"][-1]["acc_global"]
    methods = results["methods"]
    # D' is the only extra downlink: (rounds - 1) rounds x clients x samples x 28*28 floats,
    # plus the 8-byte beta scalar per message.
    extra = (rounds - 1) * clients_per_round * (synthetic * 28 * 28 * 4 + 8)
    assert methods["fedfsnet"]["bytes_down"] - methods["fedavg"]["bytes_down"] == extra
    assert results["fedfsnet_extra_downlink_share"] == pytest.approx(
        (rounds - 1) * synthetic * 28 * 28 * 4 / (rounds * 19_670 * 4)
    )
    assert "fedfsnet_minus_fedavg" in results
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    assert (tmp_path / "synthetic.png").stat().st_size > 0


def test_same_command_same_results(
    every_method_run: tuple[Path, dict],
    tmp_path: Path,
    rerun: Callable,
    assert_same_results: Callable,
) -> None:
    # The run above again in a fresh process (main() with the same generated tensors, which no
    # command-line flag can pass), into another folder: the same results.json, and the same
    # per-method ones, but for durations and the output folder (see conftest.py).
    first, _ = every_method_run
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('fsnet_tests', {str(Path(__file__))!r})\n"
        "tests = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(tests)\n"
        "tests._load().main(sys.argv[1:], data=tests._every_method_data())\n"
    )
    rerun(["-c", code, *EVERY_METHOD, "--output-dir", str(tmp_path)])
    compared = assert_same_results(first, tmp_path)
    methods = ["fedavg_iid", "fedavg", "fedprox", "fedfsnet"]
    assert compared == sorted(["results.json", *(f"{m}/results.json" for m in methods)])


def test_yaml_config_builds_fedfsnet_with_the_papers_settings() -> None:
    from fedlightning.algorithms.fsnet import FedFSNet, StepDecay
    from fedlightning.cli import build_parser

    config = EXAMPLE.parent / "configs" / "fsnet.yaml"
    parser = build_parser()
    cfg = parser.parse_args(["fit", "--config", str(config), "--trainer.rounds", "1"])
    trainer = parser.instantiate_classes(cfg).fit.trainer
    algorithm = trainer.algorithm
    assert isinstance(algorithm, FedFSNet)
    assert algorithm.beta == StepDecay(1.0, 0.1, 10)
    assert algorithm.num_synthetic == 60
    assert (trainer.fraction, trainer.plan.epochs, trainer.rounds) == (0.1, 10, 1)


def test_vectorized_executor_gives_the_sequential_result(tmp_path: Path) -> None:
    example = _load()
    argv = [
        "--logger", "none", "--clients", "4", "--fraction", "0.5", "--rounds", "2",
        "--local-epochs", "1", "--num-synthetic", "6", "--hidden-steps", "2",
        "--methods", "fedprox,fedfsnet",
    ]  # fmt: skip
    data = (_pair(120, 0), _pair(30, 1))
    runs = {
        ex: example.main([*argv, "--executor", ex, "--output-dir", str(tmp_path / ex)], data=data)
        for ex in ("sequential", "vectorized")
    }
    for method in ("fedprox", "fedfsnet"):
        seq, vec = (runs[ex]["methods"][method] for ex in ("sequential", "vectorized"))
        assert seq["bytes_down"] == vec["bytes_down"] and seq["bytes_up"] == vec["bytes_up"]
        assert vec["acc_global"] == pytest.approx(seq["acc_global"], abs=1e-6)


def test_merge_combines_methods_of_separate_runs(tmp_path: Path) -> None:
    example = _load()
    base = {"acc_global": 0.5, "acc_local": 0.2, "curve": [], "bytes_down": 1, "bytes_up": 1}
    first = {"config": {}, "methods": {"fedavg": {**base, "acc_global": 0.3}}}
    second = {
        "config": {},
        "methods": {"fedfsnet": {**base, "payload": {"extras_share_down": 2.0}}},
    }
    files = []
    for i, run in enumerate((first, second)):
        files.append(tmp_path / f"run{i}.json")
        files[-1].write_text(json.dumps(run))
    merged = example.main(["--merge", *map(str, files), "--output-dir", str(tmp_path / "m")])
    assert merged["methods"].keys() == {"fedavg", "fedfsnet"}
    assert merged["fedfsnet_minus_fedavg"] == pytest.approx(0.2)
    assert merged["fedfsnet_extra_downlink_share"] == 2.0
    assert json.loads((tmp_path / "m" / "results.json").read_text())["methods"].keys() == {
        "fedavg",
        "fedfsnet",
    }
    assert (tmp_path / "m" / "accuracy.png").stat().st_size > 0


def test_resume_extends_a_run_to_the_uninterrupted_result(tmp_path: Path) -> None:
    example = _load()
    argv = [
        "--logger", "none", "--clients", "4", "--fraction", "0.5", "--local-epochs", "1",
        "--num-synthetic", "6", "--hidden-steps", "2", "--methods", "fedfsnet",
    ]  # fmt: skip
    data = (_pair(120, 0), _pair(30, 1))
    whole = example.main([*argv, "--rounds", "3", "--output-dir", str(tmp_path / "a")], data=data)
    part = tmp_path / "b"
    example.main([*argv, "--rounds", "2", "--output-dir", str(part)], data=data)
    with pytest.raises(ValueError, match="already holds another run"):
        example.main([*argv, "--rounds", "3", "--output-dir", str(part)], data=data)
    resumed = example.main(
        [*argv, "--rounds", "3", "--resume", "--output-dir", str(part)], data=data
    )
    a, b = whole["methods"]["fedfsnet"], resumed["methods"]["fedfsnet"]
    assert (b["bytes_down"], b["bytes_up"]) == (a["bytes_down"], a["bytes_up"])
    assert b["acc_global"] == a["acc_global"] and b["curve"] == a["curve"]
    assert b["wall_s"] > 0
