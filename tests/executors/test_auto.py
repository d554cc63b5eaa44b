"""executor="auto": a measured choice between vectorized and sequential, never a wrong model."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedlightning.algorithms import FedAvg
from fedlightning.demos import BoringClassifier
from fedlightning.executors import resolve_executor
from fedlightning.executors.auto import AutoExecutor
from tests.executors.conftest import fit, image_datamodule, max_abs_diff


def test_measures_both_paths_and_matches_sequential() -> None:
    torch.manual_seed(0)
    seq_model = BoringClassifier(in_features=64)
    torch.manual_seed(0)
    auto_model = BoringClassifier(in_features=64)
    fit(seq_model, image_datamodule(), "sequential", FedAvg())
    executor = AutoExecutor(probe_steps=2)
    fit(auto_model, image_datamodule(), executor, FedAvg())
    assert executor.choice in ("vectorized", "sequential")
    assert executor.timings["sequential_s_per_step"] > 0
    assert executor.timings["vectorized_s_per_step"] > 0
    expected = executor.timings["sequential_s_per_step"] / executor.timings["vectorized_s_per_step"]
    assert executor.timings["speedup"] == pytest.approx(expected)
    assert (executor.choice == "vectorized") == (expected >= executor.margin)
    assert "vectorized" in executor.reason and "sequential" in executor.reason
    # The probe changes nothing: the run is the sequential one up to float round-off.
    assert max_abs_diff(seq_model, auto_model) < 1e-5


@pytest.mark.parametrize(
    "vec_s, choice", [(0.5, "vectorized"), (0.95, "sequential"), (3.0, "sequential")]
)
def test_choice_follows_the_measurement(
    vec_s: float, choice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = AutoExecutor(margin=1.1)
    monkeypatch.setattr(executor, "_time_sequential", lambda *a, **k: 1.0)
    monkeypatch.setattr(executor, "_time_vectorized", lambda *a, **k: vec_s)
    torch.manual_seed(0)
    fit(BoringClassifier(in_features=64), image_datamodule(), executor, FedAvg(), rounds=1)
    assert executor.choice == choice
    assert executor.timings["speedup"] == pytest.approx(1.0 / vec_s)


def test_unstackable_module_runs_sequentially_without_probing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executor = AutoExecutor()

    def never(*args: Any, **kwargs: Any) -> float:
        raise AssertionError("no probe for a module that cannot be stacked")

    monkeypatch.setattr(executor, "_time_vectorized", never)
    torch.manual_seed(0)
    model = BoringClassifier(in_features=64, batchnorm=True)
    fit(model, image_datamodule(), executor, FedAvg(), rounds=1)
    assert executor.choice == "sequential"
    assert "BatchNorm1d" in executor.reason


def test_registered_and_bad_input() -> None:
    assert isinstance(resolve_executor("auto"), AutoExecutor)
    with pytest.raises(ValueError, match="margin must be >= 1"):
        AutoExecutor(margin=0.5)
    with pytest.raises(ValueError, match="probe_steps must be an integer >= 1"):
        AutoExecutor(probe_steps=0)
