"""Centralized training of the same LightningModule: the baseline federated runs are held to.

One optimizer (from the module's ``configure_optimizers``) lives across all epochs, as in
ordinary training, and the module is evaluated on the test loader after every epoch, so
centralized and federated runs give loss curves of the same kind. (A federated trainer with
one client and one local epoch per round is close to this but not equal: local training
builds a fresh optimizer each round, which resets Adam's moments.)

References:
    "Federated learning with variational autoencoders", ICLR 2023 Tiny Papers (seed 002),
    section 2.3 (the "standard" model trained for 25 epochs).

With ``checkpoint`` the run's state (weights, optimizer, scheduler, torch's generator,
history) is written atomically after every epoch; ``resume`` continues from such a file to
the result of an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import Logger
from torch.optim.lr_scheduler import ReduceLROnPlateau

from fedlightning.checkpoint import load_checkpoint, save_checkpoint
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
    checkpoint: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
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
        checkpoint: File the run's state is written to (atomically) after every epoch.
        resume: A file written through ``checkpoint`` by an earlier call with the same
            module, loader and seed: the weights, optimizer, scheduler, generator and
            history are restored and training continues with the next epoch (``epochs``
            may be larger than the earlier call's). The returned history includes the
            earlier epochs; ``wall_s`` counts their time too.

    Returns:
        One entry per epoch: ``epoch``, the means of what ``training_step`` logged,
        ``train_loss``, the test metrics (prefixed ``test_`` when the module did not prefix
        them) and ``wall_s`` (seconds since the start).

    Raises:
        ValueError: If ``epochs < 1``, the module does not return one optimizer, or
            ``resume`` holds more epochs than ``epochs``.
        fedlightning.checkpoint.CheckpointError: If ``resume`` cannot be read.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got epochs={epochs!r}")
    setup = parse_optimizers(module.configure_optimizers(), type(module).__name__)
    optimizer = setup.optimizer
    history: list[dict[str, float]] = []
    done, wall_before, rng = 0, 0.0, None
    if resume is not None:
        state = load_checkpoint(resume)
        done = int(state["epoch"])
        if done > epochs:
            raise ValueError(
                f"resume={resume} holds {done} epochs, more than epochs={epochs}; "
                f"pass epochs >= {done}"
            )
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        if setup.scheduler is not None and state.get("scheduler") is not None:
            setup.scheduler.load_state_dict(state["scheduler"])
        history = [dict(h) for h in state["history"]]
        wall_before = float(history[-1]["wall_s"]) if history else 0.0
        rng = state["rng"]
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if rng is not None:
            torch.set_rng_state(rng)
        for epoch in range(done + 1, epochs + 1):
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
            entry["wall_s"] = wall_before + time.perf_counter() - start
            history.append(entry)
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint,
                    {
                        "epoch": epoch,
                        "module": module.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": (
                            setup.scheduler.state_dict() if setup.scheduler is not None else None
                        ),
                        "history": [dict(h) for h in history],
                        "rng": torch.get_rng_state(),
                    },
                )
            for logger in loggers:
                logger.log_metrics(entry, step=epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch, entry)
    return history
