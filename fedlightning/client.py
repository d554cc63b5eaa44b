"""Local training of any LightningModule on one client's data, without a Lightning Trainer.

The loop calls the module's own hooks: ``configure_optimizers`` (an optimizer, a list, a
``(optimizers, schedulers)`` pair or a dict with ``lr_scheduler``), ``training_step`` and
``self.log``. Building a ``lightning.Trainer`` per client per round would cost tens of
milliseconds each, thousands of times in a run; this loop costs what the maths costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

__all__ = ["LogSink", "OptimizerSetup", "capture_logs", "fit_local", "parse_optimizers"]


class LogSink:
    """Collects what a module logs with ``self.log`` while the library drives it.

    It stands where Lightning's Fabric would (``module.fabric``), so ``self.log`` and
    ``self.log_dict`` work unchanged. Values are kept as they come (no tensor arithmetic on
    the hot path) and averaged once by :meth:`means`, weighted by ``weight`` when set.
    """

    def __init__(self) -> None:
        self._values: dict[str, list[Tensor | float]] = {}
        self._weights: dict[str, list[float]] = {}
        self.weight = 1.0
        self.loggers: list[Any] = []

    def log_dict(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record logged values (called by ``LightningModule.log``)."""
        for name, value in metrics.items():
            if isinstance(value, Tensor):
                if value.numel() != 1:
                    continue
                value = value.detach()
            elif not isinstance(value, (int, float)):
                continue
            if name not in self._values:
                self._values[name], self._weights[name] = [], []
            self._values[name].append(value)
            self._weights[name].append(self.weight)

    def add(self, name: str, value: Tensor | float, weight: float = 1.0) -> None:
        """Record one value under ``name`` with an explicit weight."""
        saved, self.weight = self.weight, weight
        self.log_dict({name: value})
        self.weight = saved

    def means(self) -> dict[str, float]:
        """Weighted means of everything logged."""
        out: dict[str, float] = {}
        for name, values in self._values.items():
            stacked = torch.stack(
                [
                    v.detach().reshape(()).to("cpu", torch.float64)
                    if isinstance(v, Tensor)
                    else torch.tensor(float(v), dtype=torch.float64)
                    for v in values
                ]
            )
            weights = torch.tensor(self._weights[name], dtype=torch.float64)
            out[name] = float((stacked * weights).sum() / weights.sum())
        return out


class capture_logs:  # noqa: N801 - used as a context manager, reads like one
    """Context manager routing a module's ``self.log`` into a :class:`LogSink`."""

    def __init__(self, module: LightningModule, sink: LogSink) -> None:
        self.module = module
        self.sink = sink
        self._previous: Any = None

    def __enter__(self) -> LogSink:
        self._previous = self.module.fabric
        self.module.fabric = self.sink  # type: ignore[assignment]
        return self.sink

    def __exit__(self, *exc: object) -> None:
        self.module.fabric = self._previous


@dataclass
class OptimizerSetup:
    """The optimizer of a module and its scheduler, if any."""

    optimizer: Optimizer
    scheduler: Any = None
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None


def parse_optimizers(config: Any, module_name: str = "module") -> OptimizerSetup:
    """Read what ``configure_optimizers`` returned, in any of Lightning's forms.

    Args:
        config: The return value of ``configure_optimizers``.
        module_name: Used in error messages.

    Returns:
        The optimizer and its scheduler.

    Raises:
        ValueError: If there is not exactly one optimizer.
    """
    scheduler: Any = None
    if isinstance(config, Optimizer):
        return OptimizerSetup(config)
    if isinstance(config, Mapping):
        optimizer = config.get("optimizer")
        scheduler = config.get("lr_scheduler")
    elif isinstance(config, (list, tuple)):
        if len(config) == 2 and isinstance(config[0], (list, tuple)):
            optimizers, schedulers = list(config[0]), list(config[1])
            if len(optimizers) != 1 or len(schedulers) > 1:
                raise ValueError(
                    f"{module_name}.configure_optimizers must return one optimizer (and at most "
                    f"one scheduler) for federated training, got {len(optimizers)} optimizers "
                    f"and {len(schedulers)} schedulers"
                )
            optimizer, scheduler = optimizers[0], (schedulers[0] if schedulers else None)
        elif len(config) == 1:
            return parse_optimizers(config[0], module_name)
        else:
            raise ValueError(
                f"{module_name}.configure_optimizers must return one optimizer for federated "
                f"training, got {len(config)}"
            )
    else:
        optimizer = config
    if not isinstance(optimizer, Optimizer):
        raise ValueError(
            f"{module_name}.configure_optimizers must return a torch.optim.Optimizer, got "
            f"{type(optimizer).__name__}"
        )
    if isinstance(scheduler, Mapping):
        return OptimizerSetup(
            optimizer,
            scheduler.get("scheduler"),
            str(scheduler.get("interval", "epoch")),
            int(scheduler.get("frequency", 1)),
            scheduler.get("monitor"),
        )
    return OptimizerSetup(optimizer, scheduler)


LossHook = Callable[[Any, Tensor], Tensor]


def _step_scheduler(setup: OptimizerSetup, metrics: Mapping[str, float]) -> None:
    if isinstance(setup.scheduler, ReduceLROnPlateau):
        monitor = setup.monitor or "loss"
        if monitor in metrics:
            setup.scheduler.step(metrics[monitor])
    else:
        setup.scheduler.step()


def fit_local(
    module: LightningModule,
    loader: Iterable[Any],
    *,
    epochs: int | None = 1,
    steps: int | None = None,
    loss_hook: LossHook | None = None,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Train ``module`` on ``loader`` for some epochs or steps with its own hooks.

    Args:
        module: Any LightningModule with ``training_step`` and ``configure_optimizers``.
        loader: Batches as ``training_step`` expects them; iterated once per epoch.
        epochs: Number of passes over ``loader``; ``None`` with ``steps`` set means as many
            as the steps need.
        steps: Stop after this many optimizer steps (optional).
        loss_hook: ``(batch, loss) -> loss``, the algorithm's change to the local loss.
        device: Device batches are moved to (default: the module's device).

    Returns:
        The means of everything the module logged, plus ``loss``: the mean local loss
        (after the algorithm's change) and ``steps``.

    Raises:
        ValueError: If neither ``epochs`` nor ``steps`` is a positive number, or if the
            module uses manual optimization.
    """
    if (epochs is None or epochs < 1) and (steps is None or steps < 1):
        raise ValueError(
            f"local training needs epochs >= 1 or steps >= 1, got epochs={epochs}, steps={steps}"
        )
    if not module.automatic_optimization:
        raise ValueError(
            f"{type(module).__name__} uses manual optimization (automatic_optimization=False), "
            "which federated local training does not support"
        )
    setup = parse_optimizers(module.configure_optimizers(), type(module).__name__)
    optimizer = setup.optimizer
    target = device if device is not None else module.device
    move = target.type != "cpu"
    module.train()
    sink = LogSink()
    step = 0
    max_epochs = epochs if epochs is not None and epochs >= 1 else None
    epoch = 0
    with capture_logs(module, sink):
        while max_epochs is None or epoch < max_epochs:
            batch_idx = -1
            for batch_idx, batch in enumerate(loader):
                if move:
                    batch = _to_device(batch, target)
                out = module.training_step(batch, batch_idx)
                loss = out["loss"] if isinstance(out, Mapping) else out
                if loss is None:
                    continue
                if loss_hook is not None:
                    loss = loss_hook(batch, loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sink.add("loss", loss.detach())
                step += 1
                if (
                    setup.scheduler is not None
                    and setup.interval == "step"
                    and step % setup.frequency == 0
                ):
                    _step_scheduler(setup, sink.means())
                if steps is not None and step >= steps:
                    break
            epoch += 1
            if batch_idx < 0:
                break
            if (
                setup.scheduler is not None
                and setup.interval == "epoch"
                and epoch % setup.frequency == 0
            ):
                _step_scheduler(setup, sink.means())
            if steps is not None and step >= steps:
                break
    metrics = sink.means()
    metrics["steps"] = float(step)
    return metrics


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch
