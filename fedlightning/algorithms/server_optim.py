"""Adaptive server optimizers of Reddi et al.'s Algorithm 2 (FedAdagrad, FedYogi, FedAdam).

The server treats the negated mean client update as a gradient (the *pseudo-gradient*
``g_t = -Delta_t``, which :meth:`~fedlightning.algorithms.Algorithm.apply_update` stores in
each parameter's ``.grad``) and steps::

    m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t
    v_t = v_{t-1} + Delta_t**2                                          (adagrad)
    v_t = v_{t-1} - (1 - beta2) * Delta_t**2 * sign(v_{t-1} - Delta_t**2)  (yogi)
    v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t**2                     (adam)
    x_{t+1} = x_t + lr * m_t / (sqrt(v_t) + tau)

with ``m_{-1} = 0`` and ``v_{-1} = tau**2``. This is *not* :class:`torch.optim.Adam` or
:class:`torch.optim.Adagrad`: there is no bias correction, ``tau`` is added outside the
square root, ``v`` starts at ``tau**2`` rather than 0, Adagrad has first-moment momentum
``beta1`` and Yogi's second moment follows the sign rule above.

References:
    S. J. Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["MODES", "AdaptiveServerOptimizer", "ServerOptimizerMode", "check_hyperparameters"]

ServerOptimizerMode = Literal["adagrad", "adam", "yogi"]
"""The second-moment rule of :class:`AdaptiveServerOptimizer`."""

MODES: tuple[ServerOptimizerMode, ...] = ("adagrad", "adam", "yogi")
"""Every :data:`ServerOptimizerMode`."""


def check_hyperparameters(
    *,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
    owner: str = "",
    names: dict[str, str] | None = None,
) -> None:
    """Refuse hyperparameters outside Algorithm 2's ranges.

    Args:
        lr: Server learning rate, must be > 0 and finite.
        beta1: First-moment decay, must be in [0, 1).
        beta2: Second-moment decay, must be in [0, 1).
        tau: Adaptivity (smaller is more adaptive), must be > 0 and finite.
        owner: Who checks, named at the start of the error (e.g. ``"FedAdam"``).
        names: How to name each argument in the error (e.g. ``{"lr": "server_lr"}``).

    Raises:
        ValueError: Naming the parameter, its value and the allowed range.
    """
    names = names or {}
    prefix = f"{owner} " if owner else ""

    def fail(key: str, value: float, allowed: str) -> ValueError:
        name = names.get(key, key)
        return ValueError(f"{prefix}{name} must be {allowed}, got {name}={value!r}")

    if not _real(lr) > 0 or not math.isfinite(_real(lr)):
        raise fail("lr", lr, "a finite number > 0")
    for key, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= _real(beta) < 1.0:
            raise fail(key, beta, "in [0, 1)")
    if not _real(tau) > 0 or not math.isfinite(_real(tau)):
        raise fail("tau", tau, "a finite number > 0")


def _real(value: object) -> float:
    """``value`` as a float; NaN (refused by every range check) when it is not a number."""
    if isinstance(value, (str, bytes)):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


class AdaptiveServerOptimizer(Optimizer):
    """Reddi et al.'s server optimizer (Algorithm 2): FedAdagrad, FedYogi or FedAdam by ``mode``.

    Meant as the ``server_optimizer`` of an :class:`~fedlightning.algorithms.Algorithm`
    (see :class:`~fedlightning.algorithms.adaptive.FedAdam` and its siblings), where each
    parameter's gradient is the pseudo-gradient ``-Delta_t``. The state (``m``, ``v``,
    ``step``) lives on each parameter's device, in its dtype.

    Args:
        params: Parameters or parameter groups, as for any :class:`torch.optim.Optimizer`.
        mode: ``"adagrad"``, ``"adam"`` or ``"yogi"``: the second-moment rule.
        lr: Server learning rate ``eta`` (> 0).
        beta1: First-moment decay, in [0, 1).
        beta2: Second-moment decay, in [0, 1) (unused by ``"adagrad"``).
        tau: Adaptivity ``tau`` (> 0): added to ``sqrt(v)``; ``v`` starts at ``tau**2``.

    Raises:
        ValueError: If ``mode`` is unknown or a hyperparameter is out of range.

    Example:
        >>> import functools
        >>> from fedlightning.algorithms import FedAvg
        >>> factory = functools.partial(AdaptiveServerOptimizer, mode="yogi", lr=1e-2)
        >>> algorithm = FedAvg(server_optimizer=factory)

    References:
        S. J. Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        mode: ServerOptimizerMode,
        lr: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        owner = type(self).__name__
        if mode not in MODES:
            raise ValueError(
                f"{owner} mode must be one of {', '.join(map(repr, MODES))}, got mode={mode!r}"
            )
        check_hyperparameters(lr=lr, beta1=beta1, beta2=beta2, tau=tau, owner=owner)
        defaults = {
            "mode": mode,
            "lr": float(lr),
            "beta1": float(beta1),
            "beta2": float(beta2),
            "tau": float(tau),
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One server step on every parameter that has a gradient (the pseudo-gradient).

        Args:
            closure: Re-evaluates the model and returns the loss (optional, as in torch).

        Returns:
            The closure's loss, or ``None`` without a closure.

        Raises:
            RuntimeError: On a sparse gradient.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            mode = cast(ServerOptimizerMode, group["mode"])
            lr, beta1, beta2, tau = group["lr"], group["beta1"], group["beta2"], group["tau"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.full_like(p, tau * tau, memory_format=torch.preserve_format)
                _adaptive_step(p, -p.grad, state["m"], state["v"], mode, lr, beta1, beta2, tau)
                state["step"] += 1
        return loss


def _adaptive_step(
    param: Tensor,
    delta: Tensor,
    m: Tensor,
    v: Tensor,
    mode: ServerOptimizerMode,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> None:
    """Algorithm 2's update of ``m``, ``v`` and ``param``, in place, from ``delta = -grad``."""
    delta = delta.to(m.dtype)
    m.mul_(beta1).add_(delta, alpha=1.0 - beta1)
    square = delta * delta
    if mode == "adagrad":
        v.add_(square)
    elif mode == "adam":
        v.mul_(beta2).add_(square, alpha=1.0 - beta2)
    else:  # yogi: the sign is taken on v_{t-1}, before the update
        v.addcmul_(torch.sign(v - square), square, value=-(1.0 - beta2))
    param.addcdiv_(m, v.sqrt().add_(tau), value=lr)
