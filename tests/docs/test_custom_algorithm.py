"""The code in ``docs/custom_algorithm.md`` runs, and its SCAFFOLD is the built-in one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg, Scaffold
from fedlightning.demos import BoringClassifier
from tests.executors.conftest import image_datamodule

DOC = Path(__file__).resolve().parents[2] / "docs" / "custom_algorithm.md"


@pytest.fixture(scope="module")
def namespace() -> dict[str, Any]:
    """Every Python block of the page, run in order in one namespace (the tester's aside)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6
    scope: dict[str, Any] = {}
    for block in blocks:
        if "AlgorithmTester" not in block:
            exec(compile(block, str(DOC), "exec"), scope)
    return scope


def _fit(algorithm: FedAvg, rounds: int = 3) -> tuple[FederatedTrainer, BoringClassifier]:
    torch.manual_seed(0)
    model = BoringClassifier(in_features=64)
    trainer = FederatedTrainer(
        algorithm=algorithm,
        rounds=rounds,
        clients_per_round=3,
        local_epochs=1,
        seed=0,
        progress_bar=False,
        eval_every=None,
    )
    trainer.fit(model, image_datamodule())
    return trainer, model


def test_the_pages_scaffold_is_the_built_in_scaffold(namespace: dict[str, Any]) -> None:
    mine_trainer, mine = _fit(namespace["MyScaffold"]())
    ours_trainer, ours = _fit(Scaffold(option="II"))
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(mine.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert mine_trainer.results["bytes"] == ours_trainer.results["bytes"]
    _, fedavg = _fit(FedAvg())
    assert not torch.allclose(
        fedavg.state_dict()["net.1.weight"], ours.state_dict()["net.1.weight"]
    )


def test_the_pages_other_algorithms_train(namespace: dict[str, Any]) -> None:
    prox_trainer, _ = _fit(namespace["MyFedProx"](mu=0.1), rounds=1)
    assert prox_trainer.config["algorithm"]["mu"] == 0.1
    stats_trainer, _ = _fit(namespace["SendsStats"](), rounds=1)
    plain_trainer, _ = _fit(FedAvg(), rounds=1)
    extra = 3 * 2 * 64 * 4  # 3 clients send a mean and a variance of 64 floats
    assert stats_trainer.results["bytes"]["up"] == plain_trainer.results["bytes"]["up"] + extra
    _, momentum = _fit(namespace["fedavgm"], rounds=2)
    _, plain = _fit(FedAvg(), rounds=2)
    assert not torch.equal(
        momentum.state_dict()["net.1.weight"], plain.state_dict()["net.1.weight"]
    )
    _fit(namespace["fedadam"], rounds=1)


def test_the_pages_tester_snippet_passes(namespace: dict[str, Any]) -> None:
    block = next(
        b
        for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
        if "AlgorithmTester" in b
    )
    scope = dict(namespace)
    exec(compile(block, str(DOC), "exec"), scope)
    scope["test_my_algorithm"]()
