"""The algorithm extension point: hooks with one job each, whose defaults are FedAvg.

The trainer owns the round loop; an algorithm holds only its maths. Users subclass an
algorithm and override one hook (:class:`~fedlightning.algorithms.FedProx` overrides only
:meth:`Algorithm.training_loss`).

References:
    H. B. McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from fedlightning.algorithms.functional import weighted_average
from fedlightning.codecs import Codec, Identity
from fedlightning.messages import Message
from fedlightning.round import STREAM_SELECT, ClientContext, Reply

if TYPE_CHECKING:
    from fedlightning.datamodules import FederatedDataModule
    from fedlightning.round import RoundPlan, RunHandle

__all__ = ["Algorithm", "ClientContext", "Reply", "is_batchnorm_key", "load_tensors"]

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def is_batchnorm_key(module: nn.Module, key: str) -> bool:
    """Whether a state-dict key belongs to a BatchNorm layer of ``module``."""
    prefix = key.rpartition(".")[0]
    try:
        owner = module.get_submodule(prefix) if prefix else module
    except AttributeError:
        return False
    return isinstance(owner, _BN_TYPES)


def load_tensors(module: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Copy named tensors into a module's parameters and buffers, in place.

    Args:
        module: The module to write into.
        tensors: State-dict keys of ``module`` mapped to tensors of the same shapes.

    Raises:
        ValueError: If a key is not in the module's state or a shape does not match.
    """
    state = module.state_dict(keep_vars=True)
    unknown = [k for k in tensors if k not in state]
    if unknown:
        raise ValueError(
            f"message tensors do not match the model: unknown keys {unknown[:5]} "
            f"(model {type(module).__name__} has {len(state)} keys, e.g. {list(state)[:3]})"
        )
    with torch.no_grad():
        for key, value in tensors.items():
            target = state[key]
            if target.shape != value.shape:
                raise ValueError(
                    f"message tensor {key!r} has shape {tuple(value.shape)} but the model's is "
                    f"{tuple(target.shape)}"
                )
            target.copy_(value)


class Algorithm:
    """Base federated algorithm; every hook defaults to FedAvg.

    Args:
        uplink: Codec for client -> server tensors (default
            :class:`~fedlightning.codecs.Identity`).
        downlink: Codec for server -> client tensors (default Identity).
        local_bn: Keep BatchNorm parameters and buffers on the clients instead of
            aggregating them (FedBN, Li et al., ICLR 2021). The global model keeps its own.

    Example:
        >>> class MyAlgorithm(Algorithm):
        ...     def training_loss(self, ctx, module, batch, loss):
        ...         return loss + 1e-4 * sum(p.abs().sum() for p in module.parameters())
    """

    def __init__(
        self, *, uplink: Codec | None = None, downlink: Codec | None = None, local_bn: bool = False
    ) -> None:
        self.uplink: Codec = uplink if uplink is not None else Identity()
        self.downlink: Codec = downlink if downlink is not None else Identity()
        self.local_bn = bool(local_bn)
        self._trainer: RunHandle | None = None  # the run's server side; never sent to clients
        self._global_model: LightningModule | None = None
        self._shared_keys: list[str] = []
        self._buffer_keys: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ properties
    @property
    def trainer(self) -> RunHandle:
        """The run's server-side handle (set by :meth:`setup`; server hooks only).

        Client hooks run wherever the executor puts them (a Ray worker has no trainer):
        they read only their :class:`~fedlightning.round.ClientContext`.
        """
        if self._trainer is None:
            raise RuntimeError(f"{type(self).__name__} is not set up: call trainer.fit first")
        return self._trainer

    @property
    def global_model(self) -> LightningModule:
        """The server's model (set by :meth:`setup`)."""
        if self._global_model is None:
            raise RuntimeError(f"{type(self).__name__} is not set up: call trainer.fit first")
        return self._global_model

    @global_model.setter
    def global_model(self, model: LightningModule) -> None:
        self._global_model = model
        self._shared_keys = [
            k for k in model.state_dict() if not (self.local_bn and is_batchnorm_key(model, k))
        ]
        parameters = {name for name, _ in model.named_parameters()}
        self._buffer_keys = frozenset(k for k in model.state_dict() if k not in parameters)

    @property
    def stateful_clients(self) -> bool:
        """Whether clients keep state across rounds (the trainer then stores it)."""
        return self.local_bn

    @property
    def shared_keys(self) -> list[str]:
        """State-dict keys of the global model that travel and are aggregated."""
        return self._shared_keys

    @property
    def buffer_keys(self) -> frozenset[str]:
        """State-dict keys of buffers (BatchNorm statistics...): sent dense by every codec."""
        return self._buffer_keys

    def global_state(self) -> dict[str, Tensor]:
        """The shared part of the global model's state (tensors are not copied)."""
        state = self.global_model.state_dict()
        return {k: state[k] for k in self._shared_keys}

    # ------------------------------------------------------------------ server hooks
    def setup(
        self, trainer: RunHandle, model: LightningModule, datamodule: FederatedDataModule
    ) -> None:
        """Attach to a trainer before the first round. Server side.

        Args:
            trainer: The trainer.
            model: The global model.
            datamodule: The federated data.
        """
        self._trainer = trainer
        self.global_model = model

    def round_plan(self, round: int, plan: RoundPlan) -> RoundPlan:
        """The local work of round ``round``. Server side, called before client selection.

        The default keeps the trainer's configured plan. Override for a schedule, e.g. seed
        000's 1 local epoch in round 1 then 10 per round:
        ``dataclasses.replace(plan, epochs=1 if round == 1 else 10)``. Every executor
        trains the round's clients with the plan returned here.

        Args:
            round: Round number, from 1.
            plan: The plan the trainer was configured with (never a previous round's).

        Returns:
            The plan of this round.
        """
        return plan

    def select_clients(self, round: int, clients: Sequence[int]) -> list[int]:
        """Choose the clients of a round, uniformly without replacement. Server side.

        The choice derives from (trainer seed, round) only, so it is the same after a resume.

        Args:
            round: Round number, from 1.
            clients: All client ids.

        Returns:
            The selected client ids, sorted.
        """
        k = self.trainer.num_selected(len(clients))
        rng = self.trainer.rng(round, STREAM_SELECT)
        chosen = rng.choice(len(clients), size=k, replace=False)
        return sorted(int(clients[i]) for i in chosen)

    def server_message(self, round: int, client: int) -> Message:
        """Build what the server sends ``client``: the global weights. Server side."""
        return Message(self.global_state(), codec=self.downlink, dense=self.buffer_keys)

    def aggregate(self, round: int, replies: list[Reply]) -> None:
        """Add the sample-weighted mean of the clients' updates to the global model.

        Args:
            round: Round number.
            replies: The replies that arrived (failed clients are already dropped).
        """
        if not replies:
            return
        mean = weighted_average(
            [r.message.decode() for r in replies], [float(r.num_samples) for r in replies]
        )
        state = self.global_state()
        with torch.no_grad():
            for key, delta in mean.items():
                state[key].add_(delta.to(state[key].dtype))

    def on_round_end(self, round: int) -> None:
        """Server-side work after aggregation (distillation, synthesis...). Default: none."""

    # ------------------------------------------------------------------ client hooks
    def configure_client(self, ctx: ClientContext, module: LightningModule) -> LightningModule:
        """Load what the client received into its working module. Client side.

        Keys that do not travel (local BatchNorm) come from the client's own state when it
        has one, else from the global model's initial values.

        Args:
            ctx: The client context.
            module: The client's working copy of the model.

        Returns:
            The module to train (subclasses may build a different one, e.g. a sub-network).
        """
        local = ctx.state.get("local_state")
        if local is None and len(ctx.received) != len(module.state_dict()):
            global_state = self.global_model.state_dict()
            local = {k: v for k, v in global_state.items() if k not in ctx.received}
        if local:
            load_tensors(module, local)
        load_tensors(module, ctx.received)
        return module

    def training_loss(
        self, ctx: ClientContext, module: LightningModule, batch: Any, loss: Tensor
    ) -> Tensor:
        """Change the local loss of one batch (FedProx, FSNet). Client side. Default: as is."""
        return loss

    def client_message(self, ctx: ClientContext, module: LightningModule) -> Message:
        """Build the client's reply: its update (local - received), through the uplink codec.

        Args:
            ctx: The client context.
            module: The trained module.

        Returns:
            The reply message, with the sample count as a scalar.
        """
        state = module.state_dict()
        if self.local_bn:
            ctx.state["local_state"] = {
                k: v.detach().clone() for k, v in state.items() if k not in ctx.received
            }
        update = {k: state[k] - ctx.received[k] for k in ctx.received}
        return Message(
            update,
            codec=self.uplink,
            scalars={"num_samples": ctx.num_samples},
            dense=self.buffer_keys,
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Server-side state of the algorithm beyond the global model (for checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(uplink={self.uplink!r}, downlink={self.downlink!r})"
