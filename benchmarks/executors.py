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

The plain loop is ``benchmarks/plain_loop.py``, shared with ``benchmarks/overhead.py``: the
same clients, batches, optimizer and aggregation as FedAvg on the trainer, so its global
model equals the sequential executor's. Every contender (the plain loop included) first runs
``--warmup-rounds`` untimed rounds; then each runs ``--rounds`` timed rounds per block, for
``--blocks`` blocks, the order reversed every other block so that no contender always runs
first. All run on the device of ``--accelerator``.

Prints one JSON line per workload: the ``device``, ``s_per_round`` for each executor and the
plain loop (median over all timed rounds), ``ratio_to_plain`` (executor time / plain-loop
time: below 1 is faster than the loop) and the same ratio within each block
(``block_ratios_to_plain``: their spread is the machine's noise), the choice and probe
timings of ``executor="auto"`` when it runs, the global models' largest difference from the
sequential executor's (plain loop included), and for Ray the measured per-client seconds,
its pool start-up time and a rounds-per-hour projection by worker count.

    python benchmarks/executors.py --threads 1         # all workloads
    python benchmarks/executors.py --workloads phase2_flat --rounds 2
    python benchmarks/executors.py --quick             # small, for a smoke test
    python benchmarks/executors.py --accelerator cuda --executors plain sequential vectorized
    python benchmarks/executors.py --client-half       # what the Ray executor ships per round

``--client-half`` measures, for FedMorph (masked ResNet8, distilling on the 10,000 test
images, the paper's default) and Fed-FSNet (the small CNN) on Fashion-MNIST after one round,
the pickled size of the algorithm's client half (what a Ray worker receives each round) and
of the whole algorithm without its server context (what was shipped before algorithms had
two halves), and their ratio.

The CPU may be shared; figures are medians over rounds, but still noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule
from plain_loop import (
    ACCELERATORS,
    LossFn,
    SyncedRoundTimer,
    classification_loss,
    plain_fedavg,
    reconstruction_loss,
    resolve_device,
)

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg
from fedlightning.datamodules import FederatedDataModule, SortedShards
from fedlightning.datamodules.anomaly import AnomalyDataModule
from fedlightning.executors import Executor, resolve_executor
from fedlightning.executors.auto import AutoExecutor
from fedlightning.executors.ray import RayExecutor
from fedlightning.executors.vectorized import VectorizedExecutor
from fedlightning.models import MNISTClassifier
from fedlightning.models.autoencoders import ConvAutoencoder7, FlatAutoencoder

CONTENDERS = ["plain", "sequential", "vectorized", "ray", "auto"]


@dataclass(frozen=True)
class Workload:
    """A benchmark workload.

    Attributes:
        model: Builds the model (called after ``torch.manual_seed``).
        loss: The model's ``training_step`` loss, for the plain loop.
        clients_per_round: Clients per round.
        rounds: Timed rounds per block by default.
    """

    model: Callable[[], LightningModule]
    loss: LossFn
    clients_per_round: int
    rounds: int


WORKLOADS: dict[str, Workload] = {
    "phase2_conv": Workload(ConvAutoencoder7, reconstruction_loss, 90, 1),
    "phase2_flat": Workload(FlatAutoencoder, reconstruction_loss, 90, 1),
    "core": Workload(lambda: MNISTClassifier(lr=0.01), classification_loss, 10, 5),
}


@dataclass(frozen=True)
class Setting:
    """What every contender of one workload runs with.

    Attributes:
        workload: The workload.
        dm: Its datamodule (set up).
        rounds: Timed rounds per block.
        clients: Clients per round.
        accelerator: The ``--accelerator`` value, handed to the trainer.
        device: The device it means, for the plain loop.
        ray_workers: Ray actors.
    """

    workload: Workload
    dm: FederatedDataModule
    rounds: int
    clients: int
    accelerator: str
    device: torch.device
    ray_workers: int


@dataclass
class Run:
    """One fit of one contender.

    Attributes:
        times: Seconds of each round.
        wall: Seconds of the whole fit (set-up and tear-down included).
        model: The final global model.
        executor: The trainer's executor (``None`` for the plain loop).
    """

    times: list[float]
    wall: float
    model: LightningModule
    executor: Executor | None = None


def make_executor(name: str, ray_workers: int) -> Executor:
    """A fresh executor for one fit."""
    if name == "vectorized":
        return VectorizedExecutor()
    if name == "ray":
        return RayExecutor(
            num_workers=ray_workers,
            init_kwargs={"num_cpus": ray_workers, "include_dashboard": False},
        )
    return resolve_executor(name)


def run_plain(setting: Setting, rounds: int, seed: int) -> Run:
    """The shared plain PyTorch FedAvg loop on the workload."""
    start = time.perf_counter()
    result = plain_fedavg(
        setting.workload.model,
        setting.dm,
        rounds=rounds,
        clients_per_round=setting.clients,
        seed=seed,
        loss_fn=setting.workload.loss,
        device=setting.device,
    )
    return Run(result.times, time.perf_counter() - start, result.model)


def run_executor(setting: Setting, executor: Executor, rounds: int, seed: int) -> Run:
    """FederatedTrainer with FedAvg on the workload, through ``executor``."""
    timer = SyncedRoundTimer(setting.device)
    trainer = FederatedTrainer(
        algorithm=FedAvg(),
        rounds=rounds,
        clients_per_round=setting.clients,
        local_epochs=1,
        seed=seed,
        callbacks=[timer],
        eval_every=None,
        progress_bar=False,
        executor=executor,
        accelerator=setting.accelerator,
    )
    torch.manual_seed(seed)
    model = setting.workload.model()
    start = time.perf_counter()
    trainer.fit(model, setting.dm)
    return Run(timer.times, time.perf_counter() - start, model, executor)


def run_contender(name: str, setting: Setting, rounds: int, seed: int) -> Run:
    """One fit of the plain loop or of the trainer with executor ``name``."""
    if name == "plain":
        return run_plain(setting, rounds, seed)
    return run_executor(setting, make_executor(name, setting.ray_workers), rounds, seed)


def time_contenders(
    setting: Setting, names: list[str], blocks: int, warmup_rounds: int
) -> dict[str, list[Run]]:
    """Warm every contender up, then time them block by block in alternating order.

    Args:
        setting: The workload's setting.
        names: The contenders.
        blocks: Timed fits per contender; block ``b`` uses seed ``b``.
        warmup_rounds: Untimed rounds of each contender before the first block (0: none).

    Returns:
        Each contender's timed fits, one per block.
    """
    if warmup_rounds > 0:
        for name in names:
            run_contender(name, setting, warmup_rounds, seed=blocks)  # not timed
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for block in range(blocks):
        order = names if block % 2 == 0 else names[::-1]
        for name in order:
            runs[name].append(run_contender(name, setting, setting.rounds, seed=block))
    return runs


def max_diff(a: LightningModule, b: LightningModule) -> float:
    """Largest absolute difference between two models' states."""
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].cpu() - sb[k].cpu()).abs().max()) for k in sa)


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


def ray_extras(runs: list[Run], s_per_round: float, setting: Setting) -> dict[str, object]:
    """Per-client seconds, driver overhead, start-up and projection from the timed Ray fits."""
    rounds = [
        rnd
        for run in runs
        if isinstance(run.executor, RayExecutor)
        for rnd in run.executor.client_seconds
    ]
    per_client = [s for rnd in rounds for s in rnd.values()]
    # Balanced pool: the busiest worker holds about 1/w of the clients' seconds.
    busiest = statistics.median(sum(rnd.values()) / setting.ray_workers for rnd in rounds)
    overhead = max(0.0, s_per_round - busiest)
    return {
        "ray_client_s_mean": round(statistics.fmean(per_client), 4),
        "ray_round_overhead_s": round(overhead, 4),
        "ray_startup_s": round(statistics.median(r.wall - sum(r.times) for r in runs), 2),
        "ray_rounds_per_hour_by_workers": projection(
            per_client, overhead, setting.clients, [1, 2, 4, 8, 16, 32, 64]
        ),
    }


def executor_extras(
    runs: dict[str, list[Run]], seconds: dict[str, float], setting: Setting
) -> dict[str, object]:
    """What the auto, vectorized and Ray executors report about their timed fits."""
    extra: dict[str, object] = {}
    for run in runs.get("auto", [])[-1:]:
        assert isinstance(run.executor, AutoExecutor)
        extra["auto_choice"] = run.executor.choice
        extra["auto_probe"] = {k: round(v, 4) for k, v in run.executor.timings.items()}
    fallbacks = [
        reason
        for run in runs.get("vectorized", [])
        if isinstance(run.executor, VectorizedExecutor)
        for _, reason in run.executor.fallbacks
    ]
    if fallbacks:
        extra["vectorized_fallbacks"] = fallbacks[:1]
    if "ray" in runs:
        extra.update(ray_extras(runs["ray"], seconds["ray"], setting))
    return extra


def block_ratios(runs: dict[str, list[Run]]) -> dict[str, list[float]]:
    """Each contender's median round time over the plain loop's, block by block."""
    plain = [statistics.median(r.times) for r in runs["plain"]]
    return {
        name: [round(statistics.median(r.times) / p, 3) for r, p in zip(fits, plain, strict=True)]
        for name, fits in runs.items()
        if name != "plain"
    }


def summarize(name: str, setting: Setting, runs: dict[str, list[Run]]) -> dict[str, object]:
    """The JSON line of one workload."""
    seconds = {k: statistics.median(t for r in fits for t in r.times) for k, fits in runs.items()}
    out: dict[str, object] = {
        "workload": name,
        "device": str(setting.device),
        "clients_per_round": setting.clients,
        "rounds": setting.rounds,
        "blocks": len(next(iter(runs.values()))),
        "torch_threads": torch.get_num_threads(),
        "s_per_round": {k: round(v, 3) for k, v in seconds.items()},
    }
    if "plain" in seconds:
        out["ratio_to_plain"] = {
            k: round(v / seconds["plain"], 3) for k, v in seconds.items() if k != "plain"
        }
        out["block_ratios_to_plain"] = block_ratios(runs)
    if "sequential" in seconds:
        out["speedup_vs_sequential"] = {
            k: round(seconds["sequential"] / v, 3)
            for k, v in seconds.items()
            if k not in ("sequential", "plain")
        }
        # The last block: every contender ran it with the same seed.
        ref = runs["sequential"][-1].model
        out["max_abs_diff_vs_sequential"] = {
            k: max_diff(ref, fits[-1].model) for k, fits in runs.items() if k != "sequential"
        }
    out.update(executor_extras(runs, seconds, setting))
    return out


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


def bench(name: str, args: argparse.Namespace) -> dict[str, object]:
    """Time one workload with every contender."""
    workload = WORKLOADS[name]
    rounds = args.rounds if args.rounds is not None else workload.rounds
    clients = workload.clients_per_round
    if args.quick:
        rounds, clients = 1, min(clients, 10)
    dm = datamodule(name)
    dm.setup()
    setting = Setting(
        workload=workload,
        dm=dm,
        rounds=rounds,
        clients=clients,
        accelerator=args.accelerator,
        device=resolve_device(args.accelerator),
        ray_workers=args.ray_workers,
    )
    runs = time_contenders(setting, list(args.executors), args.blocks, args.warmup_rounds)
    return summarize(name, setting, runs)


def client_half_sizes() -> list[dict[str, object]]:
    """Pickled bytes per round: the client half against the whole algorithm, after 1 round."""
    import copy

    from ray import cloudpickle

    from fedlightning.algorithms import FedFSNet, FedMorph
    from fedlightning.models import MNISTClassifier
    from fedlightning.models.masked import MaskedResNet8

    out: list[dict[str, object]] = []
    cases: list[tuple[str, Callable[[], Any], Callable[[], LightningModule]]] = [
        ("fedmorph", FedMorph, lambda: MaskedResNet8(masked=True)),
        ("fsnet", FedFSNet, MNISTClassifier),
    ]
    for name, make_algorithm, make_model in cases:
        algorithm = make_algorithm()
        trainer = FederatedTrainer(
            algorithm=algorithm,
            rounds=1,
            clients_per_round=2,
            local_epochs=None,
            local_steps=1,
            eval_every=None,
            progress_bar=False,
            seed=0,
        )
        trainer.fit(make_model(), datamodule("core"))
        whole = copy.copy(algorithm)
        whole.__dict__["_server"] = None  # the trainer never travelled
        whole_bytes = len(cloudpickle.dumps(whole))
        half_bytes = len(cloudpickle.dumps(algorithm.client_half()))
        out.append(
            {
                "workload": f"client_half_{name}",
                "algorithm": type(algorithm).__name__,
                "whole_algorithm_bytes": whole_bytes,
                "client_half_bytes": half_bytes,
                "ratio": half_bytes / whole_bytes,
            }
        )
    return out


def main() -> None:
    """Run the workloads and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument(
        "--executors",
        nargs="+",
        default=["plain", "sequential", "vectorized", "ray"],
        choices=CONTENDERS,
        help="contenders, in block 0's order",
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per block")
    parser.add_argument("--blocks", type=int, default=2, help="timed fits per contender")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--accelerator", default="cpu", choices=ACCELERATORS)
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--quick", action="store_true", help="10 clients, 1 round per block")
    parser.add_argument(
        "--client-half", action="store_true", help="only the client-half sizes (no timing)"
    )
    args = parser.parse_args()
    if args.client_half:
        for line in client_half_sizes():
            print(json.dumps(line), flush=True)
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for name in args.workloads:
        print(json.dumps(bench(name, args)), flush=True)


if __name__ == "__main__":
    main()
