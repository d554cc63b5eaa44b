"""Executors: who runs the clients of a round."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedlightning.algorithms.base import Reply
    from fedlightning.messages import Message
    from fedlightning.trainer import FederatedTrainer

__all__ = ["ClientFailure", "Executor"]


@dataclass(frozen=True)
class ClientFailure:
    """A client that raised instead of replying.

    Attributes:
        client: Client id.
        error: The exception's type and message.
    """

    client: int
    error: str


class Executor(ABC):
    """Runs the selected clients of a round and returns their replies.

    Every executor must give the sequential executor's result for the same seed.
    """

    name: str = "executor"

    def setup(self, trainer: FederatedTrainer) -> None:  # noqa: B027 - optional hook
        """Prepare workers before the first round (default: nothing)."""

    @abstractmethod
    def run(
        self, trainer: FederatedTrainer, round: int, messages: dict[int, Message]
    ) -> list[Reply | ClientFailure]:
        """Train every client in ``messages`` on what it received.

        Args:
            trainer: The trainer (its ``run_client`` trains one client in this process).
            round: Round number.
            messages: Client id -> the message the server sent it.

        Returns:
            One reply or failure per client, in the order of ``messages``.
        """

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Release workers after the last round (default: nothing)."""
