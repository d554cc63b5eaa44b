"""Seed 000 end to end: community-based federated anomaly detection on Fashion-MNIST.

Phase I finds communities of clients with the same inlier class (5-layer conv autoencoder or
the prior work's OC-SVM as the local detector, exchanged between every pair of clients);
Phase II runs FedAvg inside each community (7-layer conv autoencoder or the prior work's
flat autoencoder). Baselines: *local* (each client alone, early stopping) and *ideal* (FedAvg
inside the true groups). Every exchange is a real message counted by CommCost; the measured
bytes are set next to eq. (1)-(3) of the paper and the centralized cost.

Defaults are the paper's protocol (90 clients, p = 9, d = 0.1, r = 10, 1 local epoch in
round 1 then 10 per round, batch 32, Adam 1e-3):

    python examples/anomaly_detection.py --output-dir runs/anomaly

``--quick`` runs a small configuration (a few minutes of data, 20 clients) for tests.
``--jobs 2`` runs the two baselines in a second process beside the federated pipeline (they
do not depend on it), one CPU thread each: on a 2-core machine this about halves the wall
time of the whole comparison. ``--part local`` or ``--part ideal`` runs one baseline alone.

Every part is resumable: the federated pipeline and the ideal baseline checkpoint every round
(``DIR/federated/checkpoints/``, ``DIR/ideal/checkpoints/``; the federated checkpoint holds
Phase I's result, so a resumed run does not repeat it), the local baseline every client
(``DIR/local/checkpoints/``). The same command with ``--resume`` continues a killed run, or
extends a finished one to a larger ``--rounds``; the result is the uninterrupted run's.

References:
    M. Nardi, L. Valerio, A. Passarella, "Communication Costs Analysis of Unsupervised
    Federated Learning: an Anomaly Detection Scenario", Ital-IA 2023 (seed 000).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch import seed_everything

from fedlightning import FederatedTrainer
from fedlightning.algorithms.community import (
    AutoencoderDetector,
    CommunityFedAvg,
    GroupIdentification,
    client_aucs,
    train_local,
    true_communities,
)
from fedlightning.callbacks import CommCost
from fedlightning.checkpoint import load_checkpoint, save_checkpoint
from fedlightning.datamodules import load_dataset
from fedlightning.datamodules.anomaly import AnomalyDataModule
from fedlightning.environment import environment
from fedlightning.metrics.anomaly import adjusted_rand, auc_table, community_table
from fedlightning.models.autoencoders import (
    ConvAutoencoder5,
    ConvAutoencoder7,
    FlatAutoencoder,
    ReconstructionAutoencoder,
)
from fedlightning.models.ocsvm import OneClassSVMDetector
from fedlightning.run_dir import checkpoint_dir, prepare_output_dir, write_json
from fedlightning.script_args import add_trainer_arguments, last_checkpoint, run_script
from fedlightning.trainer import derive_seed
from fedlightning.version import __version__

log = logging.getLogger("anomaly_detection")

LOCAL_STREAM = 10**6  # seed stream of the local baseline: derive_seed(seed, LOCAL_STREAM, client)

QUICK = {
    "train_subset": 4000,
    "test_subset": 2000,
    "clients_per_class": 2,
    "rounds": 2,
    "epochs_first": 1,
    "epochs_per_round": 1,
    "phase1_epochs": 2,
    "local_max_epochs": 3,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the example; defaults are seed 000's protocol."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="small configuration for tests")
    p.add_argument(
        "--community-method",
        default="leiden",
        choices=["fastgreedy", "leiden", "louvain", "greedy_modularity"],
        help="Phase I community detection (default leiden: 8 communities, ARI 0.764 and "
        "federated AUC 0.702 against fast greedy's 6, 0.506 and 0.656 on the full protocol; "
        "fastgreedy is the reference implementation's, see docs/anomaly_detection.md)",
    )
    p.add_argument("--phase1-model", default="conv5", choices=["conv5", "ocsvm"])
    p.add_argument("--phase2-model", default="conv7", choices=["conv7", "flat"])
    p.add_argument("--clients-per-class", type=int, default=9, help="p")
    p.add_argument("--outlier-fraction", type=float, default=0.1, help="d")
    p.add_argument("--tolerance", type=float, default=0.06, help="relative tolerance t")
    p.add_argument(
        "--tolerance-z",
        type=float,
        default=None,
        metavar="Z",
        help="instead of --tolerance, each client takes Z standard errors of its inlier "
        "share's sampling noise, sqrt(2 p (1 - p) / n) / p (label-free; 0.0183 for Z = 1 on "
        "the protocol's clients; see docs/anomaly_detection.md)",
    )
    p.add_argument("--rounds", type=int, default=10, help="r")
    p.add_argument("--epochs-first", type=int, default=1, help="local epochs in round 1")
    p.add_argument("--epochs-per-round", type=int, default=10, help="local epochs later")
    p.add_argument("--phase1-epochs", type=int, default=10, help="Phase I autoencoder epochs")
    p.add_argument("--local-max-epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    add_trainer_arguments(p, accelerator="cpu", resume=True)
    p.add_argument(
        "--train-subset",
        type=int,
        default=None,
        help="use only the first N training images (default: all 60,000)",
    )
    p.add_argument(
        "--test-subset",
        type=int,
        default=None,
        help="use only the first N test images (default: all 10,000)",
    )
    p.add_argument("--skip-baselines", action="store_true", help="federated pipeline only")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        choices=[1, 2],
        help="2: run the baselines in a second process beside the federated pipeline",
    )
    p.add_argument(
        "--part",
        default="all",
        choices=["all", "baselines", "local", "ideal"],
        help="baselines: only the ideal and local baselines (what --jobs 2 runs beside); "
        "local, ideal: only that baseline",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--wandb", action="store_true", help="log to W&B (offline by default)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    return args


def phase2_model(name: str, lr: float, seed: int = 0) -> ReconstructionAutoencoder:
    """The Phase II autoencoder (seed 000's 7-layer conv AE or the prior work's flat AE).

    Its initial weights derive from ``seed``, so the federated and ideal runs start from the
    same weights and the same command gives the same result.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "conv7":
            return ConvAutoencoder7(lr=lr, channels_last=True)
        return FlatAutoencoder(lr=lr)


def phase1_detector(args: argparse.Namespace) -> AutoencoderDetector | OneClassSVMDetector:
    """The Phase I detector: seed 000's 5-layer conv AE or the prior work's OC-SVM."""
    if args.phase1_model == "ocsvm":
        return OneClassSVMDetector(nu=0.1)
    return AutoencoderDetector(
        ConvAutoencoder5(lr=args.lr, channels_last=True),
        epochs=args.phase1_epochs,
        batch_size=args.batch_size,
        outlier_fraction=args.outlier_fraction,
    )


def build_data(args: argparse.Namespace) -> AnomalyDataModule:
    """Fashion-MNIST split into inlier/outlier clients (optionally on a prefix subset)."""
    kw: dict[str, Any] = {
        "clients_per_class": args.clients_per_class,
        "outlier_fraction": args.outlier_fraction,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "data_dir": args.data_dir,
    }
    if args.train_subset is None and args.test_subset is None:
        return AnomalyDataModule("fashion_mnist", **kw)
    x, y = load_dataset("fashion_mnist", split="train", data_dir=args.data_dir)
    xt, yt = load_dataset("fashion_mnist", split="test", data_dir=args.data_dir)
    n, nt = args.train_subset or len(x), args.test_subset or len(xt)
    return AnomalyDataModule((x[:n], y[:n]), test=(xt[:nt], yt[:nt]), **kw)


def epochs_schedule(args: argparse.Namespace) -> list[int]:
    """Local epochs of round 1, then of every later round (the last entry repeats).

    Two entries whatever ``--rounds`` is, so a run extended to more rounds with ``--resume``
    has the same algorithm settings as the run it continues.
    """
    return [args.epochs_first, args.epochs_per_round]


def baseline_parts(args: argparse.Namespace) -> list[str]:
    """The baselines this process runs: ``ideal`` and/or ``local``."""
    if args.part in ("local", "ideal"):
        return [args.part]
    if args.part == "baselines" or (not args.skip_baselines and args.jobs == 1):
        return ["ideal", "local"]
    return []


def check_output_dirs(args: argparse.Namespace) -> None:
    """Refuse, before any training, a folder that holds another run (unless resuming it).

    Checks every part's folder this command will write, the second process's included.

    Raises:
        ValueError: Naming the folder, from :func:`prepare_output_dir`.
    """
    names = ["federated"] if args.part == "all" else []
    names += baseline_parts(args)
    if args.part == "all" and args.jobs > 1 and not args.skip_baselines:
        names += ["baselines/ideal", "baselines/local"]
    for name in names:
        folder = args.output_dir / name
        resume = checkpoint_dir(folder) if args.resume else None
        prepare_output_dir(folder, resume=resume, overwrite=args.overwrite)


def run_federation(
    args: argparse.Namespace, dm: AnomalyDataModule, algorithm: CommunityFedAvg, name: str
) -> tuple[FederatedTrainer, list[ReconstructionAutoencoder]]:
    """Phase II (and Phase I when the algorithm has one) through the FederatedTrainer.

    With ``--resume`` it continues from ``DIR/<name>/checkpoints/last.ckpt`` when there is one.
    """
    loggers: Any = None
    if args.wandb:
        from fedlightning.loggers import wandb_logger

        loggers = wandb_logger("fedlightning-anomaly", save_dir=args.output_dir, name=name)
    trainer = FederatedTrainer(
        accelerator=args.accelerator,
        precision=args.precision,
        overwrite=args.overwrite,
        algorithm=algorithm,
        rounds=args.rounds,
        local_epochs=args.epochs_first,
        seed=args.seed,
        callbacks=[CommCost()],
        logger=loggers,
        eval_every=None,
        output_dir=args.output_dir / name,
        resume=last_checkpoint(args.output_dir / name) if args.resume else None,
        progress_bar=not args.quick,  # rounds of a full run take minutes: show them
    )
    trainer.fit(phase2_model(args.phase2_model, args.lr, args.seed), dm)
    models = [algorithm.community_model(k) for k in range(len(algorithm.communities))]
    per_client = [models[algorithm.community_of(c)] for c in dm.client_ids]
    return trainer, cast(list[ReconstructionAutoencoder], per_client)


def measured_bytes(trainer: FederatedTrainer) -> tuple[int, int]:
    """(Phase I, Phase II) bytes as CommCost counted them.

    Phase II is the sum of the rounds' bytes; Phase I is everything CommCost saw before
    round 1 (its round-0 messages), i.e. the run total minus Phase II.
    """
    phase2 = int(sum(h.get("bytes_down", 0) + h.get("bytes_up", 0) for h in trainer.history))
    total = int(trainer.results["bytes"]["total"])
    return total - phase2, phase2


def costs(
    args: argparse.Namespace,
    dm: AnomalyDataModule,
    fed: CommunityFedAvg,
    trainer: FederatedTrainer,
) -> dict[str, Any]:
    """Measured bytes next to eq. (1)-(3) and the centralized cost, plus Table 4."""
    from fedlightning import cost_model as cm

    assert fed.phase1_result is not None and fed.phase1 is not None
    result = fed.phase1_result
    phase1 = fed.phase1
    n = dm.num_clients
    num_classes = dm.anomaly_partition.num_classes
    sizes = [len(g) for g in fed.communities]
    phase1_measured, phase2_measured = measured_bytes(trainer)
    # S_m: 4 bytes per parameter for the autoencoder (its message also carries the 4-byte
    # threshold); the OC-SVM's size is its measured message (support vectors and weights).
    detector = phase1.detector
    if isinstance(detector, AutoencoderDetector):
        s_m = float(cm.model_bytes(detector.prototype.num_parameters))
    else:
        s_m = float(np.mean(result.model_bytes))
    s_u = 4 * phase2_model(args.phase2_model, args.lr).num_parameters
    eq1 = cm.phase1_cost(n, s_m, num_classes=num_classes)
    eq1_run = cm.phase1_cost(n, s_m, group_size=result.mean_candidates)
    eq2 = cm.phase2_cost(sizes, s_u, args.rounds)
    eq3 = cm.phase2_cost_internal_aggregator(n, len(sizes), s_u, args.rounds)
    # S_d: one byte per pixel, Fashion-MNIST's own 8-bit format.
    centralized = cm.centralized_cost(
        [dm.num_samples(c) for c in dm.client_ids], math.prod(dm.input_shape)
    )
    mb = 1e6

    # Table 4: this work's models (5-layer + 7-layer AE) and the prior work's (OC-SVM + flat).
    conv5_bytes = 4 * ConvAutoencoder5().num_parameters
    if args.phase1_model == "ocsvm":
        ocsvm_bytes = s_m
    else:
        ocsvm = [
            OneClassSVMDetector(nu=0.1).fit(dm.client_data(c)[0]).nbytes for c in dm.client_ids
        ]
        ocsvm_bytes = float(np.mean(ocsvm))
    table4: dict[str, Any] = {}
    for label, p1_bytes, p2_params in (
        ("this_work", conv5_bytes, ConvAutoencoder7().num_parameters),
        ("prior_work", ocsvm_bytes, FlatAutoencoder(dm.input_shape).num_parameters),
    ):
        table4[label] = {
            "phase1_model_bytes": p1_bytes,
            "phase2_model_bytes": 4 * p2_params,
            "phase1_mb": cm.phase1_cost(n, p1_bytes, num_classes=num_classes) / mb,
            "phase2_mb": cm.phase2_cost(sizes, 4 * p2_params, args.rounds) / mb,
        }
    table4["centralized_mb"] = centralized / mb
    return {
        "phase1": {
            "measured": phase1_measured / mb,
            "formula": eq1 / mb,
            "formula_run_group_size": eq1_run / mb,
            "measured_by_exchange": {k: v / mb for k, v in result.bytes.items()},
            "model_bytes_mean": s_m,
            "mean_candidate_list": result.mean_candidates,
        },
        "phase2": {
            "measured": phase2_measured / mb,
            "formula_eq2": eq2 / mb,
            "formula_eq3": eq3 / mb,
            "update_bytes": s_u,
            "group_sizes": sizes,
        },
        "centralized": centralized / mb,
        "table4": table4,
    }


def plot_graph(
    path: Path, graph: Any, communities: list[list[int]], classes: list[int], seed: int
) -> Path:
    """The client graph, nodes coloured by community and labelled with their true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    colour = {c: k for k, g in enumerate(communities) for c in g}
    fig, ax = plt.subplots(figsize=(9, 9))
    pos = nx.spring_layout(graph, seed=seed)
    nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.2)
    nx.draw_networkx_nodes(
        graph,
        pos,
        ax=ax,
        node_color=[colour[v] for v in graph.nodes],
        cmap="tab20",
        node_size=220,
    )
    nx.draw_networkx_labels(
        graph, pos, {v: str(classes[v]) for v in graph.nodes}, ax=ax, font_size=7
    )
    ax.set_title("Phase I client graph: colour = community, label = true inlier class")
    ax.axis("off")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_auc(path: Path, auc: dict[str, Any]) -> Path:
    """Mean AUC per inlier class for local, federated and ideal (Table 3 as bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    names = [k for k in ("local", "federated", "ideal") if k in auc]
    classes = sorted(auc[names[0]]["per_class"], key=int)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        values = [auc[name]["per_class"][c] for c in classes]
        ax.bar(
            np.arange(len(classes)) + k * width,
            values,
            width,
            label=f"{name} (mean {auc[name]['mean']:.3f})",
        )
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes)
    ax.set_xlabel("inlier class")
    ax.set_ylabel("AUC-ROC")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def log_summary(args: argparse.Namespace, auc: dict[str, Any], pictures: list[Path]) -> None:
    """Log the mean AUCs and the pictures to a W&B run of their own (offline by default)."""
    from fedlightning.loggers import wandb_logger

    try:
        logger: Any = wandb_logger("fedlightning-anomaly", save_dir=args.output_dir, name="summary")
        logger.log_metrics({f"auc_{k}": v["mean"] for k, v in auc.items()})
        for path in pictures:
            logger.log_image(path.stem, [str(path)])
        logger.finalize("success")
    except Exception as exc:  # logging never takes the run down
        log.warning("W&B summary logging failed: %r", exc)


def trained_seconds(trainer: FederatedTrainer, own_s: float, resumed: bool) -> float:
    """A part's wall time: this process's, plus the time before the checkpoint it resumed."""
    if not resumed:
        return own_s
    return max(own_s, float(trainer.results.get("wall_s", own_s)))


def run_ideal(args: argparse.Namespace, dm: AnomalyDataModule) -> tuple[dict[str, Any], float]:
    """The *ideal* baseline: FedAvg inside the true groups. Returns its AUC table and seconds."""
    classes = dm.inlier_classes.tolist()
    t = time.perf_counter()
    resumed = args.resume and last_checkpoint(args.output_dir / "ideal") is not None
    ideal = CommunityFedAvg(
        communities=true_communities(classes), epochs_per_round=epochs_schedule(args)
    )
    trainer, models = run_federation(args, dm, ideal, "ideal")
    table = auc_table(
        client_aucs(models, classes, dm.class_test_data),
        classes,
        dm.anomaly_partition.num_classes,
    )
    log.info("ideal: mean AUC %.3f", table["mean"])
    return table, trained_seconds(trainer, time.perf_counter() - t, resumed)


def run_local(args: argparse.Namespace, dm: AnomalyDataModule) -> tuple[dict[str, Any], float]:
    """The *local* baseline: each client alone, with early stopping.

    Each client's trained weights, epochs and seconds are saved to
    ``DIR/local/checkpoints/client_<id>.ckpt`` as soon as it finishes; with ``--resume`` a
    client that has one is loaded instead of trained again (the same weights: every client's
    training is seeded from ``(seed, client)`` alone).

    Returns:
        Its AUC table (with the epochs each client ran) and its seconds.
    """
    classes = dm.inlier_classes.tolist()
    folder = checkpoint_dir(args.output_dir / "local")
    folder.mkdir(parents=True, exist_ok=True)
    prototype = phase2_model(args.phase2_model, args.lr)
    models, epochs, seconds = [], [], []
    for c in dm.client_ids:
        path = folder / f"client_{c:04d}.ckpt"
        if args.resume and path.is_file():
            saved = load_checkpoint(path)
            model = phase2_model(args.phase2_model, args.lr)
            model.load_state_dict(saved["state"])
            models.append(model)
            epochs.append(int(saved["epochs"]))
            seconds.append(float(saved["seconds"]))
            continue
        t = time.perf_counter()
        model, ran = train_local(
            prototype,
            dm.client_data(c)[0],
            max_epochs=args.local_max_epochs,
            patience=args.patience,
            batch_size=args.batch_size,
            seed=derive_seed(args.seed, LOCAL_STREAM, c),
        )
        took = time.perf_counter() - t
        save_checkpoint(path, {"state": model.state_dict(), "epochs": ran, "seconds": took})
        models.append(model)
        epochs.append(ran)
        seconds.append(took)
    table = auc_table(
        client_aucs(models, classes, dm.class_test_data),
        classes,
        dm.anomaly_partition.num_classes,
    )
    table["epochs_mean"] = float(np.mean(epochs))
    table["epochs_per_client"] = [int(e) for e in epochs]
    log.info("local: mean AUC %.3f", table["mean"])
    return table, float(sum(seconds))


def run_baselines(args: argparse.Namespace, dm: AnomalyDataModule) -> dict[str, Any]:
    """The baselines this process runs (see :func:`baseline_parts`).

    Returns:
        ``{"auc": {name: table}, "timings": {name + "_s": seconds}}``.
    """
    auc: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name in baseline_parts(args):
        runner = run_ideal if name == "ideal" else run_local
        auc[name], timings[f"{name}_s"] = runner(args, dm)
    return {"auc": auc, "timings": timings}


def start_baselines_process(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``--part baselines`` of this script in a child process; returns it and its dir."""
    out = args.output_dir / "baselines"
    out.mkdir(parents=True, exist_ok=True)
    argv = [*args.argv, "--part", "baselines", "--jobs", "1", "--output-dir", str(out)]
    argv += ["--threads", str(args.threads)]
    with (out / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    return proc, out


def collect_baselines(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    """Wait for the baselines process and read what it wrote."""
    rc = proc.wait()
    if rc != 0:
        tail = (out / "stderr.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"baselines process exited with code {rc}; its log ends:\n{tail}")
    return dict(json.loads((out / "results.json").read_text()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole pipeline; returns what goes into ``results.json``."""
    start = time.perf_counter()
    if args.jobs > 1 and not args.threads:
        args.threads = 1  # two processes on two cores: one thread each
    if args.threads:
        torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    check_output_dirs(args)
    dm = build_data(args)
    dm.setup()
    if args.part != "all":
        part = run_baselines(args, dm)
        part["wall_s"] = max(time.perf_counter() - start, sum(part["timings"].values()))
        part["client_inlier_class"] = dm.inlier_classes.tolist()
        part["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        part["seed"] = args.seed
        part["version"] = __version__
        part["environment"] = environment()
        write_json(args.output_dir / "results.json", part)
        return part
    child = None
    if args.jobs > 1 and not args.skip_baselines:
        child = start_baselines_process(args)
    classes = dm.inlier_classes.tolist()
    num_classes = dm.anomaly_partition.num_classes
    timings: dict[str, float] = {}

    t = time.perf_counter()
    resumed = args.resume and last_checkpoint(args.output_dir / "federated") is not None
    phase1 = GroupIdentification(
        phase1_detector(args),
        tolerance=args.tolerance,
        method=args.community_method,
        tolerance_z=args.tolerance_z,
    )
    fed = CommunityFedAvg(phase1=phase1, epochs_per_round=epochs_schedule(args))
    fed_trainer, fed_models = run_federation(args, dm, fed, "federated")
    timings["federated_s"] = trained_seconds(fed_trainer, time.perf_counter() - t, resumed)
    if fed.phase1_result is None:
        raise ValueError(
            f"the checkpoint in {args.output_dir / 'federated'} has no Phase I result (it was "
            "written by an earlier version); run again without --resume, with --overwrite"
        )
    timings["phase1_s"] = fed.phase1_result.seconds
    communities = fed.communities
    auc: dict[str, Any] = {
        "federated": auc_table(
            client_aucs(fed_models, classes, dm.class_test_data), classes, num_classes
        )
    }
    log.info("federated: mean AUC %.3f", auc["federated"]["mean"])

    # A resumed part counts the time before its checkpoint too, so the run's wall time is
    # at least its parts' (in sequence, or side by side with --jobs 2).
    parts_s = timings["federated_s"]
    if not args.skip_baselines:
        baselines = collect_baselines(*child) if child else run_baselines(args, dm)
        auc.update(baselines["auc"])
        timings.update(baselines["timings"])
        if child:
            parts_s = max(parts_s, float(baselines["wall_s"]))
        else:
            parts_s += sum(baselines["timings"].values())

    graph_png = plot_graph(
        args.output_dir / "community_graph.png",
        fed.phase1_result.graph,
        communities,
        classes,
        args.seed,
    )
    auc_png = plot_auc(args.output_dir / "auc_per_class.png", auc)
    if args.wandb:
        log_summary(args, auc, [graph_png, auc_png])
    modularity = fed.phase1_result.modularity
    results: dict[str, Any] = {
        "communities": communities,
        "client_inlier_class": classes,
        # Phase I's intermediate products, so other community methods or tolerances can be
        # tried on this run's scores without training the detectors again.
        "phase1": {
            "ratios": fed.phase1_result.ratios.tolist(),
            "candidates": fed.phase1_result.candidates,
            "tolerance": args.tolerance,
            "tolerance_z": args.tolerance_z,
            "tolerances": fed.phase1_result.tolerances,
            "method": args.community_method,
        },
        "community_table": community_table(communities, classes),
        "ari": adjusted_rand(communities, classes),
        "modularity": None if math.isnan(modularity) else modularity,
        "auc": auc,
        "comm_cost_mb": costs(args, dm, fed, fed_trainer),
        "bytes": fed_trainer.results.get("bytes", {}),
        "timings": timings,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seed": args.seed,
        "version": __version__,
        "environment": environment(),
        "num_clients": dm.num_clients,
        "num_train_samples": sum(dm.num_samples(c) for c in dm.client_ids),
        "wall_s": max(time.perf_counter() - start, parts_s),
    }
    results["bytes"].pop("per_client", None)
    write_json(args.output_dir / "results.json", results)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the example and print a short summary."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    seed_everything(args.seed, verbose=False)  # every global generator, from --seed
    results = run(args)
    if args.part != "all":
        print(json.dumps({k: round(v["mean"], 4) for k, v in results["auc"].items()}))
        return 0
    summary = {
        "auc_mean": {k: round(v["mean"], 4) for k, v in results["auc"].items()},
        "ari": round(results["ari"], 4),
        "communities": len(results["communities"]),
        "comm_cost_mb": {
            "phase1": results["comm_cost_mb"]["phase1"]["measured"],
            "phase1_formula": results["comm_cost_mb"]["phase1"]["formula"],
            "phase2": results["comm_cost_mb"]["phase2"]["measured"],
            "phase2_eq2": results["comm_cost_mb"]["phase2"]["formula_eq2"],
        },
        "wall_s": round(results["wall_s"], 1),
        "results": str(args.output_dir / "results.json"),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main, __file__))
