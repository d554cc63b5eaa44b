"""Schedules of beta, the weight of Fed-FSNet's non-IID regularizer (eq. 10/11).

A schedule is any object with ``__call__(round: int) -> float``; :class:`StepDecay` is the
paper's (section 4.3: "initially set to 1 and then decreased to one-tenth in every 10
global rounds"), :class:`ConstantBeta` keeps beta fixed. Users replace the schedule by
passing their own callable to :class:`~fedlightning.algorithms.fsnet.FedFSNet`.

References:
    J. Guo, S. Guo, J. Zhang, Z. Liu, "Fed-FSNet: Mitigating Non-I.I.D. Federated Learning
    via Fuzzy Synthesizing Network", arXiv:2208.12044, 2022 (section 4.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["BetaSchedule", "ConstantBeta", "StepDecay"]


@runtime_checkable
class BetaSchedule(Protocol):
    """Maps a round number (from 1) to the regularizer weight beta >= 0."""

    def __call__(self, round: int) -> float:
        """Beta in round ``round``."""
        ...


def _check_round(round: int) -> None:
    if isinstance(round, bool) or not isinstance(round, int) or round < 1:
        raise ValueError(f"round must be an integer >= 1, got round={round!r}")


@dataclass(frozen=True)
class StepDecay:
    """``beta(r) = initial * factor ** ((r - 1) // every)``: rounds 1-10 give 1, 11-20 give
    0.1, ... with the paper's defaults.

    Args:
        initial: Beta in the first ``every`` rounds, >= 0.
        factor: Multiplier applied every ``every`` rounds, in [0, 1].
        every: Rounds between decays, >= 1.

    Raises:
        ValueError: If a setting is out of range.

    Example:
        >>> schedule = StepDecay()
        >>> [schedule(r) for r in (1, 10, 11, 21)]
        [1.0, 1.0, 0.1, 0.01]
    """

    initial: float = 1.0
    factor: float = 0.1
    every: int = 10

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial) and self.initial >= 0):
            raise ValueError(f"initial must be a finite number >= 0, got initial={self.initial}")
        if not 0.0 <= self.factor <= 1.0:
            raise ValueError(f"factor must be in [0, 1], got factor={self.factor}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be an integer >= 1, got every={self.every!r}")

    def __call__(self, round: int) -> float:
        """Beta in round ``round`` (from 1)."""
        _check_round(round)
        return _tidy(self.initial * self.factor ** ((round - 1) // self.every))


@dataclass(frozen=True)
class ConstantBeta:
    """``beta(r) = value`` in every round.

    Args:
        value: Beta, a finite number >= 0.

    Raises:
        ValueError: If ``value`` is negative or not finite.
    """

    value: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"value must be a finite number >= 0, got value={self.value}")

    def __call__(self, round: int) -> float:
        """Beta in round ``round`` (from 1)."""
        _check_round(round)
        return float(self.value)


def _tidy(value: float) -> float:
    """``value`` rounded to 12 significant digits, so that 1 * 0.1**2 is 0.01."""
    return float(f"{value:.12g}")
