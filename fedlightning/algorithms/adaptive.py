"""Server-optimizer presets: FedAvgM (server momentum) and FedAdagrad, FedYogi, FedAdam.

Each is :class:`~fedlightning.algorithms.FedAvg` with a ``server_optimizer`` chosen for you:
clients train and reply exactly as in FedAvg, and the server applies the mean update through
the optimizer, the pseudo-gradient being ``-Delta_t`` (global minus aggregate). The factories
are :func:`functools.partial` objects, so they pickle and their ``repr`` (shown in the
algorithm's settings) reads as the call it makes.

Defaults of the adaptive presets follow Reddi et al. (ICLR 2021): ``beta1 = 0.9`` and
``beta2 = 0.99`` as fixed in their experiments (Section 5), ``tau = 1e-3``, and server
learning rates of the order of their best tuned values (``1e-2`` for FedAdam and FedYogi,
``1e-1`` for FedAdagrad). Tune ``server_lr`` and ``tau`` per task, as the paper does.

References:
    S. J. Reddi et al., "Adaptive Federated Optimization", ICLR 2021.
    T.-M. H. Hsu, H. Qi and M. Brown, "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification", arXiv:1909.06335, 2019.
"""

from __future__ import annotations

import functools

import torch

from fedlightning.algorithms.fedavg import FedAvg
from fedlightning.algorithms.server_optim import (
    AdaptiveServerOptimizer,
    ServerOptimizerMode,
    check_hyperparameters,
)
from fedlightning.codecs import Codec

__all__ = ["FedAdagrad", "FedAdam", "FedAvgM", "FedYogi"]

_NAMES = {"lr": "server_lr"}


class FedAvgM(FedAvg):
    """FedAvg with server momentum (FedAvgM, Hsu et al. 2019).

    The server runs :class:`torch.optim.SGD` with ``momentum`` and no dampening on the
    pseudo-gradient ``g_t = -Delta_t``: ``u_t = momentum * u_{t-1} + g_t`` (``u_1 = g_1``)
    and ``x_{t+1} = x_t - server_lr * u_t``, i.e. Hsu et al.'s ``v <- beta v + Delta w;
    w <- w - v`` with a server learning rate. ``server_lr=1.0, momentum=0.0`` is FedAvg.

    Args:
        server_lr: Server learning rate (> 0).
        momentum: Server momentum ``beta``, in [0, 1).
        uplink: Codec for client updates.
        downlink: Codec for the global weights.
        local_bn: Keep BatchNorm layers local (FedBN).

    Raises:
        ValueError: If ``server_lr`` is not > 0 or ``momentum`` not in [0, 1).

    Example:
        >>> algorithm = FedAvgM(server_lr=1.0, momentum=0.9)

    References:
        T.-M. H. Hsu, H. Qi and M. Brown, "Measuring the Effects of Non-Identical Data
        Distribution for Federated Visual Classification", arXiv:1909.06335, 2019.
        S. J. Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (FedAvgM baseline).
    """

    def __init__(
        self,
        server_lr: float = 1.0,
        momentum: float = 0.9,
        *,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
        local_bn: bool = False,
    ) -> None:
        check_hyperparameters(
            lr=server_lr,
            beta1=momentum,
            beta2=0.0,
            tau=1.0,
            owner="FedAvgM",
            names={"lr": "server_lr", "beta1": "momentum"},
        )
        super().__init__(
            uplink=uplink,
            downlink=downlink,
            local_bn=local_bn,
            server_optimizer=functools.partial(
                torch.optim.SGD, lr=float(server_lr), momentum=float(momentum)
            ),
        )


class FedAdam(FedAvg):
    """FedAvg with Adam on the server, exactly as Reddi et al.'s Algorithm 2 (FedAdam).

    ``m_t = beta1 m_{t-1} + (1 - beta1) Delta_t``, ``v_t = beta2 v_{t-1} + (1 - beta2)
    Delta_t^2``, ``x_{t+1} = x_t + server_lr * m_t / (sqrt(v_t) + tau)``, with ``m_{-1} = 0``,
    ``v_{-1} = tau^2`` and no bias correction (see
    :class:`~fedlightning.algorithms.server_optim.AdaptiveServerOptimizer`).

    Args:
        server_lr: Server learning rate ``eta`` (> 0).
        beta1: First-moment decay, in [0, 1).
        beta2: Second-moment decay, in [0, 1).
        tau: Adaptivity (> 0); smaller is more adaptive.
        uplink: Codec for client updates.
        downlink: Codec for the global weights.
        local_bn: Keep BatchNorm layers local (FedBN).

    Raises:
        ValueError: If a hyperparameter is out of range.

    Example:
        >>> algorithm = FedAdam(server_lr=1e-2, tau=1e-3)

    References:
        S. J. Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2.
    """

    def __init__(
        self,
        server_lr: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        *,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
        local_bn: bool = False,
    ) -> None:
        super().__init__(
            uplink=uplink,
            downlink=downlink,
            local_bn=local_bn,
            server_optimizer=_adaptive("adam", "FedAdam", server_lr, beta1, beta2, tau),
        )


class FedYogi(FedAvg):
    """FedAvg with Yogi on the server, exactly as Reddi et al.'s Algorithm 2 (FedYogi).

    As :class:`FedAdam` but ``v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} -
    Delta_t^2)``: ``v`` moves towards ``Delta_t^2`` by an additive step, so it grows as fast
    as Adam's but shrinks more slowly.

    Args:
        server_lr: Server learning rate ``eta`` (> 0).
        beta1: First-moment decay, in [0, 1).
        beta2: Second-moment decay, in [0, 1).
        tau: Adaptivity (> 0); smaller is more adaptive.
        uplink: Codec for client updates.
        downlink: Codec for the global weights.
        local_bn: Keep BatchNorm layers local (FedBN).

    Raises:
        ValueError: If a hyperparameter is out of range.

    Example:
        >>> algorithm = FedYogi(server_lr=1e-2, beta2=0.99)

    References:
        S. J. Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2.
        M. Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018 (Yogi).
    """

    def __init__(
        self,
        server_lr: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        *,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
        local_bn: bool = False,
    ) -> None:
        super().__init__(
            uplink=uplink,
            downlink=downlink,
            local_bn=local_bn,
            server_optimizer=_adaptive("yogi", "FedYogi", server_lr, beta1, beta2, tau),
        )


class FedAdagrad(FedAvg):
    """FedAvg with Adagrad on the server, exactly as Reddi et al.'s Algorithm 2 (FedAdagrad).

    ``m_t = beta1 m_{t-1} + (1 - beta1) Delta_t``, ``v_t = v_{t-1} + Delta_t^2``, ``x_{t+1} =
    x_t + server_lr * m_t / (sqrt(v_t) + tau)`` with ``v_{-1} = tau^2``. Unlike
    :class:`torch.optim.Adagrad` it has first-moment momentum ``beta1`` (``beta1=0`` gives
    plain Adagrad with ``tau`` outside the square root).

    Args:
        server_lr: Server learning rate ``eta`` (> 0).
        beta1: First-moment decay, in [0, 1).
        tau: Adaptivity (> 0); smaller is more adaptive.
        uplink: Codec for client updates.
        downlink: Codec for the global weights.
        local_bn: Keep BatchNorm layers local (FedBN).

    Raises:
        ValueError: If a hyperparameter is out of range.

    Example:
        >>> algorithm = FedAdagrad(server_lr=1e-1, tau=1e-3)

    References:
        S. J. Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2.
    """

    def __init__(
        self,
        server_lr: float = 1e-1,
        beta1: float = 0.9,
        tau: float = 1e-3,
        *,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
        local_bn: bool = False,
    ) -> None:
        super().__init__(
            uplink=uplink,
            downlink=downlink,
            local_bn=local_bn,
            server_optimizer=_adaptive("adagrad", "FedAdagrad", server_lr, beta1, None, tau),
        )


def _adaptive(
    mode: ServerOptimizerMode,
    owner: str,
    server_lr: float,
    beta1: float,
    beta2: float | None,
    tau: float,
) -> functools.partial[AdaptiveServerOptimizer]:
    """The checked factory of one adaptive preset (``beta2=None``: Adagrad has none)."""
    check_hyperparameters(
        lr=server_lr,
        beta1=beta1,
        beta2=0.0 if beta2 is None else beta2,
        tau=tau,
        owner=owner,
        names=_NAMES,
    )
    settings: dict[str, float] = {"lr": float(server_lr), "beta1": float(beta1)}
    if beta2 is not None:
        settings["beta2"] = float(beta2)
    settings["tau"] = float(tau)
    return functools.partial(AdaptiveServerOptimizer, mode=mode, **settings)  # type: ignore[arg-type]
