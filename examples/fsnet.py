"""Fed-FSNet against FedAvg (IID upper bound, non-IID lower bound) and FedProx, seed 003.

The defaults are the paper's protocol (section 4): 100 clients, 200 label-sorted shards,
2 per client; client fraction 0.1; 50 rounds; 10 local epochs; batch 60; SGD lr 0.01::

    python examples/fsnet.py --dataset fashion_mnist --fraction 0.1 --rounds 50 \
        --output-dir runs/fsnet [--methods fedavg_iid,fedavg,fedprox,fedfsnet] [--quick]

Writes ``DIR/results.json`` with ``methods -> name -> {acc_global, acc_local, curve,
bytes_down, bytes_up, wall_s, ...}`` (rewritten after each method, so a long run keeps what
it finished), ``DIR/accuracy.png`` (accuracy versus round, the paper's Figure 2),
``DIR/synthetic.png`` (Fed-FSNet's last D'), one ``DIR/<method>/results.json`` per method
from the trainer, and logs every round to W&B (offline unless ``WANDB_MODE=online``). Each
method checkpoints every round in ``DIR/<method>/checkpoints/``; the same command with
``--resume`` continues a killed run, or extends a finished one to a larger ``--rounds``, to
the result of an uninterrupted run.

References:
    J. Guo, S. Guo, J. Zhang, Z. Liu, "Fed-FSNet: Mitigating Non-I.I.D. Federated Learning
    via Fuzzy Synthesizing Network", arXiv:2208.12044, 2022.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch import LightningModule, seed_everything
from torch import Tensor

from fedlightning import FederatedTrainer
from fedlightning.algorithms import Algorithm, FedAvg, FedProx
from fedlightning.algorithms.fsnet import (
    FedFSNet,
    PayloadBreakdown,
    StepDecay,
)
from fedlightning.codecs import Codec, Float16, UInt8
from fedlightning.datamodules import IID, FederatedDataModule, SortedShards
from fedlightning.environment import environment
from fedlightning.executors.vectorized import VectorizedExecutor
from fedlightning.models import CIFARClassifier, MNISTClassifier
from fedlightning.script_args import add_trainer_arguments, last_checkpoint, run_script
from fedlightning.version import __version__

METHODS = ("fedavg_iid", "fedavg", "fedprox", "fedfsnet")
LABELS = {
    "fedavg_iid": "FedAvg, IID (upper bound)",
    "fedavg": "FedAvg, non-IID (lower bound)",
    "fedprox": "FedProx, non-IID",
    "fedfsnet": "Fed-FSNet, non-IID",
}
QUICK = {
    "clients": 10,
    "fraction": 0.3,
    "rounds": 3,
    "local_epochs": 1,
    "max_train_samples": 6000,
    "num_synthetic": 20,
    "hidden_steps": 20,
}

Pair = tuple[Tensor, Tensor]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; the defaults are seed 003's protocol."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--dataset", default="fashion_mnist", choices=["fashion_mnist", "mnist", "cifar10"]
    )
    p.add_argument("--data-dir", default=None, help="directory holding the dataset files")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {METHODS}")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--shards-per-client", type=int, default=2)
    p.add_argument("--fraction", type=float, default=0.1, help="client fraction f per round")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--local-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--mu", type=float, default=0.01, help="FedProx proximal coefficient")
    p.add_argument("--num-synthetic", type=int, default=60, help="Fed-FSNet: size of D'")
    p.add_argument(
        "--synthetic-codec",
        default="identity",
        choices=sorted(SYNTHETIC_CODECS),
        help="Fed-FSNet: how D' travels (float32 as is, float16, or 8-bit per sample)",
    )
    p.add_argument("--beta-initial", type=float, default=1.0)
    p.add_argument("--beta-factor", type=float, default=0.1)
    p.add_argument("--beta-every", type=int, default=10)
    p.add_argument("--statistics", default="scalar", choices=["scalar", "pixel"])
    p.add_argument(
        "--mixture-weights", default="dirichlet", choices=["dirichlet", "samples", "uniform"]
    )
    p.add_argument("--hidden-steps", type=int, default=200, help="Fed-FSNet: H steps per round")
    p.add_argument("--hidden-batch-size", type=int, default=128)
    p.add_argument("--hidden-lr", type=float, default=1e-3)
    p.add_argument("--max-train-samples", type=int, default=None, help="random training subset")
    p.add_argument(
        "--executor",
        default="sequential",
        choices=["sequential", "vectorized"],
        help="vectorized: a round's clients train as one batched model (same result)",
    )
    p.add_argument("--eval-every", type=int, default=1, help="rounds between evaluations")
    p.add_argument("--seed", type=int, default=0)
    add_trainer_arguments(p, accelerator="cpu", resume=True)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--logger", default="wandb", choices=["wandb", "none"])
    p.add_argument("--quick", action="store_true", help=f"small run: {QUICK}")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="RESULTS_JSON",
        help="train nothing: combine the methods of earlier runs' results.json files into "
        "DIR/results.json and DIR/accuracy.png (later files win)",
    )
    p.add_argument("--output-dir", required=True)
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        p.error(f"--methods must be a comma-separated subset of {METHODS}, got {args.methods!r}")
    args.method_list = methods
    return args


SYNTHETIC_CODECS: dict[str, Codec | None] = {
    "identity": None,
    "float16": Float16(),
    "uint8": UInt8(per_row=True),
}


def make_algorithm(method: str, args: argparse.Namespace) -> Algorithm:
    """The algorithm of a method name."""
    if method == "fedprox":
        return FedProx(mu=args.mu)
    if method == "fedfsnet":
        return FedFSNet(
            num_synthetic=args.num_synthetic,
            beta=StepDecay(args.beta_initial, args.beta_factor, args.beta_every),
            statistics=args.statistics,
            mixture_weights=args.mixture_weights,
            hidden_steps=args.hidden_steps,
            hidden_batch_size=args.hidden_batch_size,
            hidden_lr=args.hidden_lr,
            synthetic_codec=SYNTHETIC_CODECS[args.synthetic_codec],
        )
    return FedAvg()


def load_pairs(args: argparse.Namespace) -> tuple[Pair, Pair]:
    """The training and test sets, the training set cut to ``--max-train-samples``."""
    from fedlightning.datamodules import load_dataset

    train = load_dataset(args.dataset, split="train", data_dir=args.data_dir, download=False)
    test = load_dataset(args.dataset, split="test", data_dir=args.data_dir, download=False)
    return subset(train, args.max_train_samples, args.seed), test


def subset(pair: Pair, n: int | None, seed: int) -> Pair:
    """A seeded random subset of ``n`` samples (all of them when ``n`` is None)."""
    x, y = pair
    if n is None or n >= len(y):
        return x, y
    keep = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(len(y))[:n]))
    return x[keep], y[keep]


def make_model(dataset: str, shape: tuple[int, ...], lr: float, seed: int) -> LightningModule:
    """The classifier for the input shape, initialised from ``seed`` (same for every method)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if tuple(shape) == (3, 32, 32):
            return CIFARClassifier(lr=lr)
        return MNISTClassifier(lr=lr)


def make_logger(args: argparse.Namespace, output_dir: Path, name: str) -> Any:
    """An offline W&B logger for one method (or none)."""
    if args.logger == "none":
        return None
    from fedlightning.loggers import wandb_logger

    return wandb_logger("fedlightning-fsnet", save_dir=output_dir, name=name)


def run_method(
    method: str, args: argparse.Namespace, train: Pair, test: Pair, output_dir: Path
) -> tuple[dict[str, Any], FederatedTrainer]:
    """Train one method under the protocol and summarise it."""
    partition = (
        IID(num_clients=args.clients)
        if method == "fedavg_iid"
        else SortedShards(num_clients=args.clients, shards_per_client=args.shards_per_client)
    )
    dm = FederatedDataModule(
        train,
        partition=partition,
        batch_size=args.batch_size,
        seed=args.seed,
        test=test,
        eval_batch_size=1000,
    )
    dm.setup()
    payload = PayloadBreakdown()
    trainer = FederatedTrainer(
        accelerator=args.accelerator,
        precision=args.precision,
        overwrite=args.overwrite,
        algorithm=make_algorithm(method, args),
        rounds=args.rounds,
        fraction=args.fraction,
        local_epochs=args.local_epochs,
        seed=args.seed,
        callbacks=[payload],
        logger=make_logger(args, output_dir / method, method),
        eval_every=args.eval_every,
        eval_local=True,
        executor=(
            VectorizedExecutor(vmap_losses=(FedFSNet,))
            if args.executor == "vectorized"
            else "sequential"
        ),
        output_dir=output_dir / method,
        resume=last_checkpoint(output_dir / method) if args.resume else None,
        progress_bar=False,
    )
    trainer.fit(make_model(args.dataset, dm.input_shape, args.lr, args.seed), dm)
    # the trainer's wall time: a resumed run adds the time of the rounds before it
    wall = float(trainer.results["wall_s"])
    finish_wandb(trainer)
    curve = [
        {
            "round": int(h["round"]),
            "acc_global": h.get("acc_global"),
            "acc_local": h.get("acc_local"),
        }
        for h in trainer.history
        if "acc_global" in h
    ]
    final = trainer.results["final"]
    summary: dict[str, Any] = {
        "acc_global": final.get("acc_global"),
        "acc_local": final.get("acc_local"),
        "curve": curve,
        "bytes_down": trainer.results["bytes"]["down"],
        "bytes_up": trainer.results["bytes"]["up"],
        "payload": trainer.results["payload"],
        "wall_s": wall,
        "round_wall_s": wall / args.rounds,
        "algorithm": repr(trainer.algorithm),
    }
    fsnet_keys = ("fsnet_hidden_loss", "fsnet_synthetic_agreement")
    if isinstance(trainer.algorithm, FedFSNet):
        summary["fsnet"] = [
            {"round": int(h["round"]), **{k: h[k] for k in fsnet_keys if k in h}}
            for h in trainer.history
        ]
    return summary, trainer


def finish_wandb(trainer: FederatedTrainer) -> None:
    """End the method's W&B run, so the next method gets a run of its own."""
    for lg in trainer.loggers:
        finish = getattr(getattr(lg, "experiment", None), "finish", None)
        if callable(finish):
            finish()


def plot_accuracy(methods: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Accuracy versus round for every method (seed 003, Figure 2)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, summary) in enumerate(methods.items()):
        rounds = [c["round"] for c in summary["curve"]]
        color = f"C{i}"
        ax.plot(
            rounds,
            [c["acc_global"] for c in summary["curve"]],
            color=color,
            marker="o",
            markersize=3,
            label=f"{LABELS[name]}: acc_global",
        )
        local = [
            (c["round"], c["acc_local"]) for c in summary["curve"] if c["acc_local"] is not None
        ]
        if local:
            ax.plot(
                *zip(*local, strict=True),
                color=color,
                linestyle="--",
                alpha=0.7,
                label=f"{LABELS[name]}: acc_local",
            )
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_synthetic(samples: Tensor, classes: Tensor, path: Path) -> Path:
    """A grid of Fed-FSNet's synthetic samples D', one column per target class."""
    n_classes = int(classes.max()) + 1
    per_class = int(np.ceil(len(classes) / n_classes))
    fig, axes = plt.subplots(per_class, n_classes, figsize=(n_classes, per_class), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for j, (img, c) in enumerate(zip(samples, classes.tolist(), strict=True)):
        ax = axes[j // n_classes][c]
        pic = img.permute(1, 2, 0).squeeze(-1).numpy()
        ax.imshow(pic, cmap="gray" if pic.ndim == 2 else None)
        if j < n_classes:
            ax.set_title(f"class {c}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_figure(args: argparse.Namespace, output_dir: Path, path: Path) -> None:
    """Log the accuracy figure to its own offline W&B run."""
    if args.logger == "none":
        return
    logger = make_logger(args, output_dir / "summary", "summary")
    logger.log_image(key="accuracy_vs_round", images=[str(path)])
    logger.finalize("success")
    logger.experiment.finish()


def compare(results: dict[str, Any]) -> None:
    """Add the headline comparisons of seed 003 to ``results``, where the methods ran."""
    methods = results["methods"]
    if "fedfsnet" in methods:
        share = methods["fedfsnet"]["payload"]["extras_share_down"]
        results["fedfsnet_extra_downlink_share"] = share
    if "fedfsnet" in methods and "fedavg" in methods:
        results["fedfsnet_minus_fedavg"] = (
            methods["fedfsnet"]["acc_global"] - methods["fedavg"]["acc_global"]
        )


def merge_results(files: Sequence[Path], output_dir: Path) -> dict[str, Any]:
    """Combine the methods of several runs' ``results.json`` into one, with its figure.

    Args:
        files: ``results.json`` files written by this example; a method in a later file
            replaces the same method of an earlier one.
        output_dir: Where the combined ``results.json`` and ``accuracy.png`` go.

    Returns:
        The combined results: ``methods``, ``sources`` (each file's config) and comparisons.
    """
    merged: dict[str, Any] = {"version": __version__, "methods": {}, "sources": {}}
    for path in files:
        run = json.loads(Path(path).read_text())
        merged["methods"].update(run["methods"])
        merged["sources"][str(path)] = {
            "config": run["config"],
            "wall_s": run.get("wall_s"),
            "environment": run.get("environment"),
        }
    compare(merged)
    output_dir.mkdir(parents=True, exist_ok=True)
    ordered = {m: merged["methods"][m] for m in METHODS if m in merged["methods"]}
    plot_accuracy(ordered, output_dir / "accuracy.png", "test accuracy of merged runs")
    (output_dir / "results.json").write_text(json.dumps(merged, indent=2))
    return merged


def main(
    argv: Sequence[str] | None = None, data: tuple[Pair, Pair] | None = None
) -> dict[str, Any]:
    """Run the comparison; returns what it writes to ``results.json``.

    Args:
        argv: Command-line arguments.
        data: ``(train, test)`` pairs to use instead of loading ``--dataset`` (tests).
    """
    args = parse_args(argv)
    seed_everything(args.seed, verbose=False)  # every global generator, from --seed
    if args.merge:
        return merge_results([Path(f) for f in args.merge], Path(args.output_dir))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train, test = (
        load_pairs(args)
        if data is None
        else (subset(data[0], args.max_train_samples, args.seed), data[1])
    )
    config = {k: v for k, v in vars(args).items() if k != "method_list"}
    results: dict[str, Any] = {
        "config": config,
        "seed": args.seed,
        "version": __version__,
        "environment": environment(),
        "methods": {},
    }
    title = f"{args.dataset}, f={args.fraction}, {args.clients} clients"
    for method in args.method_list:
        summary, trainer = run_method(method, args, train, test, output_dir)
        results["methods"][method] = summary
        local = summary["acc_local"]
        print(
            f"{method}: acc_global={summary['acc_global']:.4f} "
            f"acc_local={'n/a' if local is None else f'{local:.4f}'} "
            f"bytes_down={summary['bytes_down']} wall_s={summary['wall_s']:.1f}",
            flush=True,
        )
        algorithm = trainer.algorithm
        if isinstance(algorithm, FedFSNet) and algorithm.synthetic is not None:
            assert algorithm.synthetic_classes is not None
            plot_synthetic(
                algorithm.synthetic, algorithm.synthetic_classes, output_dir / "synthetic.png"
            )
        results["wall_s"] = time.perf_counter() - start
        plot_accuracy(results["methods"], output_dir / "accuracy.png", title)
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    compare(results)
    results["wall_s"] = time.perf_counter() - start
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    log_figure(args, output_dir, output_dir / "accuracy.png")
    print(f"results: {output_dir / 'results.json'}  figure: {output_dir / 'accuracy.png'}")
    return results


if __name__ == "__main__":
    sys.exit(run_script(main, __file__))
