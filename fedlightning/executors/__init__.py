"""Executors run the clients of a round: sequential by default."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from fedlightning.executors.base import ClientFailure, Executor, Outcome
from fedlightning.executors.sequential import SequentialExecutor

__all__ = [
    "EXECUTORS",
    "ClientFailure",
    "Executor",
    "Outcome",
    "SequentialExecutor",
    "resolve_executor",
]


def _vectorized() -> Executor:
    from fedlightning.executors.vectorized import VectorizedExecutor

    return VectorizedExecutor()


def _ray() -> Executor:
    from fedlightning.executors.ray import RayExecutor  # Ray itself is imported at setup

    return RayExecutor()


def _auto() -> Executor:
    from fedlightning.executors.auto import AutoExecutor

    return AutoExecutor()


EXECUTORS: dict[str, Callable[[], Executor]] = {
    "sequential": SequentialExecutor,
    "vectorized": _vectorized,
    "ray": _ray,
    "auto": _auto,
}


def resolve_executor(executor: str | Executor) -> Executor:
    """Return an executor instance for a name or an instance.

    Args:
        executor: An :class:`Executor` or one of the names in :data:`EXECUTORS`.

    Raises:
        ValueError: If the name is unknown.
    """
    if isinstance(executor, Executor):
        _check_run_signature(executor)
        return executor
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {sorted(EXECUTORS)}, got executor={executor!r}")
    return EXECUTORS[executor]()


def _check_run_signature(executor: Executor) -> None:
    """Refuse an executor written for the earlier ``run(trainer, round, messages)``."""
    parameters = list(inspect.signature(executor.run).parameters)
    if parameters[:1] == ["trainer"] or "messages" in parameters:
        raise ValueError(
            f"{type(executor).__name__}.run{tuple(parameters)} has the earlier signature "
            "run(trainer, round, messages); executors now implement run(runtime, tasks) and "
            "train each task with runtime.run(task, worker_module) (see docs/executors.md)"
        )
