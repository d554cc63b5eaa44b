"""The sequential executor: one client after another, in this process."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

from typing_extensions import override

from fedlightning.executors.base import Executor, Outcome

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule

    from fedlightning.round import ClientTask
    from fedlightning.runtime import ClientRuntime

__all__ = ["SequentialExecutor"]


class SequentialExecutor(Executor):
    """Trains the clients of a round one after another; the reference for correctness."""

    name = "sequential"

    def __init__(self) -> None:
        self._worker: LightningModule | None = None

    @override
    def setup(self, model: LightningModule, runtime: ClientRuntime) -> None:
        self._worker = copy.deepcopy(model)

    @override
    def run(self, runtime: ClientRuntime, tasks: Sequence[ClientTask]) -> list[Outcome]:
        if self._worker is None:
            raise RuntimeError("SequentialExecutor.run before setup: the trainer calls setup")
        return [runtime.run(task, self._worker) for task in tasks]

    @override
    def teardown(self) -> None:
        self._worker = None
