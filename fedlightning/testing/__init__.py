"""Testing helpers for users' own federated algorithms (like torchmetrics' shared testers).

:class:`AlgorithmTester` checks the properties every federated algorithm should have (the
FedAvg maths where it applies, sample weighting, client selection, exact resume, executor
equivalence, byte counting, recorded settings, a proximal term's coefficient). It raises
plain ``AssertionError`` and needs no test framework.

Example:
    >>> from fedlightning.algorithms import FedProx
    >>> from fedlightning.testing import AlgorithmTester
    >>> AlgorithmTester(lambda: FedProx(mu=0.1), proximal="mu").run_all()  # doctest: +SKIP
"""

from fedlightning.testing.algorithms import (
    STACKED_ATOL,
    AlgorithmTester,
    MessageRecord,
    MessageRecorder,
    assert_same_state,
    init_parameters,
    stacked_rounds,
    tiny_classifier,
    tiny_datamodule,
)

__all__ = [
    "STACKED_ATOL",
    "AlgorithmTester",
    "MessageRecord",
    "MessageRecorder",
    "assert_same_state",
    "init_parameters",
    "stacked_rounds",
    "tiny_classifier",
    "tiny_datamodule",
]
