"""Seconds per round of the sequential, vectorized and Ray executors and of a plain PyTorch loop.

Workloads:

* ``phase2_conv``: seed 000's Phase II on the real Fashion-MNIST: 90 clients (9 per inlier
  class, 10% outliers, 666 samples each), every client in one FedAvg round, 1 local epoch,
  batch 32, Adam lr 1e-3, the 28,353-parameter 7-layer convolutional autoencoder. (Phase II
  averages per community; one round over all 90 clients is the same local work.)
* ``phase2_flat``: the same with the flat ``[64, 32, 64]`` autoencoder (105,392 parameters).
* ``core``: Fashion-MNIST, 100 clients with 2 label-sorted shards each, the small CNN
  (:class:`~fedlightning.models.MNISTClassifier`), SGD lr 0.01, batch 60, 1 local epoch,
  10 clients per round.

Prints one JSON line per workload: ``s_per_round`` for each executor and the plain loop,
``ratio_to_plain`` (executor time / plain-loop time: below 1 is faster than the loop), the
choice and probe timings of ``executor="auto"`` when it runs, the
global models' largest difference from the sequential executor's, and for Ray the measured
per-client seconds, its pool start-up time and a rounds-per-hour projection by worker count.

    python benchmarks/executors.py --threads 1         # all workloads (~20 min on 2 busy cores)
    python benchmarks/executors.py --workloads phase2_flat --rounds 2
    python benchmarks/executors.py --quick             # small, for a smoke test

The CPU may be shared; figures are medians over rounds, but still noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg
from fedlightning.callbacks import RoundTimer
from fedlightning.datamodules import FederatedDataModule, SortedShards
from fedlightning.datamodules.anomaly import AnomalyDataModule
from fedlightning.executors import Executor, resolve_executor
from fedlightning.executors.auto import AutoExecutor
from fedlightning.executors.ray import RayExecutor
from fedlightning.executors.vectorized import VectorizedExecutor
from fedlightning.models import MNISTClassifier
from fedlightning.models.autoencoders import ConvAutoencoder7, FlatAutoencoder


def plain_loop(
    make_model: Callable[[], LightningModule],
    dm: FederatedDataModule,
    rounds: int,
    clients_per_round: int,
    seed: int,
) -> list[float]:
    """Hand-written FedAvg in plain PyTorch: the baseline every executor is compared with."""
    torch.manual_seed(seed)
    global_model = make_model()
    local = make_model()
    rng = np.random.default_rng(seed)
    data = {c: dm.client_data(c) for c in dm.client_ids}
    autoencoder = not isinstance(global_model, MNISTClassifier)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        chosen = sorted(
            rng.choice(len(dm.client_ids), size=clients_per_round, replace=False).tolist()
        )
        global_state = {k: v.clone() for k, v in global_model.state_dict().items()}
        total = 0
        acc: dict[str, torch.Tensor] = {}
        for client in chosen:
            x, y = data[int(client)]
            local.load_state_dict(global_state)
            opt = local.configure_optimizers()
            assert isinstance(opt, torch.optim.Optimizer)
            perm = torch.randperm(len(y))
            for i in range(0, len(y), dm.batch_size):
                idx = perm[i : i + dm.batch_size]
                xb = x[idx]
                out = local(xb)
                loss = F.mse_loss(out, xb) if autoencoder else F.cross_entropy(out, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            n = len(y)
            total += n
            for k, v in local.state_dict().items():
                acc[k] = acc[k] + v * n if k in acc else v * n
        global_model.load_state_dict({k: v / total for k, v in acc.items()})
        times.append(time.perf_counter() - start)
    return times


def run_executor(
    make_model: Callable[[], LightningModule],
    dm: FederatedDataModule,
    executor: Executor,
    rounds: int,
    clients_per_round: int,
    seed: int,
) -> tuple[list[float], float, LightningModule]:
    """FederatedTrainer on the workload: per-round seconds, fit wall time, final model."""
    timer = RoundTimer()
    trainer = FederatedTrainer(
        algorithm=FedAvg(),
        rounds=rounds,
        clients_per_round=clients_per_round,
        local_epochs=1,
        seed=seed,
        callbacks=[timer],
        eval_every=None,
        progress_bar=False,
        executor=executor,
    )
    torch.manual_seed(seed)
    model = make_model()
    start = time.perf_counter()
    trainer.fit(model, dm)
    return timer.times, time.perf_counter() - start, model


def max_diff(a: LightningModule, b: LightningModule) -> float:
    """Largest absolute difference between two models' states."""
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


def projection(
    client_seconds: list[float], overhead_s: float, clients: int, workers: list[int]
) -> dict[str, float]:
    """Rounds per hour on ``w`` Ray workers from measured per-client seconds.

    A round costs the slowest worker's share, ``ceil(clients / w)`` clients at the measured
    mean, plus the driver's fixed cost per round (snapshot, messages, aggregation), measured
    as the round time not spent in clients on the busiest worker.
    """
    mean = statistics.fmean(client_seconds)
    return {
        str(w): round(3600.0 / (math.ceil(clients / w) * mean + overhead_s), 1) for w in workers
    }


WORKLOADS: dict[str, dict[str, Any]] = {
    "phase2_conv": {"model": ConvAutoencoder7, "clients_per_round": 90, "rounds": 1},
    "phase2_flat": {"model": FlatAutoencoder, "clients_per_round": 90, "rounds": 1},
    "core": {"model": lambda: MNISTClassifier(lr=0.01), "clients_per_round": 10, "rounds": 5},
}


def datamodule(name: str) -> FederatedDataModule:
    """The workload's datamodule on the real Fashion-MNIST."""
    if name.startswith("phase2"):
        return AnomalyDataModule(
            "fashion_mnist", clients_per_class=9, outlier_fraction=0.1, batch_size=32, seed=0
        )
    return FederatedDataModule(
        "fashion_mnist",
        partition=SortedShards(num_clients=100, shards_per_client=2),
        batch_size=60,
        seed=0,
    )


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time one workload with every executor and the plain loop."""
    spec = WORKLOADS[name]
    make_model = spec["model"]
    rounds = args.rounds if args.rounds is not None else spec["rounds"]
    clients = spec["clients_per_round"]
    if args.quick:
        rounds, clients = 1, min(clients, 10)
    dm = datamodule(name)
    dm.setup()
    seconds: dict[str, float] = {}
    models: dict[str, LightningModule] = {}
    extra: dict[str, Any] = {}
    for executor_name in args.executors:
        if executor_name == "plain":
            seconds["plain"] = statistics.median(plain_loop(make_model, dm, rounds, clients, 0))
            continue
        executor: Executor
        if executor_name == "vectorized":
            executor = VectorizedExecutor()
        elif executor_name == "ray":
            executor = RayExecutor(
                num_workers=args.ray_workers,
                init_kwargs={"num_cpus": args.ray_workers, "include_dashboard": False},
            )
        else:
            executor = resolve_executor(executor_name)
        times, wall, model = run_executor(make_model, dm, executor, rounds, clients, 0)
        seconds[executor_name] = statistics.median(times)
        models[executor_name] = model
        if isinstance(executor, AutoExecutor):
            extra["auto_choice"] = executor.choice
            extra["auto_probe"] = {k: round(v, 4) for k, v in executor.timings.items()}
        if isinstance(executor, VectorizedExecutor) and executor.fallbacks:
            extra["vectorized_fallbacks"] = [r for _, r in executor.fallbacks][:1]
        if isinstance(executor, RayExecutor):
            per_client = [s for rnd in executor.client_seconds for s in rnd.values()]
            # Balanced pool: the busiest worker holds about 1/w of the clients' seconds.
            busiest = statistics.median(
                sum(rnd.values()) / args.ray_workers for rnd in executor.client_seconds
            )
            overhead = max(0.0, seconds["ray"] - busiest)
            extra["ray_client_s_mean"] = round(statistics.fmean(per_client), 4)
            extra["ray_round_overhead_s"] = round(overhead, 4)
            extra["ray_startup_s"] = round(wall - sum(times), 2)
            extra["ray_rounds_per_hour_by_workers"] = projection(
                per_client, overhead, clients, [1, 2, 4, 8, 16, 32, 64]
            )
    ref = models.get("sequential")
    out: dict[str, Any] = {
        "workload": name,
        "clients_per_round": clients,
        "rounds": rounds,
        "torch_threads": torch.get_num_threads(),
        "s_per_round": {k: round(v, 3) for k, v in seconds.items()},
    }
    if "plain" in seconds:
        out["ratio_to_plain"] = {
            k: round(v / seconds["plain"], 3) for k, v in seconds.items() if k != "plain"
        }
    if "sequential" in seconds:
        out["speedup_vs_sequential"] = {
            k: round(seconds["sequential"] / v, 3)
            for k, v in seconds.items()
            if k not in ("sequential", "plain")
        }
    if ref is not None:
        out["max_abs_diff_vs_sequential"] = {
            k: max_diff(ref, m) for k, m in models.items() if k != "sequential"
        }
    out.update(extra)
    return out


def main() -> None:
    """Run the workloads and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument(
        "--executors",
        nargs="+",
        default=["plain", "sequential", "vectorized", "ray"],
        choices=["plain", "sequential", "vectorized", "ray", "auto"],
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds per executor")
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--quick", action="store_true", help="10 clients, 1 round")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for name in args.workloads:
        print(json.dumps(bench(name, args)), flush=True)


if __name__ == "__main__":
    main()
