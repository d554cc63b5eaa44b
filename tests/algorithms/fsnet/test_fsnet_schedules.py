"""Tests of Fed-FSNet's beta schedules."""

from __future__ import annotations

import pytest

from fedlightning.algorithms.fsnet import BetaSchedule, ConstantBeta, StepDecay


def test_step_decay_is_the_papers_schedule() -> None:
    schedule = StepDecay()
    assert [schedule(r) for r in (1, 10, 11, 20, 21, 31, 50)] == [
        1.0,
        1.0,
        0.1,
        0.1,
        0.01,
        0.001,
        0.0001,
    ]
    assert StepDecay(initial=2.0, factor=0.5, every=3)(7) == 0.5


def test_constant_beta_and_protocol() -> None:
    assert ConstantBeta(0.3)(42) == 0.3
    assert isinstance(StepDecay(), BetaSchedule)
    assert isinstance(ConstantBeta(), BetaSchedule)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: StepDecay(initial=-1.0), "initial must be"),
        (lambda: StepDecay(factor=1.5), "factor must be in"),
        (lambda: StepDecay(every=0), "every must be an integer >= 1"),
        (lambda: ConstantBeta(float("nan")), "value must be a finite"),
        (lambda: StepDecay()(0), "round must be an integer >= 1"),
    ],
)
def test_bad_settings_are_rejected(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]
