"""Local training of any LightningModule on one client's data, without a Lightning Trainer.

The loop keeps the LightningModule contract of ``lightning.Trainer.fit`` for one optimizer
with automatic optimization: ``configure_optimizers`` (an optimizer, a list, a
``(optimizers, schedulers)`` pair or a dict with ``lr_scheduler``), the training hooks in
Lightning's order (``on_fit_start``, ``on_train_start``, ``on_train_epoch_start``,
``on_train_batch_start``, ``training_step``, ``on_before_zero_grad``,
``optimizer_zero_grad``, ``on_before_backward``, ``backward``, ``on_after_backward``,
``on_before_optimizer_step``, ``configure_gradient_clipping``, ``on_train_batch_end``,
``on_train_epoch_end``, ``on_train_end``, ``on_fit_end``), the batch-transfer hooks,
``self.log``, ``self.global_step`` and ``self.current_epoch`` counted within the local run,
``gradient_clip_val`` and ``accumulate_grad_batches``, on any device and precision through
Lightning Fabric's precision plugins. Building a ``lightning.Trainer`` per client per round
would cost tens of milliseconds each, thousands of times in a run; this loop costs what the
maths costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.plugins.precision import Precision
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

if TYPE_CHECKING:
    from fedlightning.accelerators import Placement

__all__ = [
    "LocalLoop",
    "LogSink",
    "OptimizerSetup",
    "capture_logs",
    "check_automatic_optimization",
    "check_local_settings",
    "fit_local",
    "has_hook",
    "parse_optimizers",
]


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

_HOOKED_TRANSFER = (
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
)


def has_hook(module: LightningModule, name: str) -> bool:
    """Whether ``module`` overrides the LightningModule hook ``name``."""
    impl = getattr(type(module), name, None)
    return impl is not None and impl is not getattr(LightningModule, name, None)


class LocalLoop(LogSink):
    """The run a module sees as its trainer while one client trains locally.

    It stands where Lightning's Fabric would (``module.fabric``), so ``self.log``,
    ``self.log_dict``, ``self.backward``, ``self.clip_gradients``, ``self.global_step``,
    ``self.current_epoch`` and ``self.trainer.max_epochs`` work as under
    ``lightning.Trainer``, counted within the local run.

    Args:
        precision: The Fabric precision plugin of the run (backward, gradient scaling).
        max_epochs: The local epochs (``None``: bounded by ``max_steps`` only).
        max_steps: The local optimizer steps (``-1`` when unbounded, as Lightning).
    """

    def __init__(
        self, precision: Precision | None = None, max_epochs: int | None = 1, max_steps: int = -1
    ) -> None:
        super().__init__()
        self.precision = precision if precision is not None else Precision()
        self.global_step = 0
        self.current_epoch = 0
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.is_global_zero = True
        self.global_rank = 0
        self.local_rank = 0
        self.world_size = 1

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward through the precision plugin (``LightningModule.backward`` lands here)."""
        self.precision.backward(loss, None, *args, **kwargs)

    def clip_gradients(
        self,
        module: nn.Module,
        optimizer: Optimizer,
        clip_val: float | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> Tensor | None:
        """Clip gradients by value or by norm, as ``Fabric.clip_gradients`` (already unscaled)."""
        if not clip_val and not max_norm:
            return None
        parameters = list(self.precision.main_params(optimizer))
        if clip_val:
            torch.nn.utils.clip_grad_value_(parameters, clip_val)
            return None
        assert max_norm is not None
        return torch.nn.utils.clip_grad_norm_(
            parameters, max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite
        )


class _attach:  # noqa: N801 - a context manager
    """Attach a :class:`LocalLoop` as the module's fabric and trainer for one local run."""

    def __init__(self, module: LightningModule, loop: LocalLoop) -> None:
        self.module, self.loop = module, loop
        self._previous: tuple[Any, Any] = (None, None)

    def __enter__(self) -> LocalLoop:
        self._previous = (self.module._fabric, self.module._trainer)
        self.module.fabric = self.loop  # type: ignore[assignment]
        self.module.trainer = self.loop  # type: ignore[assignment]
        return self.loop

    def __exit__(self, *exc: object) -> None:
        self.module.fabric, self.module.trainer = self._previous


def _step_scheduler(setup: OptimizerSetup, metrics: Mapping[str, float]) -> None:
    if isinstance(setup.scheduler, ReduceLROnPlateau):
        monitor = setup.monitor or "loss"
        if monitor in metrics:
            setup.scheduler.step(metrics[monitor])
    else:
        setup.scheduler.step()


def _with_last(loader: Iterable[Any]) -> Iterator[tuple[int, Any, bool]]:
    """``(batch_idx, batch, is_last)``: from ``len(loader)`` when it has one, else one batch
    of look-ahead."""
    try:
        length = len(loader)  # type: ignore[arg-type]
    except TypeError:
        length = -1
    if length >= 0:
        for index, batch in enumerate(loader):
            yield index, batch, index == length - 1
        return
    iterator = iter(loader)
    try:
        current = next(iterator)
    except StopIteration:
        return
    index = 0
    for following in iterator:
        yield index, current, False
        current = following
        index += 1
    yield index, current, True


def check_local_settings(
    gradient_clip_val: float | None,
    gradient_clip_algorithm: str | None,
    accumulate_grad_batches: int,
) -> None:
    """Validate the ``lightning.Trainer`` options that local training honours.

    Raises:
        ValueError: Naming the option, its value and what is allowed.
    """
    if gradient_clip_val is not None and (
        isinstance(gradient_clip_val, bool)
        or not isinstance(gradient_clip_val, (int, float))
        or gradient_clip_val < 0
    ):
        raise ValueError(
            f"gradient_clip_val must be a number >= 0 or None, got "
            f"gradient_clip_val={gradient_clip_val!r}"
        )
    if gradient_clip_algorithm is not None and gradient_clip_algorithm not in ("norm", "value"):
        raise ValueError(
            "gradient_clip_algorithm must be 'norm' or 'value', got "
            f"gradient_clip_algorithm={gradient_clip_algorithm!r}"
        )
    if (
        not isinstance(accumulate_grad_batches, int)
        or isinstance(accumulate_grad_batches, bool)
        or accumulate_grad_batches < 1
    ):
        raise ValueError(
            "accumulate_grad_batches must be an integer >= 1, got "
            f"accumulate_grad_batches={accumulate_grad_batches!r}"
        )


def check_automatic_optimization(module: LightningModule) -> None:
    """Refuse a module with manual optimization, which federated local training cannot drive.

    Raises:
        ValueError: Naming the module and the setting.
    """
    if not module.automatic_optimization:
        raise ValueError(
            f"{type(module).__name__} uses manual optimization (automatic_optimization=False), "
            "which federated local training does not support: set "
            "automatic_optimization=True and return the loss from training_step"
        )


def fit_local(
    module: LightningModule,
    loader: Iterable[Any],
    *,
    epochs: int | None = 1,
    steps: int | None = None,
    loss_hook: LossHook | None = None,
    device: torch.device | None = None,
    placement: Placement | None = None,
    gradient_clip_val: float | None = None,
    gradient_clip_algorithm: str | None = None,
    accumulate_grad_batches: int = 1,
) -> dict[str, float]:
    """Train ``module`` on ``loader`` for some epochs or steps, as ``lightning.Trainer.fit`` would.

    Args:
        module: Any LightningModule with ``training_step`` and ``configure_optimizers``.
        loader: Batches as ``training_step`` expects them; iterated once per epoch.
        epochs: Number of passes over ``loader``; ``None`` with ``steps`` set means as many
            as the steps need.
        steps: Stop after this many optimizer steps (optional).
        loss_hook: ``(batch, loss) -> loss``, the algorithm's change to the local loss.
        device: Device batches are moved to (default: the placement's, else the module's).
        placement: Device and precision (default: float32 where the module is).
        gradient_clip_val: As ``lightning.Trainer``: clip gradients at this value/norm.
        gradient_clip_algorithm: ``"norm"`` (default) or ``"value"``.
        accumulate_grad_batches: As ``lightning.Trainer``: one optimizer step every this
            many batches (and at the end of each epoch); the loss is divided by it.

    Returns:
        The means of everything the module logged, plus ``loss``: the mean local loss
        (after the algorithm's change) and ``steps``: the optimizer steps taken.

    Raises:
        ValueError: If neither ``epochs`` nor ``steps`` is a positive number, if a Trainer
            option is out of range, or if the module uses manual optimization.
    """
    if (epochs is None or epochs < 1) and (steps is None or steps < 1):
        raise ValueError(
            f"local training needs epochs >= 1 or steps >= 1, got epochs={epochs}, steps={steps}"
        )
    check_automatic_optimization(module)
    check_local_settings(gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches)
    plugin = placement.plugin() if placement is not None else Precision()
    target = device or (placement.device if placement is not None else module.device)
    convert = placement is not None and placement.precision != "32-true"
    transfer = target.type != "cpu" or any(has_hook(module, h) for h in _HOOKED_TRANSFER)
    # configure_gradient_clipping's default clips with gradient_clip_val: nothing to call
    # when that is unset and the module does not override the hook.
    clip = gradient_clip_val is not None or has_hook(module, "configure_gradient_clipping")
    max_epochs = epochs if epochs is not None and epochs >= 1 else None
    loop = LocalLoop(plugin, max_epochs, steps if steps is not None else -1)
    accumulate = accumulate_grad_batches
    module.train()
    with _attach(module, loop):
        setup = parse_optimizers(module.configure_optimizers(), type(module).__name__)
        optimizer = setup.optimizer
        module.on_fit_start()
        module.on_train_start()
        done = False
        while not done and (max_epochs is None or loop.current_epoch < max_epochs):
            module.on_train_epoch_start()
            seen = False
            for batch_idx, batch, is_last in _with_last(loader):
                seen = True
                if transfer:
                    batch = module.on_before_batch_transfer(batch, 0)
                    batch = module.transfer_batch_to_device(batch, target, 0)
                    batch = module.on_after_batch_transfer(batch, 0)
                if convert:
                    batch = plugin.convert_input(batch)
                if module.on_train_batch_start(batch, batch_idx) == -1:
                    break  # as Lightning: -1 skips the rest of the epoch
                with plugin.forward_context():
                    out = module.training_step(batch, batch_idx)
                    loss = out["loss"] if isinstance(out, Mapping) else out
                    if loss is not None and loss_hook is not None:
                        loss = loss_hook(batch, loss)
                if loss is not None:
                    if batch_idx % accumulate == 0:
                        module.on_before_zero_grad(optimizer)
                        module.optimizer_zero_grad(loop.current_epoch, batch_idx, optimizer)
                    scaled = loss / accumulate if accumulate > 1 else loss
                    module.on_before_backward(scaled)
                    module.backward(scaled)
                    module.on_after_backward()
                    loop.add("loss", loss.detach())
                    if is_last or (batch_idx + 1) % accumulate == 0:
                        plugin.unscale_gradients(optimizer)
                        module.on_before_optimizer_step(optimizer)
                        if clip:
                            module.configure_gradient_clipping(
                                optimizer, gradient_clip_val, gradient_clip_algorithm
                            )
                        plugin.optimizer_step(optimizer)
                        loop.global_step += 1
                        if (
                            setup.scheduler is not None
                            and setup.interval == "step"
                            and loop.global_step % setup.frequency == 0
                        ):
                            _step_scheduler(setup, loop.means())
                module.on_train_batch_end(out, batch, batch_idx)
                if steps is not None and loop.global_step >= steps:
                    done = True
                    break
            module.on_train_epoch_end()
            loop.current_epoch += 1
            if not seen:
                break
            if (
                setup.scheduler is not None
                and setup.interval == "epoch"
                and loop.current_epoch % setup.frequency == 0
            ):
                _step_scheduler(setup, loop.means())
        module.on_train_end()
        module.on_fit_end()
    metrics = loop.means()
    metrics["steps"] = float(loop.global_step)
    return metrics
