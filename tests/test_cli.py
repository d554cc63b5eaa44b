"""The fedlightning command line on a YAML config with overrides."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedlightning.cli import build_parser, main
from fedlightning.datamodules.datasets import read_idx

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def test_fit_with_config_and_overrides(
    tmp_path: Path, tiny_fashion: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
            "--data.data_dir",
            str(tiny_fashion),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["rounds"] == 1  # the override won over the file
    assert results["config"]["clients_per_round"] == 2
    assert results["config"]["algorithm"]["class"].endswith(".FedProx")
    assert results["config"]["algorithm"]["mu"] == 0.1
    assert "acc_global" in results["test"]
    printed = capsys.readouterr().out
    assert f"results: {out / 'results.json'}" in printed


def test_unknown_logger_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
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
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("fedlightning: error: ") and "logger must be one of" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------- LightningCLI parity
_SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@pytest.fixture(autouse=True)
def _restore_seed_env() -> Iterator[None]:
    """``lightning.seed_everything`` sets ``PL_GLOBAL_SEED``; later tests must not see it."""
    saved = {name: os.environ.get(name) for name in _SEED_ENV}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def tiny_fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 2,000 training and 500 test images of Fashion-MNIST, as IDX files."""
    folder = tmp_path_factory.mktemp("tiny-fashion")
    for stem, count in (("train", 2000), ("t10k", 500)):
        images = read_idx(Path(FASHION_DIR) / f"{stem}-images-idx3-ubyte.gz")[:count]
        labels = read_idx(Path(FASHION_DIR) / f"{stem}-labels-idx1-ubyte.gz")[:count]
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
            (folder / f"{stem}-{kind}-ubyte").write_bytes(header + array.astype(np.uint8).tobytes())
    return folder


def _tiny_config(tmp_path: Path, data_dir: Path, trainer_extra: str = "") -> Path:
    """2,000 Fashion-MNIST images on 20 label-sorted clients, one round of two."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model:\n"
        "  class_path: fedlightning.models.MNISTClassifier\n"
        "data:\n"
        "  dataset: fashion_mnist\n"
        f"  data_dir: {data_dir}\n"
        "  download: false\n"
        "  partition:\n"
        "    class_path: fedlightning.datamodules.SortedShards\n"
        "    init_args: {num_clients: 20, shards_per_client: 2}\n"
        "  batch_size: 50\n"
        "trainer:\n"
        "  rounds: 1\n"
        "  clients_per_round: 2\n"
        "  eval_local: true\n"
        "  seed: 3\n"
        "  progress_bar: false\n" + trainer_extra + "logger: none\n"
    )
    return config


def _fit(config: Path, out: Path, *extra: str) -> dict[str, Any]:
    code = main(["fit", "--config", str(config), "--trainer.output_dir", str(out), *extra])
    assert code == 0
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


def test_same_fit_command_twice_gives_identical_results(tmp_path: Path, tiny_fashion: Path) -> None:
    config = _tiny_config(tmp_path, tiny_fashion)
    first = _fit(config, tmp_path / "a")
    second = _fit(config, tmp_path / "b")
    assert "acc_local" in first["final"] and "test_loss" in first["final"]
    for results in (first, second):
        results.pop("wall_s")
        results.pop("loggers", None)
    assert first == second
    # seed_everything defaults to true: the trainer's seed, before the model is built.
    assert first["seed_everything"] == 3


def test_fit_saves_the_resolved_config(tmp_path: Path, tiny_fashion: Path) -> None:
    config = _tiny_config(tmp_path, tiny_fashion, "  checkpoint_every: null\n")
    out = tmp_path / "run"
    results = _fit(config, out, "--trainer.local_steps", "2", "--seed_everything", "false")
    assert results["seed_everything"] is None
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["seed_everything"] is False
    assert saved["trainer"]["local_steps"] == 2  # the override, not the file's value
    assert saved["trainer"]["checkpoint_every"] is None  # None kept: its default differs
    assert saved["trainer"]["output_dir"] == str(out)
    assert saved["model"]["class_path"] == "fedlightning.models.MNISTClassifier"
    reparsed = build_parser().parse_args(["fit", "--config", str(out / "config.yaml")])
    assert reparsed.fit.trainer.local_steps == 2
    assert reparsed.fit.trainer.checkpoint_every is None
    assert reparsed.fit.seed_everything is False


def test_test_subcommand_evaluates_a_checkpoint(
    tmp_path: Path, tiny_fashion: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    fitted = _fit(_tiny_config(tmp_path, tiny_fashion, "  checkpoint_every: 1\n"), out)
    results_json = (out / "results.json").read_bytes()
    ckpt = out / "checkpoints" / "round_0001.ckpt"
    capsys.readouterr()
    code = main(["test", "--config", str(out / "config.yaml"), "--ckpt_path", str(ckpt)])
    assert code == 0
    tested = json.loads((out / "test_results.json").read_text())
    assert tested["ckpt_path"] == str(ckpt)
    assert tested["round"] == 1
    assert tested["seed_everything"] == 3
    # The trained global model's weights, not freshly (identically seeded) initial ones.
    assert tested["test"]["test_loss"] == pytest.approx(fitted["test"]["test_loss"], rel=1e-6)
    assert tested["test"]["acc_global"] == pytest.approx(fitted["test"]["acc_global"])
    assert (out / "results.json").read_bytes() == results_json  # the fit run's, untouched
    printed = capsys.readouterr().out
    assert json.loads(printed.splitlines()[-2])["test"] == tested["test"]
    assert f"test results: {out / 'test_results.json'}" in printed


def test_callbacks_are_appended_from_the_command_line(tmp_path: Path, tiny_fashion: Path) -> None:
    config = _tiny_config(
        tmp_path, tiny_fashion, "  callbacks:\n    - class_path: fedlightning.callbacks.CommCost\n"
    )
    out = tmp_path / "run"
    results = _fit(
        config,
        out,
        "--trainer.callbacks+=fedlightning.callbacks.RoundTimer",
        "--seed_everything",
        "7",
    )
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert [c["class_path"] for c in saved["trainer"]["callbacks"]] == [
        "fedlightning.callbacks.CommCost",
        "fedlightning.callbacks.RoundTimer",
    ]
    assert "round_s" in results["history"][0]  # RoundTimer ran
    assert results["bytes"]["total"] > 0  # CommCost ran
    assert results["seed_everything"] == 7
    assert os.environ["PL_GLOBAL_SEED"] == "7"


def test_parser_seed_everything_overwrite_and_ckpt_path() -> None:
    parser = build_parser()
    base = ["--model", "fedlightning.models.MNISTClassifier", "--data.dataset", "fashion_mnist"]
    base += ["--data.partition", "fedlightning.datamodules.IID", "--data.partition.num_clients"]
    base += ["10"]
    assert parser.parse_args(["fit", *base]).fit.seed_everything is True
    assert (
        parser.parse_args(["fit", *base, "--seed_everything", "false"]).fit.seed_everything is False
    )
    assert parser.parse_args(["fit", *base, "--seed_everything", "42"]).fit.seed_everything == 42
    cfg = parser.parse_args(["fit", *base, "--trainer.overwrite", "true"])
    assert cfg.fit.trainer.overwrite is True
    cfg = parser.parse_args(["test", *base, "--ckpt_path", "run/checkpoints/last.ckpt"])
    assert cfg.test.ckpt_path == "run/checkpoints/last.ckpt"
