"""The algorithm extension point: hooks with one job each, whose defaults are FedAvg.

The trainer owns the round loop; an algorithm holds only its maths. Users subclass an
algorithm and override one hook (:class:`~fedlightning.algorithms.FedProx` overrides only
:meth:`Algorithm.training_loss`).

References:
    H. B. McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from fedlightning.algorithms.functional import weighted_average
from fedlightning.algorithms.settings import capture_init, format_settings, render
from fedlightning.codecs import Codec, Identity
from fedlightning.messages import Message
from fedlightning.round import STREAM_SELECT, ClientContext, Reply, ServerContext

if TYPE_CHECKING:
    from fedlightning.datamodules import FederatedDataModule
    from fedlightning.round import RoundPlan

__all__ = [
    "CLIENT_HALF_WARN_BYTES",
    "Algorithm",
    "ClientContext",
    "OptimizerFactory",
    "Reply",
    "ServerContext",
    "check_server_optimizer",
    "is_batchnorm_key",
    "load_tensors",
]

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

    An algorithm has two halves. The **server half** is this object on the driver: it
    selects clients, builds their messages, aggregates and keeps server state (hidden
    models, distillation data, optimizer state); its hooks get a narrow
    :class:`~fedlightning.round.ServerContext` as :attr:`server`, never the trainer. The
    **client half** (:meth:`client_half`) is a copy of this object without its server
    state: what travels to a worker and runs ``configure_client``, ``training_loss`` and
    ``client_message``. Attributes named in a class's ``server_attributes`` (and the global
    model, the server context and the server optimizer) stay on the driver; everything else
    travels, and a tensor attribute above :data:`CLIENT_HALF_WARN_BYTES` gets a warning that
    names it.

    The constructor's arguments are recorded automatically (:attr:`settings`, the
    ``repr``, ``results.json``'s config and every logger's hyperparameters).

    Args:
        uplink: Codec for client -> server tensors (default
            :class:`~fedlightning.codecs.Identity`).
        downlink: Codec for server -> client tensors (default Identity).
        local_bn: Keep BatchNorm parameters and buffers on the clients instead of
            aggregating them (FedBN, Li et al., ICLR 2021). The global model keeps its own.
        server_optimizer: A ``torch.optim`` optimizer factory (``params -> Optimizer``, e.g.
            ``functools.partial(torch.optim.SGD, lr=1.0, momentum=0.9)``) applied to the
            pseudo-gradient ``global - aggregate`` of the shared parameters (Reddi et al.,
            ICLR 2021); buffers are averaged. ``None``: the mean update is added as it is
            (FedAvg). Its state is kept in checkpoints.

    Raises:
        ValueError: If ``server_optimizer`` is not an optimizer factory or its learning
            rate is not > 0.

    Example:
        >>> class MyAlgorithm(Algorithm):
        ...     def training_loss(self, ctx, module, batch, loss):
        ...         return loss + 1e-4 * sum(p.abs().sum() for p in module.parameters())
    """

    server_attributes: ClassVar[tuple[str, ...]] = ()
    """Attributes that stay on the driver (server state); subclasses add their own."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "__fl_captures__", False):
            cls.__init__ = capture_init(init)  # type: ignore[method-assign]

    def __init__(
        self,
        *,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
        local_bn: bool = False,
        server_optimizer: OptimizerFactory | None = None,
    ) -> None:
        self.uplink: Codec = uplink if uplink is not None else Identity()
        self.downlink: Codec = downlink if downlink is not None else Identity()
        self.local_bn = bool(local_bn)
        check_server_optimizer(server_optimizer)
        self.server_optimizer = server_optimizer
        self._server: ServerContext | None = None  # server half only
        self._global_model: LightningModule | None = None  # server half only
        self._server_opt: torch.optim.Optimizer | None = None  # server half only
        self._is_client_half = False
        self._shared_keys: list[str] = []
        self._buffer_keys: frozenset[str] = frozenset()
        self._local_initial: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> dict[str, Any]:
        """Every constructor argument, as given or defaulted (captured automatically)."""
        return dict(self.__dict__.get("_init_args", {}))

    @property
    def config(self) -> dict[str, Any]:
        """The algorithm's class and settings, JSON-friendly (``results.json``, loggers)."""
        cls = type(self)
        return {"class": f"{cls.__module__}.{cls.__qualname__}", **render(self.settings)}

    def __repr__(self) -> str:
        return format_settings(type(self).__name__, self.settings)

    # ------------------------------------------------------------------ halves
    def _server_only(self) -> set[str]:
        names = {"_server", "_global_model", "_server_opt", "_trainer"}
        for cls in type(self).__mro__:
            names.update(getattr(cls, "server_attributes", ()))
        return names

    def client_half(self) -> Algorithm:
        """The client half: this algorithm without its server state; what travels to workers.

        A shallow copy of the instance's attributes minus the server's (the global model,
        the server context, the server optimizer and every name in ``server_attributes``).
        A constructor argument of the same name as a server attribute (e.g. FedMorph's
        ``distill_data``) is left out of the half's recorded settings too, so it does not
        travel that way. Its server hooks refuse to run; its client hooks run as on the
        full object.

        Returns:
            An object of this algorithm's class holding only client-side attributes.
        """
        if self._is_client_half:
            return self
        server_only = self._server_only()
        half = object.__new__(type(self))
        half.__dict__.update({k: v for k, v in self.__dict__.items() if k not in server_only})
        if "_init_args" in half.__dict__:
            half.__dict__["_init_args"] = {
                k: v for k, v in half.__dict__["_init_args"].items() if k not in server_only
            }
        half.__dict__.update(_server=None, _global_model=None, _server_opt=None)
        half.__dict__["_is_client_half"] = True
        half.__dict__["_server_only_names"] = frozenset(server_only)
        if not self.__dict__.get("_warned_half"):
            self.__dict__["_warned_half"] = True
            warn_large_attributes(half)
        return half

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails: say why on a client half.
        if not name.startswith("__") and name in self.__dict__.get("_server_only_names", ()):
            raise AttributeError(
                f"{type(self).__name__}.{name} is server state and is not in the client "
                f"half; a client hook read it. Send what clients need in the message, or "
                f"remove {name!r} from {type(self).__name__}.server_attributes"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ properties
    @property
    def server(self) -> ServerContext:
        """The run's server context (set by :meth:`setup`; server hooks only)."""
        if self._is_client_half:
            raise RuntimeError(
                f"{type(self).__name__}: a client hook used the server context; client hooks "
                "run on workers without it and read their ClientContext instead (ctx.data is "
                "the datamodule, ctx.seed the client's seed, ctx.round, ctx.state)"
            )
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not set up: call trainer.fit first")
        return self._server

    @property
    def trainer(self) -> ServerContext:
        """Alias of :attr:`server`, for algorithms written against earlier versions.

        Server hooks get the :class:`~fedlightning.round.ServerContext` (``seed_for``,
        ``rng``, ``log_metrics``, ``dispatch``, ``datamodule``...), not the trainer.
        """
        return self.server

    @property
    def global_model(self) -> LightningModule:
        """The server's model (set by :meth:`setup`; server half only)."""
        if self._global_model is None:
            if self._is_client_half:
                raise RuntimeError(
                    f"{type(self).__name__}.global_model is server state, not available in "
                    "the client half: a client hook read it. Client hooks read what the "
                    "server sent (ctx.received, ctx.message.extras); put anything else they "
                    "need in server_message"
                )
            raise RuntimeError(f"{type(self).__name__} is not set up: call trainer.fit first")
        return self._global_model

    @global_model.setter
    def global_model(self, model: LightningModule) -> None:
        self._global_model = model
        state = model.state_dict()
        self._shared_keys = [k for k in state if not (self.local_bn and is_batchnorm_key(model, k))]
        parameters = {name for name, _ in model.named_parameters()}
        self._buffer_keys = frozenset(k for k in state if k not in parameters)
        shared = set(self._shared_keys)
        self._local_initial = {k: v.detach().clone() for k, v in state.items() if k not in shared}

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
        self, server: ServerContext, model: LightningModule, datamodule: FederatedDataModule
    ) -> None:
        """Attach to a run before the first round. Server side.

        Runs before a checkpoint is loaded: when ``server.resuming``, leave what
        :meth:`load_state_dict` restores (do not recompute it).

        Args:
            server: The run's server context.
            model: The global model, on the run's device.
            datamodule: The federated data.
        """
        if not isinstance(server, ServerContext):  # e.g. a trainer, from earlier versions
            server = ServerContext(server)
        self._server = server
        self.global_model = model
        if self.server_optimizer is not None:
            params = [p for n, p in model.named_parameters() if n in set(self._shared_keys)]
            self._server_opt = self.server_optimizer(params)

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

        The choice derives from (run seed, round) only, so it is the same after a resume.

        Args:
            round: Round number, from 1.
            clients: All client ids.

        Returns:
            The selected client ids, sorted.
        """
        k = self.server.num_selected(len(clients))
        rng = self.server.rng(round, STREAM_SELECT)
        chosen = rng.choice(len(clients), size=k, replace=False)
        return sorted(int(clients[i]) for i in chosen)

    def server_message(self, round: int, client: int) -> Message:
        """Build what the server sends ``client``: the global weights. Server side."""
        return Message.of_state(self.global_model, self.global_state(), codec=self.downlink)

    def aggregate(self, round: int, replies: list[Reply]) -> None:
        """Apply the sample-weighted mean of the clients' updates to the global model.

        Args:
            round: Round number.
            replies: The replies that arrived (failed clients are already dropped).
        """
        if not replies:
            return
        mean = weighted_average(
            [r.message.decode() for r in replies], [float(r.num_samples) for r in replies]
        )
        self.apply_update(self.global_state(), mean)

    def apply_update(self, state: dict[str, Tensor], mean: dict[str, Tensor]) -> None:
        """Move ``state`` by the aggregated update ``mean``, in place. Server side.

        Without a server optimizer: ``state += mean``. With one: the shared parameters'
        gradient is the pseudo-gradient ``-mean`` and the optimizer steps; buffers (and
        any key the optimizer does not hold) get ``+= mean``.

        Args:
            state: Tensors of the global model (or of a model the algorithm keeps).
            mean: The aggregated update per key.
        """
        optimizer = self._server_opt
        stepped: set[str] = set()
        if optimizer is not None:
            # state_dict() tensors are detached views: match parameters by their storage.
            held = {_storage(p): p for g in optimizer.param_groups for p in g["params"]}
            for key, delta in mean.items():
                target = state.get(key)
                param = held.get(_storage(target)) if target is not None else None
                if param is not None:
                    param.grad = -delta.to(param.dtype)
                    stepped.add(key)
            if stepped:
                optimizer.step()
                for p in held.values():
                    p.grad = None
        with torch.no_grad():
            for key, delta in mean.items():
                if key not in stepped:
                    target = state[key]
                    target.add_(delta.to(target.dtype))

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
            local = {k: v for k, v in self._local_initial.items() if k not in ctx.received}
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
        return Message.of_state(
            module, update, codec=self.uplink, scalars={"num_samples": ctx.num_samples}
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Server-side state of the algorithm beyond the global model (for checkpoints).

        The server optimizer's state is saved by the trainer beside it
        (:meth:`server_optimizer_state`), so overrides need not call ``super()``.
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def server_optimizer_state(self) -> dict[str, Any] | None:
        """The server optimizer's state (``None`` without one); kept in checkpoints."""
        return self._server_opt.state_dict() if self._server_opt is not None else None

    def load_server_optimizer_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`server_optimizer_state`."""
        if self._server_opt is not None and state is not None:
            self._server_opt.load_state_dict(state)


Algorithm.__init__ = capture_init(Algorithm.__init__)  # type: ignore[method-assign]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
"""``params -> torch.optim.Optimizer``, e.g. ``functools.partial(torch.optim.SGD, lr=1.0)``."""

CLIENT_HALF_WARN_BYTES = 1 << 20
"""A client half's tensor attributes above this size (bytes) get a warning naming them."""


def check_server_optimizer(factory: object) -> None:
    """Refuse a ``server_optimizer`` that is not an optimizer factory with a learning rate > 0.

    Raises:
        ValueError: Naming the value and what is allowed.
    """
    if factory is None:
        return
    if not callable(factory):
        raise ValueError(
            "server_optimizer must be a torch.optim optimizer factory (params -> Optimizer, "
            f"e.g. functools.partial(torch.optim.SGD, lr=1.0)), got server_optimizer={factory!r}"
        )
    probe = nn.Parameter(torch.zeros(1))
    try:
        optimizer = factory([probe])
    except Exception as exc:
        raise ValueError(
            "server_optimizer must be a torch.optim optimizer factory (params -> Optimizer); "
            f"calling server_optimizer={factory!r} on a parameter list failed: {exc}"
        ) from exc
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(
            "server_optimizer must return a torch.optim.Optimizer, got "
            f"{type(optimizer).__name__} from server_optimizer={factory!r}"
        )
    lr = optimizer.defaults.get("lr")
    if lr is not None and not float(lr) > 0:
        raise ValueError(
            f"the server learning rate must be > 0, got lr={float(lr)} in "
            f"server_optimizer={factory!r}"
        )


def warn_large_attributes(half: Algorithm, limit: int = CLIENT_HALF_WARN_BYTES) -> None:
    """Warn about tensor attributes of a client half larger than ``limit`` bytes."""
    for name, value in half.__dict__.items():
        size = _tensor_bytes(value)
        if size > limit:
            warnings.warn(
                f"{type(half).__name__}.{name} holds {size:,} bytes of tensors and travels to "
                f"every client worker with the client half; if only the server needs it, add "
                f"{name!r} to {type(half).__name__}.server_attributes",
                stacklevel=3,
            )


def _storage(t: Tensor) -> tuple[Any, ...]:
    """Where a tensor's values are: a parameter and its ``state_dict()`` view share it."""
    return (t.device, t.dtype, tuple(t.shape), tuple(t.stride()), t.data_ptr())


def _tensor_bytes(value: object) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, nn.Module):
        return sum(_tensor_bytes(t) for t in value.state_dict().values())
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0
