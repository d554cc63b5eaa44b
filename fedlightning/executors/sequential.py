"""The sequential executor: one client after another, in this process."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from typing_extensions import override

from fedlightning.executors.base import ClientFailure, Executor

if TYPE_CHECKING:
    from fedlightning.algorithms.base import Reply
    from fedlightning.messages import Message
    from fedlightning.trainer import FederatedTrainer

__all__ = ["SequentialExecutor"]

log = logging.getLogger(__name__)


class SequentialExecutor(Executor):
    """Trains the clients of a round one after another; the reference for correctness."""

    name = "sequential"

    @override
    def run(
        self, trainer: FederatedTrainer, round: int, messages: dict[int, Message]
    ) -> list[Reply | ClientFailure]:
        out: list[Reply | ClientFailure] = []
        for client, message in messages.items():
            try:
                out.append(trainer.run_client(round, client, message))
            except Exception as exc:  # a failing client never takes the run down
                log.warning("round %d: client %d raised %r; dropped", round, client, exc)
                out.append(ClientFailure(client, f"{type(exc).__name__}: {exc}"))
        return out
