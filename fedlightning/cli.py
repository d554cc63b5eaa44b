"""The ``fedlightning`` command line: ``fedlightning fit|test --config CONFIG.yaml [overrides]``.

Configs follow jsonargparse / LightningCLI conventions::

    seed_everything: true    # true: lightning.seed_everything(trainer.seed); an int; false
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
      callbacks: [fedlightning.callbacks.RoundTimer]
      output_dir: runs/fedprox
    logger: wandb

Any value can be overridden on the command line: ``--trainer.rounds 5``; a callback is
appended with ``--trainer.callbacks+=fedlightning.callbacks.RoundTimer``.

* ``fit`` seeds (``seed_everything``) before the model and the data are built, saves the
  resolved config as ``config.yaml`` in ``trainer.output_dir`` once the trainer has accepted
  the folder (as LightningCLI's ``SaveConfigCallback``), trains, tests, and writes
  ``results.json`` (with ``seed_everything``: the seed used, or ``null``).
* ``test --ckpt_path CKPT`` builds the same objects from the same config, loads the
  checkpoint's global model weights, evaluates them (``FederatedTrainer.test``) and writes
  ``test_results.json`` in ``trainer.output_dir``.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from lightning.pytorch import LightningModule
from typing_extensions import override

from fedlightning.callbacks.base import Callback
from fedlightning.checkpoint import load_checkpoint
from fedlightning.datamodules import FederatedDataModule
from fedlightning.environment import environment
from fedlightning.run_dir import write_json
from fedlightning.trainer import FederatedTrainer
from fedlightning.version import __version__

__all__ = ["build_parser", "main", "run_fit", "run_test"]

_LOGGERS = ("wandb", "csv", "none")


def _add_run_arguments(parser: ArgumentParser) -> None:
    """What ``fit`` and ``test`` share, so that one config file serves both."""
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file")
    parser.add_argument(
        "--seed_everything",
        type=bool | int,
        default=True,
        help="lightning.seed_everything(seed, workers=True) before the model and data are "
        "built: true uses trainer.seed, an integer that seed, false does not seed",
    )
    parser.add_subclass_arguments(LightningModule, "model", required=True)
    parser.add_class_arguments(FederatedDataModule, "data")
    parser.add_class_arguments(FederatedTrainer, "trainer", skip={"logger", "eval_metrics"})
    parser.add_argument("--logger", type=str, default="wandb", help=f"one of {_LOGGERS}")
    parser.add_argument("--project", type=str, default="fedlightning", help="W&B project")


def build_parser() -> ArgumentParser:
    """The parser of ``fedlightning`` and its ``fit`` and ``test`` subcommands."""
    fit = ArgumentParser(description="Train a LightningModule federatedly.")
    _add_run_arguments(fit)
    test = ArgumentParser(
        description="Evaluate a checkpoint's global model on the config's test data "
        "(logger and project are accepted so that fit's config serves unchanged; test logs "
        "nothing)."
    )
    _add_run_arguments(test)
    test.add_argument(
        "--ckpt_path", type=str, required=True, help="checkpoint file (round_NNNN.ckpt)"
    )
    parser = ArgumentParser(prog="fedlightning", description=f"fedlightning {__version__}")
    parser.add_argument("--version", action="version", version=__version__)
    subcommands = parser.add_subcommands()
    subcommands.add_subcommand("fit", fit)
    subcommands.add_subcommand("test", test)
    return parser


def _subparser(parser: ArgumentParser, name: str) -> ArgumentParser:
    return parser._subcommands_action._name_parser_map[name]  # type: ignore[union-attr]


def _seed_everything(cfg: Namespace) -> int | None:
    """Seed as ``seed_everything`` says (``True``: ``trainer.seed``); the seed, or ``None``."""
    value = cfg.seed_everything
    if value is False:
        return None
    seed = int(cfg.trainer.seed) if value is True else int(value)
    return lightning.seed_everything(seed, workers=True)


def _dump(parser: ArgumentParser, cfg: Namespace) -> str:
    """``cfg`` as YAML, ``None`` values kept (they may differ from the defaults)."""
    if "skip_unset" in inspect.signature(parser.dump).parameters:  # jsonargparse >= 4.49
        return parser.dump(cfg, skip_unset=False)
    return parser.dump(cfg, skip_none=False)  # pragma: no cover - older jsonargparse


class _SaveConfig(Callback):
    """Writes the resolved config to ``output_dir/config.yaml`` at the start of ``fit`` (after
    the trainer has accepted the folder) and records ``seed_everything`` in the results."""

    def __init__(self, config: str, seed: int | None) -> None:
        self.config = config
        self.seed = seed

    @override
    def on_fit_start(self, trainer: FederatedTrainer) -> None:
        if trainer.output_dir is not None:
            trainer.output_dir.mkdir(parents=True, exist_ok=True)
            (trainer.output_dir / "config.yaml").write_text(self.config)

    @override
    def on_results(self, trainer: FederatedTrainer, results: dict[str, Any]) -> None:
        results["seed_everything"] = self.seed


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
    """Seed, instantiate and run a ``fit`` config; return the results."""
    fit_parser = _subparser(parser, "fit")
    config = _dump(fit_parser, cfg)
    seed = _seed_everything(cfg)  # before the model's initial weights are drawn
    init = fit_parser.instantiate_classes(cfg)
    trainer: FederatedTrainer = init.trainer
    logger = _logger(cfg.logger, cfg.project, trainer.output_dir)
    trainer.loggers = [logger] if logger is not None else []
    trainer.callbacks.append(_SaveConfig(config, seed))
    trainer.fit(init.model, init.data)
    trainer.test()
    return trainer.results


def run_test(cfg: Namespace, parser: ArgumentParser) -> dict[str, Any]:
    """Evaluate the global model of ``cfg.ckpt_path`` as ``cfg`` builds it; return the results.

    The results (``ckpt_path``, ``round``, ``seed_everything``, ``test``) are written to
    ``test_results.json`` in ``trainer.output_dir`` when it is set.
    """
    test_parser = _subparser(parser, "test")
    seed = _seed_everything(cfg)
    init = test_parser.instantiate_classes(cfg)
    trainer: FederatedTrainer = init.trainer
    state = load_checkpoint(cfg.ckpt_path)
    model: LightningModule = init.model
    model.load_state_dict(state["model"])
    trainer.placement.place_module(model)  # in place, as in fit
    output_dir = trainer.output_dir
    # FederatedTrainer.test writes its results to output_dir/results.json: that file is the
    # fit run's; this command's results go to test_results.json instead.
    trainer.output_dir = None
    metrics = trainer.test(model, init.data)
    trainer.output_dir = output_dir
    results = {
        "ckpt_path": str(cfg.ckpt_path),
        "round": state.get("round"),
        "seed_everything": seed,
        "version": __version__,
        "environment": environment(),
        "test": metrics,
    }
    if output_dir is not None:
        write_json(output_dir / "test_results.json", results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedlightning`` console script.

    A setting or an input that is refused (``ValueError``) is printed as one line on
    stderr, with exit status 2, rather than as a traceback.
    """
    try:
        return _main(argv)
    except ValueError as exc:
        print(f"fedlightning: error: {exc}", file=sys.stderr)
        return 2


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    cfg = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    if cfg.subcommand == "test":
        results = run_test(cfg.test, parser)
        print(json.dumps({"test": results["test"]}))
        if cfg.test.trainer.output_dir is not None:
            print(f"test results: {Path(cfg.test.trainer.output_dir) / 'test_results.json'}")
        return 0
    if cfg.subcommand != "fit":  # pragma: no cover - jsonargparse requires a subcommand
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
        print(f"config: {Path(output_dir) / 'config.yaml'}")
    for name, directory in results.get("loggers", {}).items():
        print(f"{name} run files: {directory}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
