"""Server optimizers: Reddi et al.'s Algorithm 2 (FedAdagrad, FedYogi, FedAdam) and FedAvgM.

Every expected value is computed here by hand: written-out numbers, or Algorithm 2 redone on
plain Python floats (:func:`algorithm2`), never by the code under test.
"""

from __future__ import annotations

import copy
import functools
import math
import pickle
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule
from torch import nn

from fedlightning.algorithms import FedAvg
from fedlightning.algorithms.adaptive import FedAdagrad, FedAdam, FedAvgM, FedYogi
from fedlightning.algorithms.base import Algorithm
from fedlightning.algorithms.server_optim import AdaptiveServerOptimizer
from fedlightning.demos import BoringClassifier
from tests.executors.conftest import fit, image_datamodule, max_abs_diff

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---------------------------------------------------------------------------- reference


def algorithm2(
    mode: str,
    x0: float,
    deltas: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> list[tuple[float, float, float]]:
    """Reddi et al.'s Algorithm 2 on one coordinate, in plain floats: (x, m, v) after each
    step. ``m_{-1} = 0``, ``v_{-1} = tau**2``, no bias correction, tau outside the sqrt."""
    x, m, v = x0, 0.0, tau * tau
    out = []
    for d in deltas:
        m = beta1 * m + (1 - beta1) * d
        if mode == "adagrad":
            v = v + d * d
        elif mode == "yogi":
            s = v - d * d
            sign = 1.0 if s > 0 else (-1.0 if s < 0 else 0.0)
            v = v - (1 - beta2) * d * d * sign
        else:
            v = beta2 * v + (1 - beta2) * d * d
        x = x + lr * m / (math.sqrt(v) + tau)
        out.append((x, m, v))
    return out


def run_optimizer(
    mode: str, x0: list[float], deltas: list[list[float]], dtype: torch.dtype, **hp: float
) -> list[tuple[list[float], list[float], list[float]]]:
    """Step an AdaptiveServerOptimizer with gradient ``-delta``; (x, m, v) after each step."""
    p = nn.Parameter(torch.tensor(x0, dtype=dtype))
    opt = AdaptiveServerOptimizer([p], mode=mode, **hp)  # type: ignore[arg-type]
    out = []
    for delta in deltas:
        p.grad = -torch.tensor(delta, dtype=dtype)
        opt.step()
        state = opt.state[p]
        out.append((p.tolist(), state["m"].tolist(), state["v"].tolist()))
    return out


# Three coordinates, each with its own deltas over three rounds (signs and sizes vary).
X0 = [1.0, -0.5, 0.25]
DELTAS = [[0.4, -1.5, 0.01], [1.2, 0.5, -0.02], [-8.4, 0.05, 0.3]]


@pytest.mark.parametrize("mode", ["adagrad", "adam", "yogi"])
@pytest.mark.parametrize(
    "hp",
    [
        {"lr": 1.0, "beta1": 0.5, "beta2": 0.75, "tau": 0.3},
        {"lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
    ],
)
def test_steps_match_algorithm2_by_hand(mode: str, hp: dict[str, float]) -> None:
    got = run_optimizer(mode, X0, DELTAS, torch.float64, **hp)
    for i in range(len(X0)):
        expected = algorithm2(mode, X0[i], [d[i] for d in DELTAS], **hp)
        for step, (x, m, v) in enumerate(expected):
            gx, gm, gv = got[step]
            assert gx[i] == pytest.approx(x, rel=1e-12, abs=1e-15), (mode, i, step)
            assert gm[i] == pytest.approx(m, rel=1e-12, abs=1e-15), (mode, i, step)
            assert gv[i] == pytest.approx(v, rel=1e-12, abs=1e-15), (mode, i, step)


def test_adagrad_written_out() -> None:
    # tau = 0.3, beta1 = 0.5, lr = 1: v_{-1} = 0.09.
    # t=0: Delta 0.4  -> m 0.2,   v 0.09 + 0.16 = 0.25,  x 1 + 0.2 / (0.5 + 0.3)   = 1.25
    # t=1: Delta 1.2  -> m 0.7,   v 0.25 + 1.44 = 1.69,  x 1.25 + 0.7 / (1.3 + 0.3) = 1.6875
    # t=2: Delta -8.4 -> m -3.85, v 1.69 + 70.56 = 72.25, x 1.6875 - 3.85 / 8.8    = 1.25
    got = run_optimizer(
        "adagrad", [1.0], [[0.4], [1.2], [-8.4]], torch.float64, lr=1.0, beta1=0.5, tau=0.3
    )
    for (x, m, v), (ex, em, ev) in zip(
        got, [(1.25, 0.2, 0.25), (1.6875, 0.7, 1.69), (1.25, -3.85, 72.25)], strict=True
    ):
        assert x[0] == pytest.approx(ex, abs=1e-12)
        assert m[0] == pytest.approx(em, abs=1e-12)
        assert v[0] == pytest.approx(ev, abs=1e-12)


def test_adam_written_out_no_bias_correction() -> None:
    # tau = 0.5, beta1 = 0.5, beta2 = 0.75, lr = 1: v_{-1} = 0.25.
    # t=0: Delta 1.5 -> m 0.75, v 0.75 * 0.25 + 0.25 * 2.25 = 0.75
    #      x = 0 + 0.75 / (sqrt(0.75) + 0.5)
    # t=1: Delta 0.5 -> m 0.625, v 0.75 * 0.75 + 0.25 * 0.25 = 0.625
    #      x += 0.625 / (sqrt(0.625) + 0.5)
    hp: dict[str, float] = {"lr": 1.0, "beta1": 0.5, "beta2": 0.75, "tau": 0.5}
    got = run_optimizer("adam", [0.0], [[1.5], [0.5]], torch.float64, **hp)
    x1 = 0.75 / (math.sqrt(0.75) + 0.5)
    x2 = x1 + 0.625 / (math.sqrt(0.625) + 0.5)
    assert got[0][1][0] == pytest.approx(0.75) and got[0][2][0] == pytest.approx(0.75)
    assert got[1][1][0] == pytest.approx(0.625) and got[1][2][0] == pytest.approx(0.625)
    assert got[0][0][0] == pytest.approx(x1, rel=1e-12)
    assert got[1][0][0] == pytest.approx(x2, rel=1e-12)
    # torch.optim.Adam (bias correction, eps inside the step, v from 0) moves by lr = 1 first.
    p = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    torch_adam = torch.optim.Adam([p], lr=1.0, betas=(0.5, 0.75), eps=0.5)
    p.grad = torch.tensor([-1.5], dtype=torch.float64)
    torch_adam.step()
    assert p.item() != pytest.approx(x1)


def test_yogi_sign_rule_both_ways_and_zero() -> None:
    # tau = 0.5, beta1 = 0.5, beta2 = 0.75, lr = 1: v_{-1} = 0.25.
    # coordinate 0, t=0: Delta 1.5, v - Delta^2 = -2 < 0 -> v grows: 0.25 + 0.25 * 2.25 = 0.8125
    #               t=1: Delta 0.5, v - Delta^2 = 0.5625 > 0 -> v shrinks: 0.8125 - 0.0625 = 0.75
    # coordinate 1, t=0: Delta 0.5, v - Delta^2 = 0 -> v stays 0.25
    #               t=1: Delta 0.1, v - Delta^2 = 0.24 > 0 -> v shrinks: 0.25 - 0.0025 = 0.2475
    # (Adam would give 0.75 then 0.625 on coordinate 0: Yogi's v decreases more slowly.)
    hp: dict[str, float] = {"lr": 1.0, "beta1": 0.5, "beta2": 0.75, "tau": 0.5}
    got = run_optimizer("yogi", [0.0, 0.0], [[1.5, 0.5], [0.5, 0.1]], torch.float64, **hp)
    assert got[0][2] == pytest.approx([0.8125, 0.25], abs=1e-15)
    assert got[1][2] == pytest.approx([0.75, 0.2475], abs=1e-15)
    x0 = 0.75 / (math.sqrt(0.8125) + 0.5)
    x1 = 0.25 / (math.sqrt(0.25) + 0.5)
    assert got[0][0] == pytest.approx([x0, x1], rel=1e-12)
    assert got[1][0] == pytest.approx(
        [x0 + 0.625 / (math.sqrt(0.75) + 0.5), x1 + 0.175 / (math.sqrt(0.2475) + 0.5)],
        rel=1e-12,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_state_follows_the_parameter_dtype(dtype: torch.dtype) -> None:
    p = nn.Parameter(torch.ones(3, dtype=dtype))
    opt = AdaptiveServerOptimizer([p], mode="yogi", lr=0.1)
    p.grad = torch.full((3,), -0.5, dtype=dtype)
    opt.step()
    state = opt.state[p]
    assert state["m"].dtype == dtype and state["v"].dtype == dtype
    assert state["step"] == 1
    expected = algorithm2("yogi", 1.0, [0.5], lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)[0][0]
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    assert p.detach().double() == pytest.approx([expected] * 3, rel=tol)


@cuda
@pytest.mark.cuda
def test_state_lives_on_the_parameter_device() -> None:
    p = nn.Parameter(torch.tensor([1.0, 2.0], device="cuda"))
    opt = AdaptiveServerOptimizer([p], mode="adam", lr=0.1)
    p.grad = torch.tensor([-0.2, 0.3], device="cuda")
    opt.step()
    assert opt.state[p]["m"].device == p.device and opt.state[p]["v"].device == p.device
    for i, (x0, d) in enumerate([(1.0, 0.2), (2.0, -0.3)]):
        x = algorithm2("adam", x0, [d], lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)[0][0]
        assert p[i].item() == pytest.approx(x, rel=1e-5)


def test_parameters_without_gradient_are_left_alone() -> None:
    a = nn.Parameter(torch.ones(2))
    b = nn.Parameter(torch.ones(2))
    opt = AdaptiveServerOptimizer([a, b], mode="adagrad", lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    assert b.tolist() == [1.0, 1.0] and b not in opt.state


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, r"lr must be a finite number > 0, got lr=0.0"),
        ({"lr": -1e-2}, r"lr must be a finite number > 0, got lr=-0.01"),
        ({"lr": math.nan}, r"lr must be a finite number > 0"),
        ({"tau": 0.0}, r"tau must be a finite number > 0, got tau=0.0"),
        ({"tau": -1.0}, r"tau must be a finite number > 0, got tau=-1.0"),
        ({"beta1": 1.0}, r"beta1 must be in \[0, 1\), got beta1=1.0"),
        ({"beta1": -0.1}, r"beta1 must be in \[0, 1\), got beta1=-0.1"),
        ({"beta2": 1.0}, r"beta2 must be in \[0, 1\), got beta2=1.0"),
        ({"beta2": "0.9"}, r"beta2 must be in \[0, 1\), got beta2='0.9'"),
        ({"mode": "sgd"}, r"mode must be one of 'adagrad', 'adam', 'yogi', got mode='sgd'"),
    ],
)
def test_optimizer_refuses_bad_hyperparameters(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"mode": "adam", **kwargs}
    with pytest.raises(ValueError, match=match):
        AdaptiveServerOptimizer([nn.Parameter(torch.zeros(1))], **args)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: FedAdam(server_lr=0.0), r"FedAdam server_lr must be a finite number > 0"),
        (lambda: FedYogi(tau=0.0), r"FedYogi tau must be a finite number > 0, got tau=0.0"),
        (lambda: FedYogi(beta2=1.0), r"FedYogi beta2 must be in \[0, 1\), got beta2=1.0"),
        (lambda: FedAdagrad(beta1=-0.5), r"FedAdagrad beta1 must be in \[0, 1\)"),
        (lambda: FedAdagrad(server_lr=-1.0), r"FedAdagrad server_lr must be .* server_lr=-1.0"),
        (lambda: FedAvgM(server_lr=0.0), r"FedAvgM server_lr must be .* got server_lr=0.0"),
        (lambda: FedAvgM(momentum=1.0), r"FedAvgM momentum must be in \[0, 1\), got momentum"),
        (lambda: FedAvgM(momentum=-0.1), r"FedAvgM momentum must be in \[0, 1\)"),
    ],
)
def test_presets_refuse_bad_hyperparameters(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "factory",
    [
        42,
        lambda params: 3,
        functools.partial(torch.optim.SGD, lr=0.0),
        functools.partial(AdaptiveServerOptimizer, mode="adam", lr=0.0),
        functools.partial(AdaptiveServerOptimizer, mode="rmsprop"),
    ],
    ids=["not-callable", "returns-int", "sgd-lr-0", "adaptive-lr-0", "adaptive-bad-mode"],
)
def test_fedavg_refuses_a_bad_server_optimizer(factory: Any) -> None:
    with pytest.raises(ValueError, match=r"server_optimizer"):
        FedAvg(server_optimizer=factory)


# ---------------------------------------------------------------------------- presets


def test_presets_record_readable_picklable_factories() -> None:
    algorithm = FedAdam(server_lr=0.05, tau=1e-2)
    assert algorithm.settings["server_lr"] == 0.05 and algorithm.settings["beta2"] == 0.99
    assert "AdaptiveServerOptimizer(mode='adam', lr=0.05, beta1=0.9, beta2=0.99, tau=0.01)" in (
        repr(algorithm)
    )
    assert "SGD(lr=1.0, momentum=0.9)" in repr(FedAvgM())
    assert "mode='adagrad', lr=0.1" in repr(FedAdagrad())
    assert "mode='yogi', lr=0.01" in repr(FedYogi())
    for preset in (algorithm, FedYogi(), FedAdagrad(), FedAvgM()):
        factory = pickle.loads(pickle.dumps(preset.server_optimizer))
        assert isinstance(factory([nn.Parameter(torch.zeros(1))]), torch.optim.Optimizer)
    assert isinstance(FedAdam(), FedAvg)


class Tiny(LightningModule):
    """Two parameters and a buffer, in float64, for hand-computed server steps."""

    def __init__(self, w: tuple[float, float] = (1.0, -2.0), b: float = 0.5) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([b], dtype=torch.float64))
        self.register_buffer("count", torch.tensor([0.0], dtype=torch.float64))


def attach(algorithm: Algorithm, model: LightningModule) -> Algorithm:
    algorithm.setup(SimpleNamespace(seed=0), model, None)  # type: ignore[arg-type]
    return algorithm


def update(w: tuple[float, float], b: float, count: float = 1.0) -> dict[str, torch.Tensor]:
    return {
        "w": torch.tensor(w, dtype=torch.float64),
        "b": torch.tensor([b], dtype=torch.float64),
        "count": torch.tensor([count], dtype=torch.float64),
    }


def test_fedavgm_momentum_over_two_rounds() -> None:
    # lr 0.5, momentum 0.9, torch SGD without dampening on g = -Delta:
    # buf_1 = g_1, buf_2 = 0.9 buf_1 + g_2, x <- x - 0.5 buf.
    # w[0]: Delta 0.2, -0.4: buf -0.2 -> x 1.0 + 0.1 = 1.1; buf -0.18 + 0.4 = 0.22 -> x 0.99
    # w[1]: Delta -1.0, 0.0: buf 1.0 -> x -2.0 - 0.5 = -2.5; buf 0.9 -> x -2.5 - 0.45 = -2.95
    # b:    Delta 0.1, 0.1:  buf -0.1 -> x 0.5 + 0.05 = 0.55; buf -0.19 -> x 0.55 + 0.095 = 0.645
    # count (a buffer) is added as it is: 0 + 1 + 1 = 2.
    model = Tiny()
    algorithm = attach(FedAvgM(server_lr=0.5, momentum=0.9), model)
    algorithm.apply_update(algorithm.global_state(), update((0.2, -1.0), 0.1))
    assert model.w.tolist() == pytest.approx([1.1, -2.5], abs=1e-12)
    assert model.b.tolist() == pytest.approx([0.55], abs=1e-12)
    algorithm.apply_update(algorithm.global_state(), update((-0.4, 0.0), 0.1))
    assert model.w.tolist() == pytest.approx([0.99, -2.95], abs=1e-12)
    assert model.b.tolist() == pytest.approx([0.645], abs=1e-12)
    assert model.count.tolist() == [2.0]
    assert model.w.grad is None  # the pseudo-gradient is cleared after the step


def test_fedadam_apply_update_end_to_end_and_state_round_trip() -> None:
    hp: dict[str, float] = {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    rounds = [((0.2, -1.0), 0.05), ((-0.1, 0.3), 0.05), ((0.4, 0.0), -0.2)]
    start = {"w0": 1.0, "w1": -2.0, "b": 0.5}
    deltas = {
        "w0": [r[0][0] for r in rounds],
        "w1": [r[0][1] for r in rounds],
        "b": [r[1] for r in rounds],
    }
    expected = {k: [x for x, _, _ in algorithm2("adam", start[k], deltas[k], **hp)] for k in start}

    def settings() -> FedAdam:
        return FedAdam(server_lr=hp["lr"], beta1=hp["beta1"], beta2=hp["beta2"], tau=hp["tau"])

    model = Tiny()
    algorithm = attach(settings(), model)
    algorithm.apply_update(algorithm.global_state(), update(*rounds[0]))
    assert model.w.tolist() == pytest.approx([expected["w0"][0], expected["w1"][0]], rel=1e-12)
    assert model.b.item() == pytest.approx(expected["b"][0], rel=1e-12)
    assert model.count.item() == 1.0

    # Checkpoint after round 1; a fresh algorithm on the saved weights resumes identically.
    saved_opt = copy.deepcopy(algorithm.server_optimizer_state())
    assert saved_opt is not None
    saved_model = copy.deepcopy(model.state_dict())
    for r in rounds[1:]:
        algorithm.apply_update(algorithm.global_state(), update(*r))
    assert model.w.tolist() == pytest.approx([expected["w0"][2], expected["w1"][2]], rel=1e-12)
    assert model.b.item() == pytest.approx(expected["b"][2], rel=1e-12)

    resumed_model = Tiny()
    resumed_model.load_state_dict(saved_model)
    resumed = attach(settings(), resumed_model)
    resumed.load_server_optimizer_state(saved_opt)
    for r in rounds[1:]:
        resumed.apply_update(resumed.global_state(), update(*r))
    for key, value in model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key

    # Without the optimizer state (m = 0, v = tau^2 again) the next step is different.
    fresh_model = Tiny()
    fresh_model.load_state_dict(saved_model)
    fresh = attach(settings(), fresh_model)
    fresh.apply_update(fresh.global_state(), update(*rounds[1]))
    assert fresh_model.w.tolist() != pytest.approx([expected["w0"][1], expected["w1"][1]], rel=1e-6)


# ---------------------------------------------------------------------------- trainer


def _train(algorithm: Algorithm) -> LightningModule:
    torch.manual_seed(0)
    model = BoringClassifier(in_features=64)
    fit(model, image_datamodule(), "sequential", algorithm, rounds=3, local_epochs=1)
    return model


def test_fedavgm_through_the_trainer() -> None:
    torch.manual_seed(0)
    initial = BoringClassifier(in_features=64)
    fedavg = _train(FedAvg())
    assert max_abs_diff(fedavg, initial) > 1e-3  # the clients trained
    no_momentum = _train(FedAvgM(server_lr=1.0, momentum=0.0))
    momentum = _train(FedAvgM(server_lr=1.0, momentum=0.9))
    for key, value in fedavg.state_dict().items():
        assert torch.equal(no_momentum.state_dict()[key], value), key
    assert max_abs_diff(momentum, fedavg) > 1e-4
