"""A callback that splits the bytes on the wire into model tensors and extras.

Fed-FSNet's synthetic samples D' and client statistics travel as message extras; this
callback reports what they cost next to the weights (section 4.5 of the paper discusses
that overhead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from typing_extensions import override

from fedlightning.callbacks.base import Callback, Direction
from fedlightning.messages import SCALAR_BYTES

if TYPE_CHECKING:
    from fedlightning.messages import Message
    from fedlightning.round import RunHandle

__all__ = ["PayloadBreakdown"]


class PayloadBreakdown(Callback):
    """Counts, per direction, the bytes of encoded tensors, of extras and of scalars.

    Per round it logs ``bytes_{down,up}_{tensors,extras,scalars}``; ``results.json`` gets
    their totals under ``payload`` plus ``extras_share_down``: downlink extras bytes divided
    by downlink tensor bytes (for Fed-FSNet: D' relative to the weights).

    Example:
        >>> from fedlightning import FederatedTrainer
        >>> trainer = FederatedTrainer(rounds=2, callbacks=[PayloadBreakdown()])
    """

    KINDS = ("tensors", "extras", "scalars")

    def __init__(self) -> None:
        self.total: dict[str, int] = {f"{d}_{k}": 0 for d in ("down", "up") for k in self.KINDS}
        self.round_bytes: dict[str, int] = dict.fromkeys(self.total, 0)

    @override
    def on_round_start(self, trainer: RunHandle, round: int) -> None:
        self.round_bytes = dict.fromkeys(self.total, 0)

    @override
    def on_message(
        self,
        trainer: RunHandle,
        round: int,
        client: int,
        direction: Direction,
        message: Message,
    ) -> None:
        sizes = {
            "tensors": message.tensor_nbytes,
            "extras": message.extras_nbytes,
            "scalars": SCALAR_BYTES * len(message.scalars),
        }
        for kind, size in sizes.items():
            self.round_bytes[f"{direction}_{kind}"] += size
            self.total[f"{direction}_{kind}"] += size

    @override
    def on_round_end(self, trainer: RunHandle, round: int) -> None:
        trainer.log_metrics({f"bytes_{k}": v for k, v in self.round_bytes.items()})

    def extras_share_down(self) -> float:
        """Downlink extras bytes / downlink tensor bytes so far (0 when nothing was sent)."""
        weights = self.total["down_tensors"]
        return self.total["down_extras"] / weights if weights else 0.0

    @override
    def on_results(self, trainer: RunHandle, results: dict[str, Any]) -> None:
        results["payload"] = dict(self.total)
        results["payload"]["extras_share_down"] = self.extras_share_down()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"total": dict(self.total)}

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = dict(state["total"])
