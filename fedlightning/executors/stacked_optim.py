"""Optimizers over stacked client parameters: one update for all the clients of a round.

A vectorized round keeps each parameter of ``K`` clients as one tensor of shape
``(K, *shape)``. The optimizers here apply ``torch.optim``'s single-tensor (for-loop) update
rules, op for op, to those stacked tensors, so that each client's slice follows exactly the
trajectory its own ``torch.optim`` optimizer would. Only elementwise ops are involved, so the
result matches ``torch.optim`` to the last bit or within one rounding step where a CPU kernel
takes a fused multiply-add on its vectorized path and a plain one on its scalar tail.

Supported: :class:`torch.optim.SGD` (momentum, dampening, Nesterov, weight decay, maximize),
:class:`torch.optim.Adam` and :class:`torch.optim.AdamW` (weight decay, decoupled or not,
AMSGrad, maximize). Anything else raises :class:`UnsupportedOptimizerError`, and the vectorized
executor falls back to the sequential one.

References:
    D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
    I. Loshchilov, F. Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
    PyTorch's ``torch/optim/sgd.py`` and ``torch/optim/adam.py`` (``_single_tensor_*``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import SGD, Adam, AdamW, Optimizer

__all__ = [
    "OptimizerSpec",
    "StackedAdam",
    "StackedOptimizer",
    "StackedSGD",
    "UnsupportedOptimizerError",
    "optimizer_spec",
    "stacked_optimizer",
]


class UnsupportedOptimizerError(ValueError):
    """An optimizer (or one of its settings) that has no stacked implementation."""


@dataclass(frozen=True)
class OptimizerSpec:
    """What a stacked optimizer needs from a ``torch.optim`` optimizer.

    Attributes:
        kind: ``"sgd"`` or ``"adam"``.
        groups: Per parameter name, the hyperparameters of its group, as sorted items.
    """

    kind: str
    groups: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]

    def hyper(self) -> dict[str, dict[str, Any]]:
        """Per parameter name, its hyperparameters as a dict."""
        return {name: dict(items) for name, items in self.groups}


_SGD_KEYS = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
_ADAM_KEYS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled")


def optimizer_spec(optimizer: Optimizer, names: Mapping[int, str]) -> OptimizerSpec:
    """Read the update rule and per-parameter hyperparameters of a ``torch.optim`` optimizer.

    Args:
        optimizer: A freshly built optimizer (no state yet).
        names: ``id(parameter)`` -> parameter name, for the module the optimizer was built on.

    Returns:
        The optimizer's spec; parameters not in ``names`` are an error.

    Raises:
        UnsupportedOptimizerError: For any optimizer type or setting without a stacked rule.
    """
    kind = _kind(optimizer)
    if optimizer.state:
        raise UnsupportedOptimizerError(
            f"{type(optimizer).__name__} already has state; the vectorized executor builds "
            "fresh optimizers each round as the sequential one does"
        )
    groups: list[tuple[str, tuple[tuple[str, Any], ...]]] = []
    for group in optimizer.param_groups:
        hyper = _group_hyper(kind, optimizer, group)
        for p in group["params"]:
            if id(p) not in names:
                raise UnsupportedOptimizerError(
                    f"{type(optimizer).__name__} holds a tensor that is not a parameter of the "
                    "module; the vectorized executor can only stack the module's parameters"
                )
            groups.append((names[id(p)], tuple(sorted(hyper.items()))))
    return OptimizerSpec(kind, tuple(groups))


def _kind(optimizer: Optimizer) -> str:
    if type(optimizer) is SGD:
        return "sgd"
    if type(optimizer) in (Adam, AdamW):
        return "adam"
    raise UnsupportedOptimizerError(
        f"optimizer {type(optimizer).__name__} has no stacked implementation; supported: "
        "torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW"
    )


def _group_hyper(kind: str, optimizer: Optimizer, group: Mapping[str, Any]) -> dict[str, Any]:
    name = type(optimizer).__name__
    for flag in ("capturable", "differentiable", "fused"):
        if group.get(flag):
            raise UnsupportedOptimizerError(f"{name}({flag}=True) has no stacked implementation")
    for key in ("lr", "weight_decay", "momentum", "dampening", "eps"):
        if isinstance(group.get(key), Tensor):
            raise UnsupportedOptimizerError(
                f"{name} with a tensor {key} has no stacked implementation"
            )
    if kind == "sgd":
        return {key: group[key] for key in _SGD_KEYS}
    betas = group["betas"]
    if any(isinstance(b, Tensor) for b in betas):
        raise UnsupportedOptimizerError(f"{name} with tensor betas has no stacked implementation")
    decoupled = type(optimizer) is AdamW or bool(group.get("decoupled_weight_decay", False))
    hyper = {key: group[key] for key in _ADAM_KEYS if key != "decoupled"}
    hyper["betas"] = (float(betas[0]), float(betas[1]))
    hyper["decoupled"] = decoupled
    return hyper


class StackedOptimizer(ABC):
    """An optimizer whose parameters and state are stacked over clients (dim 0).

    State lives for all ``K`` clients; :meth:`step` updates the rows ``index`` (``None``: all),
    given the parameters and gradients of those rows, in place.

    Args:
        spec: The update rule and hyperparameters.
        params: Parameter name -> stacked tensor of shape ``(K, *shape)``.
    """

    def __init__(self, spec: OptimizerSpec, params: Mapping[str, Tensor]) -> None:
        self.hyper = spec.hyper()
        self.names = [n for n, _ in spec.groups]
        self.num_clients = next(iter(params.values())).shape[0] if params else 0
        self.state: dict[str, dict[str, Tensor]] = {
            name: self._init_state(params[name], self.hyper[name]) for name in self.names
        }
        self.steps = torch.zeros(self.num_clients, dtype=torch.long)
        # Scratch space for the update's temporaries: stacked tensors are large, and a fresh
        # allocation of that size per op costs more than the op (page faults on every step).
        self._scratch: dict[str, tuple[Tensor, Tensor]] = {
            name: (torch.empty_like(params[name]), torch.empty_like(params[name]))
            for name in self.names
        }

    @abstractmethod
    def _init_state(self, param: Tensor, hyper: dict[str, Any]) -> dict[str, Tensor]:
        """Zero state tensors stacked like ``param``."""

    @abstractmethod
    def _update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        hyper: dict[str, Any],
        step: int,
        scratch: tuple[Tensor, Tensor],
    ) -> None:
        """Apply one update in place to ``param`` (rows of the step) and ``state``.

        ``scratch`` holds two buffers of ``param``'s shape for temporaries; results are the
        same as with fresh tensors (same kernels, written to given memory).
        """

    @torch.no_grad()
    def step(
        self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor], index: Tensor | None
    ) -> None:
        """One optimizer step for the clients in ``index``.

        Args:
            params: Parameter name -> the stacked rows being stepped (the full tensors when
                ``index`` is None, else gathered rows, written back by the caller).
            grads: Parameter name -> gradient rows, same shapes.
            index: Client rows of this step (``None``: all clients).

        Raises:
            ValueError: If the clients of one step have taken different numbers of steps.
        """
        host_index = None if index is None else index.cpu()  # step counts live on the host
        rows = self.steps if host_index is None else self.steps[host_index]
        first = int(rows[0])
        if bool((rows != first).any()):
            raise ValueError("clients stepped together must have taken the same number of steps")
        step = first + 1
        rows_n = self.num_clients if index is None else int(index.numel())
        for name in self.names:
            state = self.state[name]
            scratch = (self._scratch[name][0][:rows_n], self._scratch[name][1][:rows_n])
            if index is None:
                self._update(params[name], grads[name], state, self.hyper[name], step, scratch)
                continue
            sub = {k: v.index_select(0, index) for k, v in state.items()}
            self._update(params[name], grads[name], sub, self.hyper[name], step, scratch)
            for k, v in sub.items():
                state[k].index_copy_(0, index, v)
        if index is None:
            self.steps += 1
        else:
            assert host_index is not None
            self.steps.index_add_(0, host_index, torch.ones_like(host_index))


class StackedSGD(StackedOptimizer):
    """:class:`torch.optim.SGD`'s update on stacked parameters."""

    def _init_state(self, param: Tensor, hyper: dict[str, Any]) -> dict[str, Tensor]:
        if hyper["momentum"] == 0:
            return {}
        return {"momentum_buffer": torch.zeros_like(param)}

    def _update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        hyper: dict[str, Any],
        step: int,
        scratch: tuple[Tensor, Tensor],
    ) -> None:
        if hyper["maximize"]:
            grad = torch.neg(grad, out=scratch[0])
        if hyper["weight_decay"] != 0:
            grad = torch.add(grad, param, alpha=hyper["weight_decay"], out=scratch[0])
        momentum = hyper["momentum"]
        if momentum != 0:
            buf = state["momentum_buffer"]
            if step == 1:
                buf.copy_(grad)
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - hyper["dampening"])
            if hyper["nesterov"]:
                grad = torch.add(grad, buf, alpha=momentum, out=scratch[1])
            else:
                grad = buf
        param.add_(grad, alpha=-hyper["lr"])


class StackedAdam(StackedOptimizer):
    """:class:`torch.optim.Adam` / :class:`torch.optim.AdamW`'s update on stacked parameters."""

    def _init_state(self, param: Tensor, hyper: dict[str, Any]) -> dict[str, Tensor]:
        state = {"exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}
        if hyper["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        return state

    def _update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        hyper: dict[str, Any],
        step: int,
        scratch: tuple[Tensor, Tensor],
    ) -> None:
        if hyper["maximize"]:
            grad = torch.neg(grad, out=scratch[0])
        lr, weight_decay, eps = hyper["lr"], hyper["weight_decay"], hyper["eps"]
        beta1, beta2 = hyper["betas"]
        if weight_decay != 0:
            if hyper["decoupled"]:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = torch.add(grad, param, alpha=weight_decay, out=scratch[0])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        second = exp_avg_sq
        if hyper["amsgrad"]:
            second = state["max_exp_avg_sq"]
            torch.maximum(second, exp_avg_sq, out=second)
        denom = torch.sqrt(second, out=scratch[1])
        denom.div_(bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def stacked_optimizer(spec: OptimizerSpec, params: Mapping[str, Tensor]) -> StackedOptimizer:
    """Build the stacked optimizer for ``spec`` over stacked ``params``.

    Args:
        spec: From :func:`optimizer_spec`.
        params: Parameter name -> stacked tensor ``(K, *shape)``; must hold every name of
            ``spec``.

    Returns:
        A :class:`StackedSGD` or :class:`StackedAdam`.

    Raises:
        UnsupportedOptimizerError: If ``spec.kind`` is unknown.
    """
    if spec.kind == "sgd":
        return StackedSGD(spec, params)
    if spec.kind == "adam":
        return StackedAdam(spec, params)
    raise UnsupportedOptimizerError(
        f"no stacked optimizer for kind={spec.kind!r}; allowed: sgd, adam"
    )
