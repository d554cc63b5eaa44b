"""fedlightning against a hand-written PyTorch FedAvg loop, on the same workload.

Workload (the core example's): Fashion-MNIST, 100 clients with 2 label-sorted shards each,
the small CNN of :class:`~fedlightning.models.MNISTClassifier`, SGD lr 0.01, batch 60,
1 local epoch, 10 clients per round. Both loops train the same clients on the same data;
they run alternately in blocks of rounds so that machine noise hits both alike.

Prints one JSON line: ``fedlightning_s_per_round``, ``raw_s_per_round``, ``ratio`` (of the
medians over all rounds), ``block_ratios`` (the same ratio within each block: their spread
is the machine's noise, which on a shared 2-core machine is several percent), and
``peak_rss_mb``. Target: ratio <= 1.10, peak RSS <= 1.5 GB.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [--blocks 6] [--rounds-per-block 10]

With one thread the two loops compare stably; with two, OpenMP scheduling on a small,
shared machine moves single blocks by 10-30%.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg
from fedlightning.callbacks import RoundTimer
from fedlightning.datamodules import FederatedDataModule, SortedShards
from fedlightning.models import MNISTClassifier


def raw_fedavg(
    dm: FederatedDataModule, rounds: int, seed: int, clients_per_round: int
) -> list[float]:
    """A plain PyTorch FedAvg loop: what a researcher would write by hand."""
    torch.manual_seed(seed)
    global_model = MNISTClassifier(lr=0.01)
    local = MNISTClassifier(lr=0.01)
    rng = np.random.default_rng(seed)
    data = {c: dm.client_data(c) for c in dm.client_ids}
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        chosen = rng.choice(len(dm.client_ids), size=clients_per_round, replace=False)
        global_state = global_model.state_dict()
        total = 0
        acc: dict[str, torch.Tensor] = {}
        for client in chosen:
            x, y = data[int(client)]
            local.load_state_dict(global_state)
            opt = torch.optim.SGD(local.parameters(), lr=0.01)
            perm = torch.randperm(len(y))
            for i in range(0, len(y), dm.batch_size):
                idx = perm[i : i + dm.batch_size]
                loss = F.cross_entropy(local(x[idx]), y[idx])
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


def fedlightning_fedavg(
    dm: FederatedDataModule, rounds: int, seed: int, clients_per_round: int
) -> list[float]:
    """The same workload through FederatedTrainer (no evaluation, no logger)."""
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
    )
    torch.manual_seed(seed)
    trainer.fit(MNISTClassifier(lr=0.01), dm)
    return timer.times


def main() -> None:
    """Run the comparison and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--rounds-per-block", type=int, default=10)
    parser.add_argument("--clients-per-round", type=int, default=10)
    args = parser.parse_args()
    dm = FederatedDataModule(
        "fashion_mnist",
        partition=SortedShards(num_clients=100, shards_per_client=2),
        batch_size=60,
        seed=0,
    )
    dm.setup()
    fl: list[float] = []
    raw: list[float] = []
    block_ratios: list[float] = []
    for block in range(args.blocks):
        # Alternate which goes first so that warm-up and noise are shared fairly.
        order = (
            [fedlightning_fedavg, raw_fedavg]
            if block % 2 == 0
            else [raw_fedavg, fedlightning_fedavg]
        )
        medians = {}
        for run in order:
            times = run(dm, args.rounds_per_block, block, args.clients_per_round)
            (fl if run is fedlightning_fedavg else raw).extend(times)
            medians[run] = statistics.median(times)
        block_ratios.append(medians[fedlightning_fedavg] / medians[raw_fedavg])
    fl_s = statistics.median(fl)
    raw_s = statistics.median(raw)
    print(
        json.dumps(
            {
                "workload": "fashion_mnist/shards-2/100 clients/10 per round/1 epoch/batch 60",
                "rounds_each": len(fl),
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
