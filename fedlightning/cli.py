"""The ``fedlightning`` command line: ``fedlightning fit --config CONFIG.yaml [overrides]``.

Configs follow jsonargparse / LightningCLI conventions::

    model:
      class_path: fedlightning.models.MNISTClassifier
      init_args: {lr: 0.01}
    data:
      dataset: fashion_mnist
      partition: {class_path: fedlightning.datamodules.SortedShards,
                  init_args: {num_clients: 100, shards_per_client: 2}}
      batch_size: 60
    trainer:
      algorithm: {class_path: fedlightning.algorithms.FedProx, init_args: {mu: 0.01}}
      rounds: 50
      clients_per_round: 10
      output_dir: runs/fedprox
    logger: wandb

Any value can be overridden on the command line: ``--trainer.rounds 5``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from lightning.pytorch import LightningModule

from fedlightning.datamodules import FederatedDataModule
from fedlightning.trainer import FederatedTrainer
from fedlightning.version import __version__

__all__ = ["build_parser", "main"]

_LOGGERS = ("wandb", "csv", "none")


def build_parser() -> ArgumentParser:
    """The parser of ``fedlightning`` and its ``fit`` subcommand."""
    fit = ArgumentParser(description="Train a LightningModule federatedly.")
    fit.add_argument("--config", action=ActionConfigFile, help="YAML config file")
    fit.add_subclass_arguments(LightningModule, "model", required=True)
    fit.add_class_arguments(FederatedDataModule, "data")
    fit.add_class_arguments(
        FederatedTrainer, "trainer", skip={"callbacks", "logger", "eval_metrics"}
    )
    fit.add_argument("--logger", type=str, default="wandb", help=f"one of {_LOGGERS}")
    fit.add_argument("--project", type=str, default="fedlightning", help="W&B project")
    parser = ArgumentParser(prog="fedlightning", description=f"fedlightning {__version__}")
    parser.add_argument("--version", action="version", version=__version__)
    subcommands = parser.add_subcommands()
    subcommands.add_subcommand("fit", fit)
    return parser


def _logger(kind: str, project: str, output_dir: str | Path | None) -> Any:
    if kind not in _LOGGERS:
        raise ValueError(f"logger must be one of {_LOGGERS}, got logger={kind!r}")
    if kind == "none":
        return None
    directory = Path(output_dir) if output_dir is not None else Path.cwd()
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(directory), name="logs")
    from fedlightning.loggers import wandb_logger

    return wandb_logger(project, save_dir=directory)


def run_fit(cfg: Namespace, parser: ArgumentParser) -> dict[str, Any]:
    """Instantiate and run a ``fit`` config; return the results."""
    fit_parser = parser._subcommands_action._name_parser_map["fit"]  # type: ignore[union-attr]
    init = fit_parser.instantiate_classes(cfg)
    trainer: FederatedTrainer = init.trainer
    logger = _logger(cfg.logger, cfg.project, trainer.output_dir)
    trainer.loggers = [logger] if logger is not None else []
    trainer.fit(init.model, init.data)
    trainer.test()
    return trainer.results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedlightning`` console script."""
    parser = build_parser()
    cfg = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    if cfg.subcommand != "fit":  # pragma: no cover - only one subcommand today
        parser.print_help()
        return 2
    results = run_fit(cfg.fit, parser)
    output_dir = cfg.fit.trainer.output_dir
    final = results.get("final", {})
    print(
        json.dumps(
            {
                "final": final,
                "bytes": {k: v for k, v in results.get("bytes", {}).items() if k != "per_client"},
            }
        )
    )
    if output_dir is not None:
        print(f"results: {Path(output_dir) / 'results.json'}")
    for name, directory in results.get("loggers", {}).items():
        print(f"{name} run files: {directory}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
