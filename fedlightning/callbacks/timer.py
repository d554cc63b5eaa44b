"""RoundTimer: wall time of every round, logged as ``round_s``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from typing_extensions import override

from fedlightning.callbacks.base import Callback

if TYPE_CHECKING:
    from fedlightning.trainer import FederatedTrainer

__all__ = ["RoundTimer"]


class RoundTimer(Callback):
    """Times each round from its start (before client selection) to its end (after
    aggregation and evaluation), keeps the figures in ``times`` and logs ``round_s``.

    Example:
        >>> timer = RoundTimer()
        >>> # FederatedTrainer(callbacks=[timer]).fit(...); sum(timer.times)
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    @override
    def on_round_start(self, trainer: FederatedTrainer, round: int) -> None:
        self._start = time.perf_counter()

    @override
    def on_round_end(self, trainer: FederatedTrainer, round: int) -> None:
        elapsed = time.perf_counter() - self._start
        self.times.append(elapsed)
        trainer.log_metrics({"round_s": elapsed})
