"""Evaluation of a model on a loader: what its ``test_step`` logs, plus torchmetrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import Metric

from fedlightning.client import LogSink, capture_logs, has_hook

if TYPE_CHECKING:
    from fedlightning.accelerators import Placement

__all__ = ["evaluate", "has_hook"]


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return int(batch[0].shape[0])
    if isinstance(batch, Mapping):
        for value in batch.values():
            if isinstance(value, Tensor):
                return int(value.shape[0])
    return 1


def evaluate(
    module: LightningModule,
    loader: Iterable[Any],
    metrics: Mapping[str, Metric] | None = None,
    *,
    placement: Placement | None = None,
) -> dict[str, float]:
    """Evaluate ``module`` on every batch of ``loader``.

    Runs ``test_step`` (or ``validation_step`` when there is no ``test_step``) with
    ``self.log`` captured; logged values are averaged weighted by batch size. Each metric in
    ``metrics`` is updated with ``(module(x), y)`` for batches of the form ``(x, y)``; when the
    step itself calls ``module(x)``, that output is reused instead of a second forward pass.

    Args:
        module: The model.
        loader: The evaluation batches.
        metrics: torchmetrics objects by name, e.g. ``{"acc": MulticlassAccuracy(10)}``;
            they are reset first.
        placement: Device and precision: batches are moved and converted, and the steps run
            under the precision's autocast (default: as they come, in float32).

    Returns:
        Logged means and metric values by name.
    """
    step_name = (
        "test_step"
        if has_hook(module, "test_step")
        else "validation_step"
        if has_hook(module, "validation_step")
        else None
    )
    plugin = placement.plugin() if placement is not None else None
    place = placement is not None and not placement.is_default
    for metric in (metrics or {}).values():
        metric.reset()
        if place:
            assert placement is not None
            metric.to(placement.device)
    was_training = module.training
    module.eval()
    sink = LogSink()
    # The step's own forward pass is reused for the metrics when it calls module(x).
    seen: list[Any] = []
    handle = (
        module.register_forward_hook(lambda _m, args, out: seen.append((args, out)))
        if metrics and step_name is not None
        else None
    )
    try:
        context = plugin.forward_context() if plugin is not None else nullcontext()
        with torch.no_grad(), capture_logs(module, sink), context:
            for batch_idx, batch in enumerate(loader):
                if place:
                    assert placement is not None
                    batch = placement.place_batch(batch, plugin)
                sink.weight = float(_batch_size(batch))
                seen.clear()
                if step_name is not None:
                    getattr(module, step_name)(batch, batch_idx)
                if metrics:
                    x, y = batch[0], batch[1]
                    reused = [o for a, o in seen if a and a[0] is x]
                    out = reused[0] if reused else module(x)
                    for metric in metrics.values():
                        metric.update(out, y)
    finally:
        if handle is not None:
            handle.remove()
        module.train(was_training)
    results = sink.means()
    for name, metric in (metrics or {}).items():
        results[name] = float(metric.compute())
    return results
