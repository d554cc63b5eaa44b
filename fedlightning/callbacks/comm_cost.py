"""CommCost: the bytes that cross the wire, per round, per client and in total."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from fedlightning.callbacks.base import Callback, Direction

if TYPE_CHECKING:
    from fedlightning.messages import Message
    from fedlightning.trainer import FederatedTrainer

__all__ = ["CommCost"]


class CommCost(Callback):
    """Counts the bytes of every message, as the messages report them.

    Per round it logs to every attached logger (W&B first): ``bytes_down`` (server ->
    clients), ``bytes_up`` (clients -> server), their cumulative totals
    ``bytes_down_total`` / ``bytes_up_total`` / ``bytes_total``, and the largest per-client
    figure of the round. Per-client totals and the run totals go into ``results.json`` under
    ``bytes``.

    Example:
        >>> from fedlightning import FederatedTrainer
        >>> trainer = FederatedTrainer(rounds=2, callbacks=[CommCost()])
    """

    def __init__(self) -> None:
        self.round_bytes: dict[str, int] = {"down": 0, "up": 0}
        self.total: dict[str, int] = {"down": 0, "up": 0}
        self.per_client: dict[int, dict[str, int]] = defaultdict(lambda: {"down": 0, "up": 0})
        self._round_clients: dict[int, int] = defaultdict(int)

    @override
    def on_round_start(self, trainer: FederatedTrainer, round: int) -> None:
        self.round_bytes = {"down": 0, "up": 0}
        self._round_clients = defaultdict(int)

    @override
    def on_message(
        self,
        trainer: FederatedTrainer,
        round: int,
        client: int,
        direction: Direction,
        message: Message,
    ) -> None:
        size = message.nbytes
        self.round_bytes[direction] += size
        self.total[direction] += size
        self.per_client[client][direction] += size
        self._round_clients[client] += size

    @override
    def on_round_end(self, trainer: FederatedTrainer, round: int) -> None:
        trainer.log_metrics(
            {
                "bytes_down": self.round_bytes["down"],
                "bytes_up": self.round_bytes["up"],
                "bytes_down_total": self.total["down"],
                "bytes_up_total": self.total["up"],
                "bytes_total": self.total["down"] + self.total["up"],
                "bytes_client_max": max(self._round_clients.values(), default=0),
            }
        )

    @override
    def on_results(self, trainer: FederatedTrainer, results: dict[str, Any]) -> None:
        results["bytes"] = {
            "down": self.total["down"],
            "up": self.total["up"],
            "total": self.total["down"] + self.total["up"],
            "per_client": {str(c): dict(v) for c, v in sorted(self.per_client.items())},
        }

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "total": dict(self.total),
            "per_client": {c: dict(v) for c, v in self.per_client.items()},
        }

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = dict(state["total"])
        self.per_client = defaultdict(lambda: {"down": 0, "up": 0})
        for client, value in state["per_client"].items():
            self.per_client[int(client)] = dict(value)
