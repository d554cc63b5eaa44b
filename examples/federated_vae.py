"""Federated VAE versus centralized training (seed 002), with pictures and measured quality.

The same :class:`~fedlightning.models.ConvVAE` (11.1 M parameters, latent 200, Adam 1e-3,
batch 128) is trained twice from the same initial weights, and both are scored on the same
test set:

* centralized: one model on all training data for ``--epochs`` epochs (default 25), by
  :func:`~fedlightning.centralized.fit_centralized` (one Adam optimizer for the whole run);
* federated: FedAvg over ``--clients`` IID clients (default 4), ``--rounds`` rounds (15) x
  ``--local-epochs`` local epochs (6), the whole state averaged by sample share, BatchNorm
  buffers included (the library's default).

Then a small classifier is trained on the same dataset; its penultimate layer is the feature
space of the Frechet distance between generated and test images, and its softmax gives the
confidence of generated images (no Inception weights can be downloaded here).

Full protocol (the defaults)::

    python examples/federated_vae.py --dataset fashion_mnist --output-dir runs/federated_vae

Quick check (tiny subsets, a few epochs; about a minute on one CPU core)::

    python examples/federated_vae.py --dataset fashion_mnist --output-dir /tmp/fvae --quick

Writes ``DIR/results.json`` with ``centralized`` and ``federated`` (each ``test_elbo``,
``test_recon``, ``test_kl``, ``frechet_distance``, ``sample_confidence``, ``wall_s``, and more),
``bytes`` (the federated run's totals), ``config``, ``seed``, ``version``, ``wall_s``; and the
PNGs ``loss_curves.png``, ``reconstructions.png``, ``samples.png``, ``tsne_reconstructions.png``
and ``tsne_samples.png``, also logged to W&B as images (offline unless ``WANDB_MODE=online``).

References:
    "Federated learning with variational autoencoders", ICLR 2023 Tiny Papers (seed 002).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import Logger
from torch import Tensor

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg
from fedlightning.algorithms.base import Reply
from fedlightning.callbacks import Callback
from fedlightning.centralized import fit_centralized
from fedlightning.datamodules import IID, FederatedDataModule, TensorLoader, load_dataset
from fedlightning.environment import environment
from fedlightning.evaluation import evaluate
from fedlightning.metrics import classifier_scores, frechet_distance_images
from fedlightning.models import ClassifierFeatures, ConvVAE, FeatureClassifier, fit_classifier
from fedlightning.plotting import plot_image_panels, plot_loss_curves, plot_tsne
from fedlightning.run_dir import LAST_CHECKPOINT, checkpoint_dir, prepare_output_dir
from fedlightning.script_args import add_trainer_arguments, last_checkpoint, run_script
from fedlightning.version import __version__

CLASS_NAMES = {
    "fashion_mnist": [
        "T-shirt",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Boot",
    ],
    "mnist": [str(d) for d in range(10)],
}
QUICK = {
    "train_subset": 512,
    "test_subset": 256,
    "eval_subset": 128,
    "epochs": 2,
    "rounds": 2,
    "local_epochs": 1,
    "classifier_epochs": 1,
    "classifier_subset": 512,
    "fid_samples": 256,
    "tsne_points": 100,
}
FIGURES = (
    "loss_curves",
    "reconstructions",
    "samples",
    "tsne_reconstructions",
    "tsne_samples",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; the defaults are seed 002's protocol."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist", choices=sorted(CLASS_NAMES))
    p.add_argument("--data-dir", default=None, help="directory holding the dataset files")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--quick", action="store_true", help=f"small check run: {QUICK}")
    p.add_argument("--seed", type=int, default=0)
    add_trainer_arguments(p, accelerator="cpu", resume=True)
    p.add_argument("--latent-dim", type=int, default=200)
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (notebook: 1 in effect)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=25, help="centralized epochs")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--local-epochs", type=int, default=6)
    p.add_argument(
        "--train-subset",
        type=int,
        default=None,
        help="train on this many training images (seeded random subset; default: all)",
    )
    p.add_argument(
        "--test-subset",
        type=int,
        default=None,
        help="score on this many test images (seeded random subset; default: all)",
    )
    p.add_argument(
        "--eval-subset",
        type=int,
        default=None,
        help="test images evaluated after every epoch / round for the curves (default: all)",
    )
    p.add_argument("--classifier-epochs", type=int, default=3)
    p.add_argument(
        "--classifier-subset",
        type=int,
        default=None,
        help="train the scoring classifier on this many training images (default: all)",
    )
    p.add_argument(
        "--fid-samples",
        type=int,
        default=10000,
        help="generated images per model for the Frechet distance and confidence",
    )
    p.add_argument("--tsne-points", type=int, default=1000)
    p.add_argument("--logger", default="wandb", choices=["wandb", "csv", "none"])
    p.add_argument("--no-download", action="store_true", help="never try torchvision")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    for name in ("epochs", "clients", "rounds", "local_epochs", "batch_size", "fid_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.tsne_points < 40:
        p.error(f"--tsne-points must be >= 40, got {args.tsne_points}")
    return args


class ClientMetricMeans(Callback):
    """Logs, per round, the sample-weighted means of what clients logged in local training.

    The trainer's history keeps the mean local ``train_loss``; this adds every other term
    the module logs (here the VAE's ``recon`` and ``kl``) as ``train_<name>``.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._replies: list[Reply] = []

    def on_round_start(self, trainer: FederatedTrainer, round: int) -> None:
        """Forget the previous round's replies."""
        self._replies = []

    def on_client_fit_end(self, trainer: FederatedTrainer, round: int, reply: Reply) -> None:
        """Keep the reply's local metrics."""
        self._replies.append(reply)

    def on_round_end(self, trainer: FederatedTrainer, round: int) -> None:
        """Log the weighted means into the round's history."""
        means: dict[str, float] = {}
        for name in self.names:
            pairs = [(r.metrics[name], r.num_samples) for r in self._replies if name in r.metrics]
            if pairs:
                values, weights = zip(*pairs, strict=True)
                means[f"train_{name}"] = float(np.average(values, weights=weights))
        trainer.log_metrics(means)


Pair = tuple[Tensor, Tensor]


def _subset(data: Pair, size: int | None, seed: int, stream: int) -> Pair:
    """A seeded random subset of ``size`` samples (all of them when ``size`` is None)."""
    if size is None or size >= len(data[1]):
        return data
    rng = np.random.default_rng([seed, stream])
    idx = torch.from_numpy(np.sort(rng.permutation(len(data[1]))[:size]))
    return data[0][idx], data[1][idx]


def load_data(args: argparse.Namespace) -> dict[str, Pair]:
    """The tensors of the run: ``train``, ``test``, ``eval`` (curves) and ``classifier``."""
    kw: dict[str, Any] = {"data_dir": args.data_dir, "download": not args.no_download}
    train_full = load_dataset(args.dataset, split="train", **kw)
    test = _subset(load_dataset(args.dataset, split="test", **kw), args.test_subset, args.seed, 1)
    return {
        "train": _subset(train_full, args.train_subset, args.seed, 2),
        "test": test,
        "eval": _subset(test, args.eval_subset, args.seed, 3),
        "classifier": _subset(train_full, args.classifier_subset, args.seed, 4),
    }


def make_logger(kind: str, output_dir: Path, name: str) -> Logger | None:
    """One logger per run (W&B offline by default)."""
    if kind == "none":
        return None
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(output_dir), name=f"logs_{name}")
    from fedlightning.loggers import wandb_logger

    return wandb_logger("fedlightning-examples", save_dir=output_dir, name=f"federated_vae-{name}")


def close_logger(logger: Logger | None) -> str | None:
    """Finish a W&B run (so the next one starts fresh); returns its directory if any."""
    if logger is None:
        return None
    logger.finalize("success")
    experiment = getattr(logger, "experiment", None)
    run_dir = getattr(experiment, "dir", None)
    if experiment is not None and hasattr(experiment, "finish"):
        experiment.finish()
    return str(run_dir) if run_dir else getattr(logger, "log_dir", None)


def score_model(
    vae: ConvVAE,
    test: tuple[Tensor, Tensor],
    classifier: FeatureClassifier,
    *,
    num_samples: int,
    seed: int,
    batch_size: int,
) -> tuple[dict[str, float], Tensor]:
    """Test ELBO terms, Frechet distance and classifier scores of one trained VAE.

    Returns the scores and the generated images they were computed on.
    """
    loader = TensorLoader(test[0], test[1], batch_size=batch_size)
    metrics = evaluate(vae, loader)
    samples = torch.cat(
        [
            vae.sample(min(1000, num_samples - i), generator=_generator(seed, 3, i))
            for i in range(0, num_samples, 1000)
        ]
    )
    features = ClassifierFeatures(classifier)
    sample_scores = classifier_scores(classifier, samples)
    reconstructions = torch.cat(
        [vae.reconstruct(test[0][i : i + 1000]) for i in range(0, len(test[0]), 1000)]
    )
    recon_scores = classifier_scores(classifier, reconstructions, labels=test[1])
    scores = {
        "test_elbo": metrics["test_elbo"],
        "test_recon": metrics["test_recon"],
        "test_kl": metrics["test_kl"],
        "test_loss": metrics["test_loss"],
        "frechet_distance": frechet_distance_images(test[0], samples, features),
        "frechet_distance_reconstructions": frechet_distance_images(
            test[0], reconstructions, features
        ),
        "sample_confidence": sample_scores["sample_confidence"],
        "classifier_score": sample_scores["classifier_score"],
        "class_entropy": sample_scores["class_entropy"],
        "reconstruction_accuracy": recon_scores["accuracy"],
    }
    return scores, samples


def _generator(*keys: int) -> torch.Generator:
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def relative_gap(federated: float, centralized: float) -> float:
    """``|federated - centralized| / |centralized|``."""
    return abs(federated - centralized) / max(abs(centralized), 1e-12)


def targets(centralized: Mapping[str, float], federated: Mapping[str, float]) -> dict[str, Any]:
    """The two targets: federated test ELBO within 5%, Frechet distance within 20%.

    One-sided: the claim is that the federated model is *not worse* than the centralized
    one ("comparable performance", seed 002 Sec. 5), so a federated model that is better
    meets a target by any margin. ``*_relative_gap`` is the size of the difference either
    way; ``elbo_shortfall`` and ``frechet_excess`` are signed, positive where federated is
    worse (a lower ELBO, a larger distance).

    Args:
        centralized: The centralized model's scores (``test_elbo``, ``frechet_distance``).
        federated: The federated model's.

    Returns:
        The gaps and whether each target is met.
    """
    c_elbo, f_elbo = centralized["test_elbo"], federated["test_elbo"]
    c_fd, f_fd = centralized["frechet_distance"], federated["frechet_distance"]
    elbo_shortfall = (c_elbo - f_elbo) / max(abs(c_elbo), 1e-12)
    frechet_excess = (f_fd - c_fd) / max(abs(c_fd), 1e-12)
    return {
        "elbo_relative_gap": relative_gap(f_elbo, c_elbo),
        "elbo_shortfall": elbo_shortfall,
        "elbo_within_5pct": elbo_shortfall <= 0.05,
        "frechet_relative_gap": relative_gap(f_fd, c_fd),
        "frechet_excess": frechet_excess,
        "frechet_within_20pct": frechet_excess <= 0.20,
    }


def make_figures(
    output_dir: Path,
    args: argparse.Namespace,
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    models: Mapping[str, ConvVAE],
    samples: Mapping[str, Tensor],
    test: tuple[Tensor, Tensor],
    classifier: FeatureClassifier,
) -> dict[str, Path]:
    """The PNGs of the issue, by name."""
    names = CLASS_NAMES[args.dataset]
    rng = np.random.default_rng([args.seed, 4])
    shown = torch.from_numpy(rng.permutation(len(test[1]))[:32])
    inputs = test[0][shown]
    figures = {
        "loss_curves": plot_loss_curves(
            {
                "centralized": histories["centralized"],
                "federated": histories["federated"],
            },
            output_dir / "loss_curves.png",
            train_prefix="train_",
        ),
        "reconstructions": plot_image_panels(
            {"test inputs": inputs}
            | {f"{name} VAE": model.reconstruct(inputs) for name, model in models.items()},
            output_dir / "reconstructions.png",
            ncols=8,
        ),
        "samples": plot_image_panels(
            {f"{name} VAE": s[:256] for name, s in samples.items()},
            output_dir / "samples.png",
            ncols=16,
            title="256 samples decoded from z ~ N(0, I)",
        ),
    }
    points = torch.from_numpy(rng.permutation(len(test[1]))[: args.tsne_points])
    x, y = test[0][points], test[1][points]
    perplexity = min(30.0, (len(points) - 1) / 3)
    figures["tsne_reconstructions"] = plot_tsne(
        {"test inputs": (x, y)}
        | {f"{name} reconstructions": (m.reconstruct(x), y) for name, m in models.items()},
        output_dir / "tsne_reconstructions.png",
        seed=args.seed,
        perplexity=perplexity,
        class_names=names,
    )
    generated = {}
    for name, s in samples.items():
        part = s[: args.tsne_points]
        generated[f"{name} samples (predicted class)"] = (part, classifier(part).argmax(1))
    figures["tsne_samples"] = plot_tsne(
        {"test inputs": (x, y)} | generated,
        output_dir / "tsne_samples.png",
        seed=args.seed,
        perplexity=perplexity,
        class_names=names,
    )
    return figures


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the comparison; returns what it writes to ``results.json``."""
    args = parse_args(argv)
    seed_everything(args.seed, verbose=False)  # every global generator, from --seed
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    output_dir = Path(args.output_dir)
    # Both phases checkpoint into their own folder; refuse another run's before any training.
    resume = {
        phase: last_checkpoint(output_dir / phase) if args.resume else None
        for phase in ("centralized", "federated")
    }
    for phase, ckpt in resume.items():
        prepare_output_dir(output_dir / phase, resume=ckpt, overwrite=args.overwrite)
    data = load_data(args)
    train, test = data["train"], data["test"]
    eval_loader = TensorLoader(*data["eval"], batch_size=args.batch_size)
    test_loader = TensorLoader(test[0], test[1], batch_size=args.batch_size)
    torch.manual_seed(args.seed)  # the initial weights, shared by both runs
    initial = ConvVAE(latent_dim=args.latent_dim, beta=args.beta, lr=args.lr, eval_seed=args.seed)
    train_keys = ("recon", "kl", "loss")

    # ---------------------------------------------------------------- centralized
    central = copy.deepcopy(initial)
    logger = make_logger(args.logger, output_dir, "centralized")
    central_history = fit_centralized(
        central,
        TensorLoader(train[0], train[1], batch_size=args.batch_size, shuffle=True, seed=args.seed),
        epochs=args.epochs,
        test_loader=eval_loader,
        seed=args.seed,
        loggers=[logger] if logger is not None else [],
        checkpoint=checkpoint_dir(output_dir / "centralized") / LAST_CHECKPOINT,
        resume=resume["centralized"],
        on_epoch_end=lambda e, h: print(
            f"centralized epoch {e}/{args.epochs}: test_elbo={h['test_elbo']:.2f} "
            f"({h['wall_s']:.0f}s)",
            flush=True,
        ),
    )
    # the run's own wall time: a resumed run adds the time of the epochs before it
    central_wall = central_history[-1]["wall_s"]
    for entry in central_history:
        for key in train_keys:
            entry[f"train_{key}"] = entry.pop(key)
    logger_dirs = {"centralized": close_logger(logger)}

    # ---------------------------------------------------------------- federated
    federated = copy.deepcopy(initial)
    dm = FederatedDataModule(
        train,
        partition=IID(num_clients=args.clients),
        batch_size=args.batch_size,
        seed=args.seed,
        test=data["eval"],
    )
    logger = make_logger(args.logger, output_dir, "federated")
    trainer = FederatedTrainer(
        accelerator=args.accelerator,
        precision=args.precision,
        algorithm=FedAvg(),
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        seed=args.seed,
        callbacks=[ClientMetricMeans(["recon", "kl"])],
        logger=logger,
        progress_bar=False,
        output_dir=output_dir / "federated",
        resume=resume["federated"],
    )
    trainer.fit(federated, dm)
    federated_wall = float(trainer.results["wall_s"])
    fed_history = [dict(h) for h in trainer.history]
    for entry in fed_history:
        print(
            f"federated round {int(entry['round'])}/{args.rounds}: "
            f"test_elbo={entry.get('test_elbo', float('nan')):.2f}"
        )

    torch.save(
        {"centralized": central.state_dict(), "federated": federated.state_dict()},
        output_dir / "models.pt",
    )

    # ---------------------------------------------------------------- scores
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    classifier = FeatureClassifier(num_classes=10)
    fit_train = fit_classifier(
        classifier, *data["classifier"], epochs=args.classifier_epochs, seed=args.seed
    )
    clf_test = evaluate(classifier, test_loader)
    features = ClassifierFeatures(classifier)
    real = _subset(data["classifier"], args.fid_samples, args.seed, 5)[0]
    reference = {
        "train_acc": fit_train["train_acc"],
        "test_acc": clf_test["test_acc"],
        "test_confidence": classifier_scores(classifier, test[0])["sample_confidence"],
        "test_classifier_score": classifier_scores(classifier, test[0])["classifier_score"],
        # The floor of the distance: real training images against the test images.
        "frechet_distance_train_vs_test": frechet_distance_images(test[0], real, features),
        "epochs": args.classifier_epochs,
        "train_images": len(data["classifier"][1]),
        "wall_s": time.perf_counter() - t0,
    }
    models = {"centralized": central, "federated": federated}
    walls = {"centralized": central_wall, "federated": federated_wall}
    results: dict[str, Any] = {}
    samples: dict[str, Tensor] = {}
    for name, model in models.items():
        scores, samples[name] = score_model(
            model,
            test,
            classifier,
            num_samples=args.fid_samples,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        results[name] = {**scores, "wall_s": walls[name]}
    results["centralized"]["history"] = central_history
    results["federated"]["history"] = fed_history
    results["classifier"] = reference
    bytes_ = trainer.results.get("bytes", {})
    results["bytes"] = {k: bytes_[k] for k in ("down", "up", "total") if k in bytes_}
    results["targets"] = targets(results["centralized"], results["federated"])

    # ---------------------------------------------------------------- pictures
    figures = make_figures(
        output_dir,
        args,
        {"centralized": central_history, "federated": fed_history},
        models,
        samples,
        test,
        classifier,
    )
    results["figures"] = {name: str(path.name) for name, path in figures.items()}
    summary = {f"{run}/{k}": v for run in models for k, v in results[run].items() if k != "history"}
    if logger is not None:
        if hasattr(logger, "log_image"):
            for name, path in figures.items():
                logger.log_image(key=name, images=[str(path)])
        logger.log_metrics(summary, step=args.rounds)
    logger_dirs["federated"] = close_logger(logger)
    results["loggers"] = {k: v for k, v in logger_dirs.items() if v}
    results["config"] = {**vars(args), "trainer": trainer.config, "model": dict(initial.hparams)}
    results["num_parameters"] = initial.num_parameters
    results["seed"] = args.seed
    results["version"] = __version__
    results["environment"] = environment()
    results["wall_s"] = time.perf_counter() - start
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(
        json.dumps(
            {
                k: {m: v for m, v in results[k].items() if m != "history"}
                for k in ("centralized", "federated", "targets", "bytes")
            },
            indent=1,
        )
    )
    print(f"results: {output_dir / 'results.json'}")
    return results


if __name__ == "__main__":
    sys.exit(run_script(main, __file__))
