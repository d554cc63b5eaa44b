"""The fedlightning command line on a YAML config with overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedlightning.cli import main


def test_fit_with_config_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "model:\n"
        "  class_path: fedlightning.models.MNISTClassifier\n"
        "data:\n"
        "  dataset: fashion_mnist\n"
        "  partition:\n"
        "    class_path: fedlightning.datamodules.SortedShards\n"
        "    init_args: {num_clients: 100, shards_per_client: 2}\n"
        "  batch_size: 60\n"
        "trainer:\n"
        "  algorithm:\n"
        "    class_path: fedlightning.algorithms.FedProx\n"
        "    init_args: {mu: 0.1}\n"
        "  rounds: 5\n"
        "  clients_per_round: 5\n"
        "  progress_bar: false\n"
        "logger: csv\n"
    )
    out = tmp_path / "run"
    code = main(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.rounds",
            "1",
            "--trainer.clients_per_round",
            "2",
            "--trainer.output_dir",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["rounds"] == 1  # the override won over the file
    assert results["config"]["clients_per_round"] == 2
    assert results["config"]["algorithm"].startswith("FedProx(mu=0.1")
    assert "acc_global" in results["test"]
    printed = capsys.readouterr().out
    assert f"results: {out / 'results.json'}" in printed


def test_unknown_logger_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="logger must be one of"):
        main(
            [
                "fit",
                "--model",
                "fedlightning.models.MNISTClassifier",
                "--data.dataset",
                "fashion_mnist",
                "--data.partition",
                "fedlightning.datamodules.IID",
                "--data.partition.num_clients",
                "10",
                "--logger",
                "carrier-pigeon",
                "--trainer.output_dir",
                str(tmp_path),
            ]
        )
