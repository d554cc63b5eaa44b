"""Callbacks on the federated round loop."""

from fedlightning.callbacks.base import Callback, Direction
from fedlightning.callbacks.comm_cost import CommCost
from fedlightning.callbacks.timer import RoundTimer

__all__ = ["Callback", "CommCost", "Direction", "RoundTimer"]
