"""fedlightning against a hand-written PyTorch FedAvg loop, on the same workload.

Workload (the core example's): Fashion-MNIST, 100 clients with 2 label-sorted shards each,
the small CNN of :class:`~fedlightning.models.MNISTClassifier`, SGD lr 0.01, batch 60,
1 local epoch, 10 clients per round. The plain loop is ``benchmarks/plain_loop.py`` (shared
with ``benchmarks/executors.py``): it trains the same clients on the same batches and ends
with the same global model. One untimed round of each warms up the process first; then
they run alternately in blocks of rounds, the first one swapping every block, so that
machine noise hits both alike.

Prints one JSON line: ``fedlightning_s_per_round``, ``raw_s_per_round`` (the plain loop),
``ratio`` (of the medians over all rounds), ``block_ratios`` (the same ratio within each
block: their spread is the machine's noise, which on a shared 2-core machine is several
percent), ``device`` and ``peak_rss_mb``. Target: ratio <= 1.10, peak RSS <= 1.5 GB.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [--blocks 6] [--rounds-per-block 10]
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --blocks 2 --rounds-per-block 3  # quick
    python benchmarks/overhead.py --accelerator cuda

With one thread the two loops compare stably; with two, OpenMP scheduling on a small,
shared machine moves single blocks by 10-30%.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
from collections.abc import Callable

import torch
from plain_loop import (
    ACCELERATORS,
    SyncedRoundTimer,
    classification_loss,
    plain_fedavg,
    resolve_device,
)

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg
from fedlightning.datamodules import FederatedDataModule, SortedShards
from fedlightning.models import MNISTClassifier

Runner = Callable[[FederatedDataModule, int, int, int], list[float]]
"""``(dm, rounds, seed, clients_per_round) -> seconds per round``."""


def make_model() -> MNISTClassifier:
    """The workload's model."""
    return MNISTClassifier(lr=0.01)


def raw_runner(accelerator: str) -> Runner:
    """The plain PyTorch FedAvg loop on the device ``accelerator`` means."""
    device = resolve_device(accelerator)

    def run(dm: FederatedDataModule, rounds: int, seed: int, clients_per_round: int) -> list[float]:
        return plain_fedavg(
            make_model,
            dm,
            rounds=rounds,
            clients_per_round=clients_per_round,
            seed=seed,
            loss_fn=classification_loss,
            device=device,
        ).times

    return run


def fedlightning_runner(accelerator: str) -> Runner:
    """The same workload through FederatedTrainer (no evaluation, no logger)."""
    device = resolve_device(accelerator)

    def run(dm: FederatedDataModule, rounds: int, seed: int, clients_per_round: int) -> list[float]:
        timer = SyncedRoundTimer(device)
        trainer = FederatedTrainer(
            algorithm=FedAvg(),
            rounds=rounds,
            clients_per_round=clients_per_round,
            local_epochs=1,
            seed=seed,
            callbacks=[timer],
            eval_every=None,
            progress_bar=False,
            accelerator=accelerator,
        )
        torch.manual_seed(seed)
        trainer.fit(make_model(), dm)
        return timer.times

    return run


def run_blocks(
    runners: dict[str, Runner], dm: FederatedDataModule, args: argparse.Namespace
) -> tuple[dict[str, list[float]], list[float]]:
    """One untimed warm-up round of each, then the timed blocks in alternating order.

    Returns:
        Every timed round's seconds by runner, and each block's ratio fedlightning / raw.
    """
    for run in runners.values():
        run(dm, 1, args.blocks, args.clients_per_round)  # warm-up, not timed
    times: dict[str, list[float]] = {name: [] for name in runners}
    block_ratios: list[float] = []
    for block in range(args.blocks):
        # Alternate which goes first so that noise and any leftover warm-up are shared fairly.
        order = list(runners) if block % 2 == 0 else list(reversed(runners))
        medians = {}
        for name in order:
            block_times = runners[name](dm, args.rounds_per_block, block, args.clients_per_round)
            times[name].extend(block_times)
            medians[name] = statistics.median(block_times)
        block_ratios.append(medians["fedlightning"] / medians["raw"])
    return times, block_ratios


def main() -> None:
    """Run the comparison and print one JSON line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--rounds-per-block", type=int, default=10)
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--accelerator", default="cpu", choices=ACCELERATORS)
    args = parser.parse_args()
    dm = FederatedDataModule(
        "fashion_mnist",
        partition=SortedShards(num_clients=100, shards_per_client=2),
        batch_size=60,
        seed=0,
    )
    dm.setup()
    runners = {
        "fedlightning": fedlightning_runner(args.accelerator),
        "raw": raw_runner(args.accelerator),
    }
    times, block_ratios = run_blocks(runners, dm, args)
    fl_s = statistics.median(times["fedlightning"])
    raw_s = statistics.median(times["raw"])
    print(
        json.dumps(
            {
                "workload": "fashion_mnist/shards-2/100 clients/"
                f"{args.clients_per_round} per round/1 epoch/batch 60",
                "device": str(resolve_device(args.accelerator)),
                "rounds_each": len(times["fedlightning"]),
                "fedlightning_s_per_round": round(fl_s, 4),
                "raw_s_per_round": round(raw_s, 4),
                "ratio": round(fl_s / raw_s, 3),
                "block_ratios": [round(r, 3) for r in block_ratios],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
