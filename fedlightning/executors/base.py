"""Executors: who runs the clients of a round.

An executor only schedules: every client trains through the one
:class:`~fedlightning.runtime.ClientRuntime` the trainer hands it each round, and returns a
:class:`~fedlightning.round.Trained` (reply and new state) or a
:class:`~fedlightning.round.ClientFailure` per client. Callbacks fire in the trainer, and
client states are stored by the trainer alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fedlightning.round import ClientFailure, ClientTask, Trained

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule

    from fedlightning.runtime import ClientRuntime

__all__ = ["ClientFailure", "Executor", "Outcome"]

Outcome = Trained | ClientFailure
"""What an executor returns per client."""


class Executor(ABC):
    """Runs the selected clients of a round and returns their outcomes.

    Every executor must give the sequential executor's result for the same seed.
    """

    name: str = "executor"
    in_process: bool = True
    """Whether clients train in this process (one device: ``devices=1``)."""

    def setup(self, model: LightningModule, runtime: ClientRuntime) -> None:  # noqa: B027
        """Prepare workers before the first round (default: nothing).

        Args:
            model: The global model, already on the run's device (copy it, never keep it).
            runtime: A runtime of the run, with the first round's plan; errors in the
                settings should be raised here, before round 1.
        """

    @abstractmethod
    def run(self, runtime: ClientRuntime, tasks: Sequence[ClientTask]) -> list[Outcome]:
        """Train every client of ``tasks``.

        Args:
            runtime: The round's client runtime (hooks, data, plan, placement).
            tasks: One task per selected client, in client order.

        Returns:
            One outcome per task, in the order of ``tasks``.
        """

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Release workers after the last round (default: nothing)."""
