"""The hand-written PyTorch FedAvg loop that the benchmarks compare fedlightning with.

One implementation, imported by ``benchmarks/overhead.py`` and ``benchmarks/executors.py``.
It does the maths of ``FederatedTrainer`` with :class:`~fedlightning.algorithms.FedAvg`,
op for op, without the framework around it:

* the same clients: round ``r`` (from 1) picks ``clients_per_round`` clients uniformly
  without replacement with ``derive_rng(seed, r, STREAM_SELECT)``, sorted;
* the same local training: the module's own ``configure_optimizers`` (a fresh optimizer per
  client and round), ``local_epochs`` passes over the client's data in batches of
  ``dm.batch_size``, each pass in the order of ``np.random.default_rng([client_seed, epoch])``
  with the client seed ``derive_seed(seed, r, client, STREAM_CLIENT)``, the last batch
  kept short;
* the same aggregation: the global weights plus the sample-weighted mean of the clients'
  updates (local minus global), accumulated in client order.

Given the same seed, its global model equals the sequential executor's (``max_abs_diff``
0 with one torch thread on a CPU), so that a time ratio to it compares equal work.

The loop runs on one device (see :func:`resolve_device`): the models live there and every
batch is sliced on the CPU and moved there, as ``fedlightning``'s loaders do. Each round's
time ends after the device has finished its work (:func:`synchronize`); fedlightning runs
are timed with :class:`SyncedRoundTimer`, which waits the same way.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor

from fedlightning.callbacks import RoundTimer
from fedlightning.datamodules import FederatedDataModule
from fedlightning.round import STREAM_CLIENT, STREAM_SELECT, derive_rng, derive_seed
from fedlightning.trainer import FederatedTrainer

__all__ = [
    "ACCELERATORS",
    "LossFn",
    "PlainRun",
    "SyncedRoundTimer",
    "classification_loss",
    "plain_fedavg",
    "reconstruction_loss",
    "resolve_device",
    "synchronize",
]

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
"""The ``--accelerator`` choices of the benchmarks."""

LossFn = Callable[[torch.nn.Module, Tensor, Tensor], Tensor]
"""``(model, x, y) -> loss`` of one batch: the module's ``training_step`` loss, by hand."""


def classification_loss(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of the logits (the classifiers' ``training_step``)."""
    return F.cross_entropy(model(x), y)


def reconstruction_loss(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean squared reconstruction error, labels unused (the autoencoders' ``training_step``)."""
    return F.mse_loss(model(x), x)


def resolve_device(accelerator: str) -> torch.device:
    """The device an ``--accelerator`` value means, resolved as the trainer resolves it.

    Args:
        accelerator: One of :data:`ACCELERATORS`. ``"auto"`` is CUDA when available, else
            MPS when available, else the CPU; ``"gpu"`` is CUDA, else MPS.

    Returns:
        The device (index 0 for CUDA).

    Raises:
        ValueError: For an unknown value, or a device this machine does not have.
    """
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {ACCELERATORS}, got {accelerator!r}")
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if accelerator in ("auto", "gpu"):
        if accelerator == "gpu" and not (cuda or mps):
            raise ValueError("accelerator='gpu' but neither CUDA nor MPS is available")
        accelerator = "cuda" if cuda else "mps" if mps else "cpu"
    if accelerator == "cuda" and not cuda:
        raise ValueError("accelerator='cuda' but CUDA is not available")
    if accelerator == "mps" and not mps:
        raise ValueError("accelerator='mps' but MPS is not available")
    return torch.device("cuda", 0) if accelerator == "cuda" else torch.device(accelerator)


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished the work queued on it (nothing to do on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class SyncedRoundTimer(RoundTimer):
    """A :class:`~fedlightning.callbacks.RoundTimer` that waits for the device before a
    round's time is taken, as :func:`plain_fedavg` does.

    Args:
        device: The device the trainer computes on.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device

    def on_round_end(self, trainer: FederatedTrainer, round: int) -> None:
        """Synchronize the device, then record the round's time."""
        synchronize(self.device)
        super().on_round_end(trainer, round)


@dataclass
class PlainRun:
    """What :func:`plain_fedavg` returns.

    Attributes:
        times: Seconds of each round.
        model: The final global model.
    """

    times: list[float]
    model: LightningModule


def select_clients(client_ids: Sequence[int], k: int, seed: int, rnd: int) -> list[int]:
    """The ``k`` clients of round ``rnd``, as FedAvg's ``select_clients`` picks them."""
    chosen = derive_rng(seed, rnd, STREAM_SELECT).choice(len(client_ids), size=k, replace=False)
    return sorted(int(client_ids[i]) for i in chosen)


def make_optimizer(module: LightningModule) -> torch.optim.Optimizer:
    """The module's own optimizer (``configure_optimizers`` must return a single one)."""
    optimizer = module.configure_optimizers()
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"the plain loop needs configure_optimizers to return one optimizer, "
            f"got {type(optimizer).__name__}"
        )
    return optimizer


def train_client(
    module: LightningModule,
    data: tuple[Tensor, Tensor],
    *,
    batch_size: int,
    epochs: int,
    seed: int,
    loss_fn: LossFn,
    device: torch.device,
) -> None:
    """Train ``module`` in place on one client's data.

    Args:
        module: The client's model, already holding the global weights, on ``device``.
        data: The client's ``(x, y)`` on the CPU.
        batch_size: Samples per batch (the last batch may be shorter).
        epochs: Passes over the data, each in a fresh order.
        seed: The client's seed for the round; pass ``e`` uses ``[seed, e]``.
        loss_fn: The loss of one batch.
        device: Where the batches go.
    """
    x, y = data
    optimizer = make_optimizer(module)
    module.train()
    for epoch in range(epochs):
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(y)))
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            loss = loss_fn(module, x[idx].to(device), y[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def accumulate(mean: dict[str, Tensor], update: dict[str, Tensor], share: float) -> None:
    """Add ``share * update`` to the running weighted mean, key by key (in place)."""
    for key, delta in update.items():
        if key in mean:
            mean[key].add_(delta, alpha=share)
        else:
            mean[key] = delta * share


def fedavg_round(
    global_model: LightningModule,
    local: LightningModule,
    data: dict[int, tuple[Tensor, Tensor]],
    clients: list[int],
    *,
    client_seeds: list[int],
    batch_size: int,
    epochs: int,
    loss_fn: LossFn,
    device: torch.device,
) -> None:
    """One FedAvg round: train each client from the global weights, average the updates.

    Args:
        global_model: The server's model, updated in place.
        local: A working copy of the model, reloaded for each client.
        data: Every client's ``(x, y)``.
        clients: The round's clients, in order.
        client_seeds: Each client's seed for the round.
        batch_size: Samples per local batch.
        epochs: Local epochs.
        loss_fn: The loss of one batch.
        device: Where the models live.
    """
    received = global_model.state_dict()
    sizes = [len(data[c][1]) for c in clients]
    total = float(sum(sizes))
    mean: dict[str, Tensor] = {}
    for client, n, client_seed in zip(clients, sizes, client_seeds, strict=True):
        local.load_state_dict(received)
        train_client(
            local,
            data[client],
            batch_size=batch_size,
            epochs=epochs,
            seed=client_seed,
            loss_fn=loss_fn,
            device=device,
        )
        state = local.state_dict()
        accumulate(mean, {k: state[k] - received[k] for k in received}, n / total)
    with torch.no_grad():
        for key, value in received.items():
            value.add_(mean[key])


def plain_fedavg(
    make_model: Callable[[], LightningModule],
    dm: FederatedDataModule,
    *,
    rounds: int,
    clients_per_round: int,
    seed: int,
    loss_fn: LossFn,
    device: torch.device,
    local_epochs: int = 1,
) -> PlainRun:
    """Hand-written FedAvg: the same work as ``FederatedTrainer(algorithm=FedAvg(), ...)``.

    Args:
        make_model: Builds the model; called once after ``torch.manual_seed(seed)``, as the
            benchmarks build the model they hand to the trainer.
        dm: The federated data (set up).
        rounds: Rounds to run, numbered from 1 as the trainer does.
        clients_per_round: Clients per round.
        seed: The trainer's ``seed``.
        loss_fn: The loss of one batch, as the module's ``training_step`` computes it.
        device: Where to train.
        local_epochs: Local epochs per round.

    Returns:
        Seconds per round and the final global model.

    Raises:
        ValueError: If the model has state that is not floating point (the loop averages
            every entry as floats).
    """
    torch.manual_seed(seed)
    global_model = make_model().to(device)
    if not all(v.is_floating_point() for v in global_model.state_dict().values()):
        raise ValueError("the plain loop averages floating-point state only")
    local = copy.deepcopy(global_model)
    data = {c: dm.client_data(c) for c in dm.client_ids}
    times = []
    for rnd in range(1, rounds + 1):
        start = time.perf_counter()
        clients = select_clients(dm.client_ids, clients_per_round, seed, rnd)
        fedavg_round(
            global_model,
            local,
            data,
            clients,
            client_seeds=[derive_seed(seed, rnd, c, STREAM_CLIENT) for c in clients],
            batch_size=dm.batch_size,
            epochs=local_epochs,
            loss_fn=loss_fn,
            device=device,
        )
        synchronize(device)
        times.append(time.perf_counter() - start)
    return PlainRun(times, global_model)
