"""SCAFFOLD: FedAvg with control variates that correct the clients' drift.

Each client ``i`` keeps a control variate ``c_i`` and the server keeps ``c``, estimates of
the clients' and of the global gradient. Local steps follow ``y <- y - eta_l (g - c_i + c)``
(Karimireddy et al., Algorithm 1, line 10), so that heterogeneous clients drift less from
the global optimum than under FedAvg; the server moves the global model by
``eta_g * mean(y_i - x)`` and ``c`` by ``|S| / N * mean(c_i+ - c_i)``.

References:
    S. P. Karimireddy, S. Kale, M. Mohri, S. J. Reddi, S. U. Stich and A. T. Suresh,
    "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning", ICML 2020.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.data import extract_batch_size
from torch import Tensor, nn
from typing_extensions import override

from fedlightning.algorithms.base import (
    Algorithm,
    ClientContext,
    OptimizerFactory,
    Reply,
    ServerContext,
    load_tensors,
)
from fedlightning.algorithms.functional import weighted_average
from fedlightning.client import LocalLoop, has_hook, parse_optimizers
from fedlightning.codecs import Codec
from fedlightning.messages import Message

if TYPE_CHECKING:
    from fedlightning.datamodules import FederatedDataModule

__all__ = ["CONTROL_PREFIX", "Scaffold", "sgd_learning_rates"]

CONTROL_PREFIX = "c/"
"""Extras key prefix of a control variate (down: ``c``; up: ``c_i+ - c_i``), by parameter."""

_OPTIONS = ("I", "II")
_RUN_KEY = "_scaffold_run"  # a ClientContext attribute holding one client run's _ClientRun


@dataclass
class _ClientRun:
    """What one client's run keeps between ``configure_client`` and ``client_message``."""

    c: dict[str, Tensor]
    c_local: dict[str, Tensor]
    correction: list[tuple[nn.Parameter, Tensor]] = field(default_factory=list)
    batches: int = 0
    last_step: int | None = None

    def steps(self) -> int:
        """Optimizer steps of the local run (``K`` of the paper).

        Read from the local loop's ``global_step`` at the last batch (which is always
        followed by a step: the end of an epoch or of the step budget), so gradient
        accumulation is accounted for; the batch count where no loop is attached.
        """
        if self.last_step is None:
            return self.batches
        return self.last_step + 1


def _run_of(ctx: ClientContext) -> _ClientRun:
    run = ctx.__dict__.get(_RUN_KEY)
    if not isinstance(run, _ClientRun):
        raise RuntimeError(
            "Scaffold.configure_client did not run on this ClientContext: SCAFFOLD's client "
            "hooks keep the client's control variates on the context between configure_client, "
            "training_loss and client_message (the vectorized executor builds a context per "
            "step: do not declare Scaffold in its vmap_losses)"
        )
    return run


class Scaffold(Algorithm):
    """SCAFFOLD (Karimireddy et al., ICML 2020, Algorithm 1): FedAvg with drift correction.

    Round ``r``, for each sampled client ``i`` (``S`` the sampled set, ``N`` the clients):

    1. the server sends the global weights ``x`` (through the downlink codec) and its control
       variate ``c`` (one extra per trainable parameter, ``"c/<name>"``, sent as is and
       counted);
    2. the client trains from ``x`` with ``y <- y - eta_l (g_i(y) - c_i + c)``; the
       correction is the gradient of ``sum_p <c_p - c_i,p, w_p>`` added to every batch's
       loss by :meth:`training_loss`, so it goes through the module's own optimizer and
       every local-training setting: with gradient clipping the corrected gradient is
       clipped, with ``accumulate_grad_batches`` each batch adds its share, and the logged
       local ``loss`` includes the (linear) correction term;
    3. the client computes ``c_i+`` (option I: the full-batch gradient of its loss at
       ``x``, one extra pass over its data; option II: ``c_i - c + (x - y_i) / (K eta_l)``
       with ``K`` its optimizer steps this round), keeps it (``ctx.state``, checkpointed)
       and replies ``y_i - x`` (through the uplink codec, with its sample count) and
       ``c_i+ - c_i`` (extras, sent as is);
    4. the server applies ``x <- x + eta_g * mean_S(y_i - x)``, the mean weighted by sample
       counts as in FedAvg (through :meth:`apply_update`, so a ``server_optimizer`` sees
       the scaled update as its pseudo-gradient), and ``c <- c + |S| / N * mean_S(c_i+ -
       c_i)``, the unweighted mean of the paper, over the clients that replied.

    In round 1 ``c = c_i = 0``: the round is FedAvg's. With ``server_lr=1`` the global
    update is exactly FedAvg's. Buffers (BatchNorm statistics) are averaged as in FedAvg,
    never scaled by ``eta_g`` and without control variates.

    Option II assumes plain SGD local steps with one learning rate per parameter; :meth:`setup`
    calls the model's ``configure_optimizers`` and refuses, before round 1, anything else
    (another optimizer, momentum, weight decay, Nesterov, ``maximize``, a learning-rate
    scheduler). ``eta_l`` is read there, per parameter, and travels with the client half, so
    it must not change between rounds. Option I takes any optimizer; its gradient assumes
    ``training_step`` returns a per-sample mean loss (batches are weighted by their size).

    Client control variates are kept on the CPU between rounds (one model-sized tensor set
    per client that took part). ``training_loss`` reads per-client state, so the vectorized
    executor runs SCAFFOLD through its sequential fallback; do not declare it in
    ``vmap_losses``.

    Args:
        option: ``"I"`` or ``"II"``: how clients update their control variate (eq. (4)).
        server_lr: Global step size ``eta_g`` > 0.
        uplink: Codec for the clients' model updates (``c_i+ - c_i`` travels as is).
        downlink: Codec for the global weights (``c`` travels as is).
        server_optimizer: A ``torch.optim`` factory applied to the pseudo-gradient
            ``-eta_g * mean(y_i - x)`` instead of adding it (see
            :class:`~fedlightning.algorithms.base.Algorithm`).

    Raises:
        ValueError: If ``option`` is not ``"I"`` or ``"II"``, ``server_lr`` is not a finite
            number > 0, or ``server_optimizer`` is not an optimizer factory.

    Example:
        >>> from fedlightning import FederatedTrainer
        >>> trainer = FederatedTrainer(algorithm=Scaffold(option="II"), rounds=50)  # doctest: +SKIP

    References:
        S. P. Karimireddy, S. Kale, M. Mohri, S. J. Reddi, S. U. Stich and A. T. Suresh,
        "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning", ICML 2020.
    """

    server_attributes: ClassVar[tuple[str, ...]] = ("_c",)

    def __init__(
        self,
        *,
        option: str = "II",
        server_lr: float = 1.0,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
        server_optimizer: OptimizerFactory | None = None,
    ) -> None:
        if not isinstance(option, str) or option not in _OPTIONS:
            raise ValueError(
                f"Scaffold option must be 'I' or 'II' (the control-variate update of "
                f"Karimireddy et al., eq. (4)), got option={option!r}"
            )
        if (
            isinstance(server_lr, bool)
            or not isinstance(server_lr, (int, float))
            or not math.isfinite(server_lr)
            or server_lr <= 0
        ):
            raise ValueError(
                f"Scaffold server_lr (the global step size eta_g) must be a finite number > 0, "
                f"got server_lr={server_lr!r}"
            )
        super().__init__(uplink=uplink, downlink=downlink, server_optimizer=server_optimizer)
        self.option = option
        self.server_lr = float(server_lr)
        self._controlled: list[str] = []  # parameters with a control variate; travels
        self._local_lr: dict[str, float] = {}  # option II's eta_l per parameter; travels
        self._c: dict[str, Tensor] = {}  # server half only

    # ------------------------------------------------------------------ properties
    @property
    @override
    def stateful_clients(self) -> bool:
        return True

    @property
    def control_variate(self) -> dict[str, Tensor]:
        """The server's control variate ``c`` by parameter name (server half only)."""
        return dict(self._c)

    @property
    def local_lr(self) -> dict[str, float]:
        """Option II's client learning rate ``eta_l`` by parameter name (set by :meth:`setup`)."""
        return dict(self._local_lr)

    # ------------------------------------------------------------------ server hooks
    @override
    def setup(
        self, server: ServerContext, model: LightningModule, datamodule: FederatedDataModule
    ) -> None:
        """Attach to the run; option II checks the local optimizer first.

        Raises:
            ValueError: With option ``"II"``, if the model's optimizer is not plain SGD
                (see :func:`sgd_learning_rates`).
        """
        lrs = sgd_learning_rates(model) if self.option == "II" else None
        super().setup(server, model, datamodule)
        shared = set(self.shared_keys)
        self._controlled = [
            name
            for name, p in model.named_parameters()
            if name in shared and p.requires_grad and (lrs is None or name in lrs)
        ]
        self._local_lr = {name: lrs[name] for name in self._controlled} if lrs else {}
        params = dict(model.named_parameters())
        self._c = {name: torch.zeros_like(params[name].detach()) for name in self._controlled}

    @override
    def server_message(self, round: int, client: int) -> Message:
        """The global weights (downlink codec) plus ``c`` as extras ``"c/<name>"``."""
        message = super().server_message(round, client)
        return message.add_extras({CONTROL_PREFIX + n: self._c[n] for n in self._controlled})

    @override
    def aggregate(self, round: int, replies: list[Reply]) -> None:
        """``x += eta_g * weighted mean(y_i - x)``; ``c += |S| / N * mean(c_i+ - c_i)``.

        Args:
            round: Round number.
            replies: The replies that arrived (``S``: failed clients are already dropped).

        Raises:
            ValueError: If a reply lacks a control-variate update.
        """
        if not replies:
            return
        mean = weighted_average(
            [r.message.decode() for r in replies], [float(r.num_samples) for r in replies]
        )
        if self.server_lr != 1.0:
            mean = {
                k: v * self.server_lr if k not in self.buffer_keys and v.is_floating_point() else v
                for k, v in mean.items()
            }
        self.apply_update(self.global_state(), mean)
        num_clients = len(self.server.datamodule.client_ids)
        updated: dict[str, Tensor] = {}
        for name in self._controlled:
            key = CONTROL_PREFIX + name
            c = self._c[name]
            total = torch.zeros_like(c)
            for reply in replies:
                delta = reply.message.extras.get(key)
                if delta is None:
                    raise ValueError(
                        f"Scaffold: client {reply.client}'s reply has no control-variate update "
                        f"{key!r}; its extras are {sorted(reply.message.extras)[:5]}"
                    )
                total.add_(delta.to(c.device, c.dtype))
            # A new tensor, not an in-place update: messages already sent keep their c.
            updated[name] = c + total / num_clients
        self._c = updated
        if updated:
            norms = [torch.linalg.vector_norm(t, dtype=torch.float64) for t in updated.values()]
            norm = torch.linalg.vector_norm(torch.stack(norms))
            self.server.log({"scaffold_c_norm": float(norm)})

    # ------------------------------------------------------------------ client hooks
    @override
    def configure_client(self, ctx: ClientContext, module: LightningModule) -> LightningModule:
        """Load ``x``; read ``c`` from the message and ``c_i`` from the client's state.

        Raises:
            ValueError: If the message lacks the server's control variate.
        """
        module = super().configure_client(ctx, module)
        params = dict(module.named_parameters())
        saved: Mapping[str, Tensor] = ctx.state.get("c") or {}
        run = _ClientRun(c={}, c_local={})
        for name in self._controlled:
            p = params[name]
            sent = ctx.message.extras.get(CONTROL_PREFIX + name)
            if sent is None:
                raise ValueError(
                    f"Scaffold: the server message has no control variate "
                    f"{CONTROL_PREFIX + name!r}; build it with Scaffold.server_message"
                )
            run.c[name] = sent.to(p.device, p.dtype)
            local = saved.get(name)
            run.c_local[name] = (
                local.to(p.device, p.dtype) if local is not None else torch.zeros_like(p.detach())
            )
            run.correction.append((p, run.c[name] - run.c_local[name]))
        if not any(bool(d.any()) for _, d in run.correction):
            run.correction = []  # c == c_i (round 1): the loss stays exactly as it is
        ctx.__dict__[_RUN_KEY] = run
        return module

    @override
    def training_loss(
        self, ctx: ClientContext, module: LightningModule, batch: Any, loss: Tensor
    ) -> Tensor:
        """Add ``sum_p <c_p - c_i,p, w_p>``, whose gradient is the correction ``c - c_i``.

        Also counts the run's batches and reads its optimizer steps (``K`` of option II).
        Where ``c == c_i`` (every client in round 1) the loss is returned as is.

        Raises:
            RuntimeError: If :meth:`configure_client` did not run on this context (e.g. the
                vectorized executor, which builds a context per step).
        """
        run = _run_of(ctx)
        run.batches += 1
        if module._trainer is not None:
            run.last_step = int(module.global_step)
        if not run.correction:
            return loss
        term = sum(((d * p).sum() for p, d in run.correction), loss.new_zeros(()))
        return loss + term

    @override
    def client_message(self, ctx: ClientContext, module: LightningModule) -> Message:
        """Reply ``y_i - x`` (uplink codec) and ``c_i+ - c_i`` (extras); keep ``c_i+``.

        Raises:
            RuntimeError: If :meth:`configure_client` did not run on this context, or option
                I runs without the client's data (``ctx.data``).
        """
        run = _run_of(ctx)
        del ctx.__dict__[_RUN_KEY]
        message = super().client_message(ctx, module)
        if self.option == "I":
            new = self._full_gradient(ctx, module)
        else:
            new = self._option_two(ctx, module, run)
        ctx.state["c"] = {n: t.detach().to("cpu", copy=True) for n, t in new.items()}
        return message.add_extras(
            {CONTROL_PREFIX + n: new[n] - run.c_local[n] for n in self._controlled}
        )

    def _option_two(
        self, ctx: ClientContext, module: LightningModule, run: _ClientRun
    ) -> dict[str, Tensor]:
        """``c_i+ = c_i - c + (x - y_i) / (K eta_l)``; ``c_i`` as it was when no step ran."""
        steps = run.steps()
        params = dict(module.named_parameters())
        out: dict[str, Tensor] = {}
        for name in self._controlled:
            if steps < 1:
                out[name] = run.c_local[name].clone()
                continue
            x = ctx.received[name]
            y = params[name].detach()
            drift = (x - y.to(x.dtype)) / (steps * self._local_lr[name])
            out[name] = run.c_local[name] - run.c[name] + drift.to(run.c[name].dtype)
        return out

    def _full_gradient(self, ctx: ClientContext, module: LightningModule) -> dict[str, Tensor]:
        """Option I: the gradient of the client's local loss at ``x``, over all its data.

        One pass over the client's training loader with a copy of the module loaded with the
        received weights, in training mode; each batch's ``training_step`` loss (without the
        algorithm's correction) weighs by the batch's size, so the result is the full-batch
        gradient of a per-sample mean loss.
        """
        if ctx.data is None:
            raise RuntimeError(
                "Scaffold(option='I') computes the full-batch gradient of the client's data, "
                "but this ClientContext has no datamodule (ctx.data is None)"
            )
        probe = copy.deepcopy(module)
        probe.zero_grad(set_to_none=True)
        load_tensors(probe, ctx.received)
        probe.train()
        params = dict(probe.named_parameters())
        wanted = [params[n] for n in self._controlled]
        totals = [torch.zeros_like(p.detach()) for p in wanted]
        device = wanted[0].device if wanted else torch.device("cpu")
        transfer = device.type != "cpu" or any(
            has_hook(probe, h)
            for h in (
                "on_before_batch_transfer",
                "transfer_batch_to_device",
                "on_after_batch_transfer",
            )
        )
        loop = LocalLoop()
        probe.fabric = loop  # type: ignore[assignment]
        probe.trainer = loop  # type: ignore[assignment]
        seen = 0
        with torch.enable_grad():
            for batch_idx, batch in enumerate(ctx.data.train_loader(ctx.client, seed=ctx.seed)):
                if transfer:
                    batch = probe.on_before_batch_transfer(batch, 0)
                    batch = probe.transfer_batch_to_device(batch, device, 0)
                    batch = probe.on_after_batch_transfer(batch, 0)
                out = probe.training_step(batch, batch_idx)
                loss = out["loss"] if isinstance(out, Mapping) else out
                if loss is None or not wanted:
                    continue
                size = extract_batch_size(batch)
                grads = torch.autograd.grad(loss, wanted, allow_unused=True)
                for total, grad in zip(totals, grads, strict=True):
                    if grad is not None:
                        total.add_(grad.to(total.dtype), alpha=size)
                seen += size
        if seen:
            totals = [t / seen for t in totals]
        return dict(zip(self._controlled, totals, strict=True))

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        """The server's control variate ``c`` (``{"c": {name: tensor}}``)."""
        return {"c": {n: t.detach().clone() for n, t in self._c.items()}}

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``c`` onto the global model's parameters' device and dtype.

        Raises:
            ValueError: If the saved names differ from this model's controlled parameters.
        """
        saved: Mapping[str, Tensor] = state.get("c", {})
        if set(saved) != set(self._controlled):
            missing = sorted(set(self._controlled) - set(saved))[:5]
            unknown = sorted(set(saved) - set(self._controlled))[:5]
            raise ValueError(
                f"Scaffold checkpoint state does not match the model: missing control "
                f"variates {missing}, unknown {unknown}"
            )
        params = dict(self.global_model.named_parameters())
        self._c = {
            n: saved[n].detach().to(params[n].device, params[n].dtype, copy=True)
            for n in self._controlled
        }


def sgd_learning_rates(model: LightningModule) -> dict[str, float]:
    """The plain-SGD learning rate of each parameter that ``model``'s optimizer steps.

    Calls ``model.configure_optimizers()`` (any of Lightning's return forms) with a local
    loop attached as the module's trainer, as local training does, and checks that the
    optimizer's steps are ``w <- w - lr * grad``: SCAFFOLD option II divides the local
    drift by ``K * eta_l`` (Karimireddy et al., eq. (4)).

    Args:
        model: The global model.

    Returns:
        Parameter name -> learning rate, for the parameters in the optimizer.

    Raises:
        ValueError: Naming the optimizer and the setting, if it is not ``torch.optim.SGD``
            with ``momentum=0``, ``weight_decay=0``, ``nesterov=False``, ``maximize=False``
            and a learning rate > 0, or if a learning-rate scheduler is configured.
    """
    loop = LocalLoop()
    previous = (model._fabric, model._trainer)
    model.fabric = loop  # type: ignore[assignment]
    model.trainer = loop  # type: ignore[assignment]
    try:
        setup = parse_optimizers(model.configure_optimizers(), type(model).__name__)
    finally:
        model.fabric, model.trainer = previous
    optimizer = setup.optimizer
    name = type(optimizer).__name__
    where = f"{type(model).__name__}.configure_optimizers"
    advice = "; use Scaffold(option='I') for other local optimizers"
    if type(optimizer) is not torch.optim.SGD:
        raise ValueError(
            f"Scaffold(option='II') needs plain torch.optim.SGD local steps (it divides the "
            f"local drift by K * eta_l), but {where} returns the optimizer {name}{advice}"
        )
    if setup.scheduler is not None:
        raise ValueError(
            f"Scaffold(option='II') needs a constant local learning rate, but {where} returns "
            f"the learning-rate scheduler {type(setup.scheduler).__name__} with its optimizer "
            f"{name}{advice}"
        )
    names = {id(p): n for n, p in model.named_parameters()}
    lrs: dict[str, float] = {}
    for group in optimizer.param_groups:
        bad = {
            k: group.get(k)
            for k, ok in (("momentum", 0), ("weight_decay", 0), ("nesterov", False))
            if group.get(k, ok) != ok
        }
        if group.get("maximize", False):
            bad["maximize"] = True
        lr = float(group["lr"])
        if not lr > 0:
            bad["lr"] = lr
        if bad:
            settings = ", ".join(f"{k}={v!r}" for k, v in bad.items())
            raise ValueError(
                f"Scaffold(option='II') needs plain SGD steps (momentum=0, weight_decay=0, "
                f"nesterov=False, lr > 0), but {where} returns the optimizer {name} with "
                f"{settings}{advice}"
            )
        for p in group["params"]:
            if id(p) in names:
                lrs[names[id(p)]] = lr
    return lrs
