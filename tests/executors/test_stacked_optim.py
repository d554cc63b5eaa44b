"""The stacked optimizers follow torch.optim's update rules, client by client."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from fedlightning.executors.stacked_optim import (
    StackedAdam,
    StackedSGD,
    UnsupportedOptimizerError,
    optimizer_spec,
    stacked_optimizer,
)

K = 3
STEPS = 6

OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
    "sgd_dampening_max": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.5, dampening=0.3, maximize=True
    ),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adam_wd_amsgrad": lambda p: torch.optim.Adam(
        p, lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1, amsgrad=True
    ),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
}


def _run_both(
    make: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    shapes = {"w": (4, 5), "b": (5,)}
    init = [{n: torch.randn(s, generator=g) for n, s in shapes.items()} for _ in range(K)]
    grads = [
        [{n: torch.randn(s, generator=g) for n, s in shapes.items()} for _ in range(K)]
        for _ in range(STEPS)
    ]
    # Reference: one torch.optim optimizer per client.
    reference = []
    for k in range(K):
        params = {n: nn.Parameter(init[k][n].clone()) for n in shapes}
        opt = make(list(params.values()))
        for t in range(STEPS):
            for n, p in params.items():
                p.grad = grads[t][k][n].clone()
            opt.step()
        reference.append({n: p.detach() for n, p in params.items()})
    # Stacked: one optimizer for all clients.
    template = {n: nn.Parameter(torch.zeros(s)) for n, s in shapes.items()}
    spec = optimizer_spec(make(list(template.values())), {id(p): n for n, p in template.items()})
    stacked = {n: torch.stack([init[k][n] for k in range(K)]) for n in shapes}
    opt_s = stacked_optimizer(spec, stacked)
    for t in range(STEPS):
        opt_s.step(
            stacked, {n: torch.stack([grads[t][k][n] for k in range(K)]) for n in shapes}, None
        )
    return reference, stacked


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_stacked_update_matches_torch_optim(name: str) -> None:
    reference, stacked = _run_both(OPTIMIZERS[name])
    for k in range(K):
        for n, expected in reference[k].items():
            # Elementwise ops only: equal up to one rounding step (FMA on vector paths).
            torch.testing.assert_close(stacked[n][k], expected, rtol=1e-6, atol=1e-7)


def test_stacked_rows_step_independently() -> None:
    template = {"w": nn.Parameter(torch.zeros(2))}
    spec = optimizer_spec(torch.optim.Adam(template.values(), lr=0.1), {id(template["w"]): "w"})
    params = {"w": torch.zeros(3, 2)}
    opt = stacked_optimizer(spec, params)
    assert isinstance(opt, StackedAdam)
    index = torch.tensor([0, 2])
    rows = {"w": params["w"].index_select(0, index)}
    opt.step(rows, {"w": torch.ones(2, 2)}, index)
    params["w"].index_copy_(0, index, rows["w"])
    assert opt.steps.tolist() == [1, 0, 1]
    # Adam's first step moves by lr in the direction against the gradient.
    torch.testing.assert_close(params["w"][0], torch.full((2,), -0.1))
    assert params["w"][1].abs().sum() == 0
    with pytest.raises(ValueError, match="same number of steps"):
        opt.step({"w": params["w"]}, {"w": torch.ones(3, 2)}, None)


def test_per_group_hyperparameters() -> None:
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b]}], lr=0.1)
    spec = optimizer_spec(opt, {id(a): "a", id(b): "b"})
    params = {"a": torch.zeros(1, 2), "b": torch.zeros(1, 2)}
    stacked = stacked_optimizer(spec, params)
    assert isinstance(stacked, StackedSGD)
    stacked.step(params, {"a": torch.ones(1, 2), "b": torch.ones(1, 2)}, None)
    assert params["a"][0].tolist() == [-1.0, -1.0]
    torch.testing.assert_close(params["b"][0], torch.full((2,), -0.1))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: torch.optim.RMSprop(p, lr=0.1), "RMSprop"),
        (lambda p: torch.optim.Adam(p, lr=torch.tensor(0.1)), "tensor lr"),
        (lambda p: torch.optim.SGD(p, lr=0.1, differentiable=True), "differentiable"),
    ],
)
def test_unsupported_optimizers_are_refused(
    make: Callable[[list[nn.Parameter]], torch.optim.Optimizer], match: str
) -> None:
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(UnsupportedOptimizerError, match=match):
        optimizer_spec(make([p]), {id(p): "p"})


def test_foreign_tensor_is_refused() -> None:
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(UnsupportedOptimizerError, match="not a parameter"):
        optimizer_spec(torch.optim.SGD([p], lr=0.1), {})
