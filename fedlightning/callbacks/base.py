"""Callbacks on the federated round loop: hooks that do nothing by default."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedlightning.round import Direction

if TYPE_CHECKING:
    from fedlightning.messages import Message
    from fedlightning.round import Reply
    from fedlightning.trainer import FederatedTrainer

__all__ = ["Callback", "Direction"]


class Callback:
    """Base class of federated callbacks, in the style of Lightning's ``Callback``.

    Every hook receives the trainer; what a callback needs is public on it
    (``trainer.history``, ``trainer.loggers``, ``trainer.log_metrics``...).
    """

    def on_fit_start(self, trainer: FederatedTrainer) -> None:
        """Before the first round (also when resuming)."""

    def on_fit_end(self, trainer: FederatedTrainer) -> None:
        """After the last round."""

    def on_round_start(self, trainer: FederatedTrainer, round: int) -> None:
        """At the start of a round, before clients are selected."""

    def on_round_end(self, trainer: FederatedTrainer, round: int) -> None:
        """After aggregation and evaluation, before the round's metrics are logged."""

    def on_client_fit_start(self, trainer: FederatedTrainer, round: int, client: int) -> None:
        """Before a client trains: for every selected client, in client order, before the
        executor trains any of them (the same order under every executor)."""

    def on_client_fit_end(self, trainer: FederatedTrainer, round: int, reply: Reply) -> None:
        """After a client has trained and replied: in client order, once the executor has
        returned the round's outcomes, before the reply is counted (``on_message``)."""

    def on_message(
        self,
        trainer: FederatedTrainer,
        round: int,
        client: int,
        direction: Direction,
        message: Message,
    ) -> None:
        """For every message that crosses the wire (``down``: server -> client)."""

    def on_results(self, trainer: FederatedTrainer, results: dict[str, Any]) -> None:
        """Add entries to the run's results (written to ``results.json``)."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
