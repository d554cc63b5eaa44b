"""Centralized training of the same LightningModule: the baseline federated runs are held to.

One optimizer (from the module's ``configure_optimizers``) lives across all epochs, as in
ordinary training, and the module is evaluated on the test loader after every epoch, so
centralized and federated runs give loss curves of the same kind. (A federated trainer with
one client and one local epoch per round is close to this but not equal: local training
builds a fresh optimizer each round, which resets Adam's moments.)

References:
    "Federated learning with variational autoencoders", ICLR 2023 Tiny Papers (seed 002),
    section 2.3 (the "standard" model trained for 25 epochs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import Logger
from torch.optim.lr_scheduler import ReduceLROnPlateau

from fedlightning.client import LogSink, capture_logs, parse_optimizers
from fedlightning.evaluation import evaluate

__all__ = ["fit_centralized"]

EpochCallback = Callable[[int, Mapping[str, float]], None]


def fit_centralized(
    module: LightningModule,
    train_loader: Iterable[Any],
    *,
    epochs: int,
    test_loader: Iterable[Any] | None = None,
    seed: int = 0,
    loggers: Sequence[Logger] = (),
    on_epoch_end: EpochCallback | None = None,
) -> list[dict[str, float]]:
    """Train ``module`` on one loader for ``epochs`` epochs with one optimizer.

    Args:
        module: Any LightningModule with ``training_step`` and ``configure_optimizers``
            (one optimizer; an epoch-interval scheduler is stepped after each epoch).
        train_loader: Training batches; its ``set_epoch(epoch)`` is called before each
            epoch when it has one (e.g. :class:`~fedlightning.datamodules.TensorLoader`).
        epochs: Number of epochs, >= 1.
        test_loader: Evaluated after each epoch with the module's ``test_step``.
        seed: Seeds torch's generator for the run (the module's own randomness, e.g. a
            VAE's posterior noise); the global generator is restored afterwards.
        loggers: Lightning loggers receiving each epoch's entry at ``step=epoch``.
        on_epoch_end: Called with ``(epoch, entry)`` after each epoch.

    Returns:
        One entry per epoch: ``epoch``, the means of what ``training_step`` logged,
        ``train_loss``, the test metrics (prefixed ``test_`` when the module did not prefix
        them) and ``wall_s`` (seconds since the start).

    Raises:
        ValueError: If ``epochs < 1`` or the module does not return one optimizer.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got epochs={epochs!r}")
    setup = parse_optimizers(module.configure_optimizers(), type(module).__name__)
    optimizer = setup.optimizer
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            set_epoch = getattr(train_loader, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch - 1)
            module.train()
            sink = LogSink()
            with capture_logs(module, sink):
                for batch_idx, batch in enumerate(train_loader):
                    out = module.training_step(batch, batch_idx)
                    loss = out["loss"] if isinstance(out, Mapping) else out
                    if loss is None:
                        continue
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    sink.add("train_loss", loss.detach())
            entry: dict[str, float] = {"epoch": float(epoch), **sink.means()}
            if test_loader is not None:
                metrics = evaluate(module, test_loader)
                entry.update(
                    {k if k.startswith("test_") else f"test_{k}": v for k, v in metrics.items()}
                )
            if setup.scheduler is not None and epoch % setup.frequency == 0:
                if isinstance(setup.scheduler, ReduceLROnPlateau):
                    setup.scheduler.step(entry.get(setup.monitor or "train_loss", math.nan))
                else:
                    setup.scheduler.step()
            entry["wall_s"] = time.perf_counter() - start
            history.append(entry)
            for logger in loggers:
                logger.log_metrics(entry, step=epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch, entry)
    return history
