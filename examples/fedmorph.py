"""Seed 004 end to end: FedMorph against FedAvg, TopK, FedDropout, FedPruned and FedProx.

Every method trains the same architecture (ResNet8 / ResNet18 / VGG16 of the paper's
appendix tables) on the same federated split; FedAvg-family methods train the plain full
network, sub-network methods cut a physically smaller network out of a soft-masked one, so
the bytes that CommCost counts really shrink. Ratios are relative to FedAvg's full network.

Defaults are the paper's protocol for ResNet8 (appendix B.2, table 3): 100 clients, 10 per
round, 1 local epoch, batch 100, SGD lr 0.1 momentum 0.9 weight decay 5e-4, 1500 rounds,
distillation every 10 rounds for 2 epochs (lr 0.01, batch 50, lambda 1.6e-6 on the parameter
count, tau 1e-3, mask logits initialised around 0.1) on the test images without labels,
FedDropout / FedPruned keeping 0.25 of every layer, seed 12345:

    python examples/fedmorph.py --dataset fashion_mnist --model resnet8 --partition iid \\
        --rounds 1500 --output-dir runs/fedmorph

``--test-samples N`` evaluates on N seeded test images and distils on the others (no image
is both distilled on and evaluated on); ``--quick`` is a small configuration for tests;
``--synthetic N`` replaces the dataset by N generated images of its shape (CIFAR-10 and MNIST
cannot be downloaded everywhere). Each method checkpoints every round in
``DIR/<method>/checkpoints/``; the same command with ``--resume`` continues a killed run, or
extends a finished one to a larger ``--rounds``, to the result of an uninterrupted run.

Writes ``DIR/results.json`` (``methods`` -> name -> ``{accuracy, max_accuracy, params_ratio,
flops_ratio, bytes_down, bytes_up, wall_s, curve}``), ``DIR/layer_ratios.png`` (seed 004
Figure 3) and ``DIR/accuracy.png``.

References:
    Z. Wang et al., "FedMorph: Communication Efficient Federated Learning via Morphing
    Neural Network" (seed 004).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import seed_everything
from torch import Tensor

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg, FedProx
from fedlightning.algorithms.base import Algorithm
from fedlightning.algorithms.fed_dropout import FedDropout
from fedlightning.algorithms.fed_pruned import FedPruned
from fedlightning.algorithms.fedmorph import FedMorph, FedMorphProx
from fedlightning.algorithms.subnetwork import SubNetworkAlgorithm
from fedlightning.codecs import Codec, TopK
from fedlightning.datamodules import IID, Dirichlet, FederatedDataModule, load_dataset
from fedlightning.environment import environment
from fedlightning.models.masked import MaskedClassifier, MaskedResNet8, MaskedResNet18, MaskedVGG16
from fedlightning.models.masked.morph import count_params
from fedlightning.script_args import add_trainer_arguments, last_checkpoint, run_script
from fedlightning.version import __version__

log = logging.getLogger("fedmorph")

MODELS: dict[str, type[MaskedClassifier]] = {
    "resnet8": MaskedResNet8,
    "resnet18": MaskedResNet18,
    "vgg16": MaskedVGG16,
}
SHAPES = {"fashion_mnist": (1, 28), "mnist": (1, 28), "cifar10": (3, 32)}
IID_METHODS = [
    "fedavg",
    "fedavg_topk25",
    "fedavg_topk10",
    "feddropout",
    "feddropout_topk25",
    "feddropout_topk10",
    "fedpruned",
    "fedpruned_topk25",
    "fedpruned_topk10",
    "fedmorph",
    "fedmorph_topk25",
    "fedmorph_topk10",
]
DIRICHLET_METHODS = ["fedavg", "fedprox", "fedmorph", "fedmorphprox"]
ALL_METHODS = sorted(set(IID_METHODS) | set(DIRICHLET_METHODS))
QUICK = {
    "clients": 8,
    "clients_per_round": 4,
    "rounds": 3,
    "train_samples": 480,
    "test_samples": 96,
    "distill_every": 1,
    "distill_epochs": 1,
    "distill_samples": 64,
    "width_scale": 0.125,
    "batch_size": 20,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; defaults are the paper's protocol for ResNet8."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(SHAPES), default="fashion_mnist")
    p.add_argument("--model", choices=sorted(MODELS), default="resnet8")
    p.add_argument("--partition", choices=["iid", "dirichlet"], default="iid")
    p.add_argument("--alpha", type=float, default=0.4, help="Dirichlet concentration")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=ALL_METHODS,
        default=None,
        help="default: the paper's methods for the partition",
    )
    p.add_argument("--rounds", type=int, default=1500)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--clients-per-round", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=None, help="default: the model's (table 3)")
    p.add_argument("--mu", type=float, default=0.01, help="FedProx / FedMorphProx mu")
    p.add_argument("--keep-ratio", type=float, default=0.25, help="FedDropout / FedPruned")
    p.add_argument("--distill-every", type=int, default=10)
    p.add_argument("--distill-epochs", type=int, default=2)
    p.add_argument("--distill-lr", type=float, default=None, help="default: lr / 10")
    p.add_argument("--distill-batch-size", type=int, default=50)
    p.add_argument("--distill-samples", type=int, default=None)
    p.add_argument("--lam", type=float, default=1.6e-6)
    p.add_argument("--regularizer", choices=["params", "flops"], default="params")
    p.add_argument(
        "--recalibrate-bn",
        action="store_true",
        help="FedMorph: recompute BatchNorm statistics after distilling (not in the paper)",
    )
    p.add_argument(
        "--distill-masks",
        choices=["noisy", "straight_through"],
        default="noisy",
        help="FedMorph student masks while distilling: eq. (6)'s noisy ones (the paper) or "
        "the exact sub-network with a straight-through gradient (not in the paper)",
    )
    p.add_argument("--mask-lr", type=float, default=None, help="default: the distillation lr")
    p.add_argument(
        "--mask-init-keep",
        type=float,
        default=None,
        help="FedMorph: shift the initial mask logits so this share of every layer is kept",
    )
    p.add_argument("--tau", type=float, default=1e-3)
    p.add_argument("--mask-init-mean", type=float, default=None, help="default: the model's")
    p.add_argument("--mask-init-scale", type=float, default=1.0)
    p.add_argument(
        "--width-scale",
        type=float,
        default=1.0,
        help="scale every layer's width (1 = the paper's tables)",
    )
    p.add_argument("--train-samples", type=int, default=None, help="seeded training subset")
    p.add_argument(
        "--test-samples",
        type=int,
        default=None,
        help="evaluate on this many seeded test images, distil on the rest",
    )
    p.add_argument(
        "--synthetic",
        type=int,
        default=None,
        help="use N generated images of the dataset's shape instead of the data",
    )
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--seed", type=int, default=12345)
    add_trainer_arguments(p, accelerator="cpu", resume=True)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output-dir", default="runs/fedmorph")
    p.add_argument("--quick", action="store_true", help="small configuration for tests")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.methods is None:
        args.methods = IID_METHODS if args.partition == "iid" else DIRICHLET_METHODS
    return args


def load_data(args: argparse.Namespace) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Training and test tensors (real, or generated when ``--synthetic``)."""
    channels, size = SHAPES[args.dataset]
    if args.synthetic is not None:
        gen = torch.Generator().manual_seed(args.seed)
        n_test = max(args.synthetic // 5, 2)
        x = torch.rand(args.synthetic + n_test, channels, size, size, generator=gen)
        y = torch.randint(0, 10, (args.synthetic + n_test,), generator=gen)
        return (x[: args.synthetic], y[: args.synthetic]), (
            x[args.synthetic :],
            y[args.synthetic :],
        )
    train = load_dataset(args.dataset, split="train", data_dir=args.data_dir)
    test = load_dataset(args.dataset, split="test", data_dir=args.data_dir)
    return train, test


def split_test(
    test: tuple[Tensor, Tensor], n_eval: int | None, seed: int
) -> tuple[tuple[Tensor, Tensor], Tensor]:
    """Evaluation pair and distillation images: disjoint when ``n_eval`` is given."""
    x, y = test
    if n_eval is None or n_eval >= x.shape[0]:
        return (x, y), x  # the paper: distil on the test images without labels
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    return (x[perm[:n_eval]], y[perm[:n_eval]]), x[perm[n_eval:]]


def subset(data: tuple[Tensor, Tensor], n: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded subset of ``n`` samples (all when ``n`` is None)."""
    x, y = data
    if n is None or n >= x.shape[0]:
        return x, y
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed + 1))[:n]
    return x[perm], y[perm]


def make_model(args: argparse.Namespace, masked: bool) -> MaskedClassifier:
    """The method's network: masked for sub-network methods, plain for FedAvg-like ones."""
    channels, size = SHAPES[args.dataset]
    cls = MODELS[args.model]
    kwargs: dict[str, Any] = {
        "in_channels": channels,
        "image_size": size,
        "num_classes": 10,
        "tau": args.tau,
        "mask_init_scale": args.mask_init_scale,
        "seed": args.seed,
    }
    if args.lr is not None:
        kwargs["lr"] = args.lr
    if args.mask_init_mean is not None:
        kwargs["mask_init_mean"] = args.mask_init_mean
    model = cls(masked=masked, **kwargs)
    if args.width_scale != 1.0:
        widths = {g: max(1, round(w * args.width_scale)) for g, w in model.full_widths.items()}
        model = cls(masked=masked, widths=widths, **kwargs)
    return model


def make_algorithm(name: str, args: argparse.Namespace, distill_x: Tensor) -> Algorithm:
    """The algorithm called ``name`` (``<base>[_topk25|_topk10]``)."""
    base, _, codec_name = name.partition("_")
    uplink: Codec | None = {"": None, "topk25": TopK(0.25), "topk10": TopK(0.10)}[codec_name]
    default_lr = inspect.signature(MODELS[args.model]).parameters["lr"].default
    lr = args.lr if args.lr is not None else float(default_lr)
    morph: dict[str, Any] = {
        "distill_data": distill_x,
        "distill_samples": args.distill_samples,
        "distill_every": args.distill_every,
        "distill_epochs": args.distill_epochs,
        "distill_lr": args.distill_lr if args.distill_lr is not None else lr / 10,
        "distill_batch_size": args.distill_batch_size,
        "lam": args.lam,
        "regularizer": args.regularizer,
        "recalibrate_bn": args.recalibrate_bn,
        "distill_masks": args.distill_masks,
        "mask_lr": args.mask_lr,
        "init_keep_ratio": args.mask_init_keep,
        "uplink": uplink,
    }
    builders: dict[str, Callable[[], Algorithm]] = {
        "fedavg": lambda: FedAvg(uplink=uplink),
        "fedprox": lambda: FedProx(mu=args.mu, uplink=uplink),
        "feddropout": lambda: FedDropout(args.keep_ratio, uplink=uplink),
        "fedpruned": lambda: FedPruned(args.keep_ratio, uplink=uplink),
        "fedmorph": lambda: FedMorph(**morph),
        "fedmorphprox": lambda: FedMorphProx(mu=args.mu, **morph),
    }
    return builders[base]()


def run_method(
    name: str,
    args: argparse.Namespace,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    distill_x: Tensor,
    out_dir: Path,
) -> dict[str, Any]:
    """Train one method and summarise it."""
    # Dirichlet's min_size (10) only shrinks for tiny (--quick / --synthetic) datasets.
    min_size = min(10, max(1, train[1].shape[0] // (4 * args.clients)))
    partition = (
        IID(args.clients)
        if args.partition == "iid"
        else Dirichlet(args.clients, args.alpha, min_size=min_size)
    )
    dm = FederatedDataModule(
        train,
        partition=partition,
        batch_size=args.batch_size,
        seed=args.seed,
        test=test,
        eval_batch_size=500,
    )
    algorithm = make_algorithm(name, args, distill_x)
    sub = isinstance(algorithm, SubNetworkAlgorithm)
    model = make_model(args, masked=sub)
    trainer = FederatedTrainer(
        accelerator=args.accelerator,
        precision=args.precision,
        overwrite=args.overwrite,
        algorithm=algorithm,
        rounds=args.rounds,
        clients_per_round=args.clients_per_round,
        local_epochs=args.local_epochs,
        seed=args.seed,
        eval_every=args.eval_every,
        output_dir=out_dir / name,
        resume=last_checkpoint(out_dir / name) if args.resume else None,
        progress_bar=False,
        logger=False,
    )
    trainer.fit(model, dm)
    # the trainer's wall time: a resumed run adds the time of the rounds before it
    wall = float(trainer.results["wall_s"])
    history = trainer.history
    curve = [[int(h["round"]), float(h["acc_global"])] for h in history if "acc_global" in h]
    accs = [a for _, a in curve]
    summary: dict[str, Any] = {
        "algorithm": repr(algorithm),
        "accuracy": accs[-1] if accs else None,
        "max_accuracy": max(accs) if accs else None,
        "params_ratio": 1.0,
        "flops_ratio": 1.0,
        "bytes_down": int(sum(h.get("bytes_down", 0) for h in history)),
        "bytes_up": int(sum(h.get("bytes_up", 0) for h in history)),
        "wall_s": wall,
        "s_per_round": wall / args.rounds,
        "curve": curve,
        "train_loss": [float(h.get("train_loss", float("nan"))) for h in history],
    }
    if sub:
        assert isinstance(algorithm, SubNetworkAlgorithm)
        sizes = algorithm.size_history
        summary["params_ratio"] = sum(s["params_ratio"] for s in sizes) / len(sizes)
        summary["flops_ratio"] = sum(s["flops_ratio"] for s in sizes) / len(sizes)
        summary["ratio_curve"] = [
            [int(s["round"]), s["params_ratio"], s["flops_ratio"]] for s in sizes
        ]
    if isinstance(algorithm, FedMorph):
        summary["layer_ratios"] = algorithm.layer_history
        summary["distill_js"] = [
            [int(h["round"]), h["distill_js"]] for h in history if "distill_js" in h
        ]
    log.info(
        "%s: acc=%s params=%.4f down=%d up=%d wall=%.0fs",
        name,
        summary["accuracy"],
        summary["params_ratio"],
        summary["bytes_down"],
        summary["bytes_up"],
        wall,
    )
    return summary


def plot_layers(methods: dict[str, Any], model: MaskedClassifier, path: Path) -> Path | None:
    """Seed 004 Figure 3: initial and final kept share of every masked layer."""
    name = next((n for n in methods if "layer_ratios" in methods[n]), None)
    if name is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = methods[name]["layer_ratios"]
    groups = [g for g in model.groups]
    first = [history[0][g] for g in groups]
    last = [history[-1][g] for g in groups]
    xs = range(len(groups))
    fig, ax = plt.subplots(figsize=(max(6, len(groups) * 0.6), 3.5))
    ax.bar([x - 0.2 for x in xs], first, 0.4, color="tab:red", label="initial")
    ax.bar(
        [x + 0.2 for x in xs],
        last,
        0.4,
        color="tab:blue",
        label=f"after round {int(history[-1]['round'])}",
    )
    k = 3
    trend = [
        sum(last[max(0, i - k // 2) : i + k // 2 + 1])
        / len(last[max(0, i - k // 2) : i + k // 2 + 1])
        for i in xs
    ]
    ax.plot(list(xs), trend, color="tab:blue", lw=1)
    ax.set_xticks(list(xs), groups, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("kept share of channels")
    ax.set_title(f"{name}: per-layer compression ratio")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy(methods: dict[str, Any], path: Path) -> Path:
    """Test accuracy against rounds for every method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in methods.items():
        if m["curve"]:
            rounds, accs = zip(*m["curve"], strict=True)
            ax.plot(rounds, accs, marker=".", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison and write ``results.json`` and the figures."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    seed_everything(args.seed, verbose=False)  # every global generator, from --seed
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train, test = load_data(args)
    train = subset(train, args.train_samples, args.seed)
    evaluation, distill_x = split_test(test, args.test_samples, args.seed)
    reference = make_model(args, masked=True)
    methods: dict[str, Any] = {}
    results: dict[str, Any] = {
        "config": vars(args),
        "seed": args.seed,
        "version": __version__,
        "environment": environment(),
        "full_params": count_params(reference),
        "methods": methods,
    }
    for name in args.methods:
        methods[name] = run_method(name, args, train, evaluation, distill_x, out_dir)
        _write(out_dir, results, start)  # partial results survive an interruption
    if "fedavg" in methods:
        ref = methods["fedavg"]
        results["relative_to_fedavg"] = {
            name: {
                "accuracy_diff": (m["accuracy"] - ref["accuracy"])
                if m["accuracy"] is not None and ref["accuracy"] is not None
                else None,
                "bytes_down_ratio": m["bytes_down"] / max(ref["bytes_down"], 1),
                "bytes_up_ratio": m["bytes_up"] / max(ref["bytes_up"], 1),
            }
            for name, m in methods.items()
        }
    figures = [plot_accuracy(methods, out_dir / "accuracy.png")]
    layers = plot_layers(methods, reference, out_dir / "layer_ratios.png")
    if layers is not None:
        figures.append(layers)
    results["figures"] = [str(f) for f in figures]
    _write(out_dir, results, start)
    return results


def _write(out_dir: Path, results: dict[str, Any], start: float) -> None:
    results["wall_s"] = time.perf_counter() - start
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(run_script(lambda: main(sys.argv[1:]), __file__))
