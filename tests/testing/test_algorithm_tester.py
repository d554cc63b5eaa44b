"""The shared algorithm tester over every built-in algorithm, and the bugs it must catch.

Each built-in algorithm is one :class:`Case`: a factory of its
:class:`~fedlightning.testing.AlgorithmTester` (tiny model and data) and the checks that
apply to it; every (case, check) pair is one test. The ``test_tester_catches_*`` tests patch
a hand-made bug into the library and assert that the corresponding check fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from fedlightning import FederatedTrainer
from fedlightning.algorithms import (
    Algorithm,
    CommunityFedAvg,
    FedAvg,
    FedDropout,
    FedFSNet,
    FedMorph,
    FedMorphProx,
    FedProx,
    FedPruned,
    GroupIdentification,
)
from fedlightning.algorithms.adaptive import FedAdagrad, FedAdam, FedAvgM, FedYogi
from fedlightning.algorithms.fsnet import ConstantBeta
from fedlightning.algorithms.functional import proximal_term, weighted_average
from fedlightning.algorithms.scaffold import Scaffold
from fedlightning.datamodules import IID, FederatedDataModule
from fedlightning.datamodules.anomaly import AnomalyDataModule
from fedlightning.messages import Message
from fedlightning.models.autoencoders import ConvAutoencoder5
from fedlightning.models.masked import MaskedResNet8
from fedlightning.round import STREAM_SELECT, ClientContext, Reply
from fedlightning.testing import AlgorithmTester, assert_same_state, init_parameters

# ---------------------------------------------------------------------------- workloads


def subnet_model() -> MaskedResNet8:
    """A tiny masked ResNet8 on 12x12 images (the sub-network algorithms' model)."""
    widths = {"stem": 6, "s0b0_mid": 6, "s0b0_out": 6, "s1b0_mid": 8, "s1b0_out": 8}
    widths |= {"s2b0_mid": 10, "s2b0_out": 10, "s3b0_mid": 12, "s3b0_out": 12}
    return MaskedResNet8(image_size=12, widths=widths, masked=True, seed=0, lr=0.05)


def subnet_data() -> FederatedDataModule:
    """4 clients of 6 images (one batch each), 10 classes, 8 test images."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 12, 12, generator=g), torch.randint(0, 10, (24,), generator=g)
    xt, yt = torch.rand(8, 1, 12, 12, generator=g), torch.randint(0, 10, (8,), generator=g)
    return FederatedDataModule((x, y), partition=IID(4), batch_size=6, test=(xt, yt))


def brightness_images(n_per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """Two classes of 8x8 images, dark and bright (tests/algorithms/community's data)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat_interleave(n_per_class)
    x = torch.tensor([0.2, 0.8])[y].view(-1, 1, 1, 1) + 0.05 * torch.randn(
        len(y), 1, 8, 8, generator=g
    )
    return x.clamp(0, 1), y


def anomaly_data() -> AnomalyDataModule:
    """4 clients (2 per class) of inliers and 10% outliers."""
    return AnomalyDataModule(
        brightness_images(60, 0),
        test=brightness_images(20, 1),
        clients_per_class=2,
        outlier_fraction=0.1,
        num_classes=2,
        batch_size=32,
        seed=0,
    )


class MeanDetector:
    """Inlier when the mean pixel is within the training 5-95% range (a cheap Phase I)."""

    def __init__(self) -> None:
        self.bounds = torch.zeros(2)

    def fit(self, x: Tensor, seed: int = 0) -> MeanDetector:
        means = x.mean(dim=(1, 2, 3))
        self.bounds = torch.quantile(means, torch.tensor([0.05, 0.95]))
        return self

    def inlier_mask(self, x: Tensor) -> Tensor:
        means = x.mean(dim=(1, 2, 3))
        return (means >= self.bounds[0]) & (means <= self.bounds[1])

    def to_message(self) -> Message:
        return Message(extras={"bounds": self.bounds.to(torch.float32)})

    def from_message(self, message: Message) -> MeanDetector:
        other = MeanDetector()
        other.bounds = message.extras["bounds"]
        return other


@dataclass(frozen=True)
class Case:
    """One algorithm's tester and the checks run on it.

    Attributes:
        tester: Builds the tester.
        checks: The checks to run (default: every check that applies per the tester's
            flags).
        executors: What ``check_executors`` compares with the sequential executor.
    """

    tester: Callable[[], AlgorithmTester]
    checks: tuple[str, ...] | None = None
    executors: tuple[str, ...] = ("vectorized", "auto")


def fsnet() -> FedFSNet:
    return FedFSNet(
        num_synthetic=8,
        beta=ConstantBeta(1.0),
        hidden_widths=(16,),
        hidden_steps=3,
        hidden_batch_size=8,
    )


def subnet_tester(make: Callable[[], Algorithm]) -> AlgorithmTester:
    return AlgorithmTester(
        make, make_model=subnet_model, make_datamodule=subnet_data, rounds=2, clients_per_round=2
    )


def fedavg_like(
    make: Callable[[], Algorithm], *, stacks: bool = False, proximal: str | None = None
) -> AlgorithmTester:
    """A tester for algorithms whose round 1 is FedAvg's and whose messages are the state."""
    return AlgorithmTester(
        make, reduces_to_sgd=True, plain_messages=True, stacks=stacks, proximal=proximal
    )


SUBNET_CHECKS = ("check_config", "check_bytes", "check_resume", "check_executors")

CASES: dict[str, Case] = {
    "fedavg": Case(lambda: fedavg_like(FedAvg, stacks=True)),
    # Stateful: the default model then has a BatchNorm layer kept on the clients.
    "fedavg_local_bn": Case(lambda: fedavg_like(lambda: FedAvg(local_bn=True))),
    "fedprox": Case(lambda: fedavg_like(lambda: FedProx(mu=0.1), stacks=True, proximal="mu")),
    # u_1 = g_1 and server_lr = 1: round 1 is FedAvg's (documented).
    "fedavgm": Case(lambda: fedavg_like(FedAvgM, stacks=True)),
    "fedadam": Case(lambda: AlgorithmTester(FedAdam, stacks=True, plain_messages=True)),
    "fedyogi": Case(lambda: AlgorithmTester(FedYogi, stacks=True, plain_messages=True)),
    "fedadagrad": Case(lambda: AlgorithmTester(FedAdagrad, stacks=True, plain_messages=True)),
    # Round 1 (c = c_i = 0, server_lr = 1) is FedAvg's; messages carry control variates.
    "scaffold": Case(lambda: AlgorithmTester(Scaffold, reduces_to_sgd=True)),
    "community_fedavg": Case(
        lambda: AlgorithmTester(
            lambda: CommunityFedAvg(communities=[[0, 2, 4], [1, 3, 5]]), stacks=True
        )
    ),
    # Phase I exchanges detectors before round 1: counted outside the rounds.
    "community_fedavg_phase1": Case(
        lambda: AlgorithmTester(
            lambda: CommunityFedAvg(phase1=GroupIdentification(MeanDetector(), tolerance=0.1)),
            make_model=ConvAutoencoder5,
            make_datamodule=anomaly_data,
            rounds=2,
        ),
        checks=("check_config", "check_bytes", "check_resume"),
    ),
    "fedfsnet": Case(lambda: AlgorithmTester(fsnet)),
    "fedmorph": Case(
        lambda: subnet_tester(
            lambda: FedMorph(
                distill_every=1,
                distill_epochs=1,
                distill_samples=8,
                distill_batch_size=8,
                lam=1e-2,
            )
        ),
        checks=SUBNET_CHECKS,
        executors=("auto",),
    ),
    # **kwargs reach FedMorph's arguments: check_config follows them.
    "fedmorphprox": Case(
        lambda: subnet_tester(
            lambda: FedMorphProx(
                mu=0.1, distill_every=1, distill_epochs=1, distill_samples=8, distill_batch_size=8
            )
        ),
        checks=("check_config",),
    ),
    "feddropout": Case(
        lambda: subnet_tester(lambda: FedDropout(0.5, per_client=True)),
        checks=SUBNET_CHECKS,
        executors=("auto",),
    ),
    "fedpruned": Case(
        lambda: subnet_tester(lambda: FedPruned(0.5)), checks=SUBNET_CHECKS, executors=("auto",)
    ),
}


def _params() -> list[Any]:
    params = []
    for name, case in CASES.items():
        checks = case.checks or tuple(case.tester().applicable_checks())
        params += [pytest.param(name, check, id=f"{name}-{check}") for check in checks]
    return params


@pytest.mark.parametrize(("case", "check"), _params())
def test_builtin_algorithm_passes(case: str, check: str) -> None:
    spec = CASES[case]
    tester = spec.tester()
    if check == "check_executors":
        tester.check_executors(spec.executors)
    else:
        getattr(tester, check)()


def test_every_builtin_case_runs_the_checks_its_flags_enable() -> None:
    """Not vacuous: the FedAvg family runs every check, the others what applies."""
    assert CASES["fedprox"].tester().applicable_checks() == [
        "check_config",
        "check_proximal",
        "check_centralized_sgd",
        "check_sample_weighting",
        "check_selection_varies",
        "check_bytes",
        "check_resume",
        "check_executors",
        "check_runs_stacked",
    ]
    tester = CASES["fedavg_local_bn"].tester()
    assert any("BatchNorm" in type(m).__name__ for m in tester.model().modules())
    assert "check_runs_stacked" not in tester.applicable_checks()
    with pytest.raises(ValueError, match="unknown checks"):
        tester.applicable_checks(skip={"check_everything"})


# ---------------------------------------------------------------------------- helpers


def test_init_parameters_follow_kwargs_to_the_parents() -> None:
    names = [p.name for p in init_parameters(FedMorphProx)]
    assert names[0] == "mu"
    assert {"distill_every", "lam", "uplink", "downlink"} <= set(names)
    assert "kwargs" not in names
    assert [p.name for p in init_parameters(FedAvg)] == [
        "uplink",
        "downlink",
        "local_bn",
        "server_optimizer",
    ]


def test_assert_same_state_names_what_differs_and_by_how_much() -> None:
    a = {"w": torch.zeros(3), "n": torch.tensor(2), "meta": [1.0, "x"]}
    b = {"w": torch.tensor([0.0, 0.5, 0.0]), "n": torch.tensor(2), "meta": [1.0, "x"]}
    assert_same_state(a, {k: v for k, v in a.items()})
    with pytest.raises(
        AssertionError, match=r"\['w'\]: differs .* at 1 of 3 entries, by up to 0.5"
    ):
        assert_same_state(a, b, where="state")
    assert_same_state(a, b, atol=0.6)
    with pytest.raises(AssertionError, match=r"keys differ: missing \['n'\]"):
        assert_same_state(a, {"w": a["w"], "meta": a["meta"]})


def test_proximal_needs_the_coefficients_name() -> None:
    with pytest.raises(ValueError, match="proximal='mu'"):
        AlgorithmTester(FedProx).check_proximal()


# ---------------------------------------------------------------------------- mutants


def test_tester_catches_unweighted_aggregate(monkeypatch: pytest.MonkeyPatch) -> None:
    """(a) FedAvg's aggregate averaging the updates without sample weights."""

    def unweighted(self: Algorithm, round: int, replies: list[Reply]) -> None:
        mean = weighted_average([r.message.decode() for r in replies], [1.0] * len(replies))
        self.apply_update(self.global_state(), mean)

    tester = AlgorithmTester(FedAvg, reduces_to_sgd=True)
    tester.check_sample_weighting()  # passes before the bug
    monkeypatch.setattr(FedAvg, "aggregate", unweighted)
    with pytest.raises(AssertionError, match="not the sample-weighted mean"):
        tester.check_sample_weighting()


def test_tester_catches_fixed_proximal_coefficient(monkeypatch: pytest.MonkeyPatch) -> None:
    """(b) FedProx's loss using a fixed coefficient (0.01) instead of ``self.mu``."""

    def fixed(self: FedProx, ctx: ClientContext, module: Any, batch: Any, loss: Tensor) -> Tensor:
        if self.mu == 0.0:
            return loss
        return loss + proximal_term(module, ctx.received, 0.01)

    tester = AlgorithmTester(lambda: FedProx(mu=0.1), proximal="mu")
    tester.check_proximal()
    monkeypatch.setattr(FedProx, "training_loss", fixed)
    with pytest.raises(AssertionError, match=r"FedProx\(mu=0.5\): the loss hook adds"):
        tester.check_proximal()


def test_tester_catches_selection_ignoring_the_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """(c) ``select_clients`` drawing from ``rng(0, STREAM_SELECT)`` whatever the round."""

    def same_every_round(self: Algorithm, round: int, clients: Any) -> list[int]:
        k = self.server.num_selected(len(clients))
        chosen = self.server.rng(0, STREAM_SELECT).choice(len(clients), size=k, replace=False)
        return sorted(int(clients[i]) for i in chosen)

    tester = AlgorithmTester(FedAvg)
    tester.check_selection_varies()
    monkeypatch.setattr(Algorithm, "select_clients", same_every_round)
    with pytest.raises(AssertionError, match="the selection ignores the round"):
        tester.check_selection_varies()


def test_tester_catches_resume_without_client_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """(d) A resume that loads the checkpoint but drops the clients' states."""
    original = FederatedTrainer._load_checkpoint

    def forgetful(self: FederatedTrainer, path: Path) -> int:
        done = original(self, path)
        self.client_states = {}
        return done

    tester = AlgorithmTester(lambda: FedAvg(local_bn=True))
    tester.check_resume()
    monkeypatch.setattr(FederatedTrainer, "_load_checkpoint", forgetful)
    with pytest.raises(AssertionError, match=r"trainer\.client_states\[\d+\]\['local_state'\]"):
        tester.check_resume()


def test_resume_check_ignores_durations_in_the_state_but_nothing_else() -> None:
    """A duration kept in the algorithm state (seed 000 keeps Phase I's seconds) differs
    between any two runs; a counter that a resume fails to restore must still be caught."""

    class Timed(FedAvg):
        def __init__(self, restore: bool = True) -> None:
            super().__init__()
            self.restore = restore
            self.rounds_seen = 0
            self.started = time.perf_counter()

        def aggregate(self, round: int, replies: list[Any]) -> None:
            super().aggregate(round, replies)
            self.rounds_seen += 1

        def state_dict(self) -> dict[str, Any]:
            timing = {"setup_seconds": time.perf_counter() - self.started, "round_s": 0.1}
            return {**super().state_dict(), "rounds_seen": self.rounds_seen, "timing": timing}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            super().load_state_dict(state)
            if self.restore:
                self.rounds_seen = state["rounds_seen"]

    AlgorithmTester(Timed).check_resume()
    with pytest.raises(AssertionError, match=r"\['rounds_seen'\]"):
        AlgorithmTester(lambda: Timed(restore=False)).check_resume()
