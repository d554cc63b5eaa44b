"""The vectorized executor: the clients of a round train together as one batched model.

Each parameter of the ``K`` clients of a round is one tensor of shape ``(K, *shape)``; one
local step of every client is one call of the module's own ``training_step`` under
``torch.func.functional_call`` and ``torch.func.vmap``, one backward pass, and one stacked
optimizer update (:mod:`fedlightning.executors.stacked_optim`). Clients whose batches at a
step differ in shape (a short last batch, unequal client sizes) are bucketed by shape, so no
batch is ever padded and every client sees exactly the batches, in the order, that the
sequential executor gives it.

The algorithm's client hooks run per client, unchanged: ``configure_client`` before
training, ``client_message`` after it. The loss hook runs inside the vmapped step with the
client's own ``received`` tensors, for the default hook, for FedProx's proximal term, and for
algorithms the user declares safe (``vmap_losses``).

Modules it cannot stack fall back to the sequential executor for the round, with the reason
logged once and kept in :attr:`VectorizedExecutor.fallbacks`; never a silently different
result. Reasons include: BatchNorm layers (their running statistics update in training mode),
an optimizer or setting without a stacked rule, a learning-rate scheduler, manual
optimization, a ``configure_client`` that builds a different module, an overridden
``training_loss`` not declared safe, and anything ``vmap`` rejects (data-dependent Python
control flow, ``.item()``, random ops such as dropout).

References:
    Equivalent to the sequential executor's FedAvg (H. B. McMahan et al., AISTATS 2017) and
    FedProx (T. Li et al., MLSys 2020) rounds; the batching follows ``torch.func``'s model
    ensembling recipe.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree
from typing_extensions import override

from fedlightning.algorithms.base import Algorithm, ClientContext, Reply
from fedlightning.algorithms.fedprox import FedProx
from fedlightning.client import parse_optimizers
from fedlightning.executors.base import ClientFailure, Executor
from fedlightning.executors.sequential import SequentialExecutor
from fedlightning.executors.stacked_optim import (
    OptimizerSpec,
    StackedOptimizer,
    UnsupportedOptimizerError,
    optimizer_spec,
    stacked_optimizer,
)

if TYPE_CHECKING:
    from fedlightning.messages import Message
    from fedlightning.trainer import FederatedTrainer

__all__ = ["StackedRound", "UnvectorizableError", "VectorizedExecutor", "vectorizable"]

log = logging.getLogger(__name__)

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


class UnvectorizableError(RuntimeError):
    """A module, optimizer or algorithm hook that the vectorized executor cannot stack."""


def vectorizable(
    module: LightningModule,
    algorithm: Algorithm,
    vmap_losses: Sequence[type[Algorithm]] = (),
) -> str | None:
    """The static reason why ``module`` under ``algorithm`` cannot be vectorized, if any.

    Checks what can be known before training; ``vmap`` itself may still reject the module's
    ``training_step`` at the first step (data-dependent control flow, random ops).

    Args:
        module: The LightningModule.
        algorithm: The federated algorithm.
        vmap_losses: Algorithm classes whose ``training_loss`` only uses the module's
            parameters, the batch, the loss and ``ctx.received``, declared safe to vmap.

    Returns:
        ``None`` when it can be tried, else a human-readable reason.
    """
    if not module.automatic_optimization:
        return f"{type(module).__name__} uses manual optimization"
    for name, sub in module.named_modules():
        if isinstance(sub, _BN_TYPES):
            return (
                f"{type(module).__name__}.{name} is a {type(sub).__name__}, whose running "
                "statistics update in training mode"
            )
    if _loss_kind(algorithm, vmap_losses) is None:
        return (
            f"{type(algorithm).__name__}.training_loss is overridden and not declared safe to "
            "vmap (pass its class in vmap_losses if it only uses the parameters, the batch, "
            "the loss and ctx.received)"
        )
    return None


def _loss_kind(algorithm: Algorithm, vmap_losses: Sequence[type[Algorithm]]) -> str | None:
    hook = type(algorithm).training_loss
    if hook is Algorithm.training_loss:
        return "default"
    if hook is FedProx.training_loss or any(hook is cls.training_loss for cls in vmap_losses):
        return "hook"
    return None


class _StepLog:
    """Stands where Lightning's Fabric would while a vmapped ``training_step`` runs.

    Per call it sums what the module logs (per client, as batched tensors) and counts the
    calls per name (the same for every client), as :class:`fedlightning.client.LogSink`.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, float] = {}
        self.loggers: list[Any] = []

    def log_dict(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        for name, value in metrics.items():
            if isinstance(value, Tensor):
                value = value.detach()
                if value.numel() != 1:
                    continue
                value = value.reshape(())
            elif isinstance(value, (int, float)):
                value = torch.tensor(float(value))
            else:
                continue
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0.0) + 1.0


class _TrainingStep(nn.Module):
    """Calls ``module.training_step`` (and the algorithm's loss hook) as a ``forward``."""

    def __init__(self, module: LightningModule) -> None:
        super().__init__()
        self.module = module

    def forward(
        self,
        batch: Any,
        batch_idx: int,
        received: dict[str, Tensor],
        hook: Callable[[dict[str, Tensor], Any, Tensor], Tensor] | None,
    ) -> Tensor:
        out = self.module.training_step(batch, batch_idx)
        loss = out["loss"] if isinstance(out, Mapping) else out
        if not isinstance(loss, Tensor):
            raise UnvectorizableError(
                f"{type(self.module).__name__}.training_step returned {type(out).__name__}; "
                "vectorized steps need a loss tensor at every step"
            )
        if hook is not None:
            loss = hook(received, batch, loss)
        return loss


@dataclass
class _Client:
    """One client of a vectorized round."""

    ctx: ClientContext
    batches: Iterator[tuple[int, Any]]
    rng_state: Tensor
    steps: int = 0
    done: bool = False


def _client_batches(
    loader: Any, epochs: int | None, steps: int | None
) -> Iterator[tuple[int, Any]]:
    """``(batch_idx, batch)`` in the order :func:`fedlightning.client.fit_local` takes them."""
    step = 0
    epoch = 0
    while epochs is None or epoch < epochs:
        batch_idx = -1
        for batch_idx, batch in enumerate(loader):
            yield batch_idx, batch
            step += 1
            if steps is not None and step >= steps:
                return
        epoch += 1
        if batch_idx < 0:
            return


def _batch_key(batch: Any) -> tuple[Any, ...]:
    leaves, spec = pytree.tree_flatten(batch)
    key: list[Any] = [str(spec)]
    for leaf in leaves:
        if isinstance(leaf, Tensor):
            key.append(("T", tuple(leaf.shape), leaf.dtype, leaf.device))
        else:
            key.append(("V", repr(leaf)))
    return tuple(key)


def _stack_batches(batches: Sequence[Any], device: torch.device) -> Any:
    flat = [pytree.tree_flatten(b) for b in batches]
    spec = flat[0][1]
    leaves: list[Any] = []
    for i, leaf in enumerate(flat[0][0]):
        if isinstance(leaf, Tensor):
            leaves.append(torch.stack([f[0][i] for f in flat]).to(device, non_blocking=True))
        else:
            leaves.append(leaf)
    return pytree.tree_unflatten(leaves, spec)


def _batch_dims(batch: Any) -> Any:
    leaves, spec = pytree.tree_flatten(batch)
    return pytree.tree_unflatten([0 if isinstance(x, Tensor) else None for x in leaves], spec)


class StackedRound:
    """The clients of one round, configured, stacked and trained together.

    The constructor configures every client (``configure_client``, its optimizer, its
    loader) and stacks their states; :meth:`train` trains them; :meth:`finish` builds each
    client's reply. The auto executor also uses :meth:`train` with a step budget to time the
    vectorized path. Clients work on copies of their persisted state, written back to the
    trainer only by :meth:`finish`, so an attempt that falls back changes nothing.

    Args:
        trainer: The trainer.
        worker: A working copy of the global model (the executor's own).
        round: Round number.
        messages: Client id -> what the server sent it.
        vmap_losses: Algorithm classes whose loss hook is declared safe to vmap.

    Raises:
        UnvectorizableError: If the round cannot be stacked; nothing of the trainer is changed.
    """

    def __init__(
        self,
        trainer: FederatedTrainer,
        worker: LightningModule,
        round: int,
        messages: Mapping[int, Message],
        vmap_losses: Sequence[type[Algorithm]] = (),
    ) -> None:
        self.trainer = trainer
        self.worker = worker
        self.round = round
        algorithm = trainer.algorithm
        reason = vectorizable(worker, algorithm, vmap_losses)
        if reason is not None:
            raise UnvectorizableError(reason)
        self._hooked = _loss_kind(algorithm, vmap_losses) == "hook"
        self.clients: list[_Client] = []
        names = {id(p): n for n, p in worker.named_parameters()}
        snapshots: list[dict[str, Tensor]] = []
        spec: OptimizerSpec | None = None
        plan = trainer.plan
        datamodule = trainer.datamodule
        for client, message in messages.items():
            state: dict[str, Any] = {}
            if algorithm.stateful_clients:
                state = copy.deepcopy(trainer.client_states.get(client, {}))
            ctx = trainer.client_context(round, client, message, state)
            seed = ctx.seed
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = algorithm.configure_client(ctx, worker)
                if module is not worker:
                    raise UnvectorizableError(
                        f"{type(algorithm).__name__}.configure_client returns a different module "
                        "than the one it was given (a sub-network), which cannot be stacked"
                    )
                setup = parse_optimizers(worker.configure_optimizers(), type(worker).__name__)
                if setup.scheduler is not None:
                    raise UnvectorizableError(
                        f"{type(worker).__name__} has a learning-rate scheduler, which the "
                        "vectorized executor does not step"
                    )
                try:
                    client_spec = optimizer_spec(setup.optimizer, names)
                except UnsupportedOptimizerError as exc:
                    raise UnvectorizableError(str(exc)) from exc
                if spec is None:
                    spec = client_spec
                elif client_spec != spec:
                    raise UnvectorizableError(
                        "configure_optimizers gives different hyperparameters to different "
                        "clients of the round"
                    )
                loader = datamodule.train_loader(client, seed=seed)
                batches = _client_batches(loader, plan.epochs, plan.steps)
                rng_state = torch.get_rng_state()
            snapshots.append({k: v.detach().clone() for k, v in _tensors(worker).items()})
            self.clients.append(_Client(ctx, batches, rng_state))
        if spec is None:
            raise UnvectorizableError("no clients in the round")
        params = dict(worker.named_parameters())
        trainable = [n for n, _ in spec.groups if params[n].requires_grad]
        if len(trainable) != len(spec.groups):
            raise UnvectorizableError("the optimizer holds parameters that do not require grad")
        self.trainable = trainable
        device = next(iter(params.values())).device if params else torch.device("cpu")
        self.device = device
        self.constants = [k for k in _tensors(worker) if k not in set(trainable)]
        self.params: dict[str, Tensor] = {
            n: torch.stack([s[n] for s in snapshots]).to(device) for n in trainable
        }
        self.others: dict[str, Tensor] = {
            n: torch.stack([s[n] for s in snapshots]).to(device) for n in self.constants
        }
        self.received: dict[str, Tensor] = {}
        if self._hooked:
            keys = list(self.clients[0].ctx.received)
            for c in self.clients:
                if list(c.ctx.received) != keys:
                    raise UnvectorizableError(
                        "clients of the round received different tensor names"
                    )
            self.received = {
                k: torch.stack([c.ctx.received[k] for c in self.clients]).to(device) for k in keys
            }
        self.optimizer: StackedOptimizer = stacked_optimizer(spec, self.params)
        self._call = _TrainingStep(worker)
        self._steps_done = 0
        self._metric_sums: dict[str, Tensor] = {}
        self._metric_counts: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ training
    def _loss_hook(self) -> Callable[[dict[str, Tensor], Any, Tensor], Tensor] | None:
        if not self._hooked:
            return None
        algorithm = self.trainer.algorithm
        template = self.clients[0].ctx
        worker = self.worker

        def hook(received: dict[str, Tensor], batch: Any, loss: Tensor) -> Tensor:
            ctx = ClientContext(
                client=template.client,
                round=template.round,
                message=template.message,
                received=received,
                num_samples=template.num_samples,
                state={},
                seed=template.seed,
            )
            return algorithm.training_loss(ctx, worker, batch, loss)

        return hook

    def _next_batches(self) -> dict[int, tuple[int, Any]]:
        out: dict[int, tuple[int, Any]] = {}
        for i, c in enumerate(self.clients):
            if c.done:
                continue
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(c.rng_state)
                item = next(c.batches, None)
                c.rng_state = torch.get_rng_state()
            if item is None:
                c.done = True
            else:
                out[i] = item
        return out

    def train(self, max_steps: int | None = None) -> int:
        """Train every client to the end of its local work (or ``max_steps`` more steps).

        Args:
            max_steps: Stop after this many vectorized steps (for timing probes).

        Returns:
            The number of vectorized steps taken (a step trains every client with a batch).

        Raises:
            UnvectorizableError: If ``vmap`` rejects the module's ``training_step``.
        """
        hook = self._loss_hook()
        self.worker.train()  # as fit_local: training-mode behaviour of every layer
        taken = 0
        while max_steps is None or taken < max_steps:
            items = self._next_batches()
            if not items:
                break
            groups: dict[tuple[Any, ...], list[int]] = {}
            for i, (batch_idx, batch) in items.items():
                key = (batch_idx, self.clients[i].steps, _batch_key(batch))
                groups.setdefault(key, []).append(i)
            for (batch_idx, _, _), rows in groups.items():
                self._step(rows, [items[i][1] for i in rows], batch_idx, hook)
            taken += 1
        self._steps_done += taken
        return taken

    def _step(
        self,
        rows: list[int],
        batches: list[Any],
        batch_idx: int,
        hook: Callable[[dict[str, Tensor], Any, Tensor], Tensor] | None,
    ) -> None:
        full = len(rows) == len(self.clients)
        index = None if full else torch.tensor(rows, dtype=torch.long, device=self.device)

        def take(stacked: dict[str, Tensor]) -> dict[str, Tensor]:
            if index is None:
                return stacked
            return {k: v.index_select(0, index) for k, v in stacked.items()}

        params = {k: v.detach().requires_grad_(True) for k, v in take(self.params).items()}
        others = take(self.others)
        received = take(self.received)
        batch = _stack_batches(batches, self.device)
        sink = _StepLog()
        call = self._call

        def one(p: dict[str, Tensor], o: dict[str, Tensor], b: Any, r: dict[str, Tensor]) -> Any:
            state = {f"module.{k}": v for k, v in {**o, **p}.items()}
            loss = functional_call(call, state, (b, batch_idx, r, hook), strict=True)
            return loss, dict(sink.sums)

        previous = self.worker.fabric
        self.worker.fabric = sink  # type: ignore[assignment]
        try:
            losses, logged = vmap(one, in_dims=(0, 0, _batch_dims(batch), 0), randomness="error")(
                params, others, batch, received
            )
        except UnvectorizableError:
            raise
        except Exception as exc:
            raise UnvectorizableError(
                f"torch.func.vmap cannot batch {type(self.worker).__name__}.training_step: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self.worker.fabric = previous
        if losses.dim() != 1:
            raise UnvectorizableError(
                f"training_step must return a scalar loss, got shape {tuple(losses.shape)}"
            )
        grads = torch.autograd.grad(
            losses.sum(), list(params.values()), allow_unused=True, materialize_grads=False
        )
        missing = [n for n, g in zip(params, grads, strict=True) if g is None]
        if missing:
            raise UnvectorizableError(
                f"parameters {missing[:3]} get no gradient; torch.optim skips them per "
                "parameter, which the stacked optimizer does not replicate"
            )
        with torch.no_grad():
            detached = {k: v.detach() for k, v in params.items()}
            self.optimizer.step(detached, dict(zip(params, grads, strict=True)), index)
            if index is not None:
                for k, v in detached.items():
                    self.params[k].index_copy_(0, index, v)
                for k, v in others.items():
                    self.others[k].index_copy_(0, index, v)
        for i in rows:
            self.clients[i].steps += 1
        self._accumulate("loss", losses.detach(), 1.0, index)
        for name, value in logged.items():
            self._accumulate(name, value.detach(), sink.counts[name], index)

    def _accumulate(self, name: str, values: Tensor, count: float, index: Tensor | None) -> None:
        """Add one step's logged values (one per client of the step) to the running sums."""
        if name not in self._metric_sums:
            self._metric_sums[name] = torch.zeros(len(self.clients), dtype=values.dtype)
            self._metric_counts[name] = torch.zeros(len(self.clients), dtype=torch.float64)
        values = values.to("cpu", non_blocking=True)
        if index is None:
            self._metric_sums[name] += values
            self._metric_counts[name] += count
        else:
            cpu_index = index.cpu()
            self._metric_sums[name].index_add_(0, cpu_index, values)
            self._metric_counts[name].index_add_(
                0, cpu_index, torch.full((len(cpu_index),), count, dtype=torch.float64)
            )

    # ------------------------------------------------------------------ results
    def load_client(self, i: int, module: LightningModule) -> None:
        """Write client ``i``'s current state into ``module``."""
        targets = _tensors(module)
        with torch.no_grad():
            for k, v in {**self.params, **self.others}.items():
                targets[k].copy_(v[i])

    def finish(self) -> list[Reply | ClientFailure]:
        """Build every client's reply with the algorithm's ``client_message``, in order.

        Runs the trainer's client callbacks around each client and local evaluation when the
        trainer asks for it, as :meth:`FederatedTrainer.run_client` does.

        Returns:
            One reply (or failure) per client, in the order of the round's messages.
        """
        trainer = self.trainer
        algorithm = trainer.algorithm
        plan = trainer.plan
        out: list[Reply | ClientFailure] = []
        for i, c in enumerate(self.clients):
            ctx = c.ctx
            try:
                for callback in trainer.callbacks:
                    callback.on_client_fit_start(trainer, self.round, ctx.client)
                self.load_client(i, self.worker)
                metrics = {
                    k: float(v[i]) / float(self._metric_counts[k][i])
                    for k, v in self._metric_sums.items()
                    if float(self._metric_counts[k][i]) > 0
                }
                metrics["steps"] = float(c.steps)
                with torch.random.fork_rng(devices=[]):
                    torch.set_rng_state(c.rng_state)
                    if plan.eval_local and trainer.is_eval_round(self.round):
                        metrics.update(_local_eval(trainer, self.worker, ctx.client))
                    message = algorithm.client_message(ctx, self.worker)
                if algorithm.stateful_clients:
                    trainer.client_states[ctx.client] = ctx.state
                reply = Reply(ctx.client, message, ctx.num_samples, metrics)
                for callback in trainer.callbacks:
                    callback.on_client_fit_end(trainer, self.round, reply)
                out.append(reply)
            except Exception as exc:  # a failing client never takes the run down
                log.warning("round %d: client %d raised %r; dropped", self.round, ctx.client, exc)
                out.append(ClientFailure(ctx.client, f"{type(exc).__name__}: {exc}"))
        return out


def _tensors(module: nn.Module) -> dict[str, Tensor]:
    """Every parameter and buffer of ``module`` by name (non-persistent buffers included)."""
    out: dict[str, Tensor] = dict(module.named_parameters())
    out.update(module.named_buffers())
    return out


def _local_eval(
    trainer: FederatedTrainer, module: LightningModule, client: int
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    local = trainer.evaluate(module, trainer.datamodule.test_loader())
    if "acc" in local:
        metrics["acc_local"] = local["acc"]
    client_loader = trainer.datamodule.client_test_loader(client)
    if client_loader is not None:
        own = trainer.evaluate(module, client_loader)
        if "acc" in own:
            metrics["acc_client"] = own["acc"]
    return metrics


class VectorizedExecutor(Executor):
    """Trains the clients of a round as one batched model; falls back where it cannot.

    Args:
        vmap_losses: Algorithm classes whose overridden ``training_loss`` only uses the
            module's parameters, the batch, the loss and ``ctx.received``, and may therefore
            run inside ``vmap`` (FedProx's is built in).

    Attributes:
        fallbacks: ``(round, reason)`` for every round run sequentially instead.

    Example:
        >>> from fedlightning import FederatedTrainer
        >>> trainer = FederatedTrainer(executor=VectorizedExecutor(), rounds=5)

    References:
        McMahan et al., AISTATS 2017 (FedAvg); Li et al., MLSys 2020 (FedProx).
    """

    name = "vectorized"

    def __init__(self, *, vmap_losses: Sequence[type[Algorithm]] = ()) -> None:
        for cls in vmap_losses:
            if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
                raise ValueError(
                    f"vmap_losses must hold Algorithm subclasses, got vmap_losses={vmap_losses!r}"
                )
        self.vmap_losses = tuple(vmap_losses)
        self.fallbacks: list[tuple[int, str]] = []
        self.seconds: list[float] = []
        self._sequential = SequentialExecutor()
        self._worker: LightningModule | None = None
        self._disabled: str | None = None
        self._warned: set[str] = set()

    @override
    def setup(self, trainer: FederatedTrainer) -> None:
        self._worker = copy.deepcopy(trainer.global_model)
        self._disabled = vectorizable(self._worker, trainer.algorithm, self.vmap_losses)
        self.fallbacks = []
        self.seconds = []

    @override
    def run(
        self, trainer: FederatedTrainer, round: int, messages: dict[int, Message]
    ) -> list[Reply | ClientFailure]:
        if self._worker is None:
            self.setup(trainer)
        assert self._worker is not None
        start = time.perf_counter()
        if self._disabled is not None:
            return self._fall_back(trainer, round, messages, self._disabled)
        try:
            stacked = StackedRound(trainer, self._worker, round, messages, self.vmap_losses)
            stacked.train()
        except UnvectorizableError as exc:
            if "vmap" in str(exc):
                self._disabled = str(exc)  # structural: it would fail the same way every round
            return self._fall_back(trainer, round, messages, str(exc))
        except Exception as exc:  # e.g. one client's data fails: let sequential isolate it
            return self._fall_back(
                trainer, round, messages, f"vectorized training raised {type(exc).__name__}: {exc}"
            )
        out = stacked.finish()
        self.seconds.append(time.perf_counter() - start)
        return out

    def _fall_back(
        self, trainer: FederatedTrainer, round: int, messages: dict[int, Message], reason: str
    ) -> list[Reply | ClientFailure]:
        self.fallbacks.append((round, reason))
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("vectorized executor: round %d runs sequentially: %s", round, reason)
        else:
            log.debug("vectorized executor: round %d runs sequentially: %s", round, reason)
        return self._sequential.run(trainer, round, messages)

    @override
    def teardown(self) -> None:
        self._worker = None
