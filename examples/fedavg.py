"""FedAvg / FedProx on a partitioned image dataset: the library's main job.

Example (the full protocol of seed 003's non-IID baseline, on Fashion-MNIST)::

    python examples/fedavg.py --dataset fashion_mnist --partition shards --clients 100 \
        --clients-per-round 10 --rounds 50 --local-epochs 1 --batch-size 60 --lr 0.01 \
        --algorithm fedavg --output-dir runs/fedavg

Writes ``DIR/results.json`` (config, seed, version, wall_s, history, final, bytes) and
``DIR/partition.png``; logs every round to W&B (offline unless ``WANDB_MODE=online``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, seed_everything

from fedlightning import FederatedTrainer
from fedlightning.algorithms import (
    Algorithm,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Scaffold,
)
from fedlightning.codecs import Codec, Float16, Identity, TopK
from fedlightning.datamodules import (
    IID,
    Dirichlet,
    FederatedDataModule,
    Partitioner,
    SortedShards,
)
from fedlightning.models import CIFARClassifier, MNISTClassifier
from fedlightning.script_args import add_trainer_arguments, last_checkpoint, run_script

ALGORITHMS: dict[str, type[Algorithm]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "scaffold": Scaffold,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the example."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--dataset", default="fashion_mnist", choices=["fashion_mnist", "mnist", "cifar10"]
    )
    p.add_argument("--data-dir", default=None, help="directory holding the dataset files")
    p.add_argument("--partition", default="shards", choices=["shards", "iid", "dirichlet"])
    p.add_argument("--shards-per-client", type=int, default=2)
    p.add_argument("--alpha", type=float, default=0.4, help="Dirichlet concentration")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--clients-per-round", type=int, default=10)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--algorithm", default="fedavg", choices=sorted(ALGORITHMS))
    p.add_argument("--mu", type=float, default=0.01, help="FedProx proximal coefficient")
    p.add_argument(
        "--server-lr", type=float, default=None, help="server learning rate (default: preset's)"
    )
    p.add_argument("--server-momentum", type=float, default=0.9, help="FedAvgM momentum")
    p.add_argument("--tau", type=float, default=1e-3, help="FedAdam/FedYogi/FedAdagrad tau")
    p.add_argument("--scaffold-option", default="II", choices=["I", "II"])
    p.add_argument("--uplink", default="identity", choices=["identity", "topk", "float16"])
    p.add_argument("--topk-ratio", type=float, default=0.1)
    p.add_argument("--executor", default="sequential")
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--no-eval-local", action="store_true", help="skip acc_local")
    p.add_argument("--seed", type=int, default=0)
    add_trainer_arguments(p, accelerator="auto", resume=True)
    p.add_argument("--logger", default="wandb", choices=["wandb", "csv", "none"])
    p.add_argument("--output-dir", required=True)
    return p.parse_args(argv)


def make_partition(args: argparse.Namespace) -> Partitioner:
    """The partitioner the arguments ask for."""
    if args.partition == "shards":
        return SortedShards(num_clients=args.clients, shards_per_client=args.shards_per_client)
    if args.partition == "dirichlet":
        return Dirichlet(num_clients=args.clients, alpha=args.alpha)
    return IID(num_clients=args.clients)


def make_algorithm(args: argparse.Namespace) -> Algorithm:
    """The algorithm the arguments ask for."""
    uplink: Codec = {"identity": Identity(), "float16": Float16()}.get(args.uplink) or TopK(
        args.topk_ratio
    )
    server_lr = {} if args.server_lr is None else {"server_lr": args.server_lr}
    if args.algorithm == "fedprox":
        return FedProx(mu=args.mu, uplink=uplink)
    if args.algorithm == "fedavgm":
        return FedAvgM(momentum=args.server_momentum, uplink=uplink, **server_lr)
    if args.algorithm in ("fedadam", "fedyogi", "fedadagrad"):
        adaptive = {"fedadam": FedAdam, "fedyogi": FedYogi, "fedadagrad": FedAdagrad}
        return adaptive[args.algorithm](tau=args.tau, uplink=uplink, **server_lr)
    if args.algorithm == "scaffold":
        return Scaffold(option=args.scaffold_option, uplink=uplink, **server_lr)
    return FedAvg(uplink=uplink)


def make_logger(kind: str, output_dir: Path) -> Any:
    """The logger the arguments ask for (W&B offline by default)."""
    if kind == "none":
        return None
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(output_dir), name="logs")
    from fedlightning.loggers import wandb_logger

    return wandb_logger("fedlightning-examples", save_dir=output_dir, name="fedavg")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns what it writes to ``results.json``."""
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    dm = FederatedDataModule(
        args.dataset,
        partition=make_partition(args),
        batch_size=args.batch_size,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    dm.setup()
    dm.plot_partition(output_dir / "partition.png")
    seed_everything(args.seed, verbose=False)  # the model's initial weights derive from --seed
    model: LightningModule = (
        CIFARClassifier(lr=args.lr) if args.dataset == "cifar10" else MNISTClassifier(lr=args.lr)
    )
    trainer = FederatedTrainer(
        accelerator=args.accelerator,
        precision=args.precision,
        overwrite=args.overwrite,
        algorithm=make_algorithm(args),
        rounds=args.rounds,
        clients_per_round=args.clients_per_round,
        local_epochs=args.local_epochs,
        seed=args.seed,
        logger=make_logger(args.logger, output_dir),
        eval_every=args.eval_every,
        eval_local=not args.no_eval_local,
        executor=args.executor,
        output_dir=output_dir,
        resume=last_checkpoint(output_dir) if args.resume else None,
    )
    trainer.fit(model, dm)
    results = trainer.results
    results["config"] = {**vars(args), "trainer": trainer.config}
    results["history"] = [
        {
            "round": int(h["round"]),
            "bytes_down": int(h["bytes_down"]),
            "bytes_up": int(h["bytes_up"]),
            "test_acc": h.get("acc_global"),
            "train_loss": h.get("train_loss"),
            **{k: v for k, v in h.items() if k not in {"round", "bytes_down", "bytes_up"}},
        }
        for h in trainer.history
    ]
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    final = results["final"]
    print(
        f"acc_global={final.get('acc_global')} acc_local={final.get('acc_local')} "
        f"bytes={results['bytes']['total']} wall_s={results['wall_s']:.1f} "
        f"results={output_dir / 'results.json'}"
    )
    for name, directory in results.get("loggers", {}).items():
        print(f"{name} run files: {directory}")
    return results


if __name__ == "__main__":
    sys.exit(run_script(main, __file__))
