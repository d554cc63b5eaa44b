"""W&B offline: a run never needs a server, and what was logged can be read back."""

from __future__ import annotations

from pathlib import Path

import torch

from fedlightning import FederatedTrainer
from fedlightning.demos import BoringClassifier, demo_datamodule
from fedlightning.loggers import read_wandb_run, wandb_logger


def test_wandb_offline_run_files_contain_the_logged_byte_counts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    logger = wandb_logger("fedlightning-tests", save_dir=tmp_path, offline=True)
    trainer = FederatedTrainer(
        rounds=3, clients_per_round=2, logger=logger, progress_bar=False, output_dir=tmp_path
    )
    trainer.fit(BoringClassifier(), demo_datamodule())
    # The run stays open after fit (as under Lightning) so that callers can add to it.
    logger.experiment.finish()
    run = read_wandb_run(tmp_path / "wandb")
    logged = [h for h in run["history"] if "bytes_down" in h]
    assert [h["bytes_down"] for h in logged] == [h["bytes_down"] for h in trainer.history]
    assert [h["bytes_up_total"] for h in logged] == [h["bytes_up_total"] for h in trainer.history]
    assert logged[-1]["bytes_total"] == trainer.results["bytes"]["total"]
    assert run["config"]["rounds"] == 3
    assert "WandbLogger" in trainer.results["loggers"]


def test_failing_logger_never_stops_the_run(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    class Broken(CSVLogger):
        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            raise ConnectionError("wandb.ai unreachable")

    trainer = FederatedTrainer(rounds=2, logger=Broken(save_dir=str(tmp_path)), progress_bar=False)
    trainer.fit(BoringClassifier(), demo_datamodule())
    assert len(trainer.history) == 2
